"""The operator's questions, as scenarios of bench/bench.py (each selectable with --scenarios):

    balance     agent-run times at 80% and 110% of the compilers' capacity, with stub compilers
                (a test double) that model puppetserver's JRuby pool: 4 compilers of 4 slots,
                one at half speed, log-normal compile times, some environments 10x slower
    herd        10,000 agents each starting one run within one second (after an LB failover)
                while kept-alive agents measure what they suffer meanwhile
    handshakes  each LB process's own CPU per full handshake with a client certificate, with
                an independent client (`openssl s_time -new`), against the crypto floor
    wrk         kept-alive requests/s and latency with wrk, an efficient C generator

Every scenario runs each LB in turn in the same run, against the same backends."""
import json, math, re, subprocess, threading, time

# crossbar's strategies, then each peer as its documentation recommends for workers of fixed
# concurrency (see bench.compilers_block).
BALANCERS = [
    ("crossbar", "least-latency"),
    ("crossbar", "least-requests"),
    ("crossbar", "round-robin"),
    ("crossbar", "certname-hash"),
    ("haproxy", "recommended"),
    ("nginx", "recommended"),
    ("apache", "recommended"),
]

# The modelled compilers: JRuby slots, speed factors, compile-time distribution, the work of a
# non-catalog request (node, file_metadatas, report) at speed 1.
MODEL = {"slots": 4, "speeds": [1.0, 1.0, 1.0, 0.5], "median_s": 0.2, "sigma": 0.6, "slow_share": 0.1, "other_s": 0.01}
# Requests of an agent run besides the catalog (4 file_metadatas, the report; the first run
# also asks for the node).
OTHER_REQUESTS = 5
RUN_INTERVAL_S = 30


def capacity(model=MODEL):
    """Runs per second the modelled compilers complete when every slot is busy."""
    mean_compile = model["median_s"] * math.exp(model["sigma"] ** 2 / 2) * (1 - model["slow_share"] + 10 * model["slow_share"])
    slot_seconds_per_run = mean_compile + OTHER_REQUESTS * model["other_s"]
    return model["slots"] * sum(model["speeds"]) / slot_seconds_per_run


def label(kind, strategy):
    return f"{kind} {strategy}" if kind == "crossbar" else {"haproxy": "haproxy leastconn+maxconn", "nginx": "nginx least_conn+max_conns", "apache": "apache bybusyness"}[kind]


def get_json(url):
    out = subprocess.run(["curl", "-sf", url], capture_output=True, text=True, timeout=10).stdout
    return json.loads(out)


