#!/usr/bin/env bash
# Metering benchmark: requests/s of a cheap request through synapsex's HTTP
# server with metering off and on (GCRA, token quota, durable usage ledger:
# its journal, committed to the store behind), in one process and one run; prints both medians and
# the ratio. Run from anywhere: bench/metering/run.sh [options]
#
#   --seconds S   length of each measured round (2)
#   --rounds N    rounds; each measures off then on (5)
#   --clients C   concurrent keep-alive clients (16)
#   --threads T   HTTP worker threads (8)
#   --sync M      the ledger's durability: full (default) or normal
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

make -j2 build/libsxgateway.a build/libsxengine.a >/dev/null
pkgs="libmicrohttpd jansson sqlite3 openssl libcurl"
mkdir -p build/bench
# shellcheck disable=SC2046
cc -std=c17 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -Isrc -pthread \
    $(pkg-config --cflags $pkgs) bench/metering/bench_meter.c \
    build/libsxgateway.a build/libsxengine.a \
    $(pkg-config --libs $pkgs) -lm -pthread -o build/bench/bench_meter
exec build/bench/bench_meter "$@"
