/* Continuous-batching scheduler. One scheduler thread owns a model, its KV
 * pool and a compute pool; any thread submits generation jobs. Every step
 * runs one batched forward pass that carries one decode token for each
 * running job plus a capped chunk of prompt tokens for jobs still in
 * prefill, so a long prompt never stalls the sequences already decoding.
 *
 * Callbacks run on the scheduler thread, outside its lock: they may submit
 * or cancel jobs, but must not block for long (they stall every job). */
#ifndef SX_ENGINE_SCHED_H
#define SX_ENGINE_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "engine/sample.h"
#include "engine/tokenizer.h"

typedef struct sx_sched sx_sched;

enum sx_finish {
    SX_FINISH_STOP = 1,         /* end-of-generation token or stop string */
    SX_FINISH_LENGTH = 2,       /* max_tokens or the context limit */
    SX_FINISH_CANCELLED = 3,    /* sx_sched_cancel, on_token asked, shutdown */
    SX_FINISH_ERROR = 4,        /* the forward pass or sampling failed */
};

/* "stop", "length", "cancelled", "error". */
const char *sx_finish_name(int finish);

typedef struct sx_sched_config {
    int n_threads;              /* compute threads (>= 1) */
    int kv_positions;           /* KV pool, all jobs together; 0: 8 * n_ctx */
    int n_ctx;                  /* per job: prompt + output; 0: the model's
                                   context length, capped by kv_positions */
    int max_running;            /* jobs decoded together; 0: 16 */
    int max_waiting;            /* queued jobs beyond which submit says
                                   SX_EBUSY; 0: 64 */
    int prefill_chunk;          /* prompt tokens per step, all jobs; 0: 256 */
} sx_sched_config;

typedef struct sx_job_result {
    uint64_t id;
    int finish;                 /* enum sx_finish */
    int n_prompt;
    int n_generated;            /* tokens sampled (the EOG token counts) */
    int error;                  /* SX_E* when finish is SX_FINISH_ERROR */
    const char *message;        /* why, for ERROR; valid during on_done */
} sx_job_result;

typedef struct sx_job_params {
    const int32_t *prompt;      /* copied; >= 1 token */
    int n_prompt;
    sx_sample_params sample;
    int max_tokens;             /* >= 1; generation also stops at n_ctx */
    const char *const *stop;    /* copied; needs a tokenizer */
    int n_stop;
    bool ignore_eog;            /* keep going past end-of-generation tokens */
    const sx_lora *adapter;     /* NULL: the base model */
    float lora_scale;

    /* Each sampled token, with the text it completed once stop strings have
     * been held back (text may be empty; it is valid UTF-8 when the
     * scheduler has a tokenizer, NULL/0 without one). The EOG token is not
     * reported. At the end, text still held back (an unfinished character,
     * the start of a stop string that never completed) comes with token -1
     * and sample NULL. Return nonzero to cancel the job. May be NULL. */
    int (*on_token)(void *user, int32_t token, const sx_sample_out *sample,
                    const char *text, size_t len);
    /* Exactly once per accepted job, last. The job is gone afterwards. */
    void (*on_done)(void *user, const sx_job_result *result);
    void *user;
} sx_job_params;

/* Starts the scheduler thread. tok may be NULL (then jobs get no text and
 * may not have stop strings; EOG is the model's EOS id). m and tok must
 * outlive the scheduler. NULL with a message in err on bad config, when the
 * KV pool cannot be allocated, or when the thread cannot start. */
sx_sched *sx_sched_new(sx_model *m, const sx_tokenizer *tok,
                       const sx_sched_config *cfg, char *err, size_t errlen);

/* Stops the thread; jobs still waiting or running end with
 * SX_FINISH_CANCELLED (their on_done runs first). Accepts NULL. */
void sx_sched_free(sx_sched *s);

/* Queues a job; *id receives its id (never 0). Returns SX_OK; SX_EBUSY when
 * max_waiting jobs already wait (retry later); SX_ETOOBIG when the prompt
 * leaves no room for one output token in n_ctx; SX_EINVAL for bad params
 * (message in err names the field); SX_ENOMEM. On failure no callback runs. */
int sx_sched_submit(sx_sched *s, const sx_job_params *p, uint64_t *id,
                    char *err, size_t errlen);

/* Cancels a job from any thread. Its KV pages return to the pool before the
 * next step runs and on_done reports SX_FINISH_CANCELLED. SX_ENOTFOUND when
 * no such job is waiting or running (e.g. it already finished). */
int sx_sched_cancel(sx_sched *s, uint64_t id);

typedef struct sx_sched_stats {
    int waiting, running;
    int kv_free, kv_capacity;   /* positions; free = not reserved by a
                                   running job's budget */
    uint64_t steps, tokens_generated, tokens_prefilled;
} sx_sched_stats;

void sx_sched_get_stats(sx_sched *s, sx_sched_stats *st);

/* The per-job context limit in use (prompt + output). */
int sx_sched_n_ctx(const sx_sched *s);

#endif
