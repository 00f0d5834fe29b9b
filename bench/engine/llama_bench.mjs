// Peer side of the engine benchmark: llama.cpp through node-llama-cpp,
// measured the way engine_bench.c measures synapsex (same token ids, same
// prompt and generation lengths, same thread count). Prints one JSON object
// with the median of each measurement.
// Usage: node llama_bench.mjs --model F.gguf --threads N [--prompt 128]
//        [--gen 32] [--conc-gen 16] [--runs 1] [--conc 1,2,4,8]
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

function parseArgs(argv) {
    const a = { prompt: 128, gen: 32, concGen: 16, runs: 1, conc: "1,2,4,8" };
    for (let i = 2; i + 1 < argv.length; i += 2) {
        const k = argv[i], v = argv[i + 1];
        if (k === "--model") a.model = v;
        else if (k === "--threads") a.threads = Number(v);
        else if (k === "--prompt") a.prompt = Number(v);
        else if (k === "--gen") a.gen = Number(v);
        else if (k === "--conc-gen") a.concGen = Number(v);
        else if (k === "--runs") a.runs = Number(v);
        else if (k === "--conc") a.conc = v;
        else throw new Error(`unknown option ${k}`);
    }
    if (!a.model || !(a.threads > 0)) throw new Error("need --model and --threads");
    a.conc = a.conc.split(",").map(Number);
    return a;
}

// The same deterministic ids as engine_bench.c: prompt token i of sequence s.
function promptTokens(n, s) {
    const out = [];
    for (let i = 0; i < n; i++) out.push(1000 + ((i * 7919 + s * 104729) % 30000));
    return out;
}

const median = (xs) => {
    const v = [...xs].sort((x, y) => x - y);
    const m = v.length >> 1;
    return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};

const now = () => Number(process.hrtime.bigint()) / 1e9;

// Generates `count` greedy tokens after the sequence's last evaluated token.
async function decode(seq, lastToken, count) {
    let n = 0;
    const it = seq.evaluate([lastToken], { temperature: 0 });
    for await (const _tok of it) {
        if (++n >= count) break;
    }
    return n;
}

async function main() {
    const a = parseArgs(process.argv);
    const maxConc = Math.max(...a.conc);
    const llama = await getLlama({
        gpu: false, build: "never", maxThreads: a.threads,
        logLevel: LlamaLogLevel.error,
    });
    const model = await llama.loadModel({ modelPath: a.model, gpuLayers: 0 });
    const ctxSize = Math.max(512, a.prompt + a.gen + 16);
    const res = { engine: "llama.cpp (node-llama-cpp 3.21.1)", threads: a.threads };

    // Prefill and single-sequence decode.
    {
        const ctx = await model.createContext({
            contextSize: ctxSize, batchSize: Math.max(512, a.prompt),
            sequences: 1, threads: a.threads,
        });
        const seq = ctx.getSequence();
        const prompt = promptTokens(a.prompt, 0);
        const pre = [], dec = [];
        // Warm-up, untimed: one pass faults every weight page in.
        await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, 8));
        for (let r = 0; r < a.runs; r++) {
            await seq.clearHistory();
            let t = now();
            await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, -1));
            pre.push((a.prompt - 1) / (now() - t));
            t = now();
            const n = await decode(seq, prompt[a.prompt - 1], a.gen + 1);
            // The first token comes from a one-token step like the others.
            dec.push(n / (now() - t));
        }
        res.prefill_tps = median(pre);
        res.decode_tps = median(dec);
        await ctx.dispose();
    }

    // Aggregate decode with several sequences of one context, each with a
    // short prompt of its own, decoded concurrently (llama.cpp batches them).
    res.concurrent = {};
    {
        const short = 16;
        const ctx = await model.createContext({
            contextSize: maxConc * (short + a.concGen + 8),
            batchSize: 512, sequences: maxConc, threads: a.threads,
        });
        const seqs = [];
        for (let s = 0; s < maxConc; s++) seqs.push(ctx.getSequence());
        for (const c of a.conc) {
            const rates = [];
            for (let r = 0; r < a.runs; r++) {
                const active = seqs.slice(0, c);
                await Promise.all(active.map(async (seq, s) => {
                    await seq.clearHistory();
                    await seq.evaluateWithoutGeneratingNewTokens(
                        promptTokens(short, s).slice(0, -1));
                }));
                const t = now();
                const counts = await Promise.all(active.map((seq, s) =>
                    decode(seq, promptTokens(short, s)[short - 1], a.concGen)));
                const total = counts.reduce((x, y) => x + y, 0);
                rates.push(total / (now() - t));
            }
            res.concurrent[c] = median(rates);
        }
        await ctx.dispose();
    }

    await model.dispose();
    console.log(JSON.stringify(res));
}

main().catch((e) => {
    console.error(`llama_bench: ${e.message}`);
    process.exit(1);
});
