#!/usr/bin/env bash
# crossbar's main job: the seed's topology with real Puppet pieces, every role on a host of its
# own (Linux network namespaces on a private bridge; needs root):
#
#   client (real Puppet 7 agents)
#      │ VIP 10.77.0.50 (keepalived, examples/seed-topology/keepalived.conf)
#   lb1, lb2: crossbar [lb] ──HTTP──> ca1, ca2: crossbar [ca], active/active ──> db (PostgreSQL)
#                       │                                                   └─> db2 (replica)
#                       └──HTTP──> compiler1, compiler2: real puppetserver 7 (Debian)
#
# Installs what it needs, builds crossbar, brings the hosts up, bootstraps real agents through
# the VIP, then makes every single machine fail in turn while agents run (each LB killed, cut
# off and frozen; a compiler, a CA node and the database primary cut off, the replica promoted),
# printing which compiler served each run and what each failure cost, and a revocation made on
# ca1 refused by both LBs. With a terminal it waits for Enter before tearing down.
#
# Without root (no network namespaces) it says so and runs the one-host topology instead:
#
#   agents ──TLS──> crossbar LB ──HTTP──> crossbar CA primary ┐ one CA directory
#                        │            └─> crossbar CA standby ┘ (hot standby, status=+H)
#                        └──HTTP──> puppetserver compiler1, compiler2 (real, Debian 7.9)
#
# (DEMO_ONE_HOST=1 chooses it.) Everything of the one-host run lives in $DEMO_DIR (default
# /tmp/crossbar-demo).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
source scripts/lib/compiler.sh

./scripts/install-deps.sh
cargo build --release --locked -p crossbar
crossbar="$root/target/release/crossbar"

probe="xbdemo$$"
if [ "${DEMO_ONE_HOST:-}" != 1 ] && ip netns add "$probe" 2>/dev/null; then
  ip netns del "$probe"
  cargo build --release --locked -p testkit --bin crossbar-site
  wait_flag=()
  if [ -t 0 ]; then wait_flag=(--wait); fi
  exec "$root/target/release/crossbar-site" --crossbar "$crossbar" "${wait_flag[@]}"
fi
echo "demo: network namespaces cannot be made here (they need root): running the one-host topology" >&2

