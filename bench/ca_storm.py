#!/usr/bin/python3
"""The bootstrap storm against each CA store, in one run on one machine: crossbar's CA on its
directory store, crossbar's CA on PostgreSQL (one node, then two nodes active/active), and
puppetserver 7's own CA, each behind the same crossbar LB, with the same RSA-4096 CA key kind
(Puppet's default) and the same load from `crossbar sim bootstrap`.

    bench/ca_storm.py [--agents 2000] [--crossbar target/release/crossbar] [--out bench/results]

Measured per store: agents/s from CSR to certificate, and CPU seconds per signed certificate of
the CA process(es) plus, for the database store, every PostgreSQL process of the cluster
(counted per process from /proc, before and after; the LB and the load generator are not
counted). Compared with the CPU of one RSA-4096 signature on one core (`crossbar sim ceiling
--key rsa-4096 --threads 1`). PostgreSQL runs with its durable defaults (fsync and
synchronous_commit on), as the directory store fsyncs each certificate.
"""
import argparse, datetime, json, os, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench import Proc, cpu_seconds, free_port, log, machine, raise_fd_limit, start_puppetserver_ca, tree, wait_line, wait_port  # noqa: E402


def pg_bin(program):
    versions = sorted(int(v.name) for v in Path("/usr/lib/postgresql").iterdir() if v.name.isdigit())
    return f"/usr/lib/postgresql/{versions[-1]}/bin/{program}"


