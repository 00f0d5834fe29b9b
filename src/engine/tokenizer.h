/* Tokenizers built from GGUF metadata: SentencePiece (`llama`, highest score
 * merge with byte fallback) and byte-level BPE (`gpt2`, pre-tokenizers
 * `llama-bpe`, `qwen2` and `gpt-2`, merges by rank). Both follow llama.cpp's
 * behaviour, so ids match what llama.cpp feeds the same model. Also a
 * streaming detokenizer that only ever returns whole UTF-8 characters. */
#ifndef SX_ENGINE_TOKENIZER_H
#define SX_ENGINE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/errors.h"
#include "engine/gguf.h"

typedef struct sx_tokenizer sx_tokenizer;

enum sx_tok_kind { SX_TOK_SPM = 1, SX_TOK_BPE = 2 };

/* Token types as GGUF numbers them (tokenizer.ggml.token_type). */
enum sx_tok_type {
    SX_TOKT_NORMAL = 1, SX_TOKT_UNKNOWN = 2, SX_TOKT_CONTROL = 3,
    SX_TOKT_USER_DEFINED = 4, SX_TOKT_UNUSED = 5, SX_TOKT_BYTE = 6
};

/* A vocabulary given by arrays, for callers without a GGUF file (tests,
 * fuzzing). Strings need not be NUL-terminated; everything is copied. */
typedef struct sx_tokenizer_spec {
    const char *model;          /* "llama" (SentencePiece) or "gpt2" (BPE) */
    const char *pre;            /* BPE: "gpt-2", "llama-bpe", "qwen2", ... */
    uint32_t n_tokens;
    const char *const *tokens;
    const size_t *token_lens;   /* NULL: tokens are NUL-terminated */
    const float *scores;        /* SPM merge scores; may be NULL (all 0) */
    const int32_t *types;       /* enum sx_tok_type; NULL: all NORMAL */
    uint32_t n_merges;          /* BPE merges "left right", best first */
    const char *const *merges;
    const size_t *merge_lens;   /* NULL: merges are NUL-terminated */
    int32_t bos, eos, unk, pad; /* -1 when absent */
    bool add_bos, add_eos;
    bool add_space_prefix;      /* SPM only */
} sx_tokenizer_spec;

/* Builds the tokenizer described by the tokenizer.ggml.* keys of g (model,
 * pre, tokens, scores, token_type, merges, bos/eos/unknown/padding ids,
 * add_bos_token, add_eos_token, add_space_prefix). Everything is copied, so
 * g may be closed afterwards. NULL with a message in err on a missing or
 * malformed key, or a model/pre-tokenizer we do not implement. */
sx_tokenizer *sx_tokenizer_from_gguf(const sx_gguf *g, char *err,
                                     size_t errlen);
sx_tokenizer *sx_tokenizer_new(const sx_tokenizer_spec *spec, char *err,
                               size_t errlen);
void sx_tokenizer_free(sx_tokenizer *t);              /* accepts NULL */

int sx_tokenizer_kind(const sx_tokenizer *t);         /* enum sx_tok_kind */
uint32_t sx_tokenizer_n_tokens(const sx_tokenizer *t);
int32_t sx_tokenizer_bos(const sx_tokenizer *t);      /* -1 when none */
int32_t sx_tokenizer_eos(const sx_tokenizer *t);      /* -1 when none */
bool sx_tokenizer_add_bos(const sx_tokenizer *t);
/* True for ids that end generation: EOS, and control tokens such as
 * <|eot_id|>, <|im_end|>, <|end|>, <end_of_turn> that the vocabulary has. */
bool sx_tokenizer_is_eog(const sx_tokenizer *t, int32_t id);
/* Type of a token (enum sx_tok_type), or SX_EINVAL for a bad id. */
int sx_tokenizer_token_type(const sx_tokenizer *t, int32_t id);
/* Raw vocabulary text of a token (not NUL-terminated), NULL for a bad id. */
const char *sx_tokenizer_token_text(const sx_tokenizer *t, int32_t id,
                                    size_t *len);
/* Id of a token whose vocabulary text is exactly text, or -1. */
int32_t sx_tokenizer_find(const sx_tokenizer *t, const char *text,
                          size_t len);

/* Tokenizes len bytes of text (any bytes; invalid UTF-8 is handled: SPM
 * falls back to byte tokens, BPE reads it as U+FFFD as llama.cpp does).
 * add_special adds BOS/EOS as the metadata asks; parse_special turns the
 * text of CONTROL tokens (e.g. "<|im_start|>") into those tokens.
 * USER_DEFINED tokens are always recognised, as in llama.cpp. On success
 * *ids is a malloc'd array of *n_ids ids (the caller frees it; it is never
 * NULL, even for zero ids) and 0 is returned; else SX_ENOMEM/SX_EINVAL. */
int sx_tokenizer_tokenize(const sx_tokenizer *t, const char *text, size_t len,
                          bool add_special, bool parse_special, int32_t **ids,
                          size_t *n_ids);

/* Writes the text of one token into buf (not NUL-terminated) and returns its
 * length in bytes, which may exceed cap (then buf holds the first cap bytes;
 * call again with a bigger buffer). SPM: '▁' becomes ' ' and <0xXX> the byte;
 * BPE: the byte-level characters become their bytes. CONTROL and UNKNOWN
 * tokens give "" unless special is true; UNUSED tokens give "". SX_EINVAL for
 * an id out of range. The result may be part of a UTF-8 character. */
int sx_tokenizer_token_to_piece(const sx_tokenizer *t, int32_t id,
                                bool special, char *buf, size_t cap);

/* Flags of sx_tokenizer_detokenize() and sx_detok_new(). */
enum {
    /* Render CONTROL/UNKNOWN token text ("<|im_end|>") instead of "". */
    SX_DETOK_SPECIAL = 1,
    /* Keep the space that SPM's tokenizer prefixed to the text; by default
     * the first text piece loses one leading space, so that
     * detokenize(tokenize(x)) == x. */
    SX_DETOK_KEEP_PREFIX_SPACE = 2,
};

/* Joins the pieces of n ids into a malloc'd, NUL-terminated string of *len
 * bytes (raw bytes, as the tokens hold them). 0, SX_EINVAL on a bad id,
 * SX_ENOMEM. */
int sx_tokenizer_detokenize(const sx_tokenizer *t, const int32_t *ids,
                            size_t n, unsigned flags, char **out,
                            size_t *len);

/* Streaming detokenizer for generation: feed ids one at a time and get back
 * only whole UTF-8 characters. Bytes of an incomplete character (from BPE
 * byte tokens or SPM <0xXX> tokens) are held until it completes; bytes that
 * can never form a valid character come out as U+FFFD, so the output is
 * always valid UTF-8. */
typedef struct sx_detok sx_detok;

sx_detok *sx_detok_new(const sx_tokenizer *t, unsigned flags);
void sx_detok_free(sx_detok *d);                       /* accepts NULL */
/* Adds one id. *text and *len receive the newly completed text (possibly empty),
 * valid until the next call on d. 0, SX_EINVAL on a bad id, SX_ENOMEM. */
int sx_detok_feed(sx_detok *d, int32_t id, const char **text, size_t *len);
/* Ends the stream: returns held bytes as U+FFFD, and resets d for reuse. */
int sx_detok_flush(sx_detok *d, const char **text, size_t *len);

#endif
