/* Server-Sent Events streams (http.h, sx_http_stream_*). A stream is a
 * byte queue between a producer thread and libmicrohttpd's content reader.
 * When the queue is empty the reader suspends the connection, so a waiting
 * stream holds no worker thread; a push resumes it. Two references keep
 * the stream alive: the request's (dropped when the connection completes)
 * and the producer's (dropped by sx_http_stream_finish). */
#include "http/internal.h"
#include "base/err.h"
#include "base/log.h"

#include <stdlib.h>
#include <string.h>

/* A slow client can hold this much unsent data before pushes fail. */
#define STREAM_MAX_QUEUED (16u << 20)

struct sx_http_stream {
    pthread_mutex_t mu;
    sx_http_server *srv;
    struct MHD_Connection *conn; /* NULL once the request completed */
    char *buf;
    size_t off, len, cap;        /* unsent bytes are buf[off..len) */
    int refs;
    int suspended;
    int finished;                /* producer called finish */
    int gone;                    /* the connection completed or was cancelled */
    int cancel;                  /* server stopping: end with an error */
    sx_http_req *req;            /* deferred: the request until it completes */
    int parked;                  /* deferred: suspended awaiting begin */
    int begun;                   /* deferred: status and type chosen */
    int status;
    char ctype[64];
    void (*on_close)(void *ctx);
    void *ctx;
    sx_http_stream *next, *prev; /* the server's live list */
    sx_loop *loop;               /* the loop that runs the connection */
    struct sx_http_worker *worker; /* and its MHD daemon */
};

/* Resumes the parked connection. From another thread, the connection's
 * loop is woken as well: libmicrohttpd takes a resumption up at the start
 * of a run, so one that lands while a run is under way would otherwise
 * wait for the next event on that loop. */
static void resume(sx_http_stream *st)
{
    MHD_resume_connection(st->conn);
    sx_http_worker_kick(st->worker);
    if (st->loop && st->loop != sx_loop_current())
        sx_loop_wake(st->loop);
}

static void stream_unref(sx_http_stream *st)
{
    int refs;

    pthread_mutex_lock(&st->mu);
    refs = --st->refs;
    pthread_mutex_unlock(&st->mu);
    if (refs > 0)
        return;
    pthread_mutex_destroy(&st->mu);
    free(st->buf);
    free(st);
}

/* Called by libmicrohttpd on the connection's thread for more body. */
static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    sx_http_stream *st = cls;
    ssize_t n;

    (void)pos;
    pthread_mutex_lock(&st->mu);
    if (st->cancel) {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (st->off < st->len) {
        size_t k = st->len - st->off < max ? st->len - st->off : max;

        memcpy(out, st->buf + st->off, k);
        st->off += k;
        if (st->off == st->len)
            st->off = st->len = 0;
        n = (ssize_t)k;
    } else if (st->finished) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /* Nothing to send: park the connection until the next push. */
        st->suspended = 1;
        MHD_suspend_connection(st->conn);
        n = 0;
    }
    pthread_mutex_unlock(&st->mu);
    return n;
}

static void stream_link(sx_http_server *s, sx_http_stream *st)
{
    st->loop = sx_loop_current(); /* the handler runs on the connection's loop */
    st->worker = sx_http_current_worker;
    atomic_fetch_add_explicit(&s->metrics.streams, 1, memory_order_relaxed);
    pthread_mutex_lock(&s->streams_mu);
    st->next = s->streams;
    if (s->streams)
        s->streams->prev = st;
    s->streams = st;
    pthread_mutex_unlock(&s->streams_mu);
}

sx_http_stream *sx_http_stream_start(sx_http_req *r, int status,
                                     void (*on_close)(void *ctx), void *ctx)
{
    sx_http_server *s = r->srv;
    struct MHD_Response *resp;
    sx_http_stream *st;

    if (r->replied) {
        SX_ERROR("http", "%s: stream started after a reply", r->id);
        return NULL;
    }
    st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    pthread_mutex_init(&st->mu, NULL);
    st->srv = s;
    st->conn = r->conn;
    st->refs = 2;
    st->on_close = on_close;
    st->ctx = ctx;

    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, st,
                                             NULL);
    if (resp) {
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    }
    if (!sx_http_queue(r, status, resp)) {
        pthread_mutex_destroy(&st->mu);
        free(st);
        return NULL;
    }
    r->stream = st;
    stream_link(s, st);
    return st;
}

