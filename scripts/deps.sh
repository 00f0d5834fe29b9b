#!/usr/bin/env bash
# Installs the Debian 12 packages synapsex needs, skipping those already present.
#   scripts/deps.sh          build and run the server
#   scripts/deps.sh --test   also what the test suite needs
set -euo pipefail

pkgs=(build-essential pkg-config libmicrohttpd-dev libjansson-dev libsqlite3-dev
      libssl-dev libcurl4-openssl-dev libmimalloc-dev)
if [ "${1:-}" = "--test" ]; then
    pkgs+=(libcmocka-dev python3 python3-pytest python3-requests clang
           libclang-rt-14-dev faketime)
    # Node.js runs the official openai SDK tests. A Node.js that is already
    # installed (Debian's, or a vendor package that bundles npm) is kept.
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        pkgs+=(nodejs npm)
    fi
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
