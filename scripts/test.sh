#!/usr/bin/env bash
# crossbar's test command (the one in the README, and what .ci/run calls): installs what it
# needs on a fresh Debian 12 machine, then runs formatting, lints, every test (including the
# end-to-end tests against the real Puppet 7 and Puppet 8 agents, puppetserver compilers and
# `puppetserver ca` CLIs, real PostgreSQL, the multi-host topology with keepalived, the Debian
# package installed and booted with systemd), a smoke run of the benchmark (every peer config
# starts and serves; no timing), and half a minute of each fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
# Puppet 8 (agent 8.10, puppetserver 8.7, CLI 2.7) from a Debian 13 root, made once and cached.
./scripts/puppet8-root.sh >/dev/null
# A pristine Debian 12 root the package is installed into (made once, copied per test).
./scripts/debian12-root.sh >/dev/null

export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p lb --features fuzzing --locked -- -D warnings
# The Debian package (release build, man pages, completions, lintian): the e2e tests install it.
./scripts/package.sh >/dev/null
cargo test --workspace --locked
python3 bench/bench.py --smoke --crossbar target/release/crossbar
# The fuzz targets (parsers of untrusted input), half a minute each (scripts/fuzz.sh 600 for
# the long runs recorded in fuzz/README.md).
./scripts/fuzz.sh 30
