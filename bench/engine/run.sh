#!/usr/bin/env bash
# Engine benchmark: synapsex against llama.cpp (node-llama-cpp 3.21.1) on the
# same synthesized Qwen2.5-0.5B-shape Q8_0 GGUF with the same thread count,
# plus the machine's memory-bandwidth ceiling. Prints a side-by-side table of
# medians. Run from anywhere: bench/engine/run.sh [options]
#
#   --threads N     compute threads for both engines (default: all CPUs)
#   --model FILE    use this GGUF instead of synthesizing one
#   --shape NAME    shape to synthesize (default qwen2.5-0.5b)
#   --rounds N      rounds; each runs synapsex then llama.cpp, so that load
#                   from elsewhere hits both alike; medians are reported (3)
#   --runs N        repetitions inside each round (1)
#   --prompt N      prompt tokens for the prefill measurement (128)
#   --gen N         tokens for the single-sequence decode measurement (32)
#   --conc-gen N    tokens per sequence in the concurrent runs (16)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$root/bench/out"
threads=$(nproc)
model=""
shape="qwen2.5-0.5b"
rounds=3
runs=1
prompt=128
gen=32
conc_gen=16

while [ $# -gt 0 ]; do
    case "$1" in
    --threads) threads=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --shape) shape=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --prompt) prompt=$2; shift 2 ;;
    --gen) gen=$2; shift 2 ;;
    --conc-gen) conc_gen=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"

# 1. Build the engine library and the two C programs.
echo "== building" >&2
make -C "$root" -j2 build/libsxengine.a >&2
cc -std=c17 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -I"$root/src" -pthread \
    "$here/engine_bench.c" "$root/build/libsxengine.a" -o "$out/engine_bench" -lm
cc -std=c17 -D_GNU_SOURCE -O2 -mavx2 -Wall -Wextra -Werror -pthread \
    "$here/bwprobe.c" -o "$out/bwprobe"

# 2. The peer: node-llama-cpp, pinned by package-lock.json.
if [ ! -d "$here/node_modules/node-llama-cpp" ]; then
    echo "== installing node-llama-cpp" >&2
    (cd "$here" && npm ci --no-audit --no-fund >&2)
fi

# 3. The model, synthesized once.
if [ -z "$model" ]; then
    model="$out/$shape-q8_0.gguf"
    if [ ! -s "$model" ]; then
        echo "== synthesizing $shape q8_0 into $model" >&2
        make -C "$root" -j2 build/synapsex >&2 || {
            echo "run.sh: build/synapsex does not build; pass --model FILE" >&2
            exit 1
        }
        "$root/build/synapsex" model synth --shape "$shape" --type q8_0 \
            --out "$model.tmp" >&2
        mv "$model.tmp" "$model"
    fi
fi

# 4. Measure, alternating the two sides round by round.
args=(--model "$model" --threads "$threads" --prompt "$prompt" --gen "$gen"
      --conc-gen "$conc_gen" --runs "$runs")
# The probe streams a buffer as large as the model file, as decode streams
# the weights; each round probes again and the best rate is the ceiling.
mib=$(( $(stat -c %s "$model") / 1048576 + 1 ))
bw=0
: > "$out/engine_synapsex.jsonl"
: > "$out/engine_llamacpp.jsonl"
for r in $(seq 1 "$rounds"); do
    echo "== round $r/$rounds: memory bandwidth ($threads threads)" >&2
    b=$("$out/bwprobe" --threads "$threads" --mib "$mib" | awk '{print $2}')
    bw=$(awk -v a="$bw" -v b="$b" 'BEGIN { print (b > a ? b : a) }')
    echo "== round $r/$rounds: synapsex" >&2
    "$out/engine_bench" "${args[@]}" >> "$out/engine_synapsex.jsonl"
    echo "== round $r/$rounds: llama.cpp" >&2
    (cd "$here" && node llama_bench.mjs "${args[@]}") >> "$out/engine_llamacpp.jsonl"
done
node "$here/report.mjs" "$bw" "$out/engine_synapsex.jsonl" \
    "$out/engine_llamacpp.jsonl" "$model"
