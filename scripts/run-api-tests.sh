#!/usr/bin/env bash
# Builds the server and runs the black-box API tests (tests/api/) against it.
# Extra arguments go to pytest, e.g. `scripts/run-api-tests.sh -k settings`.
# SYNAPSEX_BIN picks another binary (e.g. build-asan/synapsex) and skips
# the build.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${SYNAPSEX_BIN:-}" ]; then
    make -j"$(nproc)" build/synapsex
    export SYNAPSEX_BIN=build/synapsex
fi
exec /usr/bin/python3 -m pytest tests/api -q -p no:cacheprovider "$@"
