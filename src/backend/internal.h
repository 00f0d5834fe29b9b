/* Internal to src/backend/: the operations table each backend kind fills
 * in and the fields every backend shares. backend.c dispatches the public
 * sx_backend_* calls through it. */
#ifndef SX_BACKEND_INTERNAL_H
#define SX_BACKEND_INTERNAL_H

#include "backend/backend.h"

struct sx_backend_ops {
    int (*prepare)(sx_backend *b, const struct sx_gen_request *req, sx_gen_job **job,
                   int64_t *prompt_tokens, struct sx_gen_error *e);
    int (*start)(sx_backend *b, sx_gen_job *job, const struct sx_gen_sink *sink,
                 uint64_t *id, struct sx_gen_error *e);
    void (*job_free)(sx_gen_job *job);
    void (*cancel)(sx_backend *b, uint64_t id);
    int (*embed)(sx_backend *b, const char *const *inputs, size_t n, sx_embed_done done,
                 void *ctx, struct sx_gen_error *e);
    int64_t (*count_tokens)(sx_backend *b, const char *text, size_t len);
    void (*free)(sx_backend *b);
};

struct sx_backend {
    const struct sx_backend_ops *ops;
    char *name;       /* public model name */
    const char *kind; /* "local" / "upstream" */
    int64_t context;  /* tokens; 0 unknown */
    bool embeddings;
    bool adapters;    /* generations may carry a tenant adapter */
};

/* Every job starts with this. */
struct sx_gen_job {
    sx_backend *backend;
    int64_t prompt_bound; /* tokens the prompt can take at most */
};


#endif
