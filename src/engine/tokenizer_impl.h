/* Internals shared by the tokenizer files: the vocabulary (token texts in one
 * arena, a text->id hash map, a merge-pair hash map), UTF-8 helpers, the
 * Unicode class lookup and the two segmenters (tokenizer_spm.c,
 * tokenizer_bpe.c). Not part of the engine's API: include tokenizer.h. */
#ifndef SX_ENGINE_TOKENIZER_IMPL_H
#define SX_ENGINE_TOKENIZER_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/tokenizer.h"

enum sx_pre_kind { SX_PRE_NONE = 0, SX_PRE_GPT2, SX_PRE_LLAMA3, SX_PRE_QWEN2 };

enum { SX_UNI_OTHER = 0, SX_UNI_LETTER, SX_UNI_NUMBER, SX_UNI_SPACE };

/* Growable id list. */
typedef struct sx_idvec {
    int32_t *v;
    size_t n, cap;
} sx_idvec;

/* Merge pair (left id, right id) -> rank and result id. */
typedef struct sx_pair_slot {
    uint64_t key;               /* (left << 32 | right) + 1; 0 = empty */
    int32_t rank;
    int32_t result;
} sx_pair_slot;

struct sx_tokenizer {
    int kind;                   /* enum sx_tok_kind */
    int pre;                    /* enum sx_pre_kind */
    bool ignore_merges;         /* llama-bpe: a word that is a token stays whole */
    uint32_t n_tokens;
    char *arena;                /* all token texts, each NUL-terminated */
    uint64_t *text_off;         /* [n_tokens + 1] offsets into arena */
    float *scores;              /* [n_tokens] */
    uint8_t *types;             /* [n_tokens] enum sx_tok_type */
    size_t max_token_len;

    int32_t *map_ids;           /* text -> id, open addressing, -1 empty */
    uint32_t *map_hash;
    size_t map_mask;

    sx_pair_slot *pairs;        /* BPE merges */
    size_t pair_mask;

    int32_t byte_tok[256];      /* SPM: <0xXX>; BPE: byte-level char token */
    char byte_enc[256][3];      /* BPE: byte -> UTF-8 of its stand-in char */
    uint8_t byte_enc_len[256];

    int32_t *special;           /* CONTROL/USER_DEFINED/UNKNOWN ids, longest
                                 * text first */
    size_t n_special;
    bool special_first[256];    /* first bytes of those texts */

    int32_t bos, eos, unk, pad;
    bool add_bos, add_eos, add_space_prefix;
    bool *eog;                  /* [n_tokens] end-of-generation ids */
};

static inline const char *sx_tok_text(const sx_tokenizer *t, int32_t id,
                                      size_t *len)
{
    *len = (size_t)(t->text_off[id + 1] - t->text_off[id] - 1);
    return t->arena + t->text_off[id];
}

int32_t sx_tok_lookup(const sx_tokenizer *t, const char *s, size_t n);
int sx_idvec_push(sx_idvec *v, int32_t id);

/* Bytes in the UTF-8 sequence that starts with byte c, as llama.cpp counts
 * them (from the high nibble; a stray continuation byte counts 1). */
static inline size_t sx_utf8_len(unsigned char c)
{
    static const uint8_t lens[16] = {1, 1, 1, 1, 1, 1, 1, 1,
                                     1, 1, 1, 1, 2, 2, 3, 4};
    return lens[c >> 4];
}

/* Decodes one strict UTF-8 character at s (n bytes available). Returns its
 * length and sets *cp; returns 0 for an invalid or truncated sequence. */
size_t sx_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
size_t sx_utf8_encode(uint32_t cp, char *out);

int sx_tok_uni_class(uint32_t cp);      /* SX_UNI_*; tokenizer_unicode.c */

/* Segmenters: append ids for one fragment of plain text (no specials). */
int sx_tok_spm_segment(const sx_tokenizer *t, const char *text, size_t len,
                       bool prefix_space, sx_idvec *out);
int sx_tok_bpe_segment(const sx_tokenizer *t, const char *text, size_t len,
                       sx_idvec *out);

#endif
