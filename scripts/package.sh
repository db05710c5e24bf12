#!/usr/bin/env bash
# Builds crossbar's Debian package (target/debian/crossbar_<version>_<arch>.deb): the release
# binary, its man pages and shell completions generated from the clap definition (so they
# never drift from --help), then cargo-deb; lintian must find no error. Prints the path.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "package: installing cargo-deb" >&2
  cargo install cargo-deb --locked --version 3.8.0 --quiet
fi
cargo build --release --locked -p crossbar >&2
rm -rf target/release/assets
target/release/crossbar docs --out target/release/assets >&2
gzip -9n target/release/assets/man/*.1
deb=$(cargo deb -p crossbar --no-build --locked --strip | tail -1)
if command -v lintian >/dev/null 2>&1; then
  lintian --fail-on error --suppress-tags-from-file packaging/lintian-ignored "$deb" >&2
fi
echo "$deb"
