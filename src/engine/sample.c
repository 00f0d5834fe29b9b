/* Token sampling (see sample.h). One step is: penalties and logit bias on
 * the raw logits, temperature, then truncation (top-k, top-p, min-p) and a
 * draw from a per-sequence xoshiro256** stream. Nothing sorts the whole
 * vocabulary: top-k keeps a heap of k, top-p sorts only the logit bucket
 * where its mass is reached, and the draw walks ids in order. The
 * stop-sequence matcher at the end is independent of the rest. */
#include "engine/sample.h"
#include "engine/sample_simd.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct cand {
    int32_t id;
    float l;
} cand;

struct sx_sampler {
    sx_sample_params p;
    sx_logit_bias *bias;
    int32_t n_vocab;
    uint64_t rng[4];

    /* Counts of generated tokens, open addressing keyed by token (-1 =
     * empty slot). Penalties walk the table, so a step costs O(distinct
     * generated tokens), not O(n_vocab). */
    int32_t *ht_tok;
    int32_t *ht_cnt;
    uint32_t ht_cap;
    uint32_t ht_used;
    int32_t n_generated;

    /* Scratch of n_vocab entries each, allocated on first random draw. */
    cand *work;
    float *prob;                /* exp(l - max), 0 outside min-p */
};

/* ---- random stream ----------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4])
{
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(sx_sampler *s)
{
    return (double)(xoshiro_next(s->rng) >> 11) * 0x1.0p-53;
}

/* ---- construction ------------------------------------------------------ */

static const char *check_params(const sx_sample_params *p, int32_t n_vocab)
{
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return "temperature";
    if (p->top_k < 0)
        return "top_k";
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f))
        return "top_p";
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return "min_p";
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return "presence_penalty";
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return "frequency_penalty";
    if (p->top_logprobs < 0 || p->top_logprobs > SX_SAMPLE_MAX_TOP_LOGPROBS)
        return "top_logprobs";
    if (p->n_logit_bias < 0 || (p->n_logit_bias > 0 && !p->logit_bias))
        return "logit_bias";
    for (int32_t i = 0; i < p->n_logit_bias; i++) {
        if (p->logit_bias[i].token < 0 || p->logit_bias[i].token >= n_vocab ||
            !isfinite(p->logit_bias[i].bias))
            return "logit_bias";
    }
    return NULL;
}

sx_sampler *sx_sampler_new(const sx_sample_params *p, int32_t n_vocab,
                           int *err, const char **why)
{
    sx_sampler *s;
    const char *bad;
    uint64_t seed;

    if (err)
        *err = SX_EINVAL;
    if (why)
        *why = NULL;
    if (!p || n_vocab <= 0) {
        if (why)
            *why = "n_vocab";
        return NULL;
    }
    bad = check_params(p, n_vocab);
    if (bad) {
        if (why)
            *why = bad;
        return NULL;
    }

    if (err)
        *err = SX_ENOMEM;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->p = *p;
    s->n_vocab = n_vocab;
    if (s->p.top_p == 0.0f)
        s->p.top_p = 1.0f;
    if (s->p.top_logprobs > 0)
        s->p.logprobs = 1;
    if (p->n_logit_bias > 0) {
        s->bias = malloc(sizeof(*s->bias) * (size_t)p->n_logit_bias);
        if (!s->bias)
            goto fail;
        memcpy(s->bias, p->logit_bias, sizeof(*s->bias) * (size_t)p->n_logit_bias);
    }
    s->p.logit_bias = s->bias;

    /* splitmix64 spreads any seed, even 0, over the whole state. */
    seed = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&seed);

    if (err)
        *err = SX_OK;
    return s;

fail:
    sx_sampler_free(s);
    return NULL;
}

void sx_sampler_free(sx_sampler *s)
{
    if (!s)
        return;
    free(s->bias);
    free(s->ht_tok);
    free(s->ht_cnt);
    free(s->work);
    free(s->prob);
    free(s);
}

/* ---- generated-token counts -------------------------------------------- */

static uint32_t hash_tok(int32_t t)
{
    return (uint32_t)t * 2654435761u;
}

