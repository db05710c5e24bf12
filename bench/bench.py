#!/usr/bin/python3
"""crossbar against the seed's Apache, HAProxy and nginx: one run, one machine, the same
certificates, the same stub backends (a test double) and the same load from `crossbar sim`.

    bench/bench.py            the full benchmark; writes bench/results/<date>.{md,json,png}
    bench/bench.py --smoke    tiny sizes, no timing judgement: every peer config starts and serves

Measured for each LB: kept-alive requests/s and the p50/p99 latency added over hitting the stub
directly; new TLS handshakes/s with client certificates (LB key RSA-4096 and EC P-256); CPU
seconds per 10,000 requests; memory holding 10,000 idle kept-alive agents (scenario `proxy`).
Then a bootstrap storm (new agents from CSR to certificate through crossbar's LB) with
crossbar's CA and with puppetserver's own CA (`storm`); the operator's questions — agent-run
times with JRuby-like compilers at 80% and 110% load, a thundering herd, handshake CPU per
process against the crypto floor, kept-alive throughput with wrk (`balance`, `herd`,
`handshakes`, `wrk`: bench/fleet.py); and the crypto ceilings. `--scenarios` picks some.
"""
import argparse, datetime, json, os, platform, resource, shutil, signal, socket, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ["crossbar", "apache", "haproxy", "nginx"]
SCENARIOS = ["proxy", "storm", "balance", "herd", "handshakes", "wrk"]


