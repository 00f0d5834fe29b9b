// Peer side of the LoRA benchmark: llama.cpp (node-llama-cpp 3.21.1, the
// copy installed under bench/engine) decoding 8 concurrent sequences of one
// context with one LoRA adapter applied to the whole context (llama.cpp
// applies adapters per context, so this is its best case for adapters), and
// the same without the adapter. Measured as bench_lora.c measures synapsex:
// a 16-token prompt per sequence, then `steps` greedy tokens per sequence,
// aggregate tok/s; median of `reps`. Prints one JSON object.
// Usage: node llama_lora.mjs --model M.gguf --lora A.gguf --threads N
//        [--steps 16] [--reps 3]
const lib = await import(new URL("../engine/node_modules/node-llama-cpp/dist/index.js",
                                  import.meta.url));
const { getLlama, LlamaLogLevel } = lib;

const NSEQ = 8, PROMPT = 16;

function parseArgs(argv) {
    const a = { steps: 16, reps: 3 };
    for (let i = 2; i + 1 < argv.length; i += 2) {
        const k = argv[i], v = argv[i + 1];
        if (k === "--model") a.model = v;
        else if (k === "--lora") a.lora = v;
        else if (k === "--threads") a.threads = Number(v);
        else if (k === "--steps") a.steps = Number(v);
        else if (k === "--reps") a.reps = Number(v);
        else throw new Error(`unknown option ${k}`);
    }
    if (!a.model || !a.lora || !(a.threads > 0))
        throw new Error("need --model, --lora and --threads");
    return a;
}

const median = (xs) => {
    const v = [...xs].sort((x, y) => x - y);
    const m = v.length >> 1;
    return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};

const now = () => Number(process.hrtime.bigint()) / 1e9;

// Sequence s's prompt: bench_lora.c gives every sequence 100 + 7 i; here
// they differ a little so that no prefix is shared between sequences.
const prompt = (s) => Array.from({ length: PROMPT }, (_, i) => 100 + 7 * i + s);

async function decode(seq, last, count) {
    let n = 0;
    for await (const _t of seq.evaluate([last], { temperature: 0 }))
        if (++n >= count) break;
    return n;
}

async function measure(model, a, lora) {
    const ctx = await model.createContext({
        contextSize: NSEQ * (PROMPT + a.steps + 16), batchSize: 512, sequences: NSEQ,
        threads: a.threads, ...(lora ? { lora: { adapters: [{ filePath: lora, scale: 1 }] } }
                                     : {}),
    });
    const seqs = Array.from({ length: NSEQ }, () => ctx.getSequence());
    const rates = [];
    for (let r = 0; r <= a.reps; r++) {   // the first round warms up, untimed
        await Promise.all(seqs.map(async (seq, s) => {
            await seq.clearHistory();
            await seq.evaluateWithoutGeneratingNewTokens(prompt(s).slice(0, -1));
        }));
        const t = now();
        const counts = await Promise.all(seqs.map((seq, s) =>
            decode(seq, prompt(s)[PROMPT - 1], a.steps)));
        const dt = now() - t;
        if (r > 0)
            rates.push(counts.reduce((x, y) => x + y, 0) / dt);
    }
    await ctx.dispose();
    return median(rates);
}

async function main() {
    const a = parseArgs(process.argv);
    const llama = await getLlama({ gpu: false, build: "never", maxThreads: a.threads,
                                   logLevel: LlamaLogLevel.error });
    const model = await llama.loadModel({ modelPath: a.model, gpuLayers: 0 });
    const res = { engine: "llama.cpp (node-llama-cpp 3.21.1)", threads: a.threads,
                  seqs: NSEQ, steps: a.steps };
    res.none_tps = await measure(model, a, null);
    res.shared_adapter_tps = await measure(model, a, a.lora);
    await model.dispose();
    console.log(JSON.stringify(res));
}

main().catch((e) => {
    console.error(`llama_lora: ${e.message}`);
    process.exit(1);
});