static int ht_grow(sx_sampler *s)
{
    uint32_t cap = s->ht_cap ? s->ht_cap * 2 : 64;
    int32_t *tok = malloc(sizeof(*tok) * cap);
    int32_t *cnt = malloc(sizeof(*cnt) * cap);

    if (!tok || !cnt) {
        free(tok);
        free(cnt);
        return SX_ENOMEM;
    }
    for (uint32_t i = 0; i < cap; i++)
        tok[i] = -1;
    for (uint32_t i = 0; i < s->ht_cap; i++) {
        uint32_t j;

        if (s->ht_tok[i] < 0)
            continue;
        j = hash_tok(s->ht_tok[i]) & (cap - 1);
        while (tok[j] >= 0)
            j = (j + 1) & (cap - 1);
        tok[j] = s->ht_tok[i];
        cnt[j] = s->ht_cnt[i];
    }
    free(s->ht_tok);
    free(s->ht_cnt);
    s->ht_tok = tok;
    s->ht_cnt = cnt;
    s->ht_cap = cap;
    return SX_OK;
}

int sx_sampler_accept(sx_sampler *s, int32_t token)
{
    uint32_t j;

    if (!s || token < 0 || token >= s->n_vocab)
        return SX_EINVAL;
    /* Keep the load factor under one half. */
    if ((s->ht_used + 1) * 2 > s->ht_cap && ht_grow(s) != SX_OK)
        return SX_ENOMEM;
    j = hash_tok(token) & (s->ht_cap - 1);
    while (s->ht_tok[j] >= 0 && s->ht_tok[j] != token)
        j = (j + 1) & (s->ht_cap - 1);
    if (s->ht_tok[j] < 0) {
        s->ht_tok[j] = token;
        s->ht_cnt[j] = 0;
        s->ht_used++;
    }
    s->ht_cnt[j]++;
    s->n_generated++;
    return SX_OK;
}

int32_t sx_sampler_n_generated(const sx_sampler *s)
{
    return s ? s->n_generated : 0;
}

/* ---- candidate ordering ------------------------------------------------ */

/* The order every truncation uses: higher logit first, ties to lower id. It
 * is total, so every selection below has exactly one answer. */
static inline bool before(cand a, cand b)
{
    return a.l > b.l || (a.l == b.l && a.id < b.id);
}

static int cmp_cand(const void *pa, const void *pb)
{
    const cand *a = pa, *b = pb;

    if (before(*a, *b))
        return -1;
    return before(*b, *a) ? 1 : 0;
}

static inline void swap_cand(cand *a, cand *b)
{
    cand t = *a;

    *a = *b;
    *b = t;
}

/* Min-heap on `before` (root = the last in order) for top-k selection. */
static void heap_down(cand *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;

        if (l < n && before(h[m], h[l]))
            m = l;
        if (r < n && before(h[m], h[r]))
            m = r;
        if (m == i)
            return;
        swap_cand(&h[i], &h[m]);
        i = m;
    }
}

static void heap_up(cand *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;

        if (!before(h[p], h[i]))
            return;
        swap_cand(&h[p], &h[i]);
        i = p;
    }
}

/* Puts the k first logits at or above lcut into c, sorted. Returns how many
 * there are (at most k). */
static size_t top_k_sorted(const float *logits, int32_t n, size_t k,
                           float lcut, cand *c)
{
    size_t len = 0;

    for (int32_t i = 0; i < n; i++) {
        cand x = {i, logits[i]};

        if (!(x.l >= lcut) || x.l == -INFINITY)
            continue;
        if (len < k) {
            c[len] = x;
            heap_up(c, len++);
        } else if (before(x, c[0])) {
            c[0] = x;
            heap_down(c, len, 0);
        }
    }
    qsort(c, len, sizeof(*c), cmp_cand);
    return len;
}

/* ---- the sampling step ------------------------------------------------- */

static void apply_penalties(sx_sampler *s, float *logits)
{
    float pres = s->p.presence_penalty, freq = s->p.frequency_penalty;

    if (pres != 0.0f || freq != 0.0f) {
        for (uint32_t i = 0; i < s->ht_cap; i++) {
            if (s->ht_tok[i] >= 0)
                logits[s->ht_tok[i]] -= (float)s->ht_cnt[i] * freq + pres;
        }
    }
    for (int32_t i = 0; i < s->p.n_logit_bias; i++)
        logits[s->bias[i].token] += s->bias[i].bias;
}

static int32_t argmax(const float *logits, int32_t n)
{
    int32_t best = -1;
    float bl = -INFINITY;

    for (int32_t i = 0; i < n; i++) {
        if (logits[i] > bl) {
            bl = logits[i];
            best = i;
        }
    }
    return best;
}

