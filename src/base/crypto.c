/* Implementation of crypto.h on top of getrandom(2) and OpenSSL 3. The
 * only state is SHA-256 and HMAC fetched once and their contexts per
 * thread, so every function is safe from any thread. */
#include "base/crypto.h"
#include "base/err.h"
#include "base/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

static const char base62_alphabet[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

int sx_crypto_random(void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            SX_ERROR("crypto", "getrandom(%zu) failed: %s", len, strerror(errno));
            return SX_EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return SX_OK;
}

int sx_crypto_random_base62(char *out, size_t n)
{
    uint8_t pool[64];
    size_t have = 0, used = 0, i = 0;

    /* Rejection sampling: bytes >= 248 (= 4 * 62) are dropped so that every
     * character is equally likely. */
    while (i < n) {
        if (used == have) {
            if (sx_crypto_random(pool, sizeof(pool)) != SX_OK)
                return SX_EIO;
            have = sizeof(pool);
            used = 0;
        }
        uint8_t b = pool[used++];
        if (b < 248)
            out[i++] = base62_alphabet[b % 62];
    }
    out[n] = '\0';
    OPENSSL_cleanse(pool, sizeof(pool));
    return SX_OK;
}

int sx_crypto_base62_encode(const void *in, size_t len, char *out, size_t outlen)
{
    const uint8_t *src = in;
    uint8_t num[1024];
    size_t zeros = 0, start, n = 0;

    if (len > sizeof(num))
        return SX_EINVAL;
    while (zeros < len && src[zeros] == 0)
        zeros++;
    memcpy(num, src, len);

    /* Repeated division of the big-endian number by 62; digits come out
     * least significant first and are reversed at the end. */
    start = zeros;
    while (start < len) {
        unsigned rem = 0;

        for (size_t i = start; i < len; i++) {
            unsigned cur = rem * 256 + num[i];
            num[i] = (uint8_t)(cur / 62);
            rem = cur % 62;
        }
        if (n + 1 >= outlen)
            return SX_ETOOBIG;
        out[n++] = base62_alphabet[rem];
        while (start < len && num[start] == 0)
            start++;
    }
    if (n + zeros + 1 > outlen)
        return SX_ETOOBIG;
    for (size_t i = 0; i < zeros; i++)
        out[n++] = '0';
    for (size_t i = 0; i < n / 2; i++) {
        char t = out[i];
        out[i] = out[n - 1 - i];
        out[n - 1 - i] = t;
    }
    out[n] = '\0';
    return (int)n;
}

void sx_crypto_hex(const void *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p = in;

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * len] = '\0';
}

/* SHA-256 and HMAC, fetched once: OpenSSL 3 looks an algorithm up on
 * every implicit use (EVP_sha256() in an init, HMAC()), which costs more
 * than hashing an API key. Each thread keeps its own contexts. */
static EVP_MD *sha256_md;
static EVP_MAC *hmac_mac;
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static pthread_key_t ctx_key; /* the thread's struct ctxs, freed at its exit */

/* Longest HMAC key kept to tell whether mac already holds it. */
#define MAC_KEY_KEPT 64

struct ctxs {
    EVP_MD_CTX *md;
    EVP_MAC_CTX *mac; /* digest SHA-256, set once */
    /* The key mac was last given (keylen 0: none kept), so that the same
     * key (the key pepper, on every request) only resets mac: keying
     * hashes two blocks and was about a third of an HMAC's cost. */
    uint8_t key[MAC_KEY_KEPT];
    size_t keylen;
};

static void ctxs_free(void *p)
{
    struct ctxs *c = p;

    EVP_MD_CTX_free(c->md);
    EVP_MAC_CTX_free(c->mac);
    OPENSSL_cleanse(c->key, sizeof(c->key));
    free(c);
}

