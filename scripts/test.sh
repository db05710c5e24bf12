#!/usr/bin/env bash
# crossbar's test command (the one in the README, and what .ci/run calls): installs what it
# needs on a fresh Debian 12 machine, then runs formatting, lints and every test, including
# the end-to-end tests against the real Puppet 7 agent and puppetserver CLI.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
