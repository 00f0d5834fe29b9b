/* The upstream backend: relays generations to an OpenAI-compatible server
 * (vLLM, llama.cpp server, Ollama, OpenAI) over HTTP with libcurl's multi
 * interface, on one I/O thread per upstream, so a thousand open relays
 * cost no thread each. A client's stream goes upstream as a stream with
 * stream_options.include_usage (the upstream's own token counts, text that
 * reaches the client as it arrives); a whole response is asked for whole,
 * one body to parse. Either answer is understood either way. Connect
 * failures become 502 and silence past the timeout 504.
 *
 * A relay started on an event loop of the HTTP server (base/loop.h) runs
 * on that loop: the request is read, relayed and answered on one thread,
 * without a hand-off. It goes through our own HTTP/1.1 client (http1.h)
 * when the upstream is plain HTTP at an IP address, else through a curl
 * multi of the loop's own driven by its epoll. Relays started elsewhere,
 * and embeddings, go to the upstream's I/O thread, through curl. */
#include "backend/http1.h"
#include "backend/internal.h"

#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/time.h"

#include <curl/curl.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Most of an upstream error body we keep for the message. */
#define ERR_BODY_MAX (64 * 1024)
/* Longest SSE line or JSON body accepted from an upstream. */
#define LINE_MAX_BYTES (8u << 20)
/* Chat-template tokens allowed for in a prompt's bound: per message (role
 * markers) and once (generation prompt, a template's default system turn). */
#define UP_TEMPLATE_TOKENS_PER_MSG 8
#define UP_TEMPLATE_TOKENS 64
/* Idle connections to the upstream kept open, per curl multi (the I/O
 * thread's, each event loop's). */
#define UP_IDLE_CONNECTIONS 64
/* Easy handles of finished relays kept per loop for the next ones. */
#define UP_SPARE_HANDLES 16

enum job_type { JOB_GEN, JOB_EMBED };

/* How a transfer ended, whichever client carried it. */
enum up_end {
    END_OK,
    END_STOPPED,         /* the job's own callback stopped it */
    END_CONNECT_TIMEOUT,
    END_IDLE_TIMEOUT,    /* silence past the timeout */
    END_UNREACHABLE,
    END_BROKEN,          /* the connection or the response failed (errbuf says) */
};

/* Job ids: the loop a relay runs on (its number + 1, 0 for the I/O
 * thread) in the top byte, a counter below. */
#define ID_LOOP_SHIFT 56

struct up_loop;

struct up_job {
    struct sx_gen_job base;
    struct up_job *next, *prev;
    enum job_type type;
    enum sx_gen_kind kind;
    uint64_t id;
    struct up_loop *ul;   /* the loop it was made and runs on; NULL: the I/O thread's */
    const char *path;     /* "/chat/completions", ... */
    char *body;
    size_t body_len;
    CURL *easy;           /* the relay's handle: libcurl carries it */
    bool own;             /* our HTTP/1.1 client carries it (http1.h) */
    struct sx_http1_exchange x;
    char length[32];      /* its Content-Length line */
    char errbuf[CURL_ERROR_SIZE];

    /* Response state. */
    long status;          /* HTTP status, once headers are in */
    int64_t last_ns;      /* last byte (or the start): the idle timeout */
    bool sse;             /* the body is an event stream */
    char *buf;            /* partial line (SSE) or the whole body */
    size_t len, cap;
    bool saw_done, saw_finish, failed;
    const char *finish_reason;
    int64_t est_prompt, prompt_tokens, completion_tokens, out_bytes, out_chunks;
    bool usage;
    struct sx_gen_error err;

    struct sx_gen_sink sink;
    sx_embed_done edone;
    void *ectx;
    size_t n_inputs;
};

struct upstream {
    struct sx_backend base;
    char *url, *model, *auth;
    char *lora;               /* adapter naming template; NULL: none */
    struct curl_slist *headers; /* every request's, shared by the handles */
    int connect_ms, timeout_ms;
    /* Plain HTTP at an IP address: relays on a loop use our own client,
     * with each path's request head up to its Content-Length value. */
    bool own_client;
    struct sx_http1_target target;
    char *head_chat, *head_text;
    size_t head_chat_len, head_text_len;

    pthread_t thread;
    bool thread_started;
    CURLM *multi;
    pthread_mutex_t mu;       /* guards incoming, cancels, stop */
    struct up_job *incoming;
    uint64_t *cancels;
    size_t n_cancels, cap_cancels;
    bool stop;
    _Atomic uint64_t next_id;

    struct up_job *active;    /* I/O thread only */
    _Atomic int loops;        /* loops with a multi for this upstream */
};

/* One upstream's relays on one event loop: a curl multi whose sockets the
 * loop watches and whose timer is a loop timer; the loop thread only. */
struct up_loop {
    struct upstream *u;
    sx_loop *loop;
    CURLM *multi;
    struct sx_loop_timer timer; /* curl's */
    struct sx_loop_timer sweep; /* idle timeouts, while relays run */
    struct up_job *active;
    sx_http1_pool *pool;        /* our client's connections; NULL: curl's */
    struct up_sock *socks;      /* watched sockets */
    CURL *spare[UP_SPARE_HANDLES]; /* handles of finished relays */
    int n_spare;
};

/* A socket of the loop's curl multi. When curl lets go of one that stays
 * open (its connection goes back to the cache), it stays watched for
 * EPOLLIN, "parked": the next relay on that connection asks for the same
 * event, which then costs no epoll_ctl; an event on a parked socket (the
 * server closed it) unwatches it; curl closing it (close_socket) removes
 * it for good. */
struct up_sock {
    struct sx_loop_watch watch;
    struct up_loop *ul;
    struct up_sock *next, *prev;
    uint32_t events; /* what the watch asks for */
    bool parked;
};

static struct up_loop *loop_state(struct upstream *u, sx_loop *l);

static void job_free(struct up_job *j)
{
    if (!j)
        return;
    /* A relay's handle stays with its loop for the next one (curl keeps
     * its buffers in it). */
    if (j->easy && j->ul && j->ul->loop == sx_loop_current() &&
        j->ul->n_spare < UP_SPARE_HANDLES)
        j->ul->spare[j->ul->n_spare++] = j->easy;
    else if (j->easy)
        curl_easy_cleanup(j->easy);
    free(j->body);
    free(j->buf);
    free(j);
}

static int buf_append(struct up_job *j, const char *p, size_t n, size_t max)
{
    if (j->len + n + 1 > max)
        return SX_ETOOBIG;
    if (j->len + n + 1 > j->cap) {
        size_t cap = j->cap ? j->cap : 4096;
        char *grown;

        while (cap < j->len + n + 1)
            cap *= 2;
        grown = realloc(j->buf, cap);
        if (!grown)
            return SX_ENOMEM;
        j->buf = grown;
        j->cap = cap;
    }
    memcpy(j->buf + j->len, p, n);
    j->len += n;
    j->buf[j->len] = '\0';
    return 0;
}