static void fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    hmac_mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (pthread_key_create(&ctx_key, ctxs_free) != 0) {
        EVP_MD_free(sha256_md);
        EVP_MAC_free(hmac_mac);
        sha256_md = NULL;
        hmac_mac = NULL;
    }
}

/* The calling thread's contexts, made on first use; NULL on failure. */
static struct ctxs *thread_ctxs(void)
{
    OSSL_PARAM digest[] = {OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    struct ctxs *c;

    pthread_once(&fetch_once, fetch);
    if (!sha256_md || !hmac_mac)
        return NULL;
    if ((c = pthread_getspecific(ctx_key)))
        return c;
    if (!(c = calloc(1, sizeof(*c))) || !(c->md = EVP_MD_CTX_new()) ||
        !(c->mac = EVP_MAC_CTX_new(hmac_mac)) || !EVP_MAC_CTX_set_params(c->mac, digest) ||
        pthread_setspecific(ctx_key, c) != 0) {
        if (c)
            ctxs_free(c);
        return NULL;
    }
    return c;
}

int sx_crypto_sha256(const void *msg, size_t len, uint8_t out[SX_SHA256_LEN])
{
    struct ctxs *c = thread_ctxs();
    unsigned int outlen = 0;

    if (!c || !EVP_DigestInit_ex2(c->md, sha256_md, NULL) ||
        !EVP_DigestUpdate(c->md, msg, len) || !EVP_DigestFinal_ex(c->md, out, &outlen) ||
        outlen != SX_SHA256_LEN) {
        SX_ERROR("crypto", "SHA-256 failed");
        return SX_EIO;
    }
    return SX_OK;
}

int sx_crypto_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len,
                          uint8_t out[SX_SHA256_LEN])
{
    static const uint8_t empty[1];
    struct ctxs *c = thread_ctxs();
    const void *give = keylen ? key : empty;
    size_t outlen = 0;

    if (!c)
        goto fail;

    /* A NULL key means "the previous one" to EVP_MAC_init() (it resets
     * the keyed state); otherwise pass a real pointer, even for an empty
     * key. A key that is not kept is forgotten, so it is never reused. */
    if (c->keylen && c->keylen == keylen && CRYPTO_memcmp(c->key, key, keylen) == 0) {
        give = NULL;
    } else if (keylen && keylen <= MAC_KEY_KEPT) {
        memcpy(c->key, key, keylen);
        c->keylen = keylen;
    } else {
        c->keylen = 0;
    }
    if (!EVP_MAC_init(c->mac, give, keylen, NULL)) {
        c->keylen = 0;
        goto fail;
    }
    if (!EVP_MAC_update(c->mac, msg ? msg : (const void *)empty, msg ? len : 0) ||
        !EVP_MAC_final(c->mac, out, &outlen, SX_SHA256_LEN) || outlen != SX_SHA256_LEN)
        goto fail;
    return SX_OK;

fail:
    SX_ERROR("crypto", "HMAC-SHA256 failed");
    return SX_EIO;
}

int sx_crypto_hmac_sha256_hex(const void *key, size_t keylen, const void *msg, size_t len,
                              char out[SX_SHA256_HEX_LEN + 1])
{
    uint8_t mac[SX_SHA256_LEN];
    int rc = sx_crypto_hmac_sha256(key, keylen, msg, len, mac);

    if (rc == SX_OK)
        sx_crypto_hex(mac, sizeof(mac), out);
    return rc;
}

int sx_crypto_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

int sx_crypto_streq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned diff = (unsigned)(la ^ lb);

    /* Walk the longer length over both strings, wrapping the shorter, so
     * the loop does not stop early on the first difference. */
    size_t n = la > lb ? la : lb;
    for (size_t i = 0; i < n; i++) {
        unsigned char ca = la ? (unsigned char)a[i % la] : 0;
        unsigned char cb = lb ? (unsigned char)b[i % lb] : 0;
        diff |= (unsigned)(ca ^ cb);
    }
    return diff == 0;
}
