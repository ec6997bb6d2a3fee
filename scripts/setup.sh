#!/usr/bin/env bash
# Installs what awq needs on a fresh Debian machine, only when missing (idempotent).
set -euo pipefail
pkgs=(cmake g++ make libeigen3-dev doctest-dev libbenchmark-dev nlohmann-json3-dev doxygen python3 python3-pip clang libclang-rt-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "awq setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