static const char *static_finish(const char *s)
{
    if (!s)
        return NULL;
    if (strcmp(s, "length") == 0)
        return "length";
    if (strcmp(s, "content_filter") == 0)
        return "content_filter";
    return "stop";
}

/* ---- the event stream ---------------------------------------------------- */

/* One parsed chunk: text out through the sink, usage and finish noted. */
static int on_chunk(struct up_job *j, json_t *o)
{
    json_t *err = json_object_get(o, "error"), *usage = json_object_get(o, "usage");
    json_t *choices = json_object_get(o, "choices"), *c0 = json_array_get(choices, 0);

    if (err) {
        json_t *m = json_is_object(err) ? json_object_get(err, "message") : err;

        j->failed = true;
        sx_gen_fail(&j->err, SX_EUPSTREAM, 502, "upstream_error", NULL,
                    "the upstream model server failed mid-stream: %.300s",
                    json_is_string(m) ? json_string_value(m) : "(no message)");
        return 1;
    }
    if (json_is_object(usage)) {
        json_t *p = json_object_get(usage, "prompt_tokens");
        json_t *c = json_object_get(usage, "completion_tokens");

        if (json_is_integer(p) && json_is_integer(c)) {
            j->usage = true;
            j->prompt_tokens = json_integer_value(p);
            j->completion_tokens = json_integer_value(c);
        }
    }
    if (json_is_object(c0)) {
        json_t *text = j->kind == SX_GEN_CHAT
                           ? json_object_get(json_object_get(c0, "delta"), "content")
                           : json_object_get(c0, "text");
        json_t *lp = json_object_get(c0, "logprobs");
        json_t *fr = json_object_get(c0, "finish_reason");
        json_t *items = json_is_object(lp) ? json_object_get(lp, "content") : NULL;
        const char *s = json_is_string(text) ? json_string_value(text) : "";
        size_t n = json_is_string(text) ? json_string_length(text) : 0;

        if (n || json_is_array(items)) {
            j->out_bytes += (int64_t)n;
            j->out_chunks++;
            if (j->sink.delta(j->sink.ctx, s, n, json_is_array(items) ? items : NULL))
                return -1;
        }
        if (json_is_string(fr)) {
            j->saw_finish = true;
            j->finish_reason = static_finish(json_string_value(fr));
        }
    }
    return 0;
}

/* What whole_response() keeps of a completion: its first choice's text,
 * logprobs and finish reason, and the usage. As with jansson, the last of
 * duplicate keys counts. */
struct whole {
    bool choice, finish_set, usage_prompt, usage_completion;
    char *text;
    size_t text_len;
    json_t *items; /* logprobs.content */
    char finish[32];
    long long prompt_tokens, completion_tokens;
};

static void whole_clear_text(struct whole *w)
{
    free(w->text);
    w->text = NULL;
    w->text_len = 0;
}

static void whole_clear_choice(struct whole *w)
{
    whole_clear_text(w);
    json_decref(w->items);
    w->items = NULL;
    w->finish_set = false;
    w->choice = false;
}

/* A text field: the string, or nothing when it is another type. */
static void read_text(struct sx_json_rd *r, struct whole *w)
{
    whole_clear_text(w);
    sx_json_rd_strdup(r, &w->text, &w->text_len);
}

static void read_choice(struct sx_json_rd *r, struct whole *w, bool chat)
{
    char key[32], k2[32];
    const char *span;
    size_t n;

    w->choice = true;
    while (sx_json_rd_member(r, key, sizeof(key))) {
        if (chat && strcmp(key, "message") == 0) {
            whole_clear_text(w);
            if (!sx_json_rd_object(r)) {
                sx_json_rd_skip(r);
                continue;
            }
            while (sx_json_rd_member(r, k2, sizeof(k2)))
                if (strcmp(k2, "content") == 0)
                    read_text(r, w);
                else
                    sx_json_rd_skip(r);
        } else if (!chat && strcmp(key, "text") == 0) {
            read_text(r, w);
        } else if (strcmp(key, "logprobs") == 0) {
            json_decref(w->items);
            w->items = NULL;
            if (!sx_json_rd_object(r)) {
                sx_json_rd_skip(r);
                continue;
            }
            while (sx_json_rd_member(r, k2, sizeof(k2))) {
                if (strcmp(k2, "content") != 0) {
                    sx_json_rd_skip(r);
                } else if (sx_json_rd_span(r, &span, &n)) {
                    json_decref(w->items); /* rare: jansson for the tree */
                    w->items = json_loadb(span, n, 0, NULL);
                    if (!json_is_array(w->items)) {
                        json_decref(w->items);
                        w->items = NULL;
                    }
                }
            }
        } else if (strcmp(key, "finish_reason") == 0) {
            w->finish_set = sx_json_rd_str(r, w->finish, sizeof(w->finish), NULL) == 1;
        } else {
            sx_json_rd_skip(r);
        }
    }
}

/* A whole (non-streamed) completion: its text and logprobs through the
 * sink as one piece, usage and finish noted. 0, or nonzero (j->err set)
 * when the body is not an OpenAI completion. Read in place (base/json's
 * reader): building a jansson tree of the answer was the largest single
 * cost of a relayed request. */
static int whole_response(struct upstream *u, struct up_job *j)
{
    struct sx_json_rd r;
    struct whole w = {0};
    char key[32];
    bool chat = j->kind == SX_GEN_CHAT;

    sx_json_rd_init(&r, j->buf ? j->buf : "", j->len);
    if (sx_json_rd_object(&r)) {
        while (sx_json_rd_member(&r, key, sizeof(key))) {
            if (strcmp(key, "choices") == 0) {
                whole_clear_choice(&w);
                if (!sx_json_rd_array(&r)) {
                    sx_json_rd_skip(&r);
                    continue;
                }
                for (int i = 0; sx_json_rd_element(&r); i++)
                    if (i == 0 && sx_json_rd_object(&r))
                        read_choice(&r, &w, chat);
                    else
                        sx_json_rd_skip(&r);
            } else if (strcmp(key, "usage") == 0) {
                w.usage_prompt = w.usage_completion = false;
                if (!sx_json_rd_object(&r)) {
                    sx_json_rd_skip(&r);
                    continue;
                }
                while (sx_json_rd_member(&r, key, sizeof(key)))
                    if (strcmp(key, "prompt_tokens") == 0)
                        w.usage_prompt = sx_json_rd_int(&r, &w.prompt_tokens) == 1;
                    else if (strcmp(key, "completion_tokens") == 0)
                        w.usage_completion = sx_json_rd_int(&r, &w.completion_tokens) == 1;
                    else
                        sx_json_rd_skip(&r);
            } else {
                sx_json_rd_skip(&r);
            }
        }
    }
    if (!sx_json_rd_end(&r) || !w.choice) {
        whole_clear_choice(&w);
        return sx_gen_fail(&j->err, SX_EUPSTREAM, 502, "upstream_error", NULL,
                           "the upstream model server for '%s' sent a response that is "
                           "not an OpenAI completion", u->base.name);
    }
    if (w.usage_prompt && w.usage_completion) {
        j->usage = true;
        j->prompt_tokens = w.prompt_tokens;
        j->completion_tokens = w.completion_tokens;
    }
    /* As in a stream, the sink's refusal (the client went away) ends the
     * job without an upstream error. */
    if (w.text_len || w.items) {
        j->out_bytes += (int64_t)w.text_len;
        j->out_chunks++;
        j->sink.delta(j->sink.ctx, w.text ? w.text : "", w.text_len, w.items);
    }
    j->saw_finish = true;
    j->finish_reason = static_finish(w.finish_set ? w.finish : NULL);
    whole_clear_choice(&w);
    return 0;
}