/* Picks from c[0..n) with weights exp(l - m). */
static int32_t draw_sorted(sx_sampler *s, const cand *c, size_t n, float m)
{
    double total = 0.0, acc = 0.0, u;

    for (size_t i = 0; i < n; i++)
        total += exp((double)c[i].l - m);
    u = rng_uniform(s) * total;
    for (size_t i = 0; i < n; i++) {
        acc += exp((double)c[i].l - m);
        if (acc > u)
            return c[i].id;
    }
    return c[n - 1].id;
}

static double exp_pass_scalar(const float *l, int n, float m, float lcut,
                              float *prob)
{
    double sum = 0.0;

    for (int i = 0; i < n; i++) {
        prob[i] = l[i] >= lcut ? expf(l[i] - m) : 0.0f;
        sum += prob[i];
    }
    return sum;
}

/* The exp pass is most of the cost of a random draw: vectorise it where
 * the CPU can. Results differ from the scalar pass in the last bits, so a
 * seed reproduces its tokens on machines of the same kind. */
static sx_sample_exp_fn exp_pass(void)
{
    static sx_sample_exp_fn chosen;
    sx_sample_exp_fn f = __atomic_load_n(&chosen, __ATOMIC_ACQUIRE);

    if (!f) {
        f = sx_sample_exp_avx2();
        if (!f)
            f = exp_pass_scalar;
        __atomic_store_n(&chosen, f, __ATOMIC_RELEASE);
    }
    return f;
}

/* Picks a token among those with prob[i] > 0 and (i, logits[i]) not after
 * `last` in candidate order, with weights prob[i], walking ids in order.
 * total is their mass when the caller knows it, else negative. */
static int32_t draw_ids(sx_sampler *s, const float *logits, cand last,
                        double total)
{
    const float *prob = s->prob;
    double acc = 0.0, u;
    int32_t n = s->n_vocab, pick = -1;

    if (total < 0.0) {
        total = 0.0;
        for (int32_t i = 0; i < n; i++) {
            if (prob[i] > 0.0f && !before(last, (cand){i, logits[i]}))
                total += prob[i];
        }
    }
    u = rng_uniform(s) * total;
    for (int32_t i = 0; i < n; i++) {
        if (prob[i] > 0.0f && !before(last, (cand){i, logits[i]})) {
            acc += prob[i];
            pick = i;
            if (acc > u)
                break;
        }
    }
    return pick;
}

/* Mass histogram of the nucleus search: bucket b holds logits in
 * (m - (b+1)/16, m - b/16]; the last bucket takes everything further down
 * (p < e^-30 of the top token). */
#define NUCLEUS_BUCKETS 481
#define NUCLEUS_SCALE 16.0f

static int bucket_of(float l, float m)
{
    float d = (m - l) * NUCLEUS_SCALE;

    return d < (float)(NUCLEUS_BUCKETS - 1) ? (int)d : NUCLEUS_BUCKETS - 1;
}

/* top-p without top-k. The nucleus is a prefix of candidate order, so it is
 * fixed by its last member. A mass histogram over logit buckets finds the
 * bucket where the running mass crosses top_p; only that bucket is sorted.
 * Cost: two passes over the vocabulary plus one small sort, even when a flat
 * distribution puts most of the vocabulary in the nucleus. */
static cand nucleus_last(sx_sampler *s, const float *logits, float m,
                         double z, float top_p)
{
    double hist[NUCLEUS_BUCKETS] = {0}, cum = 0.0;
    int32_t n = s->n_vocab;
    int bb = NUCLEUS_BUCKETS - 1;
    size_t len = 0;

    for (int32_t i = 0; i < n; i++) {
        if (s->prob[i] > 0.0f)
            hist[bucket_of(logits[i], m)] += s->prob[i];
    }
    for (int b = 0; b < NUCLEUS_BUCKETS; b++) {
        if (cum + hist[b] >= top_p * z) {
            bb = b;
            break;
        }
        cum += hist[b];
    }
    for (int32_t i = 0; i < n; i++) {
        if (s->prob[i] > 0.0f && bucket_of(logits[i], m) == bb)
            s->work[len++] = (cand){i, logits[i]};
    }
    /* Only rounding can carry the walk past every bucket to an empty last
     * one: then the nucleus is everything. */
    if (len == 0)
        return (cand){INT32_MAX, -INFINITY};
    qsort(s->work, len, sizeof(*s->work), cmp_cand);
    for (size_t i = 0; i < len; i++) {
        cum += s->prob[s->work[i].id];
        if (cum >= top_p * z)
            return s->work[i];
    }
    return s->work[len - 1];
}

