#!/usr/bin/python3
"""Writes a benchmark's results: <date>.md (tables, machine, commands), <date>.json, <date>.png.
Run alone on a results JSON file, writes its .md and .png again."""
import datetime, json
from pathlib import Path

import report_fleet

PEERS = ["crossbar", "apache", "haproxy", "nginx"]


def rows(results):
    """(label, unit, higher_is_better, {lb: value}) for each comparison line."""
    direct = results["direct"]["kinds"][0]["latency_ms"] if results.get("direct") else {"p50": 0, "p99": 0}
    lbs = results["lbs"]

    def each(get):
        out = {}
        for lb, r in lbs.items():
            try:
                out[lb] = get(r)
            except (KeyError, IndexError, TypeError):
                pass
        return out

    return [
        ("kept-alive requests/s (32 connections)", "req/s", True, each(lambda r: r["throughput"]["requests_per_second"])),
        ("p50 latency added over the stub directly", "ms", False, each(lambda r: r["throughput"]["kinds"][0]["latency_ms"]["p50"] - direct["p50"])),
        ("p99 latency added over the stub directly", "ms", False, each(lambda r: r["throughput"]["kinds"][0]["latency_ms"]["p99"] - direct["p99"])),
        ("new TLS handshakes/s, client certs, LB key RSA-4096", "hs/s", True, each(lambda r: r["handshakes_rsa"]["handshakes_per_second"])),
        ("new TLS handshakes/s, client certs, LB key EC P-256", "hs/s", True, each(lambda r: r["handshakes_ec"]["handshakes_per_second"])),
        ("CPU seconds per 10,000 requests", "CPU s", False, each(lambda r: r["throughput"]["cpu_seconds_per_10k"])),
        ("memory holding 10,000 idle kept-alive agents (PSS)", "MiB", False, each(lambda r: r["idle"]["pss_kib"] / 1024)),
    ]


def ratio(values, higher):
    """crossbar against the best peer, as 'better by' factor (>1 means crossbar is better)."""
    if "crossbar" not in values:
        return None
    peers = [v for k, v in values.items() if k != "crossbar"]
    if not peers:
        return None
    ours = values["crossbar"]
    if higher:
        best = max(peers)
        return ours / best if best else None
    best = min(peers)
    return best / ours if ours > 0 else None


def ceiling_of(results, what, key):
    for rate in results["ceiling"].get(key, []):
        if what in rate["what"]:
            return rate["per_second"]
    return None


def fmt(v):
    if v is None:
        return "–"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}"


def markdown(results, date, png):
    m = results["machine"]
    out = [f"# crossbar against Apache, HAProxy and nginx — {date}\n"]
    out.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, Linux {m['kernel']}.  ")
    out.append("Peers: " + "; ".join(f"{k}: `{v}`" for k, v in m["versions"].items()) + ".\n")
    out.append("Scenarios in this run: " + ", ".join(f"`{s}`" for s in results.get("scenarios", ["proxy", "storm"])) + ".\n")
    out.extend(report_fleet.markdown(results))
    if results.get("lbs"):
        out.extend(proxy_markdown(results))
    out.extend(storm_markdown(results))
    return finish_markdown(results, out, png)


def proxy_markdown(results):
    out = []
    out.append("Same machine, same run, same certificates (CA RSA-4096; LB keys RSA-4096 and EC P-256; agents EC P-256), "
               "same two stub compilers (a test double: canned bodies, no compile) and a crossbar CA behind every LB, same load from `crossbar sim`. "
               "Every LB: TLS 1.2/1.3, optional client certificate verified against the CA bundle and CRL, CA routes to the CA, the rest to the stubs, "
               "`X-Client-Verify`/`-DN`/`-Cert` set from the session, access logs off, 2 workers/threads. Configs: `bench/peers/`.\n")
    out.append("## Load balancers\n")
    out.append("The last column is crossbar's figure against the best peer's, as a factor in crossbar's favour (> 1: crossbar is better; < 1: a peer is better).\n")
    out.append("| measure | unit | crossbar | apache | haproxy | nginx | crossbar vs best peer |")
    out.append("|---|---|---|---|---|---|---|")
    for label, unit, higher, values in rows(results):
        r = ratio(values, higher)
        out.append(f"| {label} | {unit} | " + " | ".join(fmt(values.get(p)) for p in PEERS) + f" | {'–' if r is None else f'{r:.2f}×'} |")
    for key, label in [("rsa-4096", "RSA-4096"), ("ec-p256", "EC P-256")]:
        ceiling = ceiling_of(results, "handshakes", key)
        ours = results["lbs"].get("crossbar", {}).get(f"handshakes_{key.split('-')[0]}", {}).get("handshakes_per_second")
        if ceiling and ours:
            out.append(f"\nHandshake ceiling, LB key {label} (full TLS 1.3 handshakes with a client certificate, both sides in memory, 2 threads): "
                       f"{ceiling:,.0f}/s; crossbar over sockets reaches {100 * ours / ceiling:.0f}% of it.")
    direct = results.get("direct")
    if direct:
        k = direct["kinds"][0]
        out.append(f"\nThe stub directly (plain HTTP, same load): {direct['requests_per_second']:,.0f} req/s, p50 {k['latency_ms']['p50']:.2f} ms, p99 {k['latency_ms']['p99']:.2f} ms.")
    rounds = {lb: [run["requests_per_second"] for run in r.get("throughput_runs", [])] for lb, r in results["lbs"].items()}
    if any(len(v) > 1 for v in rounds.values()):
        out.append("\nKept-alive requests/s of every round (LBs taken in turn; the table gives the median): "
                   + "; ".join(f"{lb} " + " / ".join(f"{x:,.0f}" for x in v) for lb, v in rounds.items()) + ".")
    held = {lb: r.get("idle", {}).get("held") for lb, r in results["lbs"].items()}
    out.append(f"\nIdle agents actually held open: " + ", ".join(f"{lb} {n}" for lb, n in held.items()) + ".\n")
    return out