sx_http_stream *sx_http_defer(sx_http_req *r, void (*on_close)(void *ctx), void *ctx)
{
    sx_http_stream *st;

    if (r->replied || r->stream) {
        SX_ERROR("http", "%s: reply deferred after a reply", r->id);
        return NULL;
    }
    st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    pthread_mutex_init(&st->mu, NULL);
    st->srv = r->srv;
    st->conn = r->conn;
    st->req = r;
    st->refs = 2;
    st->on_close = on_close;
    st->ctx = ctx;
    st->parked = 1;
    r->stream = st;
    stream_link(r->srv, st);
    MHD_suspend_connection(r->conn);
    return st;
}

int sx_http_stream_header(sx_http_stream *st, const char *name, const char *value)
{
    int rc = SX_OK;

    pthread_mutex_lock(&st->mu);
    if (st->gone || st->cancel)
        rc = SX_ECANCELED;
    else if (!st->req || st->begun)
        rc = SX_EINVAL;
    else
        sx_http_set_header(st->req, name, value);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* Chooses the status; the parked connection wakes up and queues it. */
static int stream_begin_locked(sx_http_stream *st, int status, const char *content_type)
{
    if (st->gone || st->cancel)
        return SX_ECANCELED;
    if (!st->req || st->begun)
        return SX_EINVAL;
    st->begun = 1;
    st->status = status;
    snprintf(st->ctype, sizeof(st->ctype), "%s", content_type);
    if (st->parked) {
        st->parked = 0;
        resume(st);
    }
    return SX_OK;
}

int sx_http_stream_begin(sx_http_stream *st, int status, const char *content_type)
{
    int rc;

    pthread_mutex_lock(&st->mu);
    rc = stream_begin_locked(st, status, content_type);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

void sx_http_stream_resumed(sx_http_req *r)
{
    sx_http_stream *st = r->stream;
    struct MHD_Response *resp;
    int status, cancel, done = 0;
    char ctype[64], *whole = NULL;
    size_t whole_len = 0;

    pthread_mutex_lock(&st->mu);
    cancel = st->cancel && !st->begun;
    if (!cancel && !st->begun) {
        /* Woken without a status (should not happen): wait again. */
        st->parked = 1;
        MHD_suspend_connection(st->conn);
        pthread_mutex_unlock(&st->mu);
        return;
    }
    status = st->status;
    memcpy(ctype, st->ctype, sizeof(ctype));
    if (!cancel && st->finished && st->off == 0) {
        /* The producer already finished (a whole JSON body, usually): the
         * response goes out with its length, headers and body in one
         * write, instead of through the reader as chunks. */
        done = 1;
        whole = st->buf;
        whole_len = st->len;
        st->buf = NULL;
        st->len = st->cap = 0;
    }
    pthread_mutex_unlock(&st->mu);

    if (cancel) {
        sx_http_set_header(r, "Retry-After", "1");
        sx_http_reply_error(r, 503, "shutting_down", NULL,
                            "the server is shutting down; retry the request");
        return;
    }
    if (done)
        resp = MHD_create_response_from_buffer_with_free_callback(whole_len, whole, free);
    else
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read,
                                                 st, NULL);
    if (!resp)
        free(whole);
    if (resp) {
        MHD_add_response_header(resp, "Content-Type", ctype);
        if (strncmp(ctype, "text/event-stream", 17) == 0) {
            MHD_add_response_header(resp, "Cache-Control", "no-cache");
            MHD_add_response_header(resp, "X-Accel-Buffering", "no");
        }
    }
    if (!sx_http_queue(r, status, resp))
        SX_ERROR("http", "%s: could not queue the deferred response", r->id);
}

/* Appends parts to the queue and wakes the connection. */
static int stream_push(sx_http_stream *st, const char *a, size_t alen, const char *b,
                       size_t blen, const char *c, size_t clen)
{
    size_t need;
    int rc = SX_OK;

    pthread_mutex_lock(&st->mu);
    if (st->gone || st->cancel || st->finished) {
        rc = SX_ECANCELED;
        goto out;
    }
    need = st->len + alen + blen + clen;
    if (need - st->off > STREAM_MAX_QUEUED) {
        rc = SX_ETOOBIG;
        goto out;
    }
    if (need > st->cap) {
        size_t cap = st->cap ? st->cap : 4096;
        char *grown;

        while (cap < need)
            cap *= 2;
        grown = realloc(st->buf, cap);
        if (!grown) {
            rc = SX_ENOMEM;
            goto out;
        }
        st->buf = grown;
        st->cap = cap;
    }
    memcpy(st->buf + st->len, a, alen);
    memcpy(st->buf + st->len + alen, b, blen);
    memcpy(st->buf + st->len + alen + blen, c, clen);
    st->len = need;
    if (st->suspended) {
        st->suspended = 0;
        resume(st);
    }
out:
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int sx_http_stream_send(sx_http_stream *st, const char *data, size_t len)
{
    return stream_push(st, "data: ", 6, data, len, "\n\n", 2);
}

int sx_http_stream_write(sx_http_stream *st, const char *text, size_t len)
{
    return stream_push(st, text, len, "", 0, "", 0);
}

int sx_http_stream_comment(sx_http_stream *st, const char *text)
{
    return stream_push(st, ": ", 2, text, strlen(text), "\n\n", 2);
}

int sx_http_stream_finish(sx_http_stream *st)
{
    int rc;

    if (!st)
        return SX_EINVAL;
    pthread_mutex_lock(&st->mu);
    rc = st->gone || st->cancel ? SX_ECANCELED : SX_OK;
    if (rc == SX_OK && st->req && !st->begun) {
        /* Finished without a status: answer 500 rather than hang. */
        static const char body[] = "{\"error\":{\"message\":\"internal error: the "
                                   "request got no reply\",\"type\":\"server_error\","
                                   "\"param\":null,\"code\":null}}";
        st->off = st->len = 0;
        pthread_mutex_unlock(&st->mu);
        stream_push(st, body, sizeof(body) - 1, "", 0, "", 0);
        pthread_mutex_lock(&st->mu);
        stream_begin_locked(st, 500, "application/json");
    }
    st->finished = 1;
    if (st->suspended && !st->gone) {
        st->suspended = 0;
        resume(st);
    }
    pthread_mutex_unlock(&st->mu);
    stream_unref(st);
    return rc;
}

/* The request completed (sent, client gone, or cancelled): unlink, tell
 * the producer if it had not finished, drop the request's reference. */
void sx_http_stream_completed(sx_http_stream *st)
{
    sx_http_server *s = st->srv;
    int notify;

    pthread_mutex_lock(&s->streams_mu);
    if (st->prev)
        st->prev->next = st->next;
    else
        s->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->next = st->prev = NULL;
    pthread_mutex_unlock(&s->streams_mu);
    atomic_fetch_sub_explicit(&s->metrics.streams, 1, memory_order_relaxed);

    pthread_mutex_lock(&st->mu);
    st->gone = 1;
    st->conn = NULL;
    st->req = NULL;
    st->suspended = 0;
    st->parked = 0;
    notify = !st->finished && st->on_close;
    pthread_mutex_unlock(&st->mu);
    if (notify)
        st->on_close(st->ctx);
    stream_unref(st);
}

void sx_http_streams_cancel_all(sx_http_server *s)
{
    sx_http_stream **list = NULL;
    size_t n = 0, cap = 0;

    /* 1. Take a reference to every live stream, so that none is freed
     * while we work and no MHD call runs under the list lock. */
    pthread_mutex_lock(&s->streams_mu);
    for (sx_http_stream *st = s->streams; st; st = st->next) {
        if (n == cap) {
            sx_http_stream **grown = realloc(list, (cap ? cap * 2 : 16) * sizeof(*list));
            if (!grown)
                break;
            list = grown;
            cap = cap ? cap * 2 : 16;
        }
        pthread_mutex_lock(&st->mu);
        st->refs++;
        pthread_mutex_unlock(&st->mu);
        list[n++] = st;
    }
    pthread_mutex_unlock(&s->streams_mu);

    /* 2. Cancel each: its reader ends the response with an error. */
    for (size_t i = 0; i < n; i++) {
        sx_http_stream *st = list[i];

        pthread_mutex_lock(&st->mu);
        st->cancel = 1;
        if ((st->suspended || st->parked) && st->conn) {
            st->suspended = 0;
            st->parked = 0;
            resume(st);
        }
        pthread_mutex_unlock(&st->mu);
        stream_unref(st);
    }
    free(list);
}