def balance(b):
    seconds = 4 if b.smoke else b.args.balance_seconds
    model = dict(MODEL)
    stubs = []
    for i, speed in enumerate(model["speeds"], 1):
        proc = b.start(f"jruby{i}", [b.crossbar, "stub-compiler", "--slots", str(model["slots"]), "--speed", str(speed), "--compile-median", f"{int(model['median_s'] * 1000)}ms", "--compile-sigma", str(model["sigma"]), "--slow-share", str(model["slow_share"]), "--other-delay", f"{int(model['other_s'] * 1000)}ms"])
        from bench import wait_line
        stubs.append(wait_line(proc.out, "listening on").rsplit("//", 1)[1])
    cap = capacity(model)
    warmup = 0 if b.smoke else b.args.balance_warmup
    # The smoke run's 16 agents each run within its 4 s (splay is spread over the interval).
    interval = seconds if b.smoke else RUN_INTERVAL_S
    # The simulator spreads the agents by their certnames and numbers their runs, and the stubs
    # draw a numbered run's compile time from it: every LB gets the same arrivals and the same
    # work per run (common random numbers).
    out = {"model": model, "capacity_runs_per_s": cap, "interval_s": interval, "seconds": seconds, "warmup_s": warmup, "common_draws": True, "loads": {}}
    chosen = [tuple(x.split(":", 1)) for x in b.args.balancers] if b.args.balancers else BALANCERS
    chosen = [(kind, strategy) for kind, strategy in chosen if kind in b.args.peers]
    # A p99 moves by several percent between runs of identical work on two shared cores: with
    # rounds, every LB runs once per round, in turn, and its round with the median p99 counts.
    rounds = 1 if b.smoke else b.args.balance_rounds
    for load in b.args.loads:
        agents = max(8, round(load * cap * RUN_INTERVAL_S)) if not b.smoke else 16
        measured = {label(kind, strategy): [] for kind, strategy in chosen}
        for round_, (kind, strategy) in ((r, lb) for r in range(rounds) for lb in chosen):
            name = label(kind, strategy)
            b.log(f"balance at {load:.0%}: {name}, {agents} agents, {seconds} s" + (f", round {round_ + 1} of {rounds}" if rounds > 1 else ""))
            proc, addr = b.start_lb(kind, "rsa", compilers=[(s, model["slots"]) for s in stubs], balance=strategy, name=f"balance-{kind}-{strategy}")
            try:
                before = [get_json(f"http://{s}/stub/v1/stats") for s in stubs]
                began = time.time()
                report = b.sim("runs", "--lb", addr, "--certs", str(b.work / "agents"), "--agents", str(agents), "--interval", f"{interval}s", "--splay", "--warmup", f"{warmup}s", "--duration", f"{seconds}s", timeout=warmup + seconds * 3 + 300)
                after = [get_json(f"http://{s}/stub/v1/stats") for s in stubs]
            finally:
                proc.stop()
            wall = max(time.time() - began, 1e-9)  # warm-up, measured runs and the drain
            report["utilisation"] = [(a["busy_slot_s"] - o["busy_slot_s"]) / (model["slots"] * wall) for o, a in zip(before, after)]
            report["compiler_wait_s"] = [a["waited_s"] - o["waited_s"] for o, a in zip(before, after)]
            catalogs = sum(a.get("catalogs", 0) - o.get("catalogs", 0) for o, a in zip(before, after))
            numbered = sum(a.get("numbered_catalogs", 0) - o.get("numbered_catalogs", 0) for o, a in zip(before, after))
            report["catalogs_with_common_draws"] = [numbered, catalogs]
            if numbered != catalogs:
                b.log(f"  WARNING: {name} passed the run number on for {numbered} of {catalogs} catalogs: its draws are not all common")
            report["agents"] = agents
            measured[name].append(slim(report))
            b.log(f"  runs {report['runs']} failed {report['runs_failed']}, run p50 {report['run_ms']['p50']:.0f} ms p99 {report['run_ms']['p99']:.0f} ms, utilisation " + " ".join(f"{u:.0%}" for u in report["utilisation"]))
        out["loads"][f"{int(load * 100)}%"] = {name: median_round(reports) for name, reports in measured.items()}
    for proc in b.procs:
        if proc.name.startswith("jruby"):
            proc.stop()
    b.results["balance"] = out


def median_round(reports):
    """An LB's round with the median p99 run time (the lower of the middle two for an even
    count), with every round's p99 and failed runs beside it."""
    ranked = sorted(reports, key=lambda r: r["run_ms"]["p99"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    if len(reports) > 1:
        chosen["rounds"] = [{"p99_ms": r["run_ms"]["p99"], "runs": r["runs"], "runs_failed": r["runs_failed"]} for r in reports]
    return chosen


def slim(report):
    """A sim report without the per-run timeline (kept for the herd only)."""
    return {k: v for k, v in report.items() if k != "completions_s"}


class PeakMemory:
    """Samples the PSS of a process tree until stopped; keeps the peak."""

    def __init__(self, pids_of):
        from bench import pss_kib
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(pids_of, pss_kib), daemon=True)
        self._thread.start()

    def _run(self, pids_of, pss_kib):
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, pss_kib(pids_of()))

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peak


def herd(b):
    agents = 40 if b.smoke else b.args.herd_agents
    out = {"agents": agents, "window_s": 1, "observers": 16, "lbs": {}}
    for kind in b.args.peers:
        b.log(f"herd: {agents} agents within 1 s through {kind}")
        proc, addr = b.start_lb(kind, "rsa", name=f"herd-{kind}")
        try:
            memory = PeakMemory(proc.pids)
            report = b.sim("herd", "--lb", addr, "--certs", str(b.work / "agents"), "--agents", str(agents), "--window", "1s", "--observers", "16", "--duration", "300s", timeout=900)
            report["peak_pss_kib"] = memory.stop()
        finally:
            proc.stop()
        ends = report.get("completions_s", [])
        report["completed_s"] = {f"{int(q * 100)}%": (ends[math.ceil(q * agents) - 1] if len(ends) >= math.ceil(q * agents) else None) for q in (0.5, 0.99, 1.0)}
        out["lbs"][kind] = report
        done = report["completed_s"]
        b.log(f"  {kind}: 50% {done['50%']} s, 99% {done['99%']} s, 100% {done['100%']} s; failed {report['runs_failed']}; peak {report['peak_pss_kib'] / 1024:.0f} MiB")
    b.results["herd"] = out


