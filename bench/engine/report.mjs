// Prints the engine benchmark table from run.sh's measurements:
// node report.mjs <bandwidth GB/s> <synapsex JSON> <llama.cpp JSON> <model>
const [bwArg, sxArg, llArg, model] = process.argv.slice(2);
const bw = Number(bwArg);
const sx = JSON.parse(sxArg);
const ll = JSON.parse(llArg);
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
console.log(`threads: ${sx.threads}; ${sx.engine}; peer: ${ll.engine}`);
console.log(`weights read per decode step: ${(sx.weight_bytes / 1e6).toFixed(1)} MB`);
console.log(`memory bandwidth: ${bw.toFixed(1)} GB/s -> decode ceiling ${ceiling.toFixed(1)} tok/s`);
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