demo=${DEMO_DIR:-/tmp/crossbar-demo}
rm -rf "$demo"; mkdir -p "$demo"; cd "$demo"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for c in compiler1 compiler2; do [ -f "$c/pid" ] && kill "$(cat "$c/pid")" 2>/dev/null || true; done
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
wait_line() { for _ in $(seq 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timed out waiting for '$2' in $1" >&2; return 1; }
port_of() { sed -n "s|.*$2 listening on [a-z]*://.*:\([0-9]*\)$|\1|p" "$1"; }

step "starting two real puppetserver compilers (about a minute on 2 cores)"
compiler_start "$demo/compiler1" compiler1.example.com
compiler_start "$demo/compiler2" compiler2.example.com

step "the CA, named after the LB as in the seed, and the LB's certificate"
"$crossbar" ca setup --cadir ca --ca-name puppetlb.example.com
"$crossbar" ca generate --cadir ca --certname puppetlb.example.com --dns-alt-names localhost,puppet --out tls --ca-admin

step "CA primary and hot standby: two crossbar processes on one CA directory"
# The secret the LB proves itself with: the CAs believe X-Client-* headers only with it.
(umask 077; openssl rand -hex 32 > proxy-secret)
for role in primary standby; do
  cat > "ca-$role.toml" <<TOML
[ca]
listen = "127.0.0.1:0"
cadir = "$demo/ca"
autosign = "$demo/autosign.conf"
proxy_secret_file = "$demo/proxy-secret"
TOML
  "$crossbar" serve --config "ca-$role.toml" > "ca-$role.out" 2> "ca-$role.log" & pids+=($!)
  echo "ca_$role=$!" >> pids
  disown
done
echo '*.example.com' > autosign.conf
wait_line ca-primary.out "ca listening"; wait_line ca-standby.out "ca listening"
ca1=$(port_of ca-primary.out ca); ca2=$(port_of ca-standby.out ca)

c1=$(compiler_wait "$demo/compiler1"); c2=$(compiler_wait "$demo/compiler2")
echo "compiler1 on 127.0.0.1:$c1, compiler2 on 127.0.0.1:$c2"

step "the LB: routes, pools, health checks, CRL pulled from the CA pool"
cat > lb.toml <<TOML
[lb]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
cert = "$demo/tls/puppetlb.example.com.pem"
key = "$demo/tls/puppetlb.example.com.key"
client_ca = "$demo/ca/ca_crt.pem"
crl = { pool = "ca", refresh = "2s", cache = "$demo/lb-crl.pem" }

[lb.pools.ca]
proxy_secret_file = "$demo/proxy-secret"
members = [ { url = "http://127.0.0.1:$ca1" }, { url = "http://127.0.0.1:$ca2", standby = true } ]

[lb.pools.compilers]
balance = "least-requests"
health = { interval = "1s", rise = 2, fall = 2 }
members = [ { url = "http://127.0.0.1:$c1", max_in_flight = 1 }, { url = "http://127.0.0.1:$c2", max_in_flight = 1 } ]
TOML
"$crossbar" check --config lb.toml
"$crossbar" serve --config lb.toml > lb.out 2> lb.log & pids+=($!)
disown
wait_line lb.out "admin listening"
lb=$(port_of lb.out lb); admin=$(port_of lb.out admin)

run_agent() { # name -> prints "name compiler exit"
  local name=$1 out code
  set +e
  out=$(puppet agent -t --color false --server localhost --serverport "$lb" --certname "$name" --waitforcert 0 \
        --confdir "agents/$name/conf" --ssldir "agents/$name/ssl" --vardir "agents/$name/var" \
        --rundir "agents/$name/run" --logdir "agents/$name/log" 2>&1)
  code=$?
  set -e
  echo "$out" > "agents/$name.last-run.log"
  printf '%-24s %-24s exit %s\n' "$name" "$(echo "$out" | grep -o 'compiled by [a-z0-9.]*' | head -1 | cut -d' ' -f3)" "$code"
}
mkdir -p agents/web1.example.com/conf
printf 'extension_requests:\n  pp_role: web\n' > agents/web1.example.com/conf/csr_attributes.yaml

step "four real agents: bootstrap (autosigned) and a first run each"
printf '%-24s %-24s %s\n' AGENT "COMPILED BY" RESULT
for a in web1 web2 db1 db2; do run_agent "$a.example.com"; done
grep -h "pp_role web" agents/web1.example.com.last-run.log | head -1 | sed 's/^/web1 trusted fact: /'

step "kill -9 compiler1 while agents run: no run fails"
( sleep 3; kill -9 "$(cat compiler1/pid)"; echo "   (compiler1 killed)" ) &
killer=$!
for a in web1 web2 db1 db2 web1 web2; do run_agent "$a.example.com"; done
wait "$killer"

step "the CA primary dies: a new agent still gets its certificate from the standby"
kill -9 "$(grep ca_primary pids | cut -d= -f2)"
run_agent new1.example.com

step "revoke db2: the LB pulls the CRL and refuses db2, the others pass"
"$crossbar" ca revoke --certname db2.example.com --cadir ca
for _ in $(seq 100); do grep -q "installed a new CRL" lb.log && [ "$(grep -c 'installed a new CRL' lb.log)" -ge 2 ] && break; sleep 0.1; done
run_agent db2.example.com || true
run_agent db1.example.com

step "what the backends were told (from the access log)"
grep -o 'certname=[^ ]* verify=[^ ]*' lb.log | sort | uniq -c
grep -o 'reason="invalid peer certificate: Revoked"' lb.log | sort | uniq -c | sed 's/^/handshakes refused: /'

step "admin endpoint: http://127.0.0.1:$admin  (the admin page at /; /healthz, /metrics, /pools)"
curl -s "http://127.0.0.1:$admin/healthz" || true
curl -s "http://127.0.0.1:$admin/pools" | python3 -c '
import json, sys
for pool in json.load(sys.stdin):
    for m in pool["members"]:
        print("%-10s %-28s healthy=%-5s standby=%-5s requests=%-4d ejections=%d"
              % (pool["name"], m["url"], m["healthy"], m["standby"], m["requests"], m["ejections"]))'
curl -s "http://127.0.0.1:$admin/metrics" | grep -E '^crossbar_(tls_handshake_failures_total\{reason="revoked"\}|crl_number|requests_total.*2xx)'

step "done: logs in $demo (lb.log, ca-*.log, compiler*/stdout.log, agents/*.last-run.log)"
if [ -t 0 ]; then read -r -p "The topology is up (LB https://localhost:$lb). Press Enter to stop it. " _; fi
