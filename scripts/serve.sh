#!/usr/bin/env bash
# Sets up and starts synapsex on its embedded defaults: SQLite under ./data,
# listening on 127.0.0.1:8080. Extra arguments go to `synapsex serve`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
make -j"$(nproc)" build/synapsex
exec build/synapsex serve "$@"
