#!/usr/bin/python3
"""Single measurements behind the profiling notes in bench/results/, one LB at a time, with CPU
accounted per process. They reuse the certificates of a full run: first
`bench/bench.py --work DIR` (or `--smoke --work DIR` for 40 agents), then

    bench/probe.py DIR memory BIN 10000          # PSS of one crossbar LB holding N idle agents
    bench/probe.py DIR throughput BIN 10 crossbar haproxy   # kept-alive, CPU µs per request of
                                                 # the LB, the stubs and the simulator
    bench/probe.py DIR handshakes BIN ec 10      # new handshakes (rsa|ec LB key), CPU ms each
    bench/probe.py DIR storm BIN 2000            # bootstrap storm through crossbar's LB and CA
    bench/probe.py DIR wrk BIN 10 crossbar nginx  # kept-alive with wrk: req/s, p99, CPU µs per
                                                 # request of the LB, the stubs and wrk
    bench/probe.py DIR ab BIN_A BIN_B 5 10       # two crossbar builds, kept-alive, interleaved
                                                 # rounds (wrk, then the simulator), medians
    bench/probe.py DIR hs-ab BIN_A BIN_B ec 5 10 # two crossbar builds, new handshakes with
                                                 # `openssl s_time -new` as bench.py (rsa|ec LB
                                                 # key, RSA-4096 agent), LB CPU ms each, medians

BIN is a crossbar binary (e.g. target/release/crossbar). `PERF=1` records `perf` of the LB (of
the CA for `storm`) into /tmp/probe.perf. Timing here is for understanding, not for claims:
the comparisons that count are bench.py's, all LBs in one run."""
import json, os, resource, shutil, signal, subprocess, sys, time, urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

PEER_CONF = Path(__file__).resolve().parent / "peers"


