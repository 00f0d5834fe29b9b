/* Chat template families rendered in C. sx_chat_template_new() looks for the
 * markers each family writes (<|im_start|>, <|start_header_id|>, [INST],
 * [SYSTEM_PROMPT], <|assistant|>, <start_of_turn>, <|turn>) and pulls the
 * few values a template varies in (default system prompt, date format) out
 * of its text; each render_* function then writes what that Jinja template
 * writes for system/user/assistant messages. Tools are not rendered. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat_template.h"
#include "engine/errmsg.h"

enum family {
    F_CHATML, F_LLAMA3, F_LLAMA3_LEGACY, F_MISTRAL_TEKKEN, F_MISTRAL_V7,
    F_PHI3, F_PHI3_LEGACY, F_GEMMA, F_GEMMA4, F_COUNT
};

static const char *const family_names[F_COUNT] = {
    "chatml", "llama3", "llama3-legacy", "mistral-v3-tekken", "mistral-v7",
    "phi3", "phi3-legacy", "gemma", "gemma4",
};

/* Marks where the date goes in a default system prompt. */
#define TODAY_MARK '\x01'

struct sx_chat_template {
    int family;
    char *bos, *eos;
    char *default_system;       /* used when no system message; may be NULL */
    char *date_fmt;             /* strftime_now() format, or NULL */
    char *fixed_date;           /* llama3: date literal when no strftime_now */
    char *knowledge;            /* llama3: "Cutting Knowledge Date" value */
    time_t now;
};

/* --- output buffer ------------------------------------------------------ */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void puts_(sbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* --- text helpers -------------------------------------------------------- */

static const char *find_n(const char *hay, size_t n, const char *needle)
{
    return memmem(hay, n, needle, strlen(needle));
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);

    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* Length of the whitespace character (as Python's str.strip() sees it) at
 * the start (end = false) or end of s[0..n), or 0. */
static size_t space_at(const char *s, size_t n, bool end)
{
    static const char *const wide[] = {
        "\xc2\x85", "\xc2\xa0", "\xe1\x9a\x80", "\xe2\x80\x80", "\xe2\x80\x81",
        "\xe2\x80\x82", "\xe2\x80\x83", "\xe2\x80\x84", "\xe2\x80\x85",
        "\xe2\x80\x86", "\xe2\x80\x87", "\xe2\x80\x88", "\xe2\x80\x89",
        "\xe2\x80\x8a", "\xe2\x80\xa8", "\xe2\x80\xa9", "\xe2\x80\xaf",
        "\xe2\x81\x9f", "\xe3\x80\x80",
    };
    unsigned char c;

    if (n == 0)
        return 0;
    c = (unsigned char)(end ? s[n - 1] : s[0]);
    if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F))
        return 1;
    for (size_t i = 0; i < sizeof(wide) / sizeof(wide[0]); i++) {
        size_t k = strlen(wide[i]);
        if (k <= n && memcmp(end ? s + n - k : s, wide[i], k) == 0)
            return k;
    }
    return 0;
}

/* Jinja's |trim: appends s without leading and trailing whitespace. */
static void put_trim(sbuf *b, const char *s, size_t n)
{
    size_t k;

    while ((k = space_at(s, n, false)) > 0)
        s += k, n -= k;
    while ((k = space_at(s, n, true)) > 0)
        n -= k;
    put(b, s, n);
}

/* Parses a Jinja string literal at *p (quote included) into b; moves *p past
 * it. Returns false when *p is not a literal. */
static bool parse_literal(const char **p, const char *end, sbuf *b)
{
    char q = **p;
    const char *s = *p + 1;

    if (q != '"' && q != '\'')
        return false;
    while (s < end && *s != q) {
        if (*s == '\\' && s + 1 < end) {
            char c = s[1];
            char e = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
            put(b, &e, 1);
            s += 2;
        } else {
            put(b, s++, 1);
        }
    }
    if (s >= end)
        return false;
    *p = s + 1;
    return true;
}

/* Reads `name = "lit" + today + "lit" ...` (Jinja set) from the template:
 * the concatenation with TODAY_MARK for the variable. NULL when absent. */
