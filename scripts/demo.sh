#!/usr/bin/env bash
# crossbar's main job on one machine: installs what it needs, builds crossbar, sets up a
# Puppet CA named after the LB, starts crossbar (CA + TLS front), and runs real Puppet 7 agents
# through it: an autosigned bootstrap, a waiting agent signed by an operator, and a revocation
# that the LB enforces at the handshake. Leaves everything under $DEMO_DIR (default
# /tmp/crossbar-demo) and prints where to look.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

./scripts/install-deps.sh
cargo build --release --locked -p crossbar
crossbar="$root/target/release/crossbar"

demo=${DEMO_DIR:-/tmp/crossbar-demo}
rm -rf "$demo"
mkdir -p "$demo"
cd "$demo"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "CA named after the LB (RSA-4096, as Puppet), and the LB's own certificate"
"$crossbar" ca setup --cadir ca --ca-name puppetlb.example.com
"$crossbar" ca generate --cadir ca --certname puppetlb.example.com --dns-alt-names localhost,puppet --out tls --ca-admin

cat > crossbar.toml <<TOML
[ca]
listen = "127.0.0.1:0"
cadir = "$demo/ca"
autosign = "$demo/autosign.conf"

[lb]
listen = "127.0.0.1:0"
cert = "$demo/tls/puppetlb.example.com.pem"
key = "$demo/tls/puppetlb.example.com.key"
client_ca = "$demo/ca/ca_crt.pem"
crl = "$demo/ca/ca_crl.pem"
TOML
echo "*.autosign.example.com" > autosign.conf

step "crossbar check"
"$crossbar" check --config crossbar.toml

step "crossbar serve"
"$crossbar" serve --config crossbar.toml > serve.out 2> serve.log &
pids+=($!)
for _ in $(seq 100); do grep -q "lb listening" serve.out 2>/dev/null && break; sleep 0.1; done
cat serve.out
port=$(sed -n 's|.*lb listening on https://.*:\([0-9]*\)$|\1|p' serve.out)

agent() { # name action...
  local name=$1; shift
  puppet "$@" --server localhost --serverport "$port" --certname "$name" --waitforcert 0 \
    --confdir "agents/$name/conf" --ssldir "agents/$name/ssl" --vardir "agents/$name/var" \
    --rundir "agents/$name/run" --logdir "agents/$name/log"
}

step "agent web1.autosign.example.com bootstraps; autosign.conf signs it"
time agent web1.autosign.example.com ssl bootstrap

step "agent db1.example.com bootstraps and waits for an operator"
agent db1.example.com ssl bootstrap || echo "(waiting, as expected)"
"$crossbar" ca list --cadir ca
admin=(--server "https://localhost:$port" --cert tls/puppetlb.example.com.pem --key tls/puppetlb.example.com.key --cacert ca/ca_crt.pem)
"$crossbar" ca sign --certname db1.example.com "${admin[@]}"
agent db1.example.com ssl bootstrap

step "certificates, checked by OpenSSL against the CA and its CRL"
for name in web1.autosign.example.com db1.example.com; do
  openssl verify -crl_check -CAfile ca/ca_crt.pem -CRLfile ca/ca_crl.pem "agents/$name/ssl/certs/$name.pem"
done
"$crossbar" ca list --all "${admin[@]}"

step "revoke db1.example.com; the LB refuses its handshake once it reloads the CRL"
"$crossbar" ca revoke --certname db1.example.com --cadir ca
for _ in $(seq 100); do grep -q "crl_number=Some(1)" serve.log && break; sleep 0.1; done
if curl -s --cacert ca/ca_crt.pem --cert agents/db1.example.com/ssl/certs/db1.example.com.pem \
     --key agents/db1.example.com/ssl/private_keys/db1.example.com.pem \
     "https://localhost:$port/puppet-ca/v1/certificate/ca" >/dev/null; then
  echo "UNEXPECTED: the revoked certificate was accepted"; exit 1
else
  echo "db1.example.com refused: $(grep -o 'reason="invalid peer certificate: Revoked"' serve.log | tail -1)"
fi

step "what the backends were told (access log: certname and X-Client-Verify result)"
grep -o 'certname=[^ ]* verify=[^ ]* method=[^ ]* path=[^ ]* pool=[^ ]* member=[^ ]* status=[0-9]*' serve.log | sort | uniq -c

step "done"
echo "work dir: $demo (crossbar log: $demo/serve.log, CA: $demo/ca)"