class Probe:
    def __init__(self, work, binary):
        self.w, self.xb, self.procs = Path(work), binary, []

    def start(self, argv, out=False, env=None):
        p = subprocess.Popen(argv, stdout=subprocess.PIPE if out else subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, start_new_session=True, env=env)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def stubs(self, *extra):
        procs, addrs = [], []
        for _ in range(2):
            p = self.start([self.xb, "stub-compiler", *extra], out=True)
            procs.append(p)
            addrs.append(p.stdout.readline().strip().rsplit("//", 1)[1])
        return procs, addrs

    def lb(self, kind, key, stubs, admin=None):
        port = bench.free_port()
        w = self.w
        values = dict(work=w, port=port, lb_cert=f"{w}/lb-{key}/lb-{key}.example.com.pem", lb_key=f"{w}/lb-{key}/lb-{key}.example.com.key", lb_pem=f"{w}/lb-{key}/haproxy.pem", ca_bundle=f"{w}/ca/ca_crt.pem", crl=f"{w}/ca/ca_crl.pem", ca=stubs[0], compilers=bench.compilers_block(kind, [(s, None) for s in stubs], None))
        template = {"crossbar": "crossbar.toml", "haproxy": "haproxy.cfg", "nginx": "nginx.conf"}[kind]
        text = (PEER_CONF / template).read_text().format(**values)
        if admin:
            text = text.replace("max_connections = 40000", f'max_connections = 40000\nadmin_listen = "127.0.0.1:{admin}"')
        conf = Path(f"/tmp/probe-{kind}.conf")
        conf.write_text(text)
        argv = {"crossbar": [self.xb, "serve", "--config", str(conf)], "haproxy": ["/usr/sbin/haproxy", "-f", str(conf), "-db"], "nginx": ["/usr/sbin/nginx", "-c", str(conf)]}[kind]
        proc = self.start(argv)
        bench.wait_port(port, 300)
        return proc, f"127.0.0.1:{port}"

    def perf(self, pid):
        if not os.environ.get("PERF"):
            return None
        return subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "1000", "--call-graph", "dwarf,16384", "-p", str(pid), "-o", "/tmp/probe.perf"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def sim(self, args):
        """`crossbar sim ...args`; its JSON report."""
        subprocess.run([self.xb, "sim", *args, "--json", "/tmp/probe.json"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return json.load(open("/tmp/probe.json"))

    def counted(self, run, watched, perf_pid):
        """Calls `run()` (which runs a load generator as a child process); returns what it
        returned, the CPU seconds each group of `watched` pids (a dict) used meanwhile plus the
        generator's own (`generator`), the kernel-mode part of each group's, and the machine's
        idle %."""
        before = {name: (bench.cpu_seconds(pids), system_seconds(pids)) for name, pids in watched.items()}
        machine0 = [float(x) for x in open("/proc/stat").readline().split()[1:]]
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        recorder = self.perf(perf_pid)
        result = run()
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = {name: bench.cpu_seconds(pids) - before[name][0] for name, pids in watched.items()}
        kernel = {name: system_seconds(pids) - before[name][1] for name, pids in watched.items()}
        used["generator"] = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
        machine = [b - a for a, b in zip(machine0, [float(x) for x in open("/proc/stat").readline().split()[1:]])]
        if recorder:
            recorder.send_signal(signal.SIGINT)
            recorder.wait()
        idle = 100 * (machine[3] + machine[4]) / sum(machine)
        return result, used, kernel, idle

    def each_lb(self, kinds):
        """Starts each of `kinds` in turn (RSA key) in front of two stubs; yields its kind,
        address, the pids to watch and its pid, and stops it when the caller is done."""
        stub_procs, stubs = self.stubs()
        for kind in kinds:
            lb, addr = self.lb(kind, "rsa", stubs)
            time.sleep(0.5)
            yield kind, addr, {"lb": bench.tree(lb.pid), "stubs": [p.pid for p in stub_procs]}, lb.pid
            os.killpg(lb.pid, signal.SIGTERM)
            lb.wait(timeout=30)

    def memory(self, agents):
        _, stubs = self.stubs()
        admin = bench.free_port()
        lb, addr = self.lb("crossbar", "rsa", stubs, admin=admin)
        base = bench.pss_kib([lb.pid])
        sim = subprocess.Popen([self.xb, "sim", "hold", "--lb", addr, "--certs", str(self.w / "agents"), "--agents", agents, "--duration", "60s"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = sim.stdout.readline().strip()
        time.sleep(2)  # as bench.py: let the last connections go idle
        pss = bench.pss_kib([lb.pid])
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
        gauges = [m for m in metrics.splitlines() if m.startswith(("crossbar_connections_open", "crossbar_connections_idle"))]
        sim.send_signal(signal.SIGTERM)
        sim.wait()
        print(f"{line}: PSS {pss / 1024:.1f} MiB ({(pss - base) / int(agents):.1f} KiB per connection over {base / 1024:.1f} MiB at rest); {'; '.join(gauges)}")

    def throughput(self, seconds, kinds):
        for kind, addr, watched, pid in self.each_lb(kinds):
            args = ["throughput", "--lb", addr, "--certs", str(self.w / "agents"), "--agents", "32", "--connections", "32", "--duration", seconds]
            r, used, _, idle = self.counted(lambda: self.sim(args), watched, pid)
            n = max(r["requests_ok"], 1)
            us = {k: v / n * 1e6 for k, v in used.items()}
            print(f"{kind:9s} {r['requests_per_second']:7.0f} req/s; CPU µs per request: LB {us['lb']:5.1f}, stubs {us['stubs']:5.1f}, simulator {us['generator']:5.1f}, total {sum(us.values()):5.1f}; machine idle {idle:.1f}%, failed {r['requests_failed']}")

    def wrk(self, seconds, kinds):
        for kind, addr, watched, pid in self.each_lb(kinds):
            (rate, p99), used, kernel, _ = self.counted(lambda: wrk(addr, seconds), watched, pid)
            n = rate * float(seconds)
            us = {k: v / n * 1e6 for k, v in used.items()}
            sys_us = kernel["lb"] / n * 1e6
            print(f"{kind:9s} {rate:7.0f} req/s, p99 {p99:.2f} ms; CPU µs per request: LB {us['lb']:5.1f} (kernel {sys_us:4.1f}, user {us['lb'] - sys_us:4.1f}), stubs {us['stubs']:5.1f}, wrk {us['generator']:5.1f}, total {sum(us.values()):5.1f}", flush=True)

    def handshakes(self, key, seconds):
        stub_procs, stubs = self.stubs()
        lb, addr = self.lb("crossbar", key, stubs)
        watched = {"lb": [lb.pid], "stubs": [p.pid for p in stub_procs]}
        args = ["handshakes", "--lb", addr, "--certs", str(self.w / "agents"), "--agents", "500", "--concurrency", "32", "--duration", seconds]
        r, used, _, _ = self.counted(lambda: self.sim(args), watched, lb.pid)
        ms = {k: v / max(r["handshakes"], 1) * 1000 for k, v in used.items()}
        print(f"{r['handshakes_per_second']:.0f} handshakes/s; CPU ms per handshake: LB {ms['lb']:.2f}, simulator {ms['generator']:.2f}, stubs {ms['stubs']:.2f}; failed {r['requests_failed']}")

    def storm(self, agents):
        d = Path("/tmp/probe-storm-ca")
        shutil.rmtree(d, ignore_errors=True)
        subprocess.run([self.xb, "ca", "setup", "--cadir", str(d), "--ca-name", "storm.example.com"], check=True, capture_output=True)
        conf = Path("/tmp/probe-storm-ca.toml")
        conf.write_text(f'[ca]\nlisten = "127.0.0.1:0"\ncadir = "{d}"\nautosign = true\n[log]\nlevel = "warn"\n')
        ca = self.start([self.xb, "serve", "--config", str(conf)], out=True)
        ca_addr = ca.stdout.readline().strip().rsplit("//", 1)[1]
        lb, addr = self.lb("crossbar", "ec", [ca_addr, ca_addr])
        args = ["bootstrap", "--lb", addr, "--cacert", str(self.w / "ca/ca_crt.pem"), "--agents", agents, "--concurrency", "32"]
        r, used, _, idle = self.counted(lambda: self.sim(args), {"ca": [ca.pid], "lb": [lb.pid]}, ca.pid)
        n = max(r["runs"], 1)
        print(f"{(r['runs'] - r['runs_failed']) / r['seconds']:.1f} agents/s over {r['seconds']:.1f} s; CPU ms per bootstrap: CA {used['ca'] / n * 1000:.2f}, LB {used['lb'] / n * 1000:.2f}; machine idle {idle:.1f}% (the window includes making the CSRs); failed {r['runs_failed']}")


def system_seconds(pids):
    """The kernel-mode CPU seconds (stime) of `pids`."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def wrk(addr, seconds, connections=32):
    """wrk (2 threads, kept-alive, no client certificate) against `addr`; returns (req/s, p99 ms)."""
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", f"https://{addr}/puppet/v3/file_metadatas/plugins?recurse=false&environment=production"], capture_output=True, text=True, check=True).stdout
    rate = float(next(l for l in out.splitlines() if l.startswith("Requests/sec:")).split()[1])
    p99 = next(l for l in out.splitlines() if l.strip().startswith("99%")).split()[1]
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    unit = next(u for u in ("us", "ms", "s") if p99.endswith(u))
    return rate, float(p99[: -len(unit)]) * scale[unit]


def ab(probe_a, probe_b, rounds, seconds):
    """Kept-alive throughput and p99 of two crossbar builds, in interleaved rounds on the same
    stub compilers and certificates: wrk first (an efficient generator), then the simulator."""
    import statistics
    _, stubs = probe_a.stubs()
    results = {name: {"wrk": [], "p99": [], "sim": [], "cpu": []} for name in "AB"}
    for _ in range(int(rounds)):
        for name, probe in (("A", probe_a), ("B", probe_b)):
            lb, addr = probe.lb("crossbar", "rsa", stubs)
            time.sleep(0.5)
            cpu0 = bench.cpu_seconds(bench.tree(lb.pid))
            rate, p99 = wrk(addr, seconds)
            cpu_us = (bench.cpu_seconds(bench.tree(lb.pid)) - cpu0) / (rate * float(seconds)) * 1e6
            results[name]["wrk"].append(rate)
            results[name]["p99"].append(p99)
            results[name]["cpu"].append(cpu_us)
            subprocess.run([probe.xb, "sim", "throughput", "--lb", addr, "--certs", str(probe.w / "agents"), "--agents", "32", "--connections", "32", "--duration", f"{seconds}s", "--json", "/tmp/probe.json"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            r = json.load(open("/tmp/probe.json"))
            results[name]["sim"].append(r["requests_per_second"])
            os.killpg(lb.pid, signal.SIGTERM)
            lb.wait(timeout=30)
            print(f"{name} round: wrk {rate:8.0f} req/s p99 {p99:6.2f} ms, LB {cpu_us:5.1f} CPU µs/request; sim {r['requests_per_second']:8.0f} req/s", flush=True)
    for name, xb in (("A", probe_a.xb), ("B", probe_b.xb)):
        r = results[name]
        print(f"{name} {xb}: wrk median {statistics.median(r['wrk']):8.0f} req/s (rounds {', '.join(f'{x:.0f}' for x in r['wrk'])}), p99 median {statistics.median(r['p99']):.2f} ms, LB CPU median {statistics.median(r['cpu']):.1f} µs/request; simulator median {statistics.median(r['sim']):8.0f} req/s (rounds {', '.join(f'{x:.0f}' for x in r['sim'])})")


def handshakes_ab(probe_a, probe_b, key, rounds, seconds):
    """LB CPU per full handshake of two crossbar builds, interleaved rounds, with two
    `openssl s_time -new` clients presenting the RSA-4096 agent certificate of a full run."""
    import statistics
    from fleet import s_time
    _, stubs = probe_a.stubs()
    name = "s-time-rsa-4096.example.com"
    cert, agent_key = (probe_a.w / "s_time-rsa-4096" / f"{name}.{ext}" for ext in ("pem", "key"))
    results = {"A": [], "B": []}
    for _ in range(int(rounds)):
        for label, probe in (("A", probe_a), ("B", probe_b)):
            lb, addr = probe.lb("crossbar", key, stubs)
            time.sleep(0.5)
            before = bench.cpu_seconds(bench.tree(lb.pid))
            count, _ = s_time(addr, cert, agent_key, probe.w / "ca/ca_crt.pem", seconds)
            used = bench.cpu_seconds(bench.tree(lb.pid)) - before
            os.killpg(lb.pid, signal.SIGTERM)
            lb.wait(timeout=30)
            ms = used / max(count, 1) * 1000
            results[label].append(ms)
            print(f"{label} round: {count} handshakes, LB {ms:.3f} CPU ms each", flush=True)
    for label, xb in (("A", probe_a.xb), ("B", probe_b.xb)):
        r = results[label]
        print(f"{label} {xb}: LB CPU median {statistics.median(r):.3f} ms per handshake (rounds {', '.join(f'{x:.3f}' for x in r)})")


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    bench.raise_fd_limit()
    work, what, binary, rest = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    probe = Probe(work, binary)
    if what in ("ab", "hs-ab"):
        other = Probe(work, rest[0])
        try:
            if what == "ab":
                ab(probe, other, rest[1], rest[2])
            else:
                handshakes_ab(probe, other, rest[1], rest[2], rest[3])
        finally:
            probe.stop_all()
            other.stop_all()
        return
    try:
        {"memory": lambda: probe.memory(*rest), "throughput": lambda: probe.throughput(rest[0], rest[1:] or ["crossbar"]), "wrk": lambda: probe.wrk(rest[0], rest[1:] or ["crossbar"]), "handshakes": lambda: probe.handshakes(*rest), "storm": lambda: probe.storm(*rest)}[what]()
    finally:
        probe.stop_all()


if __name__ == "__main__":
    main()