def log(*args):
    print("bench:", *args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def wait_line(path, needle, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if needle in line:
                    return line
        time.sleep(0.05)
    raise RuntimeError(f"{path} never printed {needle!r}")


class Proc:
    """A process with its output in files, stopped (and its children) on request."""

    def __init__(self, name, argv, work, env=None):
        self.name = name
        self.out = work / f"{name}.out"
        self.err = work / f"{name}.err"
        self.p = subprocess.Popen(argv, stdout=open(self.out, "w"), stderr=open(self.err, "w"), env=env, start_new_session=True)

    def pids(self):
        return tree(self.p.pid)

    def stop(self):
        if self.p.poll() is not None:
            return
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
            self.p.wait(timeout=20)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait()


def tree(root):
    """`root` and all its descendants."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def pss_kib(pids):
    """Proportional set size of processes: shared pages split between them."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_seconds(pids):
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / ticks


class Bench:
    def __init__(self, args):
        self.args = args
        self.smoke = args.smoke
        self.work = Path(args.work or f"/tmp/crossbar-bench-{os.getpid()}")
        self.keep_work = bool(args.work)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        os.chmod(self.work, 0o755)
        self.crossbar = str(Path(args.crossbar).resolve())
        self.procs = []
        self.log = log
        self.scenarios = args.scenarios
        self.results = {"lbs": {}, "direct": None, "storm": {}, "ceiling": {}, "scenarios": args.scenarios}
        size = (lambda small, big: small if self.smoke else big)
        self.agents = size(60, max(10000, args.herd_agents + 100))
        self.duration = size("2s", "20s")
        self.connections = size(4, 32)
        self.storm_agents = size(20, 2000)
        self.rounds = 1 if self.smoke else args.rounds

    def run(self, argv, **kw):
        return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout

    def start(self, name, argv, **kw):
        proc = Proc(name, argv, self.work, **kw)
        self.procs.append(proc)
        return proc

    def sim(self, *args, timeout=900):
        out = self.work / f"sim-{time.time_ns()}.json"
        self.run([self.crossbar, "sim", *args, "--json", str(out)], timeout=timeout)
        return json.loads(out.read_text())

    # --- setup -------------------------------------------------------------------------------

    def pki(self):
        w = self.work
        log("PKI: an RSA-4096 CA (Puppet's default), LB certificates (RSA-4096 and EC P-256), agents")
        self.run([self.crossbar, "ca", "setup", "--cadir", str(w / "ca"), "--ca-name", "puppetlb.example.com"])
        for key, name in [("rsa-4096", "lb-rsa"), ("ec-p256", "lb-ec")]:
            out = w / name
            self.run([self.crossbar, "ca", "generate", "--cadir", str(w / "ca"), "--certname", f"{name}.example.com", "--dns-alt-names", "localhost", "--out", str(out), "--key", key])
            cert, key_file = out / f"{name}.example.com.pem", out / f"{name}.example.com.key"
            (out / "haproxy.pem").write_text(cert.read_text() + key_file.read_text())
            setattr(self, name.replace("-", "_"), {"cert": str(cert), "key": str(key_file), "pem": str(out / "haproxy.pem")})
        self.run([self.crossbar, "sim", "certs", "--cadir", str(w / "ca"), "--out", str(w / "agents"), "--agents", str(self.agents)], timeout=900)
        self.ca_bundle, self.crl = str(w / "ca/ca_crt.pem"), str(w / "ca/ca_crl.pem")

    def backends(self):
        log("backends: two stub compilers (test doubles) and a crossbar CA")
        self.stubs, self.stub_procs = [], []
        for i in (1, 2):
            proc = self.start(f"stub{i}", [self.crossbar, "stub-compiler"])
            self.stubs.append(wait_line(proc.out, "listening on").rsplit("//", 1)[1])
            self.stub_procs.append(proc)
        ca_dir = self.work / "ca-backend"
        self.run([self.crossbar, "ca", "setup", "--cadir", str(ca_dir), "--ca-name", "backend.example.com", "--key", "ec-p256"])
        conf = self.work / "ca-backend.toml"
        conf.write_text(f'[ca]\nlisten = "127.0.0.1:0"\ncadir = "{ca_dir}"\nautosign = true\n[log]\nlevel = "warn"\n')
        proc = self.start("ca-backend", [self.crossbar, "serve", "--config", str(conf)])
        self.ca_backend = wait_line(proc.out, "ca listening").rsplit("//", 1)[1]

    # --- the load balancers ------------------------------------------------------------------

    def start_lb(self, kind, key, compilers=None, balance=None, name=None):
        """Starts LB `kind` with TLS key `key` in front of `compilers` (default: the two plain
        stubs) balanced by `balance` (default: the classic configuration; see `compilers_block`)."""
        port = free_port()
        tls = getattr(self, f"lb_{key}")
        members = compilers or [(stub, None) for stub in self.stubs]
        values = dict(work=self.work, port=port, lb_cert=tls["cert"], lb_key=tls["key"], lb_pem=tls["pem"], ca_bundle=self.ca_bundle, crl=self.crl, ca=self.ca_backend, compilers=compilers_block(kind, members, balance))
        template = (ROOT / "bench/peers" / {"crossbar": "crossbar.toml", "apache": "apache.conf", "haproxy": "haproxy.cfg", "nginx": "nginx.conf"}[kind]).read_text()
        conf = self.work / f"{name or kind}-{key}.conf"
        conf.write_text(template.format(**values))
        (self.work / "apache-run").mkdir(exist_ok=True)
        argv = {
            "crossbar": [self.crossbar, "serve", "--config", str(conf)],
            "apache": ["/usr/sbin/apache2", "-f", str(conf), "-DFOREGROUND"],
            "haproxy": ["/usr/sbin/haproxy", "-f", str(conf), "-db"],
            "nginx": ["/usr/sbin/nginx", "-c", str(conf)],
        }[kind]
        env = dict(os.environ, APACHE_RUN_DIR=str(self.work / "apache-run"), APACHE_LOCK_DIR=str(self.work / "apache-run"), APACHE_LOG_DIR=str(self.work))
        proc = self.start(f"{name or kind}-{key}", argv, env=env)
        wait_port(port)
        return proc, f"127.0.0.1:{port}"

    def check_serves(self, kind, addr):
        """The peer config serves both routes, with and without a client certificate."""
        ca = self.run(["curl", "-sf", "--cacert", self.ca_bundle, f"https://localhost:{addr.split(':')[1]}/puppet-ca/v1/certificate/ca"])
        assert "BEGIN CERTIFICATE" in ca, f"{kind}: no CA certificate through the CA route"
        report = self.sim("runs", "--lb", addr, "--certs", str(self.work / "agents"), "--agents", "4", "--duration", "1s")
        assert report["runs"] > 0 and report["requests_failed"] == 0, f"{kind}: agent runs failed: {report['errors']}"

    def measure(self, kind):
        result = {}
        for key in ("rsa", "ec"):
            proc, addr = self.start_lb(kind, key)
            try:
                if key == "rsa":
                    self.check_serves(kind, addr)
                    result["throughput_runs"] = [self.throughput(proc, addr)]
                    result["idle"] = self.hold(proc, addr)
                result[f"handshakes_{key}"] = self.sim("handshakes", "--lb", addr, "--certs", str(self.work / "agents"), "--agents", str(min(self.agents, 500)), "--concurrency", str(self.connections), "--duration", self.duration)
                log(f"{kind} ({key}): {result[f'handshakes_{key}']['handshakes_per_second']:.0f} handshakes/s")
            finally:
                proc.stop()
        self.results["lbs"][kind] = result

    def more_throughput_rounds(self):
        """Kept-alive throughput again, every LB in turn, so that a slow moment of the machine
        does not decide a comparison: each LB's figure is the median of its rounds."""
        for round_ in range(1, self.rounds):
            for kind in self.args.peers:
                log(f"throughput round {round_ + 1} of {self.rounds}: {kind}")
                proc, addr = self.start_lb(kind, "rsa")
                try:
                    self.results["lbs"][kind]["throughput_runs"].append(self.throughput(proc, addr))
                finally:
                    proc.stop()
        for result in self.results["lbs"].values():
            runs = sorted(result["throughput_runs"], key=lambda r: r["requests_per_second"])
            result["throughput"] = runs[len(runs) // 2]

    def throughput(self, proc, addr):
        before = cpu_seconds(proc.pids())
        report = self.sim("throughput", "--lb", addr, "--certs", str(self.work / "agents"), "--agents", str(self.connections), "--connections", str(self.connections), "--duration", self.duration)
        used = cpu_seconds(proc.pids()) - before
        report["lb_cpu_seconds"] = used
        report["cpu_seconds_per_10k"] = used / max(report["requests_ok"], 1) * 10000
        log(f"{addr}: {report['requests_per_second']:.0f} req/s, {report['cpu_seconds_per_10k']:.2f} CPU s / 10k requests")
        return report

    def hold(self, proc, addr):
        sim = subprocess.Popen([self.crossbar, "sim", "hold", "--lb", addr, "--certs", str(self.work / "agents"), "--agents", str(self.agents), "--duration", "60s" if not self.smoke else "3s"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = sim.stdout.readline()
        held = int(line.split()[1]) if line.startswith("holding") else 0
        time.sleep(2)  # let the LB settle after the last handshake before reading its memory
        memory = pss_kib(proc.pids())
        sim.send_signal(signal.SIGTERM)
        sim.wait()
        log(f"{addr}: {held} idle agents held in {memory / 1024:.1f} MiB")
        return {"held": held, "pss_kib": memory}

    def direct(self):
        self.results["direct"] = self.sim("throughput", "--direct", self.stubs[0], "--connections", str(self.connections), "--duration", self.duration)

    # --- the bootstrap storm -----------------------------------------------------------------

    def storm(self):
        for ca_kind in ["crossbar", "puppetserver"]:
            if ca_kind == "puppetserver" and self.args.skip_puppetserver:
                continue
            backend, stop = self.storm_backend(ca_kind)
            try:
                port = free_port()
                conf = self.work / f"storm-lb-{ca_kind}.toml"
                conf.write_text(f'[lb]\nlisten = "127.0.0.1:{port}"\ncert = "{self.lb_ec["cert"]}"\nkey = "{self.lb_ec["key"]}"\nclient_ca = "{self.ca_bundle}"\ncrl = "{self.crl}"\n[log]\nlevel = "warn"\n[lb.pools.ca]\nhealth = false\nmembers = [ {{ url = "http://{backend}" }} ]\n')
                lb = self.start(f"storm-lb-{ca_kind}", [self.crossbar, "serve", "--config", str(conf)])
                wait_port(port)
                report = self.sim("bootstrap", "--lb", f"127.0.0.1:{port}", "--cacert", self.ca_bundle, "--agents", str(self.storm_agents), "--concurrency", "32", "--prefix", f"storm-{ca_kind}-")
                report["bootstraps_per_second"] = (report["runs"] - report["runs_failed"]) / report["seconds"]
                self.results["storm"][ca_kind] = report
                log(f"storm with {ca_kind}'s CA: {report['bootstraps_per_second']:.1f} agents/s, {report['runs_failed']} failed")
                lb.stop()
            finally:
                stop()

    def storm_backend(self, ca_kind):
        if ca_kind == "crossbar":
            ca_dir = self.work / "storm-ca"
            self.run([self.crossbar, "ca", "setup", "--cadir", str(ca_dir), "--ca-name", "storm.example.com"])
            conf = self.work / "storm-ca.toml"
            conf.write_text(f'[ca]\nlisten = "127.0.0.1:0"\ncadir = "{ca_dir}"\nautosign = true\n[log]\nlevel = "warn"\n')
            proc = self.start("storm-ca", [self.crossbar, "serve", "--config", str(conf)])
            return wait_line(proc.out, "ca listening").rsplit("//", 1)[1], proc.stop
        return self.puppetserver_ca()

    def puppetserver_ca(self):
        proc, addr = start_puppetserver_ca(self.work, self.start)
        return addr, proc.stop

    # --- ceilings ----------------------------------------------------------------------------

    def ceilings(self):
        """The crypto ceilings, measured at the start and again at the end of the run; the
        higher of the two counts (a ceiling is what the machine can do at best: a slow moment
        of a shared VM must not lower it and flatter the ratios)."""
        duration = "1s" if self.smoke else "5s"
        for key, tls in [("rsa-4096", self.lb_rsa), ("ec-p256", self.lb_ec)]:
            out = self.work / f"ceiling-{key}.json"
            agent = self.work / "agents" / "agent00000.sim.example.com"
            self.run([self.crossbar, "sim", "ceiling", "--key", key, "--duration", duration, "--tls-cert", tls["cert"], "--tls-key", tls["key"], "--ca", self.ca_bundle, "--crl", self.crl, "--client-cert", f"{agent}.pem", "--client-key", f"{agent}.key", "--json", str(out)])
            rates = json.loads(out.read_text())
            before = {(r["what"], r["threads"]): r for r in self.results["ceiling"].get(key, [])}
            for rate in rates:
                rate["runs"] = before.get((rate["what"], rate["threads"]), {}).get("runs", []) + [rate["per_second"]]
                rate["per_second"] = max(rate["runs"])
            self.results["ceiling"][key] = rates

    # --- all ---------------------------------------------------------------------------------

    def all(self):
        import fleet as scenarios
        try:
            self.pki()
            self.backends()
            self.ceilings()
            if "proxy" in self.scenarios:
                self.direct()
                for kind in self.args.peers:
                    log(f"== {kind}")
                    self.measure(kind)
                self.more_throughput_rounds()
            if "storm" in self.scenarios:
                self.storm()
            for name in ("balance", "herd", "handshakes", "wrk"):
                if name in self.scenarios:
                    log(f"== scenario {name}")
                    getattr(scenarios, name)(self)
            self.ceilings()
            self.results["floor_ms"] = scenarios.floor_ms(self.results["ceiling"])
        finally:
            for proc in reversed(self.procs):
                proc.stop()
            if not self.keep_work:
                shutil.rmtree(self.work, ignore_errors=True)
        self.results["machine"] = machine()
        self.results["commands"] = [" ".join(sys.argv)]
        return self.results


def compilers_block(kind, members, balance):
    """The compiler pool of LB `kind`: `members` are (address, JRuby slots or None).

    `balance` None is the classic configuration (HAProxy leastconn, nginx and Apache round
    robin, crossbar's default); "recommended" is what each peer's documentation recommends for
    backends with a fixed number of workers (HAProxy leastconn with maxconn = slots and its
    queue; nginx least_conn with max_conns; Apache bybusyness); for crossbar it names the
    strategy, members limited to their slots with max_in_flight."""
    if kind == "haproxy":
        lines = ["    balance leastconn"]
        if balance:
            lines.append("    timeout queue 30s")
        for i, (addr, slots) in enumerate(members, 1):
            limit = f" maxconn {slots}" if balance and slots else ""
            lines.append(f"    server c{i} {addr}{limit}")
        return "\n".join(lines)
    if kind == "nginx":
        limit = lambda slots: f" max_conns={slots}" if balance and slots else ""
        return ("least_conn; " if balance else "") + " ".join(f"server {addr}{limit(slots)};" for addr, slots in members)
    if kind == "apache":
        lines = [f"        BalancerMember http://{addr}" for addr, _ in members]
        lines.append(f"        ProxySet lbmethod={'bybusyness' if balance else 'byrequests'}")
        return "\n".join(lines)
    strategy = f'balance = "{balance}"\n' if balance and balance != "recommended" else ""
    limit = lambda slots: f", max_in_flight = {slots}" if balance and slots else ""
    return strategy + "members = [ " + ", ".join(f'{{ url = "http://{addr}"{limit(slots)} }}' for addr, slots in members) + " ]"


def start_puppetserver_ca(work, start):
    """puppetserver 7's own CA (Debian package), plain HTTP, autosign on, RSA-4096 keys; `start`
    runs a process (name, argv). Returns the process and its address once it answers."""
    d = work / "puppetserver-ca"
    subprocess.run(["bash", "-c", f'source {ROOT}/scripts/lib/compiler.sh && puppetserver_prepare "{d}" puppetca.example.com ca'], check=True, capture_output=True)
    log("starting puppetserver's CA (JVM)")
    proc = start("puppetserver-ca", ["setpriv", "--reuid", "puppet", "--regid", "puppet", "--clear-groups", "--", "/usr/bin/java", "-Xms512m", "-Xmx1g", "-Dlogappender=STDOUT", "-Djruby.lib=/usr/share/jruby/lib", "-jar", "/usr/share/puppetserver/puppetserver.jar", "--config", str(d / "conf.d"), "--bootstrap-config", str(d / "services.d")])
    line = wait_line(proc.out, "Started ServerConnector", timeout=300)
    port = line.rsplit(":", 1)[1].strip().rstrip("}")
    deadline = time.time() + 300
    while time.time() < deadline:
        r = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/status/v1/simple/ca"], capture_output=True, text=True)
        if r.stdout == "running":
            break
        time.sleep(0.5)
    return proc, f"127.0.0.1:{port}"


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "?")
    mem = next((l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")), "0")
    versions = {}
    for name, argv in [("apache", ["/usr/sbin/apache2", "-v"]), ("haproxy", ["/usr/sbin/haproxy", "-v"]), ("nginx", ["/usr/sbin/nginx", "-v"]), ("openssl", ["openssl", "version"])]:
        r = subprocess.run(argv, capture_output=True, text=True)
        versions[name] = (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else "?"
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(int(mem) / 1024 / 1024, 1), "kernel": platform.release(), "os": platform.freedesktop_os_release().get("PRETTY_NAME", "?"), "versions": versions}


def raise_fd_limit():
    """Every LB and the simulator (its children) may hold tens of thousands of sockets."""
    want = 262144
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main():
    raise_fd_limit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: every peer config starts and serves")
    parser.add_argument("--peers", nargs="+", default=PEERS, choices=PEERS)
    parser.add_argument("--scenarios", nargs="+", default=SCENARIOS, choices=SCENARIOS, help="what to run (default: all); see bench/fleet.py for the operator scenarios")
    parser.add_argument("--balance-seconds", type=int, default=120, help="balance: seconds of measured agent runs at each load, per LB")
    parser.add_argument("--balance-warmup", type=int, default=30, help="balance: seconds of runs made first and not measured (one run interval: every node has run once, as for an LB that has seen the fleet before)")
    parser.add_argument("--balance-rounds", type=int, default=1, help="balance: runs of every LB at each load, interleaved; each LB's round with the median p99 counts")
    parser.add_argument("--balancers", nargs="+", help="balance: only these, as kind:strategy (e.g. crossbar:least-latency haproxy:recommended); default all")
    parser.add_argument("--loads", nargs="+", type=float, default=[0.8, 1.1], help="balance: loads, as fractions of the compilers' capacity")
    parser.add_argument("--herd-agents", type=int, default=10000, help="herd: agents starting a run within one second")
    parser.add_argument("--rounds", type=int, default=3, help="kept-alive throughput rounds per LB, interleaved; the median counts")
    parser.add_argument("--skip-puppetserver", action="store_true", help="no storm against puppetserver's CA")
    parser.add_argument("--work", help="work directory (default /tmp/crossbar-bench-<pid>)")
    parser.add_argument("--crossbar", default=str(ROOT / "target/release/crossbar"), help="the crossbar binary (default: the release build)")
    parser.add_argument("--out", default=str(ROOT / "bench/results"), help="where results go (not in --smoke)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    import report
    if not args.smoke and not report.can_chart():
        sys.exit(f"bench: {sys.executable} has no matplotlib for the chart: run ./scripts/install-deps.sh --chart, then bench/bench.py as it is (its interpreter is /usr/bin/python3)")
    results = Bench(args).all()
    if args.smoke:
        print(json.dumps({"smoke": "ok", "scenarios": [k for k in SCENARIOS if k in results["scenarios"]], "peers": list(results["lbs"]), "storm": list(results["storm"])}))
        return
    report.write(results, Path(args.out))


if __name__ == "__main__":
    main()
