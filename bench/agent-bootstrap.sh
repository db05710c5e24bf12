#!/usr/bin/env bash
# Times a real Puppet 7 agent's `puppet ssl bootstrap` through crossbar (CA + TLS front in one
# process, CA key RSA-4096, autosign on): once with the agent generating its RSA-4096 key (what
# a new node does), once with a key made beforehand (what crossbar itself costs).
# Usage: bench/agent-bootstrap.sh [runs]   (needs hyperfine and puppet-agent)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
command -v hyperfine >/dev/null || { echo "install hyperfine (apt-get install hyperfine)" >&2; exit 1; }
cargo build --release --locked -p crossbar
bin=$PWD/target/release/crossbar
work=$(mktemp -d)
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
"$bin" ca setup --cadir ca --ca-name puppetlb.example.com --key rsa-4096 >/dev/null
"$bin" ca generate --cadir ca --certname puppetlb.example.com --dns-alt-names localhost --out tls >/dev/null
cat > c.toml <<TOML
[ca]
listen = "127.0.0.1:0"
cadir = "$work/ca"
autosign = true
allow_duplicate_certs = true
[lb]
listen = "127.0.0.1:0"
cert = "$work/tls/puppetlb.example.com.pem"
key = "$work/tls/puppetlb.example.com.key"
client_ca = "$work/ca/ca_crt.pem"
crl = "$work/ca/ca_crl.pem"
[log]
level = "warn"
TOML
"$bin" serve --config c.toml > out 2> err & echo $! > pid
for _ in $(seq 100); do grep -q "lb listening" out 2>/dev/null && break; sleep 0.1; done
port=$(sed -n 's|.*lb listening on https://.*:\([0-9]*\)$|\1|p' out)
agent="puppet ssl bootstrap --server localhost --serverport $port --certname bench.example.com --waitforcert 0 --confdir $work/a/conf --ssldir $work/a/ssl --vardir $work/a/var --rundir $work/a/run --logdir $work/a/log"
# A key made once, for the second measurement.
$agent >/dev/null 2>&1
cp "$work/a/ssl/private_keys/bench.example.com.pem" "$work/key.pem"
hyperfine --runs "$runs" --export-json "$work/keygen.json" \
  --prepare "rm -rf $work/a" -n "bootstrap, agent makes its RSA-4096 key" "$agent"
hyperfine --runs "$runs" --export-json "$work/prekey.json" \
  --prepare "rm -rf $work/a && mkdir -p $work/a/ssl/private_keys && cp $work/key.pem $work/a/ssl/private_keys/bench.example.com.pem" \
  -n "bootstrap, key made beforehand" "$agent"
hyperfine --runs "$runs" -n "puppet --version (Ruby start-up alone)" "puppet --version"
