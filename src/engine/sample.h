/* Token sampling and stop sequences. A sampler turns one logits vector into
 * one token for one sequence: penalties, logit bias, temperature, top-k,
 * top-p, min-p, a seeded per-sequence random stream, and log-probabilities
 * for OpenAI's `logprobs`/`top_logprobs`. The stop matcher cuts generated
 * text at the first stop string without ever emitting part of one. */
#ifndef SX_ENGINE_SAMPLE_H
#define SX_ENGINE_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/errors.h"

/* OpenAI allows up to 20 alternatives per position. */
#define SX_SAMPLE_MAX_TOP_LOGPROBS 20

typedef struct sx_logit_bias {
    int32_t token;
    float bias;                 /* added to the logit; -100 bans in practice */
} sx_logit_bias;

/* Zero-initialised params mean greedy decoding with nothing else applied,
 * except top_p, where 0 is read as "off" (1.0) so that a zeroed struct is
 * usable. */
typedef struct sx_sample_params {
    float temperature;          /* 0 = greedy (argmax, ties to lowest id) */
    int32_t top_k;              /* keep the k most likely; 0 = off */
    float top_p;                /* nucleus mass in (0,1]; 0 or 1 = off */
    float min_p;                /* drop p < min_p * p_max; 0 = off */
    float presence_penalty;     /* OpenAI: -2..2, once per generated token */
    float frequency_penalty;    /* OpenAI: -2..2, times its count */
    uint64_t seed;              /* same seed + same logits = same tokens */
    const sx_logit_bias *logit_bias;  /* copied by sx_sampler_new */
    int32_t n_logit_bias;
    int32_t logprobs;           /* 1: fill sx_sample_out.logprob */
    int32_t top_logprobs;       /* 0..20 alternatives (implies logprobs) */
} sx_sample_params;

typedef struct sx_token_logprob {
    int32_t token;
    float logprob;
} sx_token_logprob;

/* What one sampling step produced. The log-probabilities are the
 * log-softmax of the processed distribution: logits after penalties and
 * bias, divided by the temperature (1 when greedy), before top-k/top-p/min-p
 * truncation, so that alternatives outside the nucleus still get a finite
 * value. top[] is sorted by descending logprob, ties to lowest id. */
typedef struct sx_sample_out {
    int32_t token;
    float logprob;              /* only when params.logprobs or top_logprobs */
    int32_t n_top;
    sx_token_logprob top[SX_SAMPLE_MAX_TOP_LOGPROBS];
} sx_sample_out;

typedef struct sx_sampler sx_sampler;

/* Checks the params (temperature >= 0, top_k >= 0, top_p and min_p in
 * [0,1], penalties in [-2,2], bias tokens in [0,n_vocab), top_logprobs in
 * 0..20). Returns NULL with *err = SX_EINVAL (bad params; *why names the
 * field, a static string) or SX_ENOMEM. err and why may be NULL. */
sx_sampler *sx_sampler_new(const sx_sample_params *p, int32_t n_vocab,
                           int *err, const char **why);

void sx_sampler_free(sx_sampler *s);

/* Samples one token from logits[n_vocab] (the model's raw output for this
 * sequence). logits is modified in place (penalties, bias, scaling). The
 * chosen token is recorded for later presence/frequency penalties. Returns
 * SX_OK, or SX_EINVAL when no token has a finite logit. */
int sx_sampler_sample(sx_sampler *s, float *logits, sx_sample_out *out);

/* Records a token as generated without sampling it (for penalties), e.g.
 * when a caller forces a token. */
int sx_sampler_accept(sx_sampler *s, int32_t token);

/* Number of tokens recorded so far. */
int32_t sx_sampler_n_generated(const sx_sampler *s);

/* ---- stop sequences ---------------------------------------------------- */

typedef struct sx_stop sx_stop;

/* A matcher for up to n stop strings (each non-empty, copied). n may be 0:
 * then all text passes straight through. Returns NULL on ENOMEM or when a
 * stop string is empty. */
sx_stop *sx_stop_new(const char *const *stops, int n);

void sx_stop_free(sx_stop *m);

/* Appends generated text. *emit and *emit_len receive the text that is now safe
 * to show (it can no longer become part of a stop string); the pointer is
 * valid until the next call on m. Returns 1 when a stop string was found:
 * the emitted text ends just before it and generation should end (later
 * calls emit nothing). Returns 0 otherwise, or SX_ENOMEM. */
int sx_stop_feed(sx_stop *m, const char *text, size_t len,
                 const char **emit, size_t *emit_len);

/* At the end of generation (no stop found): releases the held-back tail.
 * After a stop was found this emits nothing. */
void sx_stop_flush(sx_stop *m, const char **emit, size_t *emit_len);

/* 1 once a stop string has matched. */
int sx_stop_matched(const sx_stop *m);

#endif