/* Handles complete lines of the stream; keeps a partial last line.
 * Returns nonzero to stop the transfer. */
static int sse_lines(struct up_job *j)
{
    size_t start = 0;
    int rc = 0;

    for (size_t i = 0; i < j->len && rc == 0; i++) {
        char *line = j->buf + start;
        size_t n;
        json_t *o;

        if (j->buf[i] != '\n')
            continue;
        n = i - start;
        start = i + 1;
        if (n && line[n - 1] == '\r')
            n--;
        if (n < 5 || strncmp(line, "data:", 5) != 0)
            continue; /* comments, event names, blank separators */
        line += 5;
        n -= 5;
        if (n && *line == ' ')
            line++, n--;
        if (n == 6 && memcmp(line, "[DONE]", 6) == 0) {
            j->saw_done = true;
            continue;
        }
        o = json_loadb(line, n, 0, NULL);
        if (json_is_object(o))
            rc = on_chunk(j, o);
        json_decref(o);
    }
    memmove(j->buf, j->buf + start, j->len - start);
    j->len -= start;
    if (j->buf)
        j->buf[j->len] = '\0';
    return rc;
}

/* The response's status and type are in. */
static void take_head(void *ctx, int status, const char *content_type)
{
    struct up_job *j = ctx;

    j->last_ns = sx_time_mono_ns();
    j->status = status;
    j->sse = status / 100 == 2 && content_type && strstr(content_type, "text/event-stream");
}

/* Body bytes: a stream's lines handled as they complete, anything else
 * kept whole. Nonzero stops the transfer. */
static int take_body(void *ctx, const char *p, size_t n)
{
    struct up_job *j = ctx;

    j->last_ns = sx_time_mono_ns();
    if (buf_append(j, p, n, j->status / 100 == 2 ? LINE_MAX_BYTES : ERR_BODY_MAX)) {
        if (j->status / 100 != 2)
            return 0; /* an oversized error body: keep what we have */
        j->failed = true;
        sx_gen_fail(&j->err, SX_EUPSTREAM, 502, "upstream_error", NULL,
                    "the upstream model server sent a response too large to relay");
        return 1;
    }
    return j->sse ? sse_lines(j) : 0;
}

/* libcurl's write callback: the head is read from the handle first. */
static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    struct up_job *j = ud;
    size_t n = size * nmemb;

    if (!j->status) {
        long status = 0;
        char *ct = NULL;

        curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(j->easy, CURLINFO_CONTENT_TYPE, &ct);
        take_head(j, (int)status, ct);
    }
    return take_body(j, p, n) ? 0 : n;
}

/* ---- finishing a job ----------------------------------------------------- */

/* Whether an upstream's refusal is about the prompt's length. Without
 * context= in its configuration only the upstream knows the model's context;
 * vLLM and OpenAI ("maximum context length", OpenAI also as this code) and
 * llama.cpp server ("exceeds the available context size") say so in words. */
static bool says_context_exceeded(const char *msg)
{
    return strstr(msg, "context length") || strstr(msg, "context_length") ||
           strstr(msg, "maximum context") || strstr(msg, "exceeds the available context");
}

/* The upstream answered with an error status: say what it said. */
static void http_error(struct upstream *u, struct up_job *j)
{
    json_t *o = j->buf ? json_loadb(j->buf, j->len, 0, NULL) : NULL;
    json_t *e = json_object_get(o, "error");
    json_t *m = json_is_object(e) ? json_object_get(e, "message") : e;
    const char *msg = json_is_string(m) ? json_string_value(m) : "(no message)";
    int status = 502;
    const char *code = "upstream_error";

    if (j->status == 400 || j->status == 404 || j->status == 413 || j->status == 422) {
        status = 400;
        code = says_context_exceeded(msg) ? "context_length_exceeded" : "upstream_rejected";
    } else if (j->status == 429 || j->status == 503) {
        status = 503;
        code = "upstream_busy";
    }
    sx_gen_fail(&j->err, SX_EUPSTREAM, status, code, NULL,
                "the upstream model server for '%s' answered HTTP %ld: %.300s", u->base.name,
                j->status, msg);
    if (status == 503)
        j->err.retry_after_s = 2;
    json_decref(o);
}

static void finish_embed(struct upstream *u, struct up_job *j)
{
    json_t *o = json_loadb(j->buf ? j->buf : "", j->len, 0, NULL);
    json_t *data = json_object_get(o, "data");
    json_t *pt = json_object_get(json_object_get(o, "usage"), "prompt_tokens");
    float *vecs = NULL;
    int dim = 0;

    if (!json_is_array(data) || json_array_size(data) != j->n_inputs)
        goto bad;
    for (size_t i = 0; i < j->n_inputs; i++) {
        json_t *item = json_array_get(data, i);
        json_t *idx = json_object_get(item, "index");
        json_t *emb = json_object_get(item, "embedding");
        size_t row = json_is_integer(idx) ? (size_t)json_integer_value(idx) : i;

        if (!json_is_array(emb) || row >= j->n_inputs)
            goto bad;
        if (!vecs) {
            dim = (int)json_array_size(emb);
            vecs = calloc(j->n_inputs * (size_t)dim, sizeof(float));
            if (!vecs || dim == 0)
                goto bad;
        }
        if ((int)json_array_size(emb) != dim)
            goto bad;
        for (int k = 0; k < dim; k++)
            vecs[row * (size_t)dim + (size_t)k] =
                (float)json_number_value(json_array_get(emb, (size_t)k));
    }
    j->edone(j->ectx, vecs, dim,
             json_is_integer(pt) ? json_integer_value(pt) : (int64_t)(j->len / 4), NULL);
    free(vecs);
    json_decref(o);
    return;
bad:
    free(vecs);
    json_decref(o);
    sx_gen_fail(&j->err, SX_EUPSTREAM, 502, "upstream_error", NULL,
                "the upstream model server for '%s' sent an embeddings response that is "
                "not in the OpenAI shape", u->base.name);
    j->edone(j->ectx, NULL, 0, 0, &j->err);
}