class Postgres:
    """A PostgreSQL cluster of the benchmark's own, as the `postgres` user, durable defaults."""

    def __init__(self, work):
        self.dir = work / "pg"
        self.dir.mkdir()
        shutil.chown(self.dir, "postgres", "postgres")
        (self.dir / "pw").write_text("crossbar\n")
        shutil.chown(self.dir / "pw", "postgres", "postgres")
        as_pg = ["setpriv", "--reuid", "postgres", "--regid", "postgres", "--clear-groups", "--"]
        subprocess.run(as_pg + [pg_bin("initdb"), "-D", str(self.dir / "data"), "-U", "crossbar", "--pwfile", str(self.dir / "pw"), "-A", "scram-sha-256", "-E", "UTF8", "--locale", "C"], check=True, capture_output=True)
        (self.dir / "data" / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        self.port = free_port()
        self.proc = Proc("postgres", as_pg + [pg_bin("postgres"), "-D", str(self.dir / "data"), "-p", str(self.port), "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}"], work)
        wait_port(self.port)
        deadline = time.time() + 60
        while subprocess.run(as_pg + [pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"]).returncode != 0:
            if time.time() > deadline:
                raise RuntimeError("PostgreSQL did not start")
            time.sleep(0.1)
        self.as_pg = as_pg

    def create(self, db):
        subprocess.run(self.as_pg + [pg_bin("psql"), "-h", str(self.dir), "-p", str(self.port), "-U", "crossbar", "-d", "postgres", "-Xq", "-c", f"CREATE DATABASE {db}"], check=True)
        return f"postgresql://crossbar:crossbar@127.0.0.1:{self.port}/{db}"

    def pids(self):
        return tree(self.proc.p.pid)


class Storms:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.work or f"/tmp/crossbar-ca-storm-{os.getpid()}")
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        os.chmod(self.work, 0o755)
        self.crossbar = str(Path(args.crossbar).resolve())
        self.procs = []
        self.results = {"agents": args.agents, "stores": {}, "ceiling": {}}
        self.round = 0

    def run(self, argv, **kw):
        return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout

    def start(self, name, argv):
        proc = Proc(name, argv, self.work)
        self.procs.append(proc)
        return proc

    def lb_identity(self):
        """The LB's certificate (EC P-256) from a directory CA used only for the LB side."""
        lb_ca = self.work / "lb-ca"
        self.run([self.crossbar, "ca", "setup", "--cadir", str(lb_ca), "--ca-name", "lb.example.com", "--key", "ec-p256"])
        self.run([self.crossbar, "ca", "generate", "--cadir", str(lb_ca), "--certname", "lb.example.com", "--dns-alt-names", "localhost", "--out", str(self.work / "lb"), "--key", "ec-p256"])
        self.lb_cert, self.lb_key = self.work / "lb/lb.example.com.pem", self.work / "lb/lb.example.com.key"
        self.lb_bundle = self.work / "lb/ca_crt.pem"

    def storm(self, name, backends, groups):
        """One storm through a fresh LB to `backends`; `groups` maps a name ("ca",
        "postgres") to a function listing its processes, whose CPU counts."""
        port = free_port()
        members = ", ".join(f'{{ url = "http://{b}" }}' for b in backends)
        conf = self.work / f"lb-{name}.toml"
        # The LB's client CA is its own (agents bootstrap without a certificate; nothing is
        # verified against the CA under test).
        conf.write_text(f'[lb]\nlisten = "127.0.0.1:{port}"\ncert = "{self.lb_cert}"\nkey = "{self.lb_key}"\nclient_ca = "{self.lb_bundle}"\n[log]\nlevel = "warn"\n[lb.pools.ca]\nbalance = "round-robin"\nhealth = false\nmembers = [ {members} ]\n')
        lb = self.start(f"lb-{name}", [self.crossbar, "serve", "--config", str(conf)])
        wait_port(port)
        out = self.work / f"storm-{name}.json"
        before = {group: cpu_seconds(pids()) for group, pids in groups.items()}
        perf = None
        if os.environ.get("PERF"):
            # PERF=1: a profile of the CA processes (and PostgreSQL's) during the storm.
            # The whole machine (threads and backends appear during the storm); report by pid.
            perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-a", "-o", f"/tmp/ca-storm-{name}.perf"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            log("perf: CA pids " + " ".join(str(p) for p in groups["ca"]()))
        self.run([self.crossbar, "sim", "bootstrap", "--lb", f"127.0.0.1:{port}", "--cacert", str(self.lb_bundle), "--agents", str(self.args.agents), "--concurrency", "32", "--prefix", f"{name}-", "--json", str(out)], timeout=1800)
        by_group = {group: cpu_seconds(pids()) - before[group] for group, pids in groups.items()}
        if perf:
            perf.send_signal(2)
            perf.wait()
        cpu = sum(by_group.values())
        lb.stop()
        report = json.loads(out.read_text())
        signed = report["runs"] - report["runs_failed"]
        result = {
            "agents_per_second": signed / report["seconds"],
            "failed": report["runs_failed"],
            "seconds": report["seconds"],
            "cpu_seconds": cpu,
            "cpu_ms_per_cert": 1000 * cpu / max(signed, 1),
            "cpu_ms_per_cert_by_process": {group: 1000 * c / max(signed, 1) for group, c in by_group.items()},
            "csr_ms": report["kinds"][0]["latency_ms"],
        }
        self.results["stores"].setdefault(name, []).append(result)
        log(f"{name}: {result['agents_per_second']:.1f} agents/s, {result['cpu_ms_per_cert']:.2f} ms CPU per certificate, {result['failed']} failed")

    def ca_node(self, name, cadir, database=None):
        conf = self.work / f"{name}.toml"
        db = f'database = "{database}"\nnode_name = "{name}"\n' if database else ""
        conf.write_text(f'[ca]\nlisten = "127.0.0.1:0"\ncadir = "{cadir}"\nautosign = true\n{db}[log]\nlevel = "warn"\n')
        proc = self.start(name, [self.crossbar, "serve", "--config", str(conf)])
        return proc, wait_line(proc.out, "ca listening").rsplit("//", 1)[1]

    def directory(self):
        cadir = self.work / f"dir-ca-{self.round}"
        self.run([self.crossbar, "ca", "setup", "--cadir", str(cadir), "--ca-name", "storm.example.com"])
        proc, addr = self.ca_node(f"dir-ca-{self.round}", cadir)
        self.storm("directory", [addr], {"ca": proc.pids})
        proc.stop()

    def database(self, pg, nodes):
        tag = f"r{self.round}n{nodes}"
        url = pg.create(f"storm_{tag}")
        cadir = self.work / f"db-{tag}-ca-a"
        self.run([self.crossbar, "ca", "setup", "--cadir", str(cadir), "--ca-name", "storm.example.com", "--database", url])
        procs, addrs = [], []
        for i in range(nodes):
            node_dir = self.work / f"db-{tag}-ca-{i}"
            if i > 0:
                node_dir.mkdir()
                for f in ["ca_crt.pem", "ca_key.pem"]:
                    shutil.copy(cadir / f, node_dir / f)
            proc, addr = self.ca_node(f"db-{tag}-node{i}", cadir if i == 0 else node_dir, url)
            procs.append(proc)
            addrs.append(addr)
        ca_pids = lambda: [p for proc in procs for p in proc.pids()]  # noqa: E731
        self.storm("database" if nodes == 1 else f"database-{nodes}-nodes", addrs, {"ca": ca_pids, "postgres": pg.pids})
        for proc in procs:
            proc.stop()

    def puppetserver(self):
        proc, addr = start_puppetserver_ca(self.work, self.start)
        self.storm("puppetserver", [addr], {"ca": proc.pids})
        proc.stop()

    def ceiling(self):
        out = self.work / "ceiling.json"
        self.run([self.crossbar, "sim", "ceiling", "--key", "rsa-4096", "--threads", "1", "--duration", "5s", "--json", str(out)])
        rates = json.loads(out.read_text())
        sign = next(r for r in rates if "sign" in r["what"])
        runs = self.results["ceiling"].get("runs", []) + [sign["per_second"]]
        self.results["ceiling"] = {"what": sign["what"], "runs": runs, "per_second": max(runs), "cpu_ms": 1000 / max(runs)}

    def all(self):
        try:
            self.ceiling()
            self.lb_identity()
            pg = Postgres(self.work)
            self.procs.append(pg.proc)
            for self.round in range(self.args.rounds):
                for store in self.args.stores:
                    if store == "directory":
                        self.directory()
                    elif store == "database":
                        self.database(pg, 1)
                    elif store == "database-2-nodes":
                        self.database(pg, 2)
                    elif store == "puppetserver":
                        self.puppetserver()
            self.ceiling()
        finally:
            for proc in reversed(self.procs):
                proc.stop()
            if not self.args.work:
                shutil.rmtree(self.work, ignore_errors=True)
        self.results["machine"] = machine()
        self.results["command"] = " ".join(sys.argv)
        return self.results


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def summary(rounds):
    """The median of each figure over the rounds (rounds are interleaved across stores)."""
    pg = [r["cpu_ms_per_cert_by_process"].get("postgres") for r in rounds]
    return {
        "agents_per_second": median([r["agents_per_second"] for r in rounds]),
        "cpu_ms_per_cert": median([r["cpu_ms_per_cert"] for r in rounds]),
        "postgres_ms_per_cert": median(pg) if None not in pg else None,
        "csr_p50": median([r["csr_ms"]["p50"] for r in rounds]),
        "csr_p99": median([r["csr_ms"]["p99"] for r in rounds]),
        "failed": sum(r["failed"] for r in rounds),
        "runs": [round(r["agents_per_second"], 1) for r in rounds],
    }


def markdown(r):
    c = r["ceiling"]
    lines = [
        f"# Bootstrap storm by CA store ({datetime.date.today()})",
        "",
        f"Command: `{r['command']}`; {r['agents']} new agents (EC P-256 keys made before the clock), 32 at a time, through one crossbar LB; the CA key is RSA-4096 (Puppet's default) everywhere. Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores. Each figure is the median of the rounds (stores interleaved round by round); agents/s of every round in the last column.",
        "",
        f"One RSA-4096 signature: {c['cpu_ms']:.2f} ms of one core (`crossbar sim ceiling --key rsa-4096 --threads 1`, best of {len(c['runs'])}: {', '.join(f'{x:.0f}' for x in c['runs'])} signatures/s).",
        "",
        "| store | agents/s | vs directory | CPU per certificate (CA + PostgreSQL) | of which PostgreSQL | vs one signature | CSR p50 / p99 ms | failed | agents/s by round |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    sums = {name: summary(rounds) for name, rounds in r["stores"].items()}
    base = sums.get("directory", {}).get("agents_per_second")
    for name, s in sums.items():
        vs = f"{s['agents_per_second'] / base:.2f}×" if base else "–"
        pg = f"{s['postgres_ms_per_cert']:.2f} ms" if s["postgres_ms_per_cert"] is not None else "–"
        lines.append(f"| {name} | {s['agents_per_second']:.1f} | {vs} | {s['cpu_ms_per_cert']:.2f} ms | {pg} | {s['cpu_ms_per_cert'] / c['cpu_ms']:.2f}× | {s['csr_p50']:.0f} / {s['csr_p99']:.0f} | {s['failed']} | {', '.join(map(str, s['runs']))} |")
    return "\n".join(lines) + "\n"


def main():
    raise_fd_limit()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--stores", nargs="+", default=["directory", "database", "database-2-nodes", "puppetserver"])
    parser.add_argument("--crossbar", default=str(ROOT / "target/release/crossbar"))
    parser.add_argument("--work")
    parser.add_argument("--out", default=str(ROOT / "bench/results"))
    args = parser.parse_args()
    results = Storms(args).all()
    text = markdown(results)
    print(text)
    if args.out != "-":
        stem = Path(args.out) / f"{datetime.date.today()}-ca-storm-by-store"
        stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
        stem.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
