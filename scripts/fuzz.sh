#!/usr/bin/env bash
# Runs crossbar's cargo-fuzz targets, each for the given number of seconds (default 60), from
# corpora seeded with fuzz/seeds/. Installs cargo-fuzz first when missing. Used by the test
# command (half a minute each) and for longer runs before a release:
#   scripts/fuzz.sh 600                 # every target, ten minutes each
#   scripts/fuzz.sh 600 config          # one target
# With only a stable toolchain, RUSTC_BOOTSTRAP=1 lets cargo-fuzz use its nightly flags.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(header_policy edge_route config csr_policy certname)
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1

for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  cp -n "seeds/$target"/* "corpus/$target/" 2>/dev/null || true
done
if [ -d corpus/csr_policy ]; then
  # Each CSR seed also as DER, so both parsing paths start from a real request.
  for f in seeds/csr_policy/*.csr; do
    der="corpus/csr_policy/$(basename "$f" .csr).der"
    [ -e "$der" ] || sed '1d;$d' "$f" | base64 -d > "$der"
  done
fi

for target in "${targets[@]}"; do
  echo "fuzz: $target for ${seconds}s" >&2
  log=$(mktemp)
  if ! cargo fuzz run --release "$target" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -50 "$log" >&2
    echo "fuzz: $target failed; the input is under fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|cov:" "$log" | tail -3 >&2 || true
  rm -f "$log"
done