static char *parse_concat(const char *tmpl, size_t len, const char *name)
{
    const char *p = find_n(tmpl, len, name), *end = tmpl + len;
    sbuf b = {0};

    if (!p)
        return NULL;
    p += strlen(name);
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\n' || *p == '+' || *p == '='))
            p++;
        if (p < end && (*p == '"' || *p == '\'')) {
            if (!parse_literal(&p, end, &b))
                break;
        } else if (end - p >= 5 && memcmp(p, "today", 5) == 0) {
            char m = TODAY_MARK;
            put(&b, &m, 1);
            p += 5;
        } else {
            break;
        }
    }
    if (b.oom || !b.p) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* The first argument of strftime_now("...") in the template, or NULL. */
static char *parse_date_fmt(const char *tmpl, size_t len)
{
    const char *p = find_n(tmpl, len, "strftime_now(");
    sbuf b = {0};

    if (!p)
        return NULL;
    p += strlen("strftime_now(");
    if (!parse_literal(&p, tmpl + len, &b)) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* ChatML default system prompt: a literal system turn in the template. */
static char *parse_chatml_default(const char *tmpl, size_t len)
{
    static const char *const heads[] = {"<|im_start|>system\n",
                                        "<|im_start|>system\\n"};

    for (size_t h = 0; h < 2; h++) {
        const char *p = tmpl, *end = tmpl + len;
        while ((p = find_n(p, (size_t)(end - p), heads[h])) != NULL) {
            const char *s = p + strlen(heads[h]);
            const char *e = find_n(s, (size_t)(end - s), "<|im_end|>");
            p = s;
            if (!e || e == s || strcspn(s, "'\"{}+") < (size_t)(e - s))
                continue;
            return dup_n(s, (size_t)(e - s));
        }
    }
    return NULL;
}

/* The text after key up to a quote or backslash (a literal's content). */
static char *parse_after(const char *tmpl, size_t len, const char *key)
{
    const char *p = find_n(tmpl, len, key), *e;

    if (!p)
        return NULL;
    p += strlen(key);
    for (e = p; e < tmpl + len && *e != '"' && *e != '\'' && *e != '\\'; e++)
        ;
    return dup_n(p, (size_t)(e - p));
}

/* --- dates --------------------------------------------------------------- */

static void put_date(sbuf *b, const char *fmt, time_t now)
{
    static const char *const months[12] = {
        "January", "February", "March", "April", "May", "June", "July",
        "August", "September", "October", "November", "December"};
    struct tm tm;
    char tmp[32];

    if (now == 0)
        now = time(NULL);
    gmtime_r(&now, &tm);
    for (const char *f = fmt; *f; f++) {
        if (*f != '%' || !f[1]) {
            put(b, f, 1);
            continue;
        }
        switch (*++f) {
        case 'Y': snprintf(tmp, sizeof(tmp), "%d", tm.tm_year + 1900); break;
        case 'm': snprintf(tmp, sizeof(tmp), "%02d", tm.tm_mon + 1); break;
        case 'd': snprintf(tmp, sizeof(tmp), "%02d", tm.tm_mday); break;
        case 'b': snprintf(tmp, sizeof(tmp), "%.3s", months[tm.tm_mon]); break;
        case 'B': snprintf(tmp, sizeof(tmp), "%s", months[tm.tm_mon]); break;
        default: snprintf(tmp, sizeof(tmp), "%%%c", *f); break;
        }
        puts_(b, tmp);
    }
}

/* Appends s, putting the date where TODAY_MARK stands. */
static void put_with_date(const sx_chat_template *t, sbuf *b, const char *s)
{
    for (const char *p = s; *p; p++) {
        if (*p == TODAY_MARK)
            put_date(b, t->date_fmt ? t->date_fmt : "%Y-%m-%d", t->now);
        else
            put(b, p, 1);
    }
}

/* --- construction -------------------------------------------------------- */

static int detect(const char *s, size_t n, char *err, size_t errlen)
{
    if (!s || n == 0)
        return F_CHATML;
    if (find_n(s, n, "<|turn>"))
        return F_GEMMA4;
    if (find_n(s, n, "<start_of_turn>"))
        return F_GEMMA;
    if (find_n(s, n, "<|start_header_id|>"))
        return find_n(s, n, "Cutting Knowledge Date") ? F_LLAMA3
                                                      : F_LLAMA3_LEGACY;
    if (find_n(s, n, "[SYSTEM_PROMPT]"))
        return F_MISTRAL_V7;
    if (find_n(s, n, "[INST]")) {
        if (!find_n(s, n, "[INST] ") && !find_n(s, n, "<<SYS>>"))
            return F_MISTRAL_TEKKEN;
        sx_errmsg_set(err, errlen,
                      "chat template: this [INST] template (Llama 2 or "
                      "Mistral v1-v3 with spaces) is not supported");
        return -1;
    }
    if (find_n(s, n, "<|assistant|>") && find_n(s, n, "<|end|>"))
        return find_n(s, n, "<|system|>") ? F_PHI3 : F_PHI3_LEGACY;
    if (find_n(s, n, "<|im_start|>"))
        return F_CHATML;
    sx_errmsg_set(err, errlen, "chat template: unrecognised template family "
                  "(supported: %s, %s, %s, %s, %s, %s, %s)", "chatml", "llama3",
                  "mistral-v3-tekken", "mistral-v7", "phi3", "gemma", "gemma4");
    return -1;
}

static sx_chat_template *make(int family, const char *bos, const char *eos)
{
    sx_chat_template *t = calloc(1, sizeof(*t));

    if (!t)
        return NULL;
    t->family = family;
    t->bos = strdup(bos ? bos : "");
    t->eos = strdup(eos ? eos : "");
    if (!t->bos || !t->eos) {
        sx_chat_template_free(t);
        return NULL;
    }
    return t;
}

sx_chat_template *sx_chat_template_new(const char *tmpl, size_t len,
                                       const char *bos, const char *eos,
                                       char *err, size_t errlen)
{
    int family = detect(tmpl, tmpl ? len : 0, err, errlen);
    sx_chat_template *t;

    if (family < 0)
        return NULL;
    if (!(t = make(family, bos, eos))) {
        sx_errmsg_set(err, errlen, "chat template: out of memory");
        return NULL;
    }
    if (!tmpl || len == 0)
        return t;
    switch (family) {
    case F_CHATML:
        t->default_system = parse_chatml_default(tmpl, len);
        break;
    case F_LLAMA3:
        t->date_fmt = parse_date_fmt(tmpl, len);
        t->fixed_date = parse_after(tmpl, len, "date_string = \"");
        t->knowledge = parse_after(tmpl, len, "Cutting Knowledge Date: ");
        break;
    case F_MISTRAL_V7:
        t->date_fmt = parse_date_fmt(tmpl, len);
        t->default_system = parse_concat(tmpl, len,
                                         "set default_system_message");
        break;
    default:
        break;
    }
    return t;
}

sx_chat_template *sx_chat_template_new_named(const char *family,
                                             const char *bos, const char *eos,
                                             char *err, size_t errlen)
{
    sx_chat_template *t;

    for (int f = 0; family && f < F_COUNT; f++) {
        if (strcmp(family, family_names[f]) != 0)
            continue;
        if (!(t = make(f, bos, eos)))
            sx_errmsg_set(err, errlen, "chat template: out of memory");
        return t;
    }
    sx_errmsg_set(err, errlen, "chat template: unknown family '%s'",
                  family ? family : "(null)");
    return NULL;
}

void sx_chat_template_free(sx_chat_template *t)
{
    if (!t)
        return;
    free(t->bos);
    free(t->eos);
    free(t->default_system);
    free(t->date_fmt);
    free(t->fixed_date);
    free(t->knowledge);
    free(t);
}

const char *sx_chat_template_name(const sx_chat_template *t)
{
    return family_names[t->family];
}

bool sx_chat_template_has_bos(const sx_chat_template *t)
{
    switch (t->family) {
    case F_LLAMA3: case F_LLAMA3_LEGACY: case F_MISTRAL_TEKKEN:
    case F_MISTRAL_V7: case F_PHI3_LEGACY: case F_GEMMA: case F_GEMMA4:
        return t->bos[0] != '\0';
    default:
        return false;
    }
}

void sx_chat_template_set_now(sx_chat_template *t, time_t now)
{
    t->now = now;
}

/* --- rendering ----------------------------------------------------------- */

static bool is_role(const sx_chat_msg *m, const char *role)
{
    return strcmp(m->role, role) == 0;
}

static void put_msg(sbuf *b, const sx_chat_msg *m)
{
    put(b, m->content, m->content_len);
}

/* Checks user/assistant/user/... from msgs[0], as the Mistral and Gemma
 * templates require (they raise an exception otherwise). */
static int check_alternation(const sx_chat_msg *msgs, size_t n, char *err,
                             size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        if (is_role(&msgs[i], i % 2 == 0 ? "user" : "assistant"))
            continue;
        sx_errmsg_set(err, errlen, "chat template: after the optional system "
                      "message, roles must alternate user/assistant/user/... "
                      "(message %zu is '%s')", i, msgs[i].role);
        return SX_EINVAL;
    }
    return SX_OK;
}