static int32_t sample_random(sx_sampler *s, const float *logits, float m)
{
    int32_t n = s->n_vocab;
    float lcut = -INFINITY;
    double z = 0.0;
    size_t len;

    if (s->p.top_k == 1)
        return argmax(logits, n);

    /* p_i / p_max >= min_p  <=>  l_i >= m + log(min_p). min-p, top-k and
     * top-p all keep a prefix of candidate order, so their order does not
     * matter except that top-p measures mass after top-k. */
    if (s->p.min_p > 0.0f)
        lcut = m + logf(s->p.min_p);

    if (!s->work) {
        s->work = malloc(sizeof(*s->work) * (size_t)n);
        s->prob = malloc(sizeof(*s->prob) * (size_t)n);
        if (!s->work || !s->prob) {
            free(s->work);
            free(s->prob);
            s->work = NULL;
            s->prob = NULL;
            return SX_ENOMEM;
        }
    }

    if (s->p.top_k > 0 && s->p.top_k < n) {
        len = top_k_sorted(logits, n, (size_t)s->p.top_k, lcut, s->work);
        if (s->p.top_p < 1.0f) {
            double cum = 0.0;
            size_t keep = len;

            for (size_t i = 0; i < len; i++)
                z += exp((double)s->work[i].l - m);
            for (size_t i = 0; i < len; i++) {
                cum += exp((double)s->work[i].l - m);
                if (cum >= s->p.top_p * z) {
                    keep = i + 1;
                    break;
                }
            }
            len = keep;
        }
        return draw_sorted(s, s->work, len, m);
    }

    /* One pass of exp, cached for the passes that follow. */
    z = exp_pass()(logits, n, m, lcut, s->prob);
    if (s->p.top_p >= 1.0f)
        return draw_ids(s, logits, (cand){INT32_MAX, -INFINITY}, z);
    return draw_ids(s, logits, nucleus_last(s, logits, m, z, s->p.top_p),
                    -1.0);
}

/* Fills the log-probabilities of the processed distribution. */
static void fill_logprobs(const sx_sampler *s, const float *logits, float m,
                          sx_sample_out *out)
{
    int32_t n = s->n_vocab, ntop = s->p.top_logprobs, len = 0;
    double z = 0.0;
    float logz;

    for (int32_t i = 0; i < n; i++)
        z += expf(logits[i] - m);
    logz = m + (float)log(z);
    out->logprob = logits[out->token] - logz;

    /* Insertion into a sorted array of at most 20: cheap, since few
     * logits beat the current last entry. */
    for (int32_t i = 0; i < n && ntop > 0; i++) {
        cand x = {i, logits[i]};
        int32_t j;

        if (len == ntop && !before(x, (cand){out->top[len - 1].token,
                                             out->top[len - 1].logprob}))
            continue;
        j = len < ntop ? len++ : len - 1;
        while (j > 0 && before(x, (cand){out->top[j - 1].token,
                                         out->top[j - 1].logprob})) {
            out->top[j] = out->top[j - 1];
            j--;
        }
        out->top[j] = (sx_token_logprob){x.id, x.l};
    }
    for (int32_t i = 0; i < len; i++)
        out->top[i].logprob -= logz;
    out->n_top = len;
}

int sx_sampler_sample(sx_sampler *s, float *logits, sx_sample_out *out)
{
    int32_t n, tok;
    float m = -INFINITY;
    int rc;

    if (!s || !logits || !out)
        return SX_EINVAL;
    n = s->n_vocab;
    memset(out, 0, sizeof(*out));
    apply_penalties(s, logits);

    /* Temperature scales the logits once so that every later step (and the
     * log-probabilities) sees the same distribution. */
    if (s->p.temperature > 0.0f && s->p.temperature != 1.0f) {
        float inv = 1.0f / s->p.temperature;

        for (int32_t i = 0; i < n; i++)
            logits[i] *= inv;
    }
    tok = argmax(logits, n);
    if (tok < 0 || !isfinite(logits[tok]))
        return SX_EINVAL;
    m = logits[tok];

    if (s->p.temperature > 0.0f) {
        tok = sample_random(s, logits, m);
        if (tok < 0)
            return tok == SX_ENOMEM ? SX_ENOMEM : SX_EINVAL;
    }
    out->token = tok;
    if (s->p.logprobs)
        fill_logprobs(s, logits, m, out);

    rc = sx_sampler_accept(s, tok);
    return rc;
}

