#!/usr/bin/env bash
# Installs the Debian 12 packages crossbar's tests, demo and benchmarks use: the real Puppet 7
# agent and puppetserver 7 (the peers the e2e tests run against), debootstrap (for the Debian 13
# root with Puppet 8, scripts/puppet8-root.sh), PostgreSQL (the CA's shared store; tests run
# their own clusters), keepalived (the LB pair's address), OpenSSL (an independent checker of
# what the CA issues), Apache, HAProxy, nginx and wrk (the LBs and the load generator the
# benchmark uses), lintian and systemd-container (the package's checks: lintian, and booting
# a root with systemd-nspawn), and the tools the scripts call. `--chart` adds matplotlib for the benchmark's PNG.
# Idempotent: installed packages are skipped, so a second run costs a second.
set -euo pipefail

packages=(puppet-agent puppetserver openssl curl ca-certificates iproute2 procps util-linux
          python3 apache2 haproxy nginx debootstrap wrk postgresql keepalived lintian
          systemd-container chromium chromium-driver)
if [ "${1:-}" = --chart ]; then
  packages+=(python3-matplotlib hyperfine)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}" >&2
# Start no service while installing: apache2 and nginx would both take port 80 and nginx's
# post-install would fail. crossbar's tests and benchmarks start their own instances.
policy=/usr/sbin/policy-rc.d
created_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  created_policy=1
fi
cleanup() { if [ -n "$created_policy" ]; then $sudo rm -f "$policy"; fi; }
trap cleanup EXIT
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
for service in puppetserver puppet apache2 nginx haproxy postgresql keepalived; do
  $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true
done
