#!/bin/sh
# Builds and runs the LoRA serving benchmark on a synthesized
# qwen2.5-0.5b-shaped Q8_0 model: 8 sequences with no adapter, one shared
# adapter and 8 different rank-16 adapters. Usage: bench/lora/run.sh [threads]
set -e
cd "$(dirname "$0")/../.."
make -s build/libsxengine.a build/synapsex
mkdir -p bench/out
M=bench/out/qwen2.5-0.5b-q8_0.gguf
[ -f "$M" ] || build/synapsex model synth --shape qwen2.5-0.5b --type q8_0 --out "$M"
cc -std=c17 -D_GNU_SOURCE -O2 -Isrc bench/lora/bench_lora.c build/libsxengine.a \
    -o bench/out/bench_lora -lm -pthread
bench/out/bench_lora "$M" "${1:-2}" "${2:-16}" 16
