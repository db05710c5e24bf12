#!/usr/bin/env bash
# crossbar in front of two real puppetserver 7 compilers (issue 3's measurements):
#  1. added latency on a catalog request: interleaved pairs, through the LB and straight to the
#     same compiler (with the identity headers the LB would set), over kept-alive connections;
#  2. failover: two clients POST catalogs back to back through the LB; compiler1 is killed
#     (kill -9) mid-load; every answer, its latency and which compiler served it are recorded;
#  3. the LB's memory after the load.
# Usage: bench/lb-compilers.sh [pairs] [load-seconds]    Results: bench/results/<date>-lb-compilers.md
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
source scripts/lib/compiler.sh
pairs=${1:-200}
seconds=${2:-30}
./scripts/install-deps.sh
cargo build --release --locked -p crossbar
crossbar="$root/target/release/crossbar"
work=$(mktemp -d /tmp/crossbar-bench.XXXXXX)
chmod 755 "$work"   # the compilers run as the puppet user
cleanup() { kill "$(cat "$work/lb.pid" 2>/dev/null)" 2>/dev/null || true; for c in c1 c2; do kill "$(cat "$work/$c/pid" 2>/dev/null)" 2>/dev/null || true; done; }
trap cleanup EXIT
cd "$work"

compiler_start "$work/c1" compiler1.example.com
compiler_start "$work/c2" compiler2.example.com
"$crossbar" ca setup --cadir ca --ca-name puppetlb.example.com --key ec-p256 >/dev/null
"$crossbar" ca generate --cadir ca --certname puppetlb.example.com --dns-alt-names localhost --out tls --key ec-p256 >/dev/null
"$crossbar" ca generate --cadir ca --certname agent1.example.com --out tls >/dev/null
c1=$(compiler_wait "$work/c1"); c2=$(compiler_wait "$work/c2")

write_lb() { # members...
  cat > lb.toml <<TOML
[ca]
listen = "127.0.0.1:0"
cadir = "$work/ca"
[lb]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
cert = "$work/tls/puppetlb.example.com.pem"
key = "$work/tls/puppetlb.example.com.key"
client_ca = "$work/ca/ca_crt.pem"
crl = "$work/ca/ca_crl.pem"
[log]
level = "warn"
[lb.pools.compilers]
health = { interval = "1s", rise = 2, fall = 2 }
members = [ $* ]
TOML
}
write_lb "{ url = \"http://127.0.0.1:$c1\", max_in_flight = 1 }"
"$crossbar" serve --config lb.toml > lb.out 2> lb.log & echo $! > lb.pid
for _ in $(seq 100); do grep -q "admin listening" lb.out 2>/dev/null && break; sleep 0.1; done
lb=$(sed -n 's|.*lb listening on https://.*:\([0-9]*\)$|\1|p' lb.out)
admin=$(sed -n 's|.*admin listening on http://\(.*\)$|\1|p' lb.out)
export CERT=$work/tls/agent1.example.com.pem KEY=$work/tls/agent1.example.com.key CACERT=$work/ca/ca_crt.pem

echo "== 1. added latency, $pairs interleaved catalog pairs (compiler1 only)" >&2
python3 "$root/bench/lb_client.py" latency "https://localhost:$lb" "http://127.0.0.1:$c1" "$pairs" | tee latency.json

echo "== 2. failover: two clients for ${seconds}s, kill -9 compiler1 at $((seconds / 3))s" >&2
write_lb "{ url = \"http://127.0.0.1:$c1\", max_in_flight = 1 }, { url = \"http://127.0.0.1:$c2\", max_in_flight = 1 }"
kill -HUP "$(cat lb.pid)"
for _ in $(seq 50); do curl -s "http://$admin/pools" | grep -q "$c2" && break; sleep 0.1; done
python3 "$root/bench/lb_client.py" load "https://localhost:$lb" "$seconds" load-a.jsonl &
pa=$!
python3 "$root/bench/lb_client.py" load "https://localhost:$lb" "$seconds" load-b.jsonl &
pb=$!
sleep $((seconds / 3))
kill_at=$(date +%s.%N)
kill -9 "$(cat c1/pid)"
wait $pa $pb
read -r rss peak < <(awk '/VmRSS|VmHWM/ {print $2}' "/proc/$(cat lb.pid)/status" | paste -sd' ')
python3 - "$kill_at" "$rss" "$peak" load-a.jsonl load-b.jsonl <<'PY'
import json, sys
kill_at, rss, peak = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
records = [json.loads(l) for f in sys.argv[4:] for l in open(f)]
after = [r for r in records if r["t"] + r["s"] >= kill_at]
spanning = [r for r in records if r["t"] <= kill_at <= r["t"] + r["s"]]
by_c1_after = [r for r in records if r["by"].startswith("compiler1") and r["t"] > kill_at]
def summary(rs):
    return {s: sum(1 for r in rs if r["status"] == s) for s in sorted({r["status"] for r in rs})}
first_ok_after = min((r["t"] + r["s"] for r in records if r["t"] > kill_at and r["status"] == 200), default=None)
print(json.dumps({
    "requests": len(records),
    "statuses": summary(records),
    "in_flight_at_the_kill": [{"status": r["status"], "retry_after": r.get("retry_after"), "latency_s": r["s"], "by": r["by"]} for r in spanning],
    "answered_by_compiler1_after_the_kill": len(by_c1_after),
    "first_success_after_the_kill_s": None if first_ok_after is None else round(first_ok_after - kill_at, 3),
    "max_latency_after_the_kill_s": max((r["s"] for r in after), default=None),
    "median_latency_s": sorted(r["s"] for r in records)[len(records) // 2],
    "lb_rss_kib": rss, "lb_peak_rss_kib": peak,
}, indent=1))
PY
grep -c "member ejected" lb.log | sed 's/^/ejections logged: /' >&2