/* How a curl transfer ended; its words in j->errbuf. */
static enum up_end curl_end(struct up_job *j, CURLcode cc)
{
    if (cc == CURLE_OK)
        return END_OK;
    if (cc == CURLE_WRITE_ERROR)
        return END_STOPPED;
    if (!j->errbuf[0])
        snprintf(j->errbuf, sizeof(j->errbuf), "%s", curl_easy_strerror(cc));
    if (cc == CURLE_OPERATION_TIMEDOUT)
        return END_CONNECT_TIMEOUT;
    if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST ||
        cc == CURLE_COULDNT_RESOLVE_PROXY)
        return END_UNREACHABLE;
    return END_BROKEN;
}

/* Reports a job's end through its sink and frees it. */
static void finish(struct upstream *u, struct up_job *j, enum up_end end, bool cancelled)
{
    struct sx_gen_result res = {0};

    if (!cancelled && !j->failed) {
        if (end == END_CONNECT_TIMEOUT || end == END_IDLE_TIMEOUT)
            sx_gen_fail(&j->err, SX_ETIMEOUT, 504, "upstream_timeout", NULL,
                        "the upstream model server for '%s' %s within %d ms", u->base.name,
                        end == END_IDLE_TIMEOUT ? "sent nothing"
                                                : "did not accept the connection",
                        end == END_IDLE_TIMEOUT ? u->timeout_ms : u->connect_ms);
        else if (end == END_UNREACHABLE)
            sx_gen_fail(&j->err, SX_EUPSTREAM, 502, "upstream_unreachable", NULL,
                        "cannot connect to the upstream model server for '%s': %s",
                        u->base.name, j->errbuf);
        else if (end == END_BROKEN)
            sx_gen_fail(&j->err, SX_EUPSTREAM, 502, "upstream_error", NULL,
                        "the connection to the upstream model server for '%s' failed: %s",
                        u->base.name, j->errbuf);
        else if (j->status / 100 != 2)
            http_error(u, j);
        else if (j->type == JOB_GEN && !j->sse)
            whole_response(u, j); /* sets j->err when it is not one */
        else if (j->type == JOB_GEN && !j->saw_finish && !j->saw_done)
            sx_gen_fail(&j->err, SX_EUPSTREAM, 502, "upstream_error", NULL,
                        "the upstream model server for '%s' closed the stream before the "
                        "end", u->base.name);
        else
            j->err.status = 0;
        j->failed = j->err.status != 0;
    }

    if (j->type == JOB_EMBED) {
        if (cancelled)
            sx_gen_fail(&j->err, SX_ECANCELED, 499, "cancelled", NULL, "cancelled");
        if (cancelled || j->failed)
            j->edone(j->ectx, NULL, 0, 0, &j->err);
        else
            finish_embed(u, j);
        job_free(j);
        return;
    }

    /* Without the upstream's usage, count locally (about 4 bytes a token);
     * a job that failed before the upstream sent anything costs nothing. */
    res.prompt_tokens = j->usage                          ? j->prompt_tokens
                        : j->failed && j->out_chunks == 0 ? 0
                                                          : j->est_prompt;
    res.completion_tokens = j->usage ? j->completion_tokens
                            : j->out_bytes / 4 > j->out_chunks ? j->out_bytes / 4
                                                               : j->out_chunks;
    res.cancelled = cancelled;
    res.failed = !cancelled && j->failed;
    res.err = j->err;
    res.finish_reason = res.cancelled || res.failed ? NULL
                        : j->finish_reason          ? j->finish_reason
                                                    : "stop";
    j->sink.done(j->sink.ctx, &res);
    job_free(j);
}

/* ---- the I/O thread -------------------------------------------------------- */

/* Takes an active job off the client that carries it, which then says
 * no more of it. */
static void job_detach(CURLM *multi, struct up_job *j)
{
    if (j->own)
        sx_http1_abort(&j->x);
    else
        curl_multi_remove_handle(multi, j->easy);
}

static void unlink_active(struct upstream *u, struct up_job *j)
{
    struct up_job **head = j->ul ? &j->ul->active : &u->active;

    if (j->prev)
        j->prev->next = j->next;
    else
        *head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    j->next = j->prev = NULL;
}

static void admit_incoming(struct upstream *u, struct up_job *list)
{
    while (list) {
        struct up_job *j = list;

        list = j->next;
        j->last_ns = sx_time_mono_ns();
        j->next = u->active;
        j->prev = NULL;
        if (u->active)
            u->active->prev = j;
        u->active = j;
        if (curl_multi_add_handle(u->multi, j->easy) != CURLM_OK) {
            unlink_active(u, j);
            sx_gen_fail(&j->err, SX_EUPSTREAM, 500, NULL, NULL,
                        "could not start the upstream request");
            j->failed = true;
            finish(u, j, END_OK, false);
        }
    }
}

static void apply_cancels(struct upstream *u, uint64_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (struct up_job *j = u->active; j; j = j->next)
            if (j->id == ids[i]) {
                curl_multi_remove_handle(u->multi, j->easy);
                unlink_active(u, j);
                finish(u, j, END_OK, true);
                break;
            }
}

/* Silence past the timeout ends a transfer with 504: a long generation
 * that keeps streaming is never cut, a stalled one is. (curl's connect
 * timeout covers the connection itself.) */
static void expire_idle(struct upstream *u, CURLM *multi, struct up_job *j)
{
    int64_t now = sx_time_mono_ns(), limit = (int64_t)u->timeout_ms * 1000000;
    struct up_job *next;

    for (; j; j = next) {
        next = j->next;
        if (now - j->last_ns < limit)
            continue;
        job_detach(multi, j);
        unlink_active(u, j);
        finish(u, j, END_IDLE_TIMEOUT, false);
    }
}

/* Ends the transfers of multi that curl reports done. */
static void reap(struct upstream *u, CURLM *multi)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(multi, &left))) {
        struct up_job *j = NULL;

        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
        if (!j->status)
            curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &j->status);
        curl_multi_remove_handle(multi, j->easy);
        unlink_active(u, j);
        finish(u, j, curl_end(j, msg->data.result), false);
    }
}

