#!/usr/bin/env bash
# Makes, once, a pristine Debian 12 ("bookworm") root where crossbar's package is installed in
# the tests: what a fresh machine has (systemd, man-db), nothing of crossbar. Later runs reuse
# it; the tests copy it before every install, so each install starts from a fresh root.
# Prints the root's path.
#   CROSSBAR_DEBIAN12_ROOT   where the root lives (default /var/cache/crossbar/bookworm-base)
set -euo pipefail

root=${CROSSBAR_DEBIAN12_ROOT:-/var/cache/crossbar/bookworm-base}
ready="$root/.crossbar-ready"
# What a freshly installed Debian 12 machine has that a minimal root lacks and crossbar uses.
packages="systemd man-db ca-certificates procps"

if [ "$(cat "$ready" 2>/dev/null)" != "$packages" ]; then
  command -v debootstrap >/dev/null || { echo "debian12-root: debootstrap is not installed" >&2; exit 1; }
  building="$root.building"
  rm -rf "$building"
  mkdir -p "$(dirname "$root")"
  echo "debian12-root: making a Debian 12 root in $root (a few minutes, once)" >&2
  debootstrap --variant=minbase --include="${packages// /,}" bookworm "$building" \
    http://deb.debian.org/debian >&2
  # Nothing starts inside the root; dpkg's maintainer scripts run as on a machine without a
  # running systemd (as in a container build).
  printf '#!/bin/sh\nexit 101\n' > "$building/usr/sbin/policy-rc.d"
  chmod +x "$building/usr/sbin/policy-rc.d"
  chroot "$building" apt-get clean
  echo "$packages" > "$building/.crossbar-ready"
  rm -rf "$root"
  mv "$building" "$root"
fi
echo "$root"