def storm_markdown(results):
    out = []
    storm = results.get("storm", {})
    if storm:
        out.append("## Bootstrap storm\n")
        out.append("New agents from CSR to signed certificate through crossbar's LB (EC P-256 key), 32 at a time, keys and CSRs made before the clock; the CA behind it autosigns with an RSA-4096 key.\n")
        out.append("| CA | agents | agents/s | failed | CSR p50 / p99 ms | certificate fetch p50 ms |\n|---|---|---|---|---|---|")
        for ca, r in storm.items():
            kinds = {k["kind"]: k["latency_ms"] for k in r["kinds"]}
            csr, cert = kinds.get("csr", {}), kinds.get("cert", {})
            out.append(f"| {ca} | {r['runs']} | {r['bootstraps_per_second']:,.1f} | {r['runs_failed']} | {csr.get('p50', 0):.1f} / {csr.get('p99', 0):.1f} | {cert.get('p50', 0):.1f} |")
        sign = ceiling_of(results, "certificates issued", "rsa-4096")
        if "crossbar" in storm and "puppetserver" in storm and storm["puppetserver"]["bootstraps_per_second"]:
            out.append(f"\ncrossbar's CA: {storm['crossbar']['bootstraps_per_second'] / storm['puppetserver']['bootstraps_per_second']:.1f}× puppetserver's.")
        if "crossbar" in storm and sign:
            out.append(f" Signing ceiling (RSA-4096 certificates issued in memory, 2 threads): {sign:,.0f}/s; the storm reaches {100 * storm['crossbar']['bootstraps_per_second'] / sign:.0f}% of it.\n")
    return out


def finish_markdown(results, out, png):
    out.append("## Ceilings (this machine)\n")
    out.append("Measured at the start and at the end of the run; the higher counts.\n")
    out.append("| what | per second | runs |\n|---|---|---|")
    for key, rates in results["ceiling"].items():
        for rate in rates:
            runs = " / ".join(f"{r:,.0f}" for r in rate.get("runs", [rate["per_second"]]))
            out.append(f"| {key}: {rate['what']} ({rate['threads']} thread{'s' if rate['threads'] > 1 else ''}) | {rate['per_second']:,.0f} | {runs} |")
    if png:
        out.append(f"\n![chart]({png})\n")
    out.append("## Commands\n")
    out.append("```\n" + "\n".join(results["commands"]) + "\n```\n")
    out.append("Raw data: the JSON file of the same name.")
    return "\n".join(out) + "\n"


def chart(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    lines = rows(results) if results.get("lbs") else []
    extra = report_fleet.panels(results)
    cols = 4
    grid = max(1, (len(lines) + len(extra) + cols - 1) // cols)
    fig, axes = plt.subplots(grid, cols, figsize=(4 * cols, 4 * grid), squeeze=False)
    axes = axes.flatten()
    for ax in axes[len(lines) + len(extra):]:
        ax.axis("off")
    for ax, (title, draw) in zip(axes[len(lines):], extra):
        draw(ax)
        ax.set_title(title, fontsize=8)
    for ax, (label, unit, higher, values) in zip(axes, lines):
        names = [p for p in PEERS if p in values]
        bars = ax.bar(names, [values[n] for n in names], color=["#d62728" if n == "crossbar" else "#7f7f7f" for n in names])
        ax.set_title(label + ("\n(higher is better)" if higher else "\n(lower is better)"), fontsize=8)
        ax.set_ylabel(unit)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.bar_label(bars, fmt="%.0f" if max(values.values(), default=0) >= 100 else "%.2f", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def can_chart():
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def free_stem(out_dir, date):
    """<date>, or <date>-2, -3…: a second run on the same day does not overwrite the first."""
    stem, n = out_dir / date, 1
    while stem.with_suffix(".json").exists():
        n += 1
        stem = out_dir / f"{date}-{n}"
    return stem


def render(results, stem):
    """<stem>.md and <stem>.png from the results."""
    png = Path(f"{stem}.png")
    has_png = chart(results, png)
    Path(f"{stem}.md").write_text(markdown(results, stem.name, png.name if has_png else None))
    print(f"{stem}.md" + ("" if has_png else " (no chart: matplotlib is missing)"))


def write(results, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = free_stem(out_dir, datetime.date.today().isoformat())
    Path(f"{stem}.json").write_text(json.dumps(results, indent=1))
    render(results, stem)


if __name__ == "__main__":
    # bench/report.py results/<run>.json: writes <run>.md and <run>.png again from the data.
    import sys
    for arg in sys.argv[1:]:
        path = Path(arg)
        render(json.loads(path.read_text()), path.with_suffix(""))