static void *io_main(void *arg)
{
    struct upstream *u = arg;
    uint64_t *ids = NULL;
    size_t cap = 0;

    for (;;) {
        struct up_job *in;
        size_t n = 0;
        bool stop;
        int running;

        /* 1. Take new jobs and cancellations. */
        pthread_mutex_lock(&u->mu);
        in = u->incoming;
        u->incoming = NULL;
        if (u->n_cancels > cap) {
            uint64_t *grown = realloc(ids, u->n_cancels * sizeof(*ids));

            if (grown) {
                ids = grown;
                cap = u->n_cancels;
            }
        }
        n = u->n_cancels <= cap ? u->n_cancels : cap;
        if (n)
            memcpy(ids, u->cancels, n * sizeof(*ids));
        u->n_cancels = 0;
        stop = u->stop;
        pthread_mutex_unlock(&u->mu);

        admit_incoming(u, in);
        apply_cancels(u, ids, n);
        if (stop)
            break;

        /* 2. Move bytes, then reap finished transfers. */
        curl_multi_perform(u->multi, &running);
        reap(u, u->multi);
        expire_idle(u, u->multi, u->active);
        curl_multi_poll(u->multi, NULL, 0, u->active ? 100 : 1000, NULL);
    }

    /* Shutdown: everything still open ends cancelled. */
    while (u->active) {
        struct up_job *j = u->active;

        curl_multi_remove_handle(u->multi, j->easy);
        unlink_active(u, j);
        finish(u, j, END_OK, true);
    }
    free(ids);
    return NULL;
}

/* ---- relays on an event loop ----------------------------------------------- */

static void sock_drop(struct up_sock *k)
{
    struct up_loop *ul = k->ul;

    sx_loop_unwatch(ul->loop, &k->watch);
    if (k->prev)
        k->prev->next = k->next;
    else
        ul->socks = k->next;
    if (k->next)
        k->next->prev = k->prev;
    free(k);
}

static struct up_sock *sock_find(struct up_loop *ul, curl_socket_t s)
{
    for (struct up_sock *k = ul->socks; k; k = k->next)
        if (k->watch.fd == s)
            return k;
    return NULL;
}

