// Prints the engine benchmark table from run.sh's measurements:
// node report.mjs <bandwidth GB/s> <synapsex.jsonl> <llamacpp.jsonl> <model>
// Each .jsonl line is one round; the table shows the median over rounds.
import { readFileSync } from "node:fs";

const [bwArg, sxFile, llFile, model] = process.argv.slice(2);
const bw = Number(bwArg);

const median = (xs) => {
    const v = [...xs].sort((x, y) => x - y);
    const m = v.length >> 1;
    return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};

// Folds the rounds of one side into one object of medians.
function load(file) {
    const rounds = readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    const out = { ...rounds[0], rounds: rounds.length, concurrent: {} };
    for (const k of ["prefill_tps", "decode_tps"]) out[k] = median(rounds.map((r) => r[k]));
    for (const c of Object.keys(rounds[0].concurrent)) {
        out.concurrent[c] = median(rounds.map((r) => r.concurrent[c]));
    }
    return out;
}

const sx = load(sxFile);
const ll = load(llFile);
const ceiling = (bw * 1e9) / sx.weight_bytes;

const fmt = (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
const rows = [
    ["prefill tok/s", sx.prefill_tps, ll.prefill_tps],
    ["decode tok/s (1 sequence)", sx.decode_tps, ll.decode_tps],
];
for (const c of Object.keys(sx.concurrent)) {
    rows.push([`aggregate decode tok/s, ${c} seq`, sx.concurrent[c], ll.concurrent[c]]);
}

console.log(`model: ${model}`);
console.log(`threads: ${sx.threads}; rounds: ${sx.rounds}; ${sx.engine}; peer: ${ll.engine}`);
console.log(`weights read per decode step: ${(sx.weight_bytes / 1e6).toFixed(1)} MB`);
console.log(`memory bandwidth: ${bw.toFixed(1)} GB/s -> ` +
    `decode ceiling ${ceiling.toFixed(1)} tok/s`);
console.log("");
console.log(`${"measurement (medians)".padEnd(34)}${"synapsex".padStart(10)}` +
    `${"llama.cpp".padStart(11)}${"ratio".padStart(8)}`);
for (const [name, a, b] of rows) {
    console.log(`${name.padEnd(34)}${fmt(a).padStart(10)}${fmt(b).padStart(11)}` +
        `${(a / b).toFixed(2).padStart(7)}x`);
}
console.log(`${"decode vs bandwidth ceiling".padEnd(34)}` +
    `${((100 * sx.decode_tps) / ceiling).toFixed(0).padStart(9)}%` +
    `${((100 * ll.decode_tps) / ceiling).toFixed(0).padStart(10)}%`);
