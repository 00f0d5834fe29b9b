#!/usr/bin/env bash
# Gateway benchmark: the latency synapsex adds in front of an upstream, and
# its throughput, with governance on (key auth, tenant settings, rate limit
# and quota admission, durable usage ledger), side by side in one run with
# the Portkey gateway (npm @portkey-ai/gateway 1.15.2) in front of the same
# loopback mock upstream (mock_upstream.c, a few microseconds per answer).
#
#   bench/gateway/run.sh [--rounds N] [--seconds S] [--ledger-sync full|normal|both]
#
# Each round measures, at concurrency 1 and 64 (wrk), the mock directly,
# then synapsex (one instance per ledger_sync mode asked for; both by
# default: "synapsex-full" and "synapsex-normal"), then Portkey; medians over
# the rounds are printed. Added latency = a gateway's p50/p99 minus the
# mock's own at the same concurrency. CPU per request = the gateway
# process's user + system time during the run over the requests it served:
# steadier than requests/s when other work shares the machine. Needs wrk
# (apt) and node + npm.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/bench/out/gateway"
rounds=3
seconds=5
syncs="full normal"
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --ledger-sync)
        case "$2" in
        full|normal) syncs=$2 ;;
        both) syncs="full normal" ;;
        *) echo "--ledger-sync takes full, normal or both" >&2; exit 2 ;;
        esac
        shift 2 ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
command -v node >/dev/null || { echo "node is missing" >&2; exit 1; }

mkdir -p "$out"
rm -rf "$out"/data*
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# 1. Build synapsex and the mock; install Portkey.
make -C "$root" -s -j"$(nproc)" build/synapsex
cc -O2 -Wall -Wextra -o "$out/mock_upstream" "$here/mock_upstream.c"
[ -d "$here/node_modules/@portkey-ai/gateway" ] || (cd "$here" && npm install --no-audit --no-fund --silent)

# 2. Start the mock, synapsex (in front of it) and Portkey.
mock_port=$(free_port); pk_port=$(free_port)
"$out/mock_upstream" "$mock_port" & pids+=($!)
mock_pid=$!
declare -A sx_pid
admin="sk-admin-$(head -c 64 /dev/urandom | base64 | tr -dc A-Za-z0-9 | head -c 43)"
declare -A sx_port sx_key
for sync in $syncs; do
    sx_port[$sync]=$(free_port)
    SYNAPSEX_ADMIN_KEY=$admin "$root/build/synapsex" serve \
        --listen "127.0.0.1:${sx_port[$sync]}" --data "$out/data-$sync" --log-level warn \
        --ledger-sync "$sync" --upstream "synapsex-chat=http://127.0.0.1:$mock_port/v1" \
        > "$out/synapsex-$sync.log" 2>&1 & pids+=($!)
    sx_pid[$sync]=$!
done
node "$here/node_modules/@portkey-ai/gateway/build/start-server.js" --port="$pk_port" \
    > "$out/portkey.log" 2>&1 & pids+=($!)
pk_pid=$!
for sync in $syncs; do wait_http "http://127.0.0.1:${sx_port[$sync]}/healthz"; done
wait_http "http://127.0.0.1:$pk_port/"

# 3. A tenant with governance on and limits high enough not to refuse.
for sync in $syncs; do
    tenant=$(curl -s "http://127.0.0.1:${sx_port[$sync]}/v1/tenants" \
        -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
        -d '{"name":"Bench","slug":"bench","tier":"enterprise","settings":{"rate_limit_rpm":1000000000,"custom_system_prompt":"You help a pharmacy."}}')
    sx_key[$sync]=$(echo "$tenant" | /usr/bin/python3 -c 'import json,sys;print(json.load(sys.stdin)["api_key"])')
done

# 4. Rounds: each target at c=1 and c=64, after a warm-up of each.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, 1/100 s
run_wrk() { # target conc pid -> "rps p50_us p99_us non200 cpu_us_per_request"
    local url=$1 conc=$2 pid=$3 threads=1 txt t0
    [ "$conc" -gt 1 ] && threads=2
    t0=$(ticks "$pid")
    txt=$(wrk -t"$threads" -c"$conc" -d"${seconds}s" --latency -s "$here/post.lua" "$url")
    echo "$txt" | TICKS=$(( $(ticks "$pid") - t0 )) /usr/bin/python3 -c '
import re, sys
t = sys.stdin.read()
def us(pct):
    m = re.search(pct + r"%\s+([\d.]+)(us|ms|s)\b", t)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)] if m else float("nan")