static void loop_io(void *ctx, uint32_t events)
{
    struct up_sock *k = ctx;
    struct up_loop *ul = k->ul;
    int flags = (events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                (events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                (events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
    int running;

    if (k->parked) { /* an idle connection spoke or closed: curl finds out on reuse */
        sock_drop(k);
        return;
    }
    /* k may be gone after this (curl let go of the socket). */
    curl_multi_socket_action(ul->multi, k->watch.fd, flags, &running);
    reap(ul->u, ul->multi);
}

/* curl: watch s for what (CURL_POLL_*), or stop watching it. */
static int loop_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct up_loop *ul = userp;
    struct up_sock *k = socketp;
    uint32_t events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (k) {
            curl_multi_assign(ul->multi, s, NULL);
            k->parked = true;
            if (k->events != EPOLLIN) {
                k->events = EPOLLIN;
                if (sx_loop_watch(ul->loop, &k->watch, EPOLLIN) != 0)
                    sock_drop(k);
            }
        }
        return 0;
    }
    if (!k && (k = sock_find(ul, s)) != NULL) {
        k->parked = false;
        curl_multi_assign(ul->multi, s, k);
    }
    if (!k) {
        if (!(k = calloc(1, sizeof(*k))))
            return -1;
        k->watch = (struct sx_loop_watch){s, loop_io, k, false};
        k->ul = ul;
        k->next = ul->socks;
        if (ul->socks)
            ul->socks->prev = k;
        ul->socks = k;
        curl_multi_assign(ul->multi, s, k);
    }
    if (k->events == events && k->watch.added)
        return 0;
    k->events = events;
    return sx_loop_watch(ul->loop, &k->watch, events) == 0 ? 0 : -1;
}

/* curl closes a socket of this loop's multi: it is unwatched first. */
static int close_socket(void *clientp, curl_socket_t s)
{
    struct up_loop *ul = clientp;
    struct up_sock *k = sock_find(ul, s);

    /* curl said REMOVE before this (Curl_multi_closed), so k is parked
     * and curl holds no pointer to it. */
    if (k)
        sock_drop(k);
    return close(s);
}

static void loop_timeout(void *ctx)
{
    struct up_loop *ul = ctx;
    int running;

    curl_multi_socket_action(ul->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    reap(ul->u, ul->multi);
}

/* curl: call back in timeout_ms (-1: no timer). */
static int loop_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct up_loop *ul = userp;

    (void)multi;
    sx_loop_timer_set(ul->loop, &ul->timer,
                      timeout_ms < 0 ? -1 : sx_time_mono_ns() + (int64_t)timeout_ms * 1000000);
    return 0;
}

static void loop_sweep(void *ctx)
{
    struct up_loop *ul = ctx;

    expire_idle(ul->u, ul->multi, ul->active);
    if (ul->active)
        sx_loop_timer_set(ul->loop, &ul->sweep, sx_time_mono_ns() + 100000000);
}

/* The loop is stopping: its relays end cancelled, its multi goes. */
static void loop_free(void *ctx)
{
    struct up_loop *ul = ctx;

    sx_loop_timer_set(ul->loop, &ul->timer, -1);
    sx_loop_timer_set(ul->loop, &ul->sweep, -1);
    while (ul->active) {
        struct up_job *j = ul->active;

        job_detach(ul->multi, j);
        unlink_active(ul->u, j);
        finish(ul->u, j, END_OK, true);
    }
    sx_http1_pool_free(ul->pool);
    while (ul->n_spare)
        curl_easy_cleanup(ul->spare[--ul->n_spare]);
    curl_multi_cleanup(ul->multi);
    while (ul->socks) /* sockets curl did not say it let go of */
        sock_drop(ul->socks);
    atomic_fetch_sub(&ul->u->loops, 1);
    free(ul);
}

/* This upstream's state on loop l, made on first use; NULL when out of
 * memory (the relay then goes to the I/O thread). */
static struct up_loop *loop_state(struct upstream *u, sx_loop *l)
{
    void **slot = sx_loop_slot(l, u, loop_free);
    struct up_loop *ul;

    if (!slot)
        return NULL;
    if (*slot)
        return *slot;
    if (!(ul = calloc(1, sizeof(*ul))) || !(ul->multi = curl_multi_init())) {
        free(ul);
        return NULL;
    }
    ul->u = u;
    ul->loop = l;
    ul->timer = (struct sx_loop_timer){.fn = loop_timeout, .ctx = ul};
    ul->sweep = (struct sx_loop_timer){.fn = loop_sweep, .ctx = ul};
    curl_multi_setopt(ul->multi, CURLMOPT_SOCKETFUNCTION, loop_socket);
    curl_multi_setopt(ul->multi, CURLMOPT_SOCKETDATA, ul);
    curl_multi_setopt(ul->multi, CURLMOPT_TIMERFUNCTION, loop_timer);
    curl_multi_setopt(ul->multi, CURLMOPT_TIMERDATA, ul);
    /* Keep idle connections: by default the cache holds 4 per transfer
     * still added, and every relay's handle goes when it ends, so finished
     * relays would close the connections the next ones need. */
    curl_multi_setopt(ul->multi, CURLMOPT_MAXCONNECTS, (long)UP_IDLE_CONNECTIONS);
    /* Without a pool (out of memory) the loop's relays go through curl. */
    if (u->own_client)
        ul->pool = sx_http1_pool_new(l, &u->target, UP_IDLE_CONNECTIONS);
    atomic_fetch_add(&u->loops, 1);
    *slot = ul;
    return ul;
}

/* Our client's end of an exchange. */
static void own_done(void *ctx, enum sx_http1_end end, const char *msg)
{
    static const enum up_end ends[] = {
        [SX_HTTP1_OK] = END_OK,
        [SX_HTTP1_STOPPED] = END_STOPPED,
        [SX_HTTP1_UNREACHABLE] = END_UNREACHABLE,
        [SX_HTTP1_CONNECT_TIMEOUT] = END_CONNECT_TIMEOUT,
        [SX_HTTP1_BROKEN] = END_BROKEN,
    };
    struct up_job *j = ctx;
    struct upstream *u = j->ul->u;

    snprintf(j->errbuf, sizeof(j->errbuf), "%s", msg);
    unlink_active(u, j);
    finish(u, j, ends[end], false);
}

/* Starts j on the loop it was made on (job_new), which must be the
 * calling thread's; 1 when it has none, so the I/O thread takes it. */
static int start_on_loop(struct upstream *u, struct up_job *j, uint64_t *id,
                         struct sx_gen_error *e)
{
    struct up_loop *ul = j->ul;
    sx_loop *l = ul ? ul->loop : NULL;
    int rc;

    if (!l || l != sx_loop_current())
        return 1;
    j->id = (atomic_fetch_add(&u->next_id, 1) + 1) |
            (uint64_t)(sx_loop_index(l) + 1) << ID_LOOP_SHIFT;
    if (id)
        *id = j->id;
    j->last_ns = sx_time_mono_ns();
    j->prev = NULL;
    j->next = ul->active;
    if (ul->active)
        ul->active->prev = j;
    ul->active = j;
    if (j->own) {
        bool chat = j->kind == SX_GEN_CHAT;
        struct iovec iov[3] = {
            {chat ? u->head_chat : u->head_text, chat ? u->head_chat_len : u->head_text_len},
            {j->length, strlen(j->length)},
            {j->body, j->body_len},
        };
        const struct sx_http1_sink sink = {j, take_head, take_body};

        rc = sx_http1_send(ul->pool, &j->x, iov, 3, u->connect_ms, &sink, own_done);
    } else {
        /* The connection this relay opens closes through close_socket(). */
        curl_easy_setopt(j->easy, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
        curl_easy_setopt(j->easy, CURLOPT_CLOSESOCKETDATA, ul);
        rc = curl_multi_add_handle(ul->multi, j->easy) == CURLM_OK ? 0 : SX_EUPSTREAM;
    }
    if (rc != 0) {
        unlink_active(u, j);
        job_free(j);
        return sx_gen_fail(e, SX_EUPSTREAM, 500, NULL, NULL,
                           "could not start the upstream request");
    }
    if (!ul->sweep.armed)
        sx_loop_timer_set(l, &ul->sweep, j->last_ns + 100000000);
    return 0;
}

struct loop_cancel {
    struct upstream *u;
    uint64_t id;
};

/* On the relay's loop, outside any callback of the connection. */
static void cancel_on_loop(void *ctx)
{
    struct loop_cancel *c = ctx;
    void **slot = sx_loop_slot(sx_loop_current(), c->u, loop_free);
    struct up_loop *ul = slot ? *slot : NULL;

    for (struct up_job *j = ul ? ul->active : NULL; j; j = j->next)
        if (j->id == c->id) {
            job_detach(ul->multi, j);
            unlink_active(c->u, j);
            finish(c->u, j, END_OK, true);
            break;
        }
    free(c);
}

/* ---- the backend operations --------------------------------------------- */

/* Gives j a curl handle: one of its loop's spares (the options every
 * relay shares are still set, only the relay's own change) when on that
 * loop, else a new one. 0 or SX_ENOMEM. */
static int easy_setup(struct upstream *u, struct up_job *j)
{
    struct up_loop *ul = j->ul;
    bool spare = ul && ul->loop == sx_loop_current() && ul->n_spare;
    char url[2048];

    j->easy = spare ? ul->spare[--ul->n_spare] : curl_easy_init();
    if (!j->easy)
        return SX_ENOMEM;
    if (!spare) {
        curl_easy_setopt(j->easy, CURLOPT_HTTPHEADER, u->headers);
        curl_easy_setopt(j->easy, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(j->easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(j->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)u->connect_ms);
        curl_easy_setopt(j->easy, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(j->easy, CURLOPT_TCP_NODELAY, 1L);
    }
    snprintf(url, sizeof(url), "%s%s", u->url, j->path);
    curl_easy_setopt(j->easy, CURLOPT_URL, url);
    curl_easy_setopt(j->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->body_len);
    curl_easy_setopt(j->easy, CURLOPT_POSTFIELDS, j->body);
    curl_easy_setopt(j->easy, CURLOPT_WRITEDATA, j);
    curl_easy_setopt(j->easy, CURLOPT_PRIVATE, (char *)j);
    curl_easy_setopt(j->easy, CURLOPT_ERRORBUFFER, j->errbuf);
    return 0;
}

static struct up_job *job_new(struct upstream *u, enum job_type type, const char *path,
                              json_t *body, struct sx_gen_error *e)
{
    struct up_job *j = calloc(1, sizeof(*j));
    sx_loop *l = sx_loop_current();
    struct up_loop *ul = l ? loop_state(u, l) : NULL;
    struct sx_json_out out = {0};

    if (!j) {
        json_decref(body);
        sx_gen_fail(e, SX_ENOMEM, 500, NULL, NULL, "out of memory");
        return NULL;
    }
    j->base.backend = &u->base;
    j->type = type;
    j->path = path;
    sx_json_out_value(&out, body);
    j->body = sx_json_out_take(&out, &j->body_len);
    json_decref(body);
    j->ul = ul;
    /* A generation on a loop with our client's pool goes through it; the
     * rest through curl. */
    j->own = ul && ul->pool && type == JOB_GEN;
    if (j->own)
        snprintf(j->length, sizeof(j->length), "%zu\r\n\r\n", j->body_len);
    if (!j->body || (!j->own && easy_setup(u, j) != 0)) {
        job_free(j);
        sx_gen_fail(e, SX_ENOMEM, 500, NULL, NULL, "out of memory");
        return NULL;
    }
    return j;
}

int sx_backend_adapter_name(const sx_backend *b, const char *slug, int version, char *buf,
                            size_t len)
{
    const struct upstream *u = (const struct upstream *)b;
    size_t off = 0;

    if (strcmp(b->kind, "upstream") != 0 || !u->lora)
        return SX_EUNSUPPORTED;
    for (const char *p = u->lora; *p; ) {
        char num[16];
        const char *put = NULL;
        size_t n;

        if (strncmp(p, "{slug}", 6) == 0) {
            put = slug;
            p += 6;
        } else if (strncmp(p, "{version}", 9) == 0) {
            snprintf(num, sizeof(num), "%d", version);
            put = num;
            p += 9;
        } else if (strncmp(p, "{model}", 7) == 0) {
            put = u->model;
            p += 7;
        }
        n = put ? strlen(put) : 1;
        if (off + n + 1 > len)
            return SX_ETOOBIG;
        memcpy(buf + off, put ? put : p++, n);
        off += n;
    }
    buf[off] = '\0';
    return 0;
}

static int up_prepare(sx_backend *b, const struct sx_gen_request *req, sx_gen_job **out,
                      int64_t *prompt_tokens, struct sx_gen_error *e)
{
    struct upstream *u = (struct upstream *)b;
    json_t *body = json_object(), *stop;
    struct up_job *j;
    int64_t bytes = 0, n_msgs = 1;
    char name[256];

    /* 1. The OpenAI body, in the upstream's model name (the tenant's
     * adapter's name when it has one), streamed when the client's is. */
    if (req->adapter_version > 0 && req->adapter_slug) {
        if (sx_backend_adapter_name(b, req->adapter_slug, req->adapter_version, name,
                                    sizeof(name))) {
            json_decref(body);
            return sx_gen_fail(e, SX_EINVAL, 500, NULL, NULL,
                               "model '%s' cannot name the tenant's adapter upstream",
                               b->name);
        }
        json_object_set_new(body, "model", json_string(name));
    } else {
        json_object_set_new(body, "model", json_string(u->model));
    }
    if (req->kind == SX_GEN_CHAT) {
        size_t i;
        json_t *m;

        /* Shared, not copied: the body is serialised before this returns. */
        json_object_set(body, "messages", (json_t *)req->messages);
        json_array_foreach(req->messages, i, m)
            bytes += (int64_t)json_string_length(json_object_get(m, "content")) + 4;
        n_msgs = (int64_t)json_array_size(req->messages);
    } else {
        json_object_set_new(body, "prompt", json_stringn(req->prompt, req->prompt_len));
        bytes = (int64_t)req->prompt_len;
    }
    json_object_set_new(body, "stream", json_boolean(req->stream));
    if (req->stream)
        json_object_set_new(body, "stream_options", json_pack("{s:b}", "include_usage", 1));
    json_object_set_new(body, "max_tokens", json_integer(req->max_tokens));
    json_object_set_new(body, "temperature", json_real(req->temperature));
    json_object_set_new(body, "top_p", json_real(req->top_p));
    if (req->presence_penalty != 0)
        json_object_set_new(body, "presence_penalty", json_real(req->presence_penalty));
    if (req->frequency_penalty != 0)
        json_object_set_new(body, "frequency_penalty", json_real(req->frequency_penalty));
    if (req->n_stop) {
        stop = json_array();
        for (int i = 0; i < req->n_stop; i++)
            json_array_append_new(stop, json_string(req->stop[i]));
        json_object_set_new(body, "stop", stop);
    }
    if (req->has_seed)
        json_object_set_new(body, "seed", json_integer(req->seed));
    if (req->logprobs) {
        json_object_set_new(body, "logprobs", json_true());
        if (req->top_logprobs)
            json_object_set_new(body, "top_logprobs", json_integer(req->top_logprobs));
    }
    if (req->user)
        json_object_set_new(body, "user", json_string(req->user));

    /* 2. The estimate, checked against a configured context. */
    *prompt_tokens = (bytes + 3) / 4;
    if (b->context && *prompt_tokens + 1 > b->context) {
        json_decref(body);
        return sx_gen_fail(e, SX_ETOOBIG, 400, "context_length_exceeded", "messages",
                           "this model's maximum context length is %lld tokens, and the "
                           "prompt has about %lld; shorten the messages",
                           (long long)b->context, (long long)*prompt_tokens);
    }
    j = job_new(u, JOB_GEN, req->kind == SX_GEN_CHAT ? "/chat/completions" : "/completions",
                body, e);
    if (!j)
        return SX_ENOMEM;
    j->kind = req->kind;
    j->est_prompt = *prompt_tokens;
    /* The bound metering reserves: no token is shorter than a byte, and a
     * chat template adds a few tokens a message and may add a default
     * system turn of its own. */
    j->base.prompt_bound = bytes + n_msgs * UP_TEMPLATE_TOKENS_PER_MSG + UP_TEMPLATE_TOKENS;
    *out = &j->base;
    return 0;
}

static int enqueue(struct upstream *u, struct up_job *j, uint64_t *id, struct sx_gen_error *e)
{
    /* A job meant for our client on a loop it is not started on goes
     * through curl like the rest. */
    if (j->own) {
        j->own = false;
        if (easy_setup(u, j) != 0) {
            job_free(j);
            return sx_gen_fail(e, SX_ENOMEM, 500, NULL, NULL, "out of memory");
        }
    }
    /* A loop's spare handle must not bring that loop's close_socket to
     * the I/O thread's multi: a connection opened there may close after
     * the loop is gone. */
    curl_easy_setopt(j->easy, CURLOPT_CLOSESOCKETFUNCTION, NULL);
    curl_easy_setopt(j->easy, CURLOPT_CLOSESOCKETDATA, NULL);
    j->ul = NULL; /* the I/O thread's from now on */
    j->id = atomic_fetch_add(&u->next_id, 1) + 1;
    if (id)
        *id = j->id;
    pthread_mutex_lock(&u->mu);
    if (u->stop) {
        pthread_mutex_unlock(&u->mu);
        job_free(j);
        e->retry_after_s = 1;
        return sx_gen_fail(e, SX_EBUSY, 503, "shutting_down", NULL,
                           "the server is shutting down; retry the request");
    }
    j->next = u->incoming;
    u->incoming = j;
    pthread_mutex_unlock(&u->mu);
    curl_multi_wakeup(u->multi);
    return 0;
}

static int up_start(sx_backend *b, sx_gen_job *job, const struct sx_gen_sink *sink,
                    uint64_t *id, struct sx_gen_error *e)
{
    struct up_job *j = (struct up_job *)job;
    int rc;

    j->sink = *sink;
    rc = start_on_loop((struct upstream *)b, j, id, e);
    return rc == 1 ? enqueue((struct upstream *)b, j, id, e) : rc;
}

static void up_job_free(sx_gen_job *job)
{
    job_free((struct up_job *)job);
}

static void up_cancel(sx_backend *b, uint64_t id)
{
    struct upstream *u = (struct upstream *)b;
    int loop = (int)(id >> ID_LOOP_SHIFT) - 1;

    /* A relay on a loop is cancelled there, as a posted task even from
     * that loop: the caller may be inside a callback of the connection. */
    if (loop >= 0) {
        struct loop_cancel *c = malloc(sizeof(*c));

        if (c) {
            *c = (struct loop_cancel){u, id};
            if (sx_loop_post_at(loop, NULL, cancel_on_loop, c) != 0)
                free(c); /* the loop is gone, and its relays with it */
        }
        return;
    }
    pthread_mutex_lock(&u->mu);
    if (u->n_cancels == u->cap_cancels) {
        size_t cap = u->cap_cancels ? u->cap_cancels * 2 : 16;
        uint64_t *grown = realloc(u->cancels, cap * sizeof(*grown));

        if (grown) {
            u->cancels = grown;
            u->cap_cancels = cap;
        }
    }
    if (u->n_cancels < u->cap_cancels)
        u->cancels[u->n_cancels++] = id;
    pthread_mutex_unlock(&u->mu);
    curl_multi_wakeup(u->multi);
}

static int up_embed(sx_backend *b, const char *const *inputs, size_t n, sx_embed_done done,
                    void *ctx, struct sx_gen_error *e)
{
    struct upstream *u = (struct upstream *)b;
    json_t *body = json_object(), *in = json_array();
    struct up_job *j;

    for (size_t i = 0; i < n; i++)
        json_array_append_new(in, json_string(inputs[i]));
    json_object_set_new(body, "model", json_string(u->model));
    json_object_set_new(body, "input", in);
    j = job_new(u, JOB_EMBED, "/embeddings", body, e);
    if (!j)
        return SX_ENOMEM;
    j->edone = done;
    j->ectx = ctx;
    j->n_inputs = n;
    return enqueue(u, j, NULL, e);
}

static int64_t up_count_tokens(sx_backend *b, const char *text, size_t len)
{
    (void)b;
    (void)text;
    return (int64_t)(len + 3) / 4;
}

static void up_free(sx_backend *b)
{
    struct upstream *u = (struct upstream *)b;

    /* Limitation: the loops that relayed for it must have stopped first
     * (the server's do, before the backends close); a loop still holding
     * its state would later free it through this upstream. */
    if (atomic_load(&u->loops) > 0)
        SX_ERROR("backend", "upstream '%s' closed while %d event loop(s) still relay for it",
                 b->name, atomic_load(&u->loops));

    if (u->thread_started) {
        pthread_mutex_lock(&u->mu);
        u->stop = true;
        pthread_mutex_unlock(&u->mu);
        curl_multi_wakeup(u->multi);
        pthread_join(u->thread, NULL);
    }
    /* Jobs queued after the thread's last look: end them too. */
    while (u->incoming) {
        struct up_job *j = u->incoming;

        u->incoming = j->next;
        finish(u, j, END_OK, true);
    }
    if (u->multi)
        curl_multi_cleanup(u->multi);
    pthread_mutex_destroy(&u->mu);
    curl_slist_free_all(u->headers);
    free(u->cancels);
    free(u->url);
    free(u->model);
    free(u->lora);
    /* The heads carry the key too. */
    if (u->auth)
        explicit_bzero(u->auth, strlen(u->auth));
    free(u->auth);
    if (u->head_chat)
        explicit_bzero(u->head_chat, u->head_chat_len);
    free(u->head_chat);
    if (u->head_text)
        explicit_bzero(u->head_text, u->head_text_len);
    free(u->head_text);
    free(u->base.name);
    free(u);
}

/* The head of a request to path for our client, up to the value of its
 * Content-Length; NULL when out of memory. */
static char *request_head(const struct upstream *u, const char *path, size_t *len)
{
    char *head;
    int n = asprintf(&head,
                     "POST %s%s HTTP/1.1\r\nHost: %s\r\n"
                     "Content-Type: application/json\r\n%s%sContent-Length: ",
                     u->target.path, path, u->target.host, u->auth ? u->auth : "",
                     u->auth ? "\r\n" : "");

    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return head;
}

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static const struct sx_backend_ops upstream_ops = {
    .prepare = up_prepare,
    .start = up_start,
    .job_free = up_job_free,
    .cancel = up_cancel,
    .embed = up_embed,
    .count_tokens = up_count_tokens,
    .free = up_free,
};

sx_backend *sx_backend_upstream_new(const char *name, const struct sx_upstream_options *o,
                                    char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    struct upstream *u = calloc(1, sizeof(*u));
    size_t n;

    pthread_once(&once, global_init);
    if (!u) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&u->mu, NULL);
    u->base.ops = &upstream_ops;
    u->base.kind = "upstream";
    u->base.context = o->context;
    u->base.embeddings = true;
    u->base.name = strdup(name);
    u->url = strdup(o->url);
    u->model = strdup(o->model ? o->model : name);
    u->lora = o->lora ? strdup(o->lora) : NULL;
    u->base.adapters = o->lora != NULL;
    u->connect_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 5000;
    u->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 120000;
    if (o->api_key && asprintf(&u->auth, "Authorization: Bearer %s", o->api_key) < 0)
        u->auth = NULL;
    if (!u->base.name || !u->url || !u->model || (o->api_key && !u->auth) ||
        (o->lora && !u->lora))
        goto nomem;
    n = strlen(u->url);
    while (n && u->url[n - 1] == '/')
        u->url[--n] = '\0';
    u->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (u->headers && u->auth)
        u->headers = curl_slist_append(u->headers, u->auth);
    u->multi = curl_multi_init();
    if (!u->multi || !u->headers)
        goto nomem;
    if (sx_http1_target_parse(u->url, &u->target) == 0) {
        u->head_chat = request_head(u, "/chat/completions", &u->head_chat_len);
        u->head_text = request_head(u, "/completions", &u->head_text_len);
        if (!u->head_chat || !u->head_text)
            goto nomem;
        u->own_client = true;
    }
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, (long)UP_IDLE_CONNECTIONS);
    if (pthread_create(&u->thread, NULL, io_main, u) != 0) {
        snprintf(err, errlen, "upstream '%s': cannot start its I/O thread", name);
        up_free(&u->base);
        return NULL;
    }
    u->thread_started = true;
    return &u->base;

nomem:
    snprintf(err, errlen, "out of memory");
    up_free(&u->base);
    return NULL;
}
