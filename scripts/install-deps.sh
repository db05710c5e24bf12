#!/usr/bin/env bash
# Installs the Debian 12 packages crossbar's tests and demo use: the real Puppet 7 agent and
# puppetserver 7 (the peers the e2e tests run against), OpenSSL (an independent checker of
# what the CA issues), and the tools the scripts call. Idempotent: installed packages are
# skipped, so a second run costs a second.
set -euo pipefail

packages=(puppet-agent puppetserver openssl curl ca-certificates iproute2 procps)

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
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
# Debian's packages may start services where an init system runs; crossbar's tests and demo
# start their own instances on ports the kernel picks, so none is needed.
for service in puppetserver puppet; do
  $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true
done
