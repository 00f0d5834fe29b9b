/* Chat templates: turns a list of chat messages into the prompt text a model
 * was trained on. We do not run Jinja: sx_chat_template_new() recognises the
 * template's family from its text (ChatML/Qwen, Llama 3.x, Mistral v3-tekken
 * and v7, Phi-3, Gemma 2/3, Gemma 4) and renders it in C, byte for byte as
 * Hugging Face's Jinja rendering of that template does for system, user and
 * assistant messages with plain text content. */
#ifndef SX_ENGINE_CHAT_TEMPLATE_H
#define SX_ENGINE_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "engine/errors.h"

typedef struct sx_chat_template sx_chat_template;

/* One message. role is "system", "user" or "assistant" (NUL-terminated);
 * content is content_len bytes of UTF-8. */
typedef struct sx_chat_msg {
    const char *role;
    const char *content;
    size_t content_len;
} sx_chat_msg;

/* Recognises the family of template_text (len bytes, e.g. the GGUF key
 * tokenizer.chat_template). bos and eos are the vocabulary's BOS/EOS texts
 * (e.g. "<s>", "</s>"; NULL means ""), used where the template writes
 * bos_token/eos_token. An empty or NULL template gives ChatML, as llama.cpp
 * does for a model without one. A template we cannot recognise gives NULL
 * and a message in err naming the problem; the caller may then choose a
 * family by name with sx_chat_template_new_named() (e.g. "chatml"). */
sx_chat_template *sx_chat_template_new(const char *template_text, size_t len,
                                       const char *bos, const char *eos,
                                       char *err, size_t errlen);
/* A family by name: "chatml", "llama3", "llama3-legacy", "mistral-v3-tekken",
 * "mistral-v7", "phi3", "phi3-legacy", "gemma", "gemma4". NULL for another
 * name, with a message in err. */
sx_chat_template *sx_chat_template_new_named(const char *family,
                                             const char *bos, const char *eos,
                                             char *err, size_t errlen);
void sx_chat_template_free(sx_chat_template *t);      /* accepts NULL */

/* The family name (one of the names above). */
const char *sx_chat_template_name(const sx_chat_template *t);
/* True when the rendering begins with the BOS text: the caller then
 * tokenizes it with add_special = false (and parse_special = true) so that
 * BOS is not added twice. */
bool sx_chat_template_has_bos(const sx_chat_template *t);
/* Time used for templates that print today's date (Llama 3.2, Mistral v7);
 * 0 (the default) means the current time. Dates are UTC. */
void sx_chat_template_set_now(sx_chat_template *t, time_t now);

/* Renders n messages; add_generation_prompt appends the header of the
 * assistant turn to come. On success *out is a malloc'd NUL-terminated
 * string of *out_len bytes (the caller frees it) and 0 is returned. Errors:
 * SX_EINVAL (with a message in err) for messages the template refuses, such
 * as a role it does not know or turns that do not alternate where the
 * model requires it; SX_ENOMEM. */
int sx_chat_template_apply(const sx_chat_template *t, const sx_chat_msg *msgs,
                           size_t n, bool add_generation_prompt, char **out,
                           size_t *out_len, char *err, size_t errlen);

#endif
