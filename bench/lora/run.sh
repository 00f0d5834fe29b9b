#!/bin/sh
# Builds and runs the LoRA serving benchmark on a synthesized
# qwen2.5-0.5b-shaped Q8_0 model: 8 sequences with no adapter, one shared
# adapter and 8 different rank-16 adapters in synapsex, then llama.cpp
# (node-llama-cpp 3.21.1 under bench/engine) on the same model, threads and
# one of the same adapters, 8 sequences sharing it. Prints both and the
# ratio of synapsex's 8-different-adapters aggregate to llama.cpp's
# one-adapter aggregate (goal >= 2) and to synapsex's no-adapter one (goal
# >= 0.85). Usage: bench/lora/run.sh [threads] [steps]
set -e
cd "$(dirname "$0")/../.."
T=${1:-2}
S=${2:-16}
make -s build/libsxengine.a build/synapsex
mkdir -p bench/out
M=bench/out/qwen2.5-0.5b-q8_0.gguf
A=bench/out/lora-r16-qwen2.5-0.5b.gguf
[ -f "$M" ] || build/synapsex model synth --shape qwen2.5-0.5b --type q8_0 --out "$M"
cc -std=c17 -D_GNU_SOURCE -O2 -Isrc bench/lora/bench_lora.c build/libsxengine.a \
    -o bench/out/bench_lora -lm -pthread
bench/out/bench_lora "$M" "$T" "$S" 16 "$A" | tee bench/out/lora_synapsex.txt
if [ ! -d bench/engine/node_modules/node-llama-cpp ]; then
    echo "llama.cpp peer skipped: run 'npm ci' in bench/engine first"
    exit 0
fi
node bench/lora/llama_lora.mjs --model "$M" --lora "$A" --threads "$T" --steps "$S" \
    | tee bench/out/lora_llamacpp.json
node -e '
const fs = require("fs");
const sx = JSON.parse(fs.readFileSync("bench/out/lora_synapsex.txt", "utf8")
                        .split("\n").find((l) => l.startsWith("{")));
const ll = JSON.parse(fs.readFileSync("bench/out/lora_llamacpp.json", "utf8"));
const f = (x) => x.toFixed(1);
console.log(`8 seqs, aggregate tok/s: synapsex none ${f(sx.none_tps)}, 1 shared ` +
            `${f(sx.shared_adapter_tps)}, 8 different ${f(sx.multi_adapter_tps)} | ` +
            `llama.cpp none ${f(ll.none_tps)}, 1 shared ${f(ll.shared_adapter_tps)}`);
console.log(`synapsex 8 different / synapsex none: ` +
            `${(sx.multi_adapter_tps / sx.none_tps * 100).toFixed(0)}% (goal >= 85%)`);
console.log(`synapsex 8 different / llama.cpp 1 shared: ` +
            `${(sx.multi_adapter_tps / ll.shared_adapter_tps).toFixed(2)}x (goal >= 2x)`);
'
