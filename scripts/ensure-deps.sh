#!/usr/bin/env bash
# Installs the C libraries droptrace links against, when any is missing:
# HDF5 (libhdf5-dev), zlib (zlib1g-dev), OpenBLAS (libopenblas-dev), oneDNN (libdnnl-dev) and ICU (libicu-dev).
# Non-interactive; uses sudo when not run as root.
set -euo pipefail

packages=(libhdf5-dev zlib1g-dev libopenblas-dev libdnnl-dev libicu-dev)
# --tests: also OpenBLAS's sequential build (libopenblas0-serial), which the tests run droptrace on
# (installing it leaves the threaded build the one programs load).
if [ "${1:-}" = "--tests" ]; then packages+=(libopenblas0-serial); fi
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
    echo "droptrace needs ${missing[*]} (Debian/Ubuntu package names); install them with your package manager" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
echo "installing ${missing[*]}" >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