def handshakes(b):
    """LB CPU per full handshake, counted from /proc for the LB's processes alone, with two
    `openssl s_time -new` clients presenting an agent certificate: RSA-4096 (Puppet's default
    agent key) and EC P-256 (the simulator's agents)."""
    seconds = 2 if b.smoke else 15
    agents = {}
    for agent_key in ("rsa-4096", "ec-p256"):
        name = f"s-time-{agent_key}.example.com"
        out_dir = b.work / f"s_time-{agent_key}"
        b.run([b.crossbar, "ca", "generate", "--cadir", str(b.work / "ca"), "--certname", name, "--out", str(out_dir), "--key", agent_key])
        agents[agent_key] = (out_dir / f"{name}.pem", out_dir / f"{name}.key")
    out = {"seconds": seconds, "client": "openssl s_time -new (2 processes), GET /status/v1/simple", "lbs": {}}
    from bench import cpu_seconds
    out["plain_connection"] = plain_connection_cost(b, seconds)
    for kind in b.args.peers:
        for lb_key in ("rsa", "ec"):
            # The floor, measured right before this LB's handshakes: this VM's speed drifts by
            # a quarter within a run, so a floor from minutes away would skew the ratio.
            floor = adjacent_floor(b, lb_key)
            for agent_key, (cert, key) in agents.items():
                proc, addr = b.start_lb(kind, lb_key, name=f"hs-{kind}")
                try:
                    suite = negotiated_suite(addr, b.ca_bundle)
                    before = cpu_seconds(proc.pids())
                    count, outputs = s_time(addr, cert, key, b.ca_bundle, seconds)
                    used = cpu_seconds(proc.pids()) - before
                finally:
                    proc.stop()
                result = {"handshakes": count, "per_second": count / seconds, "lb_cpu_s": used, "cpu_ms_per_handshake": used / count * 1000 if count else None, "suite": suite,
                          "floor_ms": floor.get(f"{lb_key}/{agent_key}")}
                out["lbs"].setdefault(kind, {})[f"{lb_key}/{agent_key}"] = result
                b.log(f"  {kind} (LB {lb_key}, agent {agent_key}): {count} handshakes, {result['cpu_ms_per_handshake'] or 0:.3f} ms CPU each")
                if not count:
                    b.log("  s_time said: " + outputs[0][-400:])
    b.results["handshakes_per_process"] = out


