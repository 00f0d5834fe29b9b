#!/usr/bin/env bash
# Sets up and runs every synapsex test: unit tests (cmocka), black-box API tests
# (pytest against a real server), the same again under ASan+UBSan, and each
# libFuzzer target for a bounded time. Fixtures come from ../shared/fixtures
# (override with SYNAPSEX_FIXTURES); tests that need them skip when absent.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
jobs=$(nproc)
failed=0

step() { printf '\n=== %s\n' "$*"; }

step "dependencies"
scripts/deps.sh --test

step "build"
make -j"$jobs" all

step "unit tests"
make check || failed=1

step "API tests"
SYNAPSEX_BIN="$PWD/build/synapsex" /usr/bin/python3 -m pytest tests/api -q -p no:cacheprovider \
    || failed=1

step "ASan+UBSan build and tests"
make -j"$jobs" asan
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
make BUILD=build-asan OPT=-O1 \
    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
    check || failed=1
SYNAPSEX_BIN="$PWD/build-asan/synapsex" /usr/bin/python3 -m pytest tests/api -q \
    -p no:cacheprovider || failed=1

step "fuzzing (${FUZZ_SECONDS}s per target)"
make -j"$jobs" fuzz
mkdir -p build-fuzz/corpus
for f in build-fuzz/fuzz_*; do
    [ -x "$f" ] || continue
    name=$(basename "$f")
    mkdir -p "build-fuzz/corpus/$name"
    echo "-- $name"
    "$f" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -max_len=65536 \
        "build-fuzz/corpus/$name" 2>&1 | tail -n 3 || failed=1
done

step "result"
if [ "$failed" -ne 0 ]; then
    echo "FAILED: see the output above"
    exit 1
fi
echo "all test stages passed"