/* ---- stop sequences ---------------------------------------------------- */

struct sx_stop {
    char **stops;
    size_t *lens;
    int n;
    size_t max_len;
    char *buf;          /* held text, then what was appended */
    size_t len, cap;
    size_t emitted;     /* bytes at the front of buf handed out last call */
    int matched;
};

sx_stop *sx_stop_new(const char *const *stops, int n)
{
    sx_stop *m;

    if (n < 0 || (n > 0 && !stops))
        return NULL;
    m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    if (n > 0) {
        m->stops = calloc((size_t)n, sizeof(*m->stops));
        m->lens = calloc((size_t)n, sizeof(*m->lens));
        if (!m->stops || !m->lens)
            goto fail;
    }
    for (int i = 0; i < n; i++) {
        if (!stops[i] || !stops[i][0])
            goto fail;
        m->stops[i] = strdup(stops[i]);
        if (!m->stops[i])
            goto fail;
        m->n = i + 1;
        m->lens[i] = strlen(stops[i]);
        if (m->lens[i] > m->max_len)
            m->max_len = m->lens[i];
    }
    return m;

fail:
    m->n = n;
    sx_stop_free(m);
    return NULL;
}

void sx_stop_free(sx_stop *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n; i++)
        free(m->stops[i]);
    free(m->stops);
    free(m->lens);
    free(m->buf);
    free(m);
}

/* Length of the longest tail of buf that is a proper prefix of a stop. */
static size_t held_tail(const sx_stop *m)
{
    size_t k = m->len < m->max_len ? m->len : m->max_len - 1;

    for (; k > 0; k--) {
        for (int i = 0; i < m->n; i++) {
            if (m->lens[i] > k &&
                memcmp(m->buf + m->len - k, m->stops[i], k) == 0)
                return k;
        }
    }
    return 0;
}

int sx_stop_feed(sx_stop *m, const char *text, size_t len,
                 const char **emit, size_t *emit_len)
{
    size_t first = SIZE_MAX, hold;

    *emit = "";
    *emit_len = 0;
    if (m->matched)
        return 1;

    /* Drop what the last call handed out, then append. */
    if (m->emitted > 0) {
        memmove(m->buf, m->buf + m->emitted, m->len - m->emitted);
        m->len -= m->emitted;
        m->emitted = 0;
    }
    if (m->len + len > m->cap) {
        size_t cap = (m->len + len) * 2 + 64;
        char *b = realloc(m->buf, cap);

        if (!b)
            return SX_ENOMEM;
        m->buf = b;
        m->cap = cap;
    }
    if (len > 0)
        memcpy(m->buf + m->len, text, len);
    m->len += len;

    /* The earliest stop wins; the held text alone never contains one. */
    for (int i = 0; i < m->n; i++) {
        const char *hit = memmem(m->buf, m->len, m->stops[i], m->lens[i]);

        if (hit && (size_t)(hit - m->buf) < first)
            first = (size_t)(hit - m->buf);
    }
    if (first != SIZE_MAX) {
        m->matched = 1;
        m->emitted = m->len;
        *emit = m->buf;
        *emit_len = first;
        return 1;
    }

    hold = m->n > 0 ? held_tail(m) : 0;
    m->emitted = m->len - hold;
    *emit = m->buf;
    *emit_len = m->emitted;
    return 0;
}

void sx_stop_flush(sx_stop *m, const char **emit, size_t *emit_len)
{
    *emit = "";
    *emit_len = 0;
    if (!m || m->matched)
        return;
    if (m->emitted > 0) {
        memmove(m->buf, m->buf + m->emitted, m->len - m->emitted);
        m->len -= m->emitted;
    }
    *emit = m->buf ? m->buf : "";
    *emit_len = m->len;
    m->emitted = m->len;
}

int sx_stop_matched(const sx_stop *m)
{
    return m ? m->matched : 0;
}