def s_time(addr, cert, key, ca_bundle, seconds):
    """Two `openssl s_time -new` clients presenting `cert` to `addr` for `seconds`, each
    connection one GET /status/v1/simple; the connections they completed, and their outputs."""
    clients = [subprocess.Popen(["openssl", "s_time", "-connect", addr, "-new", "-cert", str(cert), "-key", str(key), "-CAfile", str(ca_bundle), "-time", str(seconds), "-www", "/status/v1/simple"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [c.communicate(timeout=int(seconds) + 60)[0] for c in clients]
    count = sum(int(m.group(1)) for o in outputs for m in [re.search(r"(\d+) connections in [\d.]+ real seconds", o)] if m)
    return count, outputs


def negotiated_suite(addr, ca_bundle):
    """The TLS version and suite the LB at `addr` picks for OpenSSL's default offer (Puppet's)."""
    text = subprocess.run(["openssl", "s_client", "-connect", addr, "-CAfile", ca_bundle], input="", capture_output=True, text=True, timeout=30).stdout
    found = re.search(r"New, (TLSv[\d.]+), Cipher is (\S+)", text)
    return f"{found.group(1)} {found.group(2)}" if found else None


def plain_connection_cost(b, seconds):
    """What a connection costs a server with no TLS at all: the stub compiler (hyper on tokio,
    as crossbar) hit directly by wrk with a new TCP connection per request; its CPU ms per
    connection from /proc. Any LB pays at least this per handshake on top of the crypto."""
    from bench import cpu_seconds
    stub = b.stub_procs[0]
    before = cpu_seconds(stub.pids())
    text = subprocess.run(["wrk", "-t2", "-c2", f"-d{seconds}s", "-H", "Connection: close", f"http://{b.stubs[0]}/status/v1/simple"], capture_output=True, text=True, timeout=seconds + 60).stdout
    used = cpu_seconds(stub.pids()) - before
    found = re.search(r"(\d+) requests in", text)
    count = int(found.group(1)) if found else 0
    b.log(f"  plain TCP connection to the stub: {count} connections, {used / max(count, 1) * 1000:.3f} ms of the stub's CPU each")
    return {"connections": count, "cpu_ms_per_connection": used / count * 1000 if count else None, "client": "wrk -t2 -c2 -H 'Connection: close', GET /status/v1/simple, plain HTTP"}


def adjacent_floor(b, lb_key):
    """The floor (see `floor_ms`) for LB key `lb_key`, from one-second measurements now."""
    key = {"rsa": "rsa-4096", "ec": "ec-p256"}[lb_key]
    out = b.work / f"floor-{key}-{time.time_ns()}.json"
    b.run([b.crossbar, "sim", "ceiling", "--key", key, "--duration", "1s", "--threads", "1", "--json", str(out)])
    return floor_ms({key: json.loads(out.read_text())})


def floor_ms(ceiling):
    """The server side's key operations of one handshake, one thread, in ms, per LB key and
    agent key: the LB's signature, an X25519 exchange, the CA's RSA-4096 signature on the agent
    certificate, the agent's proof of its key (RSA-4096 PSS or ECDSA P-256)."""
    def rate(what, key=None):
        for k, rates in ceiling.items():
            for r in rates:
                if what in r["what"] and r.get("threads") == 1 and (key is None or k == key):
                    return r["per_second"]
        return None
    out = {}
    for lb_key, lb in (("rsa-4096", "rsa"), ("ec-p256", "ec")):
        for agent_key, proof in (("rsa-4096", "PSS proof verifications"), ("ec-p256", "ec-p256 proof verifications")):
            parts = {"signature": rate("signatures", lb_key), "x25519": rate("X25519"), "verify CA signature": rate("certificate signature verifications"), "verify agent proof": rate(proof)}
            if all(parts.values()):
                out[f"{lb}/{agent_key}"] = {"total": sum(1000 / v for v in parts.values()), "parts": {k: 1000 / v for k, v in parts.items()}}
    return out


def wrk(b):
    """Kept-alive throughput with wrk (2 threads, 32 connections; no client certificate: wrk has
    no option for one), every LB in turn per round; the stub directly as the baseline."""
    seconds = 2 if b.smoke else 10
    rounds = 1 if b.smoke else 5
    path = "/puppet/v3/file_metadatas/plugins?recurse=false&environment=production"
    out = {"seconds": seconds, "rounds": rounds, "connections": 32, "threads": 2, "path": path, "lbs": {}, "direct": []}
    from bench import cpu_seconds
    for round_ in range(rounds):
        out["direct"].append(run_wrk(f"http://{b.stubs[0]}{path}", seconds))
        for kind in b.args.peers:
            proc, addr = b.start_lb(kind, "rsa", name=f"wrk-{kind}")
            try:
                before = cpu_seconds(proc.pids())
                result = run_wrk(f"https://{addr}{path}", seconds)
                result["lb_cpu_s"] = cpu_seconds(proc.pids()) - before
            finally:
                proc.stop()
            out["lbs"].setdefault(kind, []).append(result)
            b.log(f"wrk round {round_ + 1}: {kind} {result['requests_per_second']:,.0f} req/s p99 {result['latency_ms'].get('99', 0):.2f} ms")
    b.results["wrk"] = out


def run_wrk(url, seconds):
    text = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", url], capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    latency = {m.group(1): to_ms(m.group(2)) for m in re.finditer(r"^\s+(50|75|90|99)%\s+([\d.]+\w+)", text, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"requests_per_second": float(rps.group(1)) if rps else 0.0, "latency_ms": latency, "non_2xx": int(errors.group(1)) if errors else 0}


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return None
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[m.group(2)]


def median(values):
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None
