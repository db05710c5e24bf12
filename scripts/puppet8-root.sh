#!/usr/bin/env bash
# Makes, once, a Debian 13 ("trixie") root holding Puppet 8: puppet-agent 8.10, puppetserver
# 8.7 and its `puppetserver ca` CLI 2.7 (Debian 12 has only Puppet 7). Later runs reuse it.
# Prints the root's path; /proc is mounted in it (the JVM and facter need it). The tests run
# Puppet 8 with `chroot ROOT …`, every path inside the root; a chroot shares the host's
# network, so everything still talks over 127.0.0.1.
#   CROSSBAR_PUPPET8_ROOT   where the root lives (default /var/cache/crossbar/trixie-puppet8)
set -euo pipefail

root=${CROSSBAR_PUPPET8_ROOT:-/var/cache/crossbar/trixie-puppet8}
ready="$root/.crossbar-ready"
packages="puppet-agent puppetserver openssl curl ca-certificates procps"

if [ ! -e "$ready" ]; then
  command -v debootstrap >/dev/null || { echo "puppet8-root: debootstrap is not installed" >&2; exit 1; }
  building="$root.building"
  if mountpoint -q "$building/proc" 2>/dev/null; then umount "$building/proc"; fi
  rm -rf "$building"
  mkdir -p "$(dirname "$root")"
  echo "puppet8-root: making a Debian 13 root with Puppet 8 in $root (a few minutes, once)" >&2
  debootstrap --variant=minbase trixie "$building" http://deb.debian.org/debian >&2
  # No service starts inside the root: the tests start puppetserver themselves.
  printf '#!/bin/sh\nexit 101\n' > "$building/usr/sbin/policy-rc.d"
  chmod +x "$building/usr/sbin/policy-rc.d"
  mount -t proc proc "$building/proc"
  trap 'umount "$building/proc" 2>/dev/null || true' EXIT
  cp /etc/hosts "$building/etc/hosts"
  chroot "$building" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  chroot "$building" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends $packages >&2
  chroot "$building" apt-get clean
  umount "$building/proc"
  trap - EXIT
  touch "$building/.crossbar-ready"
  rm -rf "$root"
  mv "$building" "$root"
fi
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
cp /etc/hosts "$root/etc/hosts"
echo "$root"