static void render_chatml(const sx_chat_template *t, sbuf *b,
                          const sx_chat_msg *msgs, size_t n, bool gen)
{
    if (t->default_system && (n == 0 || !is_role(&msgs[0], "system"))) {
        puts_(b, "<|im_start|>system\n");
        puts_(b, t->default_system);
        puts_(b, "<|im_end|>\n");
    }
    for (size_t i = 0; i < n; i++) {
        puts_(b, "<|im_start|>");
        puts_(b, msgs[i].role);
        puts_(b, "\n");
        put_msg(b, &msgs[i]);
        puts_(b, "<|im_end|>\n");
    }
    if (gen)
        puts_(b, "<|im_start|>assistant\n");
}

static void llama3_turn(sbuf *b, const char *role, const char *s, size_t n)
{
    puts_(b, "<|start_header_id|>");
    puts_(b, role);
    puts_(b, "<|end_header_id|>\n\n");
    put_trim(b, s, n);
    puts_(b, "<|eot_id|>");
}

/* Llama 3.1-3.3: the system turn always exists and carries the dates. */
static void render_llama3(const sx_chat_template *t, sbuf *b,
                          const sx_chat_msg *msgs, size_t n, bool gen)
{
    size_t first = 0;

    puts_(b, t->bos);
    if (t->family == F_LLAMA3) {
        puts_(b, "<|start_header_id|>system<|end_header_id|>\n\n");
        puts_(b, "Cutting Knowledge Date: ");
        puts_(b, t->knowledge ? t->knowledge : "December 2023");
        puts_(b, "\nToday Date: ");
        if (t->date_fmt)
            put_date(b, t->date_fmt, t->now);
        else
            puts_(b, t->fixed_date ? t->fixed_date : "26 Jul 2024");
        puts_(b, "\n\n");
        if (n > 0 && is_role(&msgs[0], "system")) {
            put_trim(b, msgs[0].content, msgs[0].content_len);
            first = 1;
        }
        puts_(b, "<|eot_id|>");
    }
    for (size_t i = first; i < n; i++)
        llama3_turn(b, msgs[i].role, msgs[i].content, msgs[i].content_len);
    if (gen)
        puts_(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* Mistral Nemo (v3-tekken): the system message goes before the LAST user
 * message, and only when the conversation ends with that user message. */
static int render_mistral_tekken(const sx_chat_template *t, sbuf *b,
                                 const sx_chat_msg *msgs, size_t n, char *err,
                                 size_t errlen)
{
    const sx_chat_msg *sys = NULL;
    int rc;

    if (n > 0 && is_role(&msgs[0], "system"))
        sys = &msgs[0], msgs++, n--;
    if ((rc = check_alternation(msgs, n, err, errlen)) != SX_OK)
        return rc;
    puts_(b, t->bos);
    for (size_t i = 0; i < n; i++) {
        if (is_role(&msgs[i], "user")) {
            puts_(b, "[INST]");
            if (sys && i == n - 1) {
                put_msg(b, sys);
                puts_(b, "\n\n");
            }
            put_msg(b, &msgs[i]);
            puts_(b, "[/INST]");
        } else {
            put_msg(b, &msgs[i]);
            puts_(b, t->eos);
        }
    }
    return SX_OK;
}

/* Mistral Small 3.x (v7): a system block always, the template's default
 * (with today's date) when the conversation has none. */
static int render_mistral_v7(const sx_chat_template *t, sbuf *b,
                             const sx_chat_msg *msgs, size_t n, char *err,
                             size_t errlen)
{
    int rc;

    puts_(b, t->bos);
    if (n > 0 && is_role(&msgs[0], "system")) {
        puts_(b, "[SYSTEM_PROMPT]");
        put_msg(b, &msgs[0]);
        puts_(b, "[/SYSTEM_PROMPT]");
        msgs++, n--;
    } else if (t->default_system) {
        puts_(b, "[SYSTEM_PROMPT]");
        put_with_date(t, b, t->default_system);
        puts_(b, "[/SYSTEM_PROMPT]");
    }
    if ((rc = check_alternation(msgs, n, err, errlen)) != SX_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (is_role(&msgs[i], "user")) {
            puts_(b, "[INST]");
            put_msg(b, &msgs[i]);
            puts_(b, "[/INST]");
        } else {
            put_msg(b, &msgs[i]);
            puts_(b, t->eos);
        }
    }
    return SX_OK;
}

/* Phi-3.5: <|role|>\n content <|end|>\n; an empty system message is left
 * out. Phi-3 (legacy) has no system turn: we put the system message before
 * the first user message, separated by a blank line, rather than drop it. */
static void render_phi3(const sx_chat_template *t, sbuf *b,
                        const sx_chat_msg *msgs, size_t n, bool gen)
{
    const sx_chat_msg *sys = NULL;

    if (t->family == F_PHI3_LEGACY) {
        puts_(b, t->bos);
        for (size_t i = 0; i < n; i++) {
            if (is_role(&msgs[i], "system")) {
                sys = &msgs[i];
            } else if (is_role(&msgs[i], "user")) {
                puts_(b, "<|user|>\n");
                if (sys && sys->content_len > 0) {
                    put_msg(b, sys);
                    puts_(b, "\n\n");
                }
                sys = NULL;
                put_msg(b, &msgs[i]);
                puts_(b, "<|end|>\n<|assistant|>\n");
            } else {
                put_msg(b, &msgs[i]);
                puts_(b, "<|end|>\n");
            }
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (is_role(&msgs[i], "system") && msgs[i].content_len == 0)
            continue;
        puts_(b, "<|");
        puts_(b, msgs[i].role);
        puts_(b, "|>\n");
        put_msg(b, &msgs[i]);
        puts_(b, "<|end|>\n");
    }
    puts_(b, gen ? "<|assistant|>\n" : t->eos);
}

/* Gemma 2/3. The template refuses a system message; we do what llama.cpp's
 * built-in formatter does and put it before the first user message,
 * separated by a blank line. */
static int render_gemma(const sx_chat_template *t, sbuf *b,
                        const sx_chat_msg *msgs, size_t n, bool gen,
                        char *err, size_t errlen)
{
    const sx_chat_msg *sys = NULL;
    int rc;

    if (n > 0 && is_role(&msgs[0], "system"))
        sys = &msgs[0], msgs++, n--;
    if ((rc = check_alternation(msgs, n, err, errlen)) != SX_OK)
        return rc;
    puts_(b, t->bos);
    if (sys && n == 0) {
        puts_(b, "<start_of_turn>user\n");
        put_trim(b, sys->content, sys->content_len);
        puts_(b, "<end_of_turn>\n");
    }
    for (size_t i = 0; i < n; i++) {
        bool user = is_role(&msgs[i], "user");
        puts_(b, user ? "<start_of_turn>user\n" : "<start_of_turn>model\n");
        if (sys && i == 0) {
            put_trim(b, sys->content, sys->content_len);
            puts_(b, "\n\n");
        }
        put_trim(b, msgs[i].content, msgs[i].content_len);
        puts_(b, "<end_of_turn>\n");
    }
    if (gen)
        puts_(b, "<start_of_turn>model\n");
    return SX_OK;
}

/* Gemma 4's strip_thinking: drops <|channel>...<channel|> spans, trims. */
static void put_gemma4_model(sbuf *b, const char *s, size_t n)
{
    sbuf kept = {0};
    const char *p = s, *end = s + n;

    while (p < end) {
        const char *close = find_n(p, (size_t)(end - p), "<channel|>");
        const char *stop = close ? close : end;
        const char *open = find_n(p, (size_t)(stop - p), "<|channel>");
        put(&kept, p, (size_t)((open ? open : stop) - p));
        p = close ? close + strlen("<channel|>") : end;
    }
    if (kept.oom)
        b->oom = true;
    else if (kept.p)
        put_trim(b, kept.p, kept.n);
    free(kept.p);
}

static void render_gemma4(const sx_chat_template *t, sbuf *b,
                          const sx_chat_msg *msgs, size_t n, bool gen)
{
    const char *prev = NULL;

    puts_(b, t->bos);
    if (n > 0 && (is_role(&msgs[0], "system") ||
                  is_role(&msgs[0], "developer"))) {
        puts_(b, "<|turn>system\n");
        put_trim(b, msgs[0].content, msgs[0].content_len);
        puts_(b, "<turn|>\n");
        msgs++, n--;
    }
    for (size_t i = 0; i < n; i++) {
        bool model = is_role(&msgs[i], "assistant");
        /* A second assistant message in a row continues the same turn. */
        if (!(model && prev && strcmp(prev, "assistant") == 0)) {
            puts_(b, "<|turn>");
            puts_(b, model ? "model" : msgs[i].role);
            puts_(b, "\n");
        }
        if (model)
            put_gemma4_model(b, msgs[i].content, msgs[i].content_len);
        else
            put_trim(b, msgs[i].content, msgs[i].content_len);
        puts_(b, "<turn|>\n");
        prev = msgs[i].role;
    }
    if (gen)
        puts_(b, "<|turn>model\n<|channel>thought\n<channel|>");
}

int sx_chat_template_apply(const sx_chat_template *t, const sx_chat_msg *msgs,
                           size_t n, bool add_generation_prompt, char **out,
                           size_t *out_len, char *err, size_t errlen)
{
    sbuf b = {0};
    int rc = SX_OK;

    *out = NULL;
    *out_len = 0;
    if (!t || (!msgs && n > 0))
        return SX_EINVAL;
    for (size_t i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        if (!r || (!msgs[i].content && msgs[i].content_len > 0)) {
            sx_errmsg_set(err, errlen,
                          "chat template: message %zu is malformed", i);
            return SX_EINVAL;
        }
        if (strcmp(r, "system") != 0 && strcmp(r, "user") != 0 &&
            strcmp(r, "assistant") != 0) {
            sx_errmsg_set(err, errlen,
                          "chat template: role '%s' of message %zu is "
                          "not supported (system, user, assistant)", r, i);
            return SX_EINVAL;
        }
    }

    put(&b, "", 0);
    switch (t->family) {
    case F_CHATML:
        render_chatml(t, &b, msgs, n, add_generation_prompt);
        break;
    case F_LLAMA3:
    case F_LLAMA3_LEGACY:
        render_llama3(t, &b, msgs, n, add_generation_prompt);
        break;
    case F_MISTRAL_TEKKEN:
        rc = render_mistral_tekken(t, &b, msgs, n, err, errlen);
        break;
    case F_MISTRAL_V7:
        rc = render_mistral_v7(t, &b, msgs, n, err, errlen);
        break;
    case F_PHI3:
    case F_PHI3_LEGACY:
        render_phi3(t, &b, msgs, n, add_generation_prompt);
        break;
    case F_GEMMA:
        rc = render_gemma(t, &b, msgs, n, add_generation_prompt, err, errlen);
        break;
    default:
        render_gemma4(t, &b, msgs, n, add_generation_prompt);
        break;
    }
    if (rc == SX_OK && b.oom) {
        sx_errmsg_set(err, errlen, "chat template: out of memory");
        rc = SX_ENOMEM;
    }
    if (rc != SX_OK) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    *out_len = b.n;
    return SX_OK;
}
