#!/usr/bin/env bash
# crossbar's test command (the one in the README, and what .ci/run calls): installs what it
# needs on a fresh Debian 12 machine, then runs formatting, lints, every test (including the
# end-to-end tests against the real Puppet 7 and Puppet 8 agents, puppetserver compilers and
# `puppetserver ca` CLIs), a smoke run of the benchmark (every peer config starts and serves; no timing), and a
# minute of each fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
# Puppet 8 (agent 8.10, puppetserver 8.7, CLI 2.7) from a Debian 13 root, made once and cached.
./scripts/puppet8-root.sh >/dev/null

export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p lb --features fuzzing --locked -- -D warnings
cargo test --workspace --locked
cargo build --locked -p crossbar
python3 bench/bench.py --smoke --crossbar target/debug/crossbar
# The fuzz targets (parsers of untrusted input), a minute each.
./scripts/fuzz.sh 60
