/* Helpers shared by the engine tests that replay llama.cpp's reference runs
 * (fixtures/reference/manifest.json): loading a fixture model, the token
 * ids of a manifest array, argmax over a row of logits. Header-only, like
 * fixtures.h, which it includes. */
#ifndef SX_TESTS_ENGINE_FIXTURE_H
#define SX_TESTS_ENGINE_FIXTURE_H

#include <stdint.h>

#include "engine/engine.h"
#include "fixtures.h"

/* The model <fixtures>/<rel>; fails the test when it does not load. */
static inline sx_model *load_model(const char *rel)
{
    char path[8192], err[256] = "";
    sx_model *m;
    int rc;

    snprintf(path, sizeof(path), "%s/%s", fixtures, rel);
    m = sx_model_load(path, &rc, err, sizeof(err));
    if (!m)
        fail_msg("load %s: %s", rel, err);
    return m;
}

/* The first index of the largest of v[0..n). */
static inline int argmax(const float *v, int n)
{
    int best = 0;

    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

/* A manifest array of token ids as a malloc'd int32_t array. */
static inline int32_t *tokens_of(const jv *arr)
{
    int32_t *t = malloc((size_t)arr->n * sizeof(int32_t));

    for (int i = 0; i < arr->n; i++)
        t[i] = (int32_t)arr->items[i].num;
    return t;
}

#endif
