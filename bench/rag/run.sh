#!/usr/bin/env bash
# RAG retrieval benchmark: builds bench/rag/scifact.c against the gateway
# library and runs it (see the top of scifact.c). Prints JSON lines:
# nDCG@10 / recall@100 on SciFact, then p50/p95/p99 retrieval latency with
# the tenant grown to --chunks chunks. Run from anywhere:
#   bench/rag/run.sh [--chunks 100000] [--max-tokens 256] [--overlap 48]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
make -s build/libsxgateway.a build/libsxengine.a
mkdir -p build/bench
cc -std=c17 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -Isrc -pthread bench/rag/scifact.c \
    build/libsxgateway.a build/libsxengine.a -o build/bench/rag_scifact \
    $(pkg-config --libs libmicrohttpd jansson sqlite3 openssl libcurl) -lm
data=$(mktemp -d /tmp/sx-rag-bench-XXXXXX)
trap 'rm -rf "$data"' EXIT
SYNAPSEX_FIXTURES=${SYNAPSEX_FIXTURES:-$root/../shared/fixtures} \
    build/bench/rag_scifact --data "$data" "$@"