import os
m = re.search(r"Requests/sec:\s+([\d.]+)", t)
bad = re.search(r"non200 (\d+)", t)
n = re.search(r"(\d+) requests in", t)
cpu = int(os.environ["TICKS"]) * 1e4 / int(n.group(1)) if n and int(n.group(1)) else float("nan")
print(float(m.group(1)) if m else 0.0, us("50"), us("99"), int(bad.group(1)) if bad else -1,
      cpu)'
}
# Waits (up to 5 s) until the CPUs are nearly idle: a gateway that was just
# measured at concurrency 64 may still be working off its queue (Portkey
# answers late; synapsex's ledger thread commits what it was behind on), and
# the next measurement would pay for it.
quiet() {
    local a b busy
    for _ in $(seq 10); do
        a=($(head -1 /proc/stat)); sleep 0.5; b=($(head -1 /proc/stat))
        busy=$(( (b[1] + b[2] + b[3] + b[6] + b[7]) - (a[1] + a[2] + a[3] + a[6] + a[7]) ))
        [ $(( busy * 100 )) -le $(( ( (b[4] - a[4]) + busy ) * 5 )) ] && return 0
    done
}
results="$out/results.txt"
: > "$results"
seconds_main=$seconds; seconds=1
for sync in $syncs; do
    H_AUTHORIZATION="Bearer ${sx_key[$sync]}" \
        run_wrk "http://127.0.0.1:${sx_port[$sync]}/v1/chat/completions" 4 \
        "${sx_pid[$sync]}" >/dev/null
done
H_AUTHORIZATION="Bearer sk-mock" H_X_PORTKEY_PROVIDER=openai \
    H_X_PORTKEY_CUSTOM_HOST="http://127.0.0.1:$mock_port/v1" \
    run_wrk "http://127.0.0.1:$pk_port/v1/chat/completions" 4 "$pk_pid" >/dev/null
seconds=$seconds_main
for r in $(seq "$rounds"); do
    for conc in 1 64; do
        quiet
        echo "mock $conc $(run_wrk "http://127.0.0.1:$mock_port/v1/chat/completions" "$conc" \
            "$mock_pid")" >> "$results"
        for sync in $syncs; do
            quiet
            echo "synapsex-$sync $conc $(H_AUTHORIZATION="Bearer ${sx_key[$sync]}" \
                run_wrk "http://127.0.0.1:${sx_port[$sync]}/v1/chat/completions" "$conc" \
                "${sx_pid[$sync]}")" >> "$results"
        done
        quiet
        echo "portkey $conc $(H_AUTHORIZATION="Bearer sk-mock" H_X_PORTKEY_PROVIDER=openai \
            H_X_PORTKEY_CUSTOM_HOST="http://127.0.0.1:$mock_port/v1" \
            run_wrk "http://127.0.0.1:$pk_port/v1/chat/completions" "$conc" "$pk_pid")" \
            >> "$results"
    done
    echo "round $r done" >&2
done

# 5. Medians and ratios, after the host they were measured on: numbers from
# different kernels or hypervisors are not comparable (the same build used
# 2.5x more CPU a request on one VM than on another; so did Portkey).
echo "host: $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)," \
    "$(nproc) CPUs"
/usr/bin/python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
names = ["mock"] + sorted({r[0] for r in rows if r[0].startswith("synapsex")}) + ["portkey"]
med = {}
for name in names:
    for c in ("1", "64"):
        rs = [r for r in rows if r[0] == name and r[1] == c]
        med[name, c] = [statistics.median(float(r[i]) for r in rs) for i in (2, 3, 4)] + \
                       [sum(int(r[5]) for r in rs), statistics.median(float(r[6]) for r in rs)]
print(f"{'gateway':16} {'conc':>4} {'req/s':>10} {'p50 us':>9} {'p99 us':>9} "
      f"{'added p50':>10} {'added p99':>10} {'non-200':>8} {'cpu us/req':>10}")
for c in ("1", "64"):
    base = med["mock", c]
    for name in names:
        rps, p50, p99, bad, cpu = med[name, c]
        add = "" if name == "mock" else f"{p50 - base[1]:10.0f} {p99 - base[2]:10.0f}"
        print(f"{name:16} {c:>4} {rps:10.0f} {p50:9.0f} {p99:9.0f} {add:>21} {bad:8d} "
              f"{cpu:10.0f}")
for c in ("1", "64"):
    for name in names[1:-1]:
        print(f"c={c}: {name} / portkey requests/s = "
              f"{med[name, c][0] / med['portkey', c][0]:.1f}x, CPU per request "
              f"{med[name, c][4] / med['portkey', c][4]:.2f}x Portkey's")
PY
