/* Unit tests of src/backend/: catalogue entries and their option errors,
 * the upstream backend's failure mapping (refused connection -> 502, an
 * idle upstream -> 504) against loopback sockets, and the local backend on
 * the fixture model (prompt counting, context limit, a whole generation
 * through the sink, cancellation). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "base/config.h"
#include "base/err.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- a sink that records what it got ------------------------------------ */

struct rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int deltas;
    int cancel_after; /* return 1 from delta after this many; 0 never */
    char text[4096];
    size_t len;
    struct sx_gen_result res;
};

static int rec_delta(void *ctx, const char *text, size_t len, json_t *lp)
{
    struct rec *r = ctx;

    (void)lp;
    pthread_mutex_lock(&r->mu);
    if (r->len + len < sizeof(r->text)) {
        memcpy(r->text + r->len, text, len);
        r->len += len;
    }
    r->deltas++;
    pthread_mutex_unlock(&r->mu);
    return r->cancel_after && r->deltas >= r->cancel_after;
}

static void rec_done(void *ctx, const struct sx_gen_result *res)
{
    struct rec *r = ctx;

    pthread_mutex_lock(&r->mu);
    r->res = *res;
    r->done++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static void rec_wait(struct rec *r)
{
    pthread_mutex_lock(&r->mu);
    while (!r->done)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

static struct sx_gen_request chat_request(json_t **msgs, const char *text)
{
    struct sx_gen_request q = {0};

    *msgs = json_pack("[{s:s,s:s}]", "role", "user", "content", text);
    q.kind = SX_GEN_CHAT;
    q.messages = *msgs;
    q.temperature = 0;
    q.top_p = 1;
    q.max_tokens = 8;
    return q;
}

/* ---- catalogue ------------------------------------------------------------ */

static sx_catalog *open_with(const char *key, const char *value, char *err, size_t errlen)
{
    struct sx_config *c = sx_config_new();
    sx_catalog *cat;

    assert_int_equal(sx_config_set(c, key, value, err, errlen), 0);
    cat = sx_catalog_open(c, err, errlen);
    sx_config_free(c);
    return cat;
}

static void test_catalog_empty_and_upstream(void **state)
{
    struct sx_config *c = sx_config_new();
    char err[512] = "", names[256];
    sx_catalog *cat;
    sx_backend *b;

    (void)state;
    cat = sx_catalog_open(c, err, sizeof(err));
    assert_non_null(cat);
    assert_int_equal(sx_catalog_count(cat), 0);
    assert_null(sx_catalog_find(cat, "synapsex-chat"));
    sx_catalog_close(cat);
    sx_config_free(c);

    cat = open_with("upstream", "synapsex-chat=http://127.0.0.1:9/v1/;context=4096", err,
                    sizeof(err));
    assert_non_null(cat);
    b = sx_catalog_find(cat, "synapsex-chat");
    assert_non_null(b);
    assert_string_equal(sx_backend_kind(b), "upstream");
    assert_int_equal(sx_backend_context(b), 4096);
    sx_catalog_names(cat, names, sizeof(names));
    assert_string_equal(names, "synapsex-chat");
    sx_catalog_close(cat);
}

static void test_catalog_option_errors(void **state)
{
    char err[512];

    (void)state;
    assert_null(open_with("upstream", "a=ftp://x", err, sizeof(err)));
    assert_non_null(strstr(err, "http://"));
    assert_null(open_with("upstream", "a=http://x;colour=red", err, sizeof(err)));
    assert_non_null(strstr(err, "colour"));
    assert_null(open_with("upstream", "a=http://x;context=-3", err, sizeof(err)));
    assert_non_null(strstr(err, "context"));
    assert_null(open_with("upstream", "a=http://x;key_env=SX_SURELY_UNSET_VAR", err,
                          sizeof(err)));
    assert_non_null(strstr(err, "SX_SURELY_UNSET_VAR"));
    assert_null(open_with("model", "a=/no/such/file.gguf", err, sizeof(err)));
    assert_non_null(strstr(err, "/no/such/file.gguf"));
}

/* ---- upstream failures ------------------------------------------------------ */

/* A listening socket that accepts and never answers; returns its port. */
static int silent_listener(int *fd)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof(a);

    *fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(*fd >= 0);
    assert_int_equal(bind(*fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(*fd, 8), 0);
    assert_int_equal(getsockname(*fd, (struct sockaddr *)&a, &n), 0);
    return ntohs(a.sin_port);
}

static void run_upstream(const char *url, int timeout_ms, struct rec *r)
{
    struct sx_upstream_options o = {.url = url, .timeout_ms = timeout_ms,
                                     .connect_timeout_ms = 1000};
    char err[256];
    sx_backend *b = sx_backend_upstream_new("m", &o, err, sizeof(err));
    struct sx_gen_error e = {0};
    struct sx_gen_sink sink = {rec_delta, rec_done, r};
    sx_gen_job *job;
    json_t *msgs;
    struct sx_gen_request q = chat_request(&msgs, "hi");
    int64_t pt = 0;
    uint64_t id = 0;

    assert_non_null(b);
    assert_int_equal(sx_backend_prepare(b, &q, &job, &pt, &e), 0);
    assert_true(pt >= 1);
    assert_int_equal(sx_backend_start(b, job, &sink, &id, &e), 0);
    rec_wait(r);
    sx_backend_free(b);
    json_decref(msgs);
}

static void test_upstream_refused_is_502(void **state)
{
    struct rec r;
    int fd, port = silent_listener(&fd);
    char url[64];

    (void)state;
    close(fd); /* nothing listens there now */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", port);
    rec_init(&r);
    run_upstream(url, 5000, &r);
    assert_true(r.res.failed);
    assert_int_equal(r.res.err.status, 502);
    assert_string_equal(r.res.err.code, "upstream_unreachable");
    assert_int_equal(r.done, 1);
}

static void test_upstream_silence_is_504(void **state)
{
    struct rec r;
    int fd, port = silent_listener(&fd);
    char url[64];

    (void)state;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", port);
    rec_init(&r);
    run_upstream(url, 300, &r);
    close(fd);
    assert_true(r.res.failed);
    assert_int_equal(r.res.err.status, 504);
    assert_non_null(strstr(r.res.err.message, "300 ms"));
}

/* ---- local backend on the fixture ------------------------------------------- */

static const char *fixture_model(void)
{
    static char path[1024];
    const char *dir = getenv("SYNAPSEX_FIXTURES");

    snprintf(path, sizeof(path), "%s/models/tiny-qwen2-q8_0.gguf",
             dir && *dir ? dir : "../shared/fixtures");
    return access(path, R_OK) == 0 ? path : NULL;
}

static void test_local_generation_and_limits(void **state)
{
    const char *path = fixture_model();
    struct sx_local_options o = {.threads = 1};
    struct sx_gen_error e = {0};
    char err[512];
    sx_backend *b;
    sx_gen_job *job;
    json_t *msgs, *long_msgs;
    struct sx_gen_request q;
    struct rec r;
    int64_t pt = 0;
    uint64_t id;
    char *big;

    (void)state;
    if (!path) {
        printf("skipped: fixtures absent\n");
        skip();
    }
    b = sx_backend_local_new("synapsex-chat", path, &o, err, sizeof(err));
    assert_non_null(b);
    assert_int_equal(sx_backend_context(b), 256);

    /* A whole generation: counted prompt, text, usage, finish reason. */
    q = chat_request(&msgs, "What medications interact with aspirin?");
    assert_int_equal(sx_backend_prepare(b, &q, &job, &pt, &e), 0);
    assert_true(pt > 8);
    rec_init(&r);
    assert_int_equal(sx_backend_start(b, job, &(struct sx_gen_sink){rec_delta, rec_done, &r},
                                      &id, &e), 0);
    rec_wait(&r);
    assert_false(r.res.failed);
    assert_int_equal(r.res.prompt_tokens, pt);
    assert_true(r.res.completion_tokens >= 1 && r.res.completion_tokens <= 8);
    assert_non_null(r.res.finish_reason);

    /* The sink cancelling after two pieces ends the job as cancelled. */
    q.max_tokens = 200;
    assert_int_equal(sx_backend_prepare(b, &q, &job, &pt, &e), 0);
    rec_init(&r);
    r.cancel_after = 2;
    assert_int_equal(sx_backend_start(b, job, &(struct sx_gen_sink){rec_delta, rec_done, &r},
                                      &id, &e), 0);
    rec_wait(&r);
    assert_true(r.res.cancelled);
    assert_true(r.res.completion_tokens < 200);

    /* Longer than the context: refused before any work. */
    big = malloc(4001);
    memset(big, 'a', 4000);
    for (int i = 0; i < 4000; i += 2)
        big[i] = ' ';
    big[4000] = '\0';
    q = chat_request(&long_msgs, big);
    assert_int_equal(sx_backend_prepare(b, &q, &job, &pt, &e), SX_ETOOBIG);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.code, "context_length_exceeded");
    free(big);

    json_decref(msgs);
    json_decref(long_msgs);
    sx_backend_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_catalog_empty_and_upstream),
        cmocka_unit_test(test_catalog_option_errors),
        cmocka_unit_test(test_upstream_refused_is_502),
        cmocka_unit_test(test_upstream_silence_is_504),
        cmocka_unit_test(test_local_generation_and_limits),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
