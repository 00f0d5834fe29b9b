/* Implementation of crypto.h on top of getrandom(2) and OpenSSL 3. The
 * only state is SHA-256 fetched once and a digest context per thread, so
 * every function is safe from any thread. */
#include "base/crypto.h"
#include "base/err.h"
#include "base/log.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

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

/* SHA-256, fetched once: OpenSSL 3 looks an algorithm up on every
 * implicit use (EVP_sha256() in an init, HMAC()), which costs more than
 * hashing an API key. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static pthread_key_t sha256_key; /* the thread's EVP_MD_CTX, freed at its exit */

static void ctx_free(void *ctx)
{
    EVP_MD_CTX_free(ctx);
}

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (pthread_key_create(&sha256_key, ctx_free) != 0) {
        EVP_MD_free(sha256_md);
        sha256_md = NULL;
    }
}

/* out = SHA-256(a || b); b may be NULL. */
static int sha256_2(const void *a, size_t alen, const void *b, size_t blen,
                    uint8_t out[SX_SHA256_LEN])
{
    unsigned int outlen = 0;
    EVP_MD_CTX *ctx = NULL;

    pthread_once(&sha256_once, sha256_fetch);
    if (sha256_md && !(ctx = pthread_getspecific(sha256_key)) &&
        (ctx = EVP_MD_CTX_new()) && pthread_setspecific(sha256_key, ctx) != 0) {
        EVP_MD_CTX_free(ctx);
        ctx = NULL;
    }
    if (!ctx || !EVP_DigestInit_ex2(ctx, sha256_md, NULL) || !EVP_DigestUpdate(ctx, a, alen) ||
        (blen && !EVP_DigestUpdate(ctx, b, blen)) ||
        !EVP_DigestFinal_ex(ctx, out, &outlen) || outlen != SX_SHA256_LEN) {
        SX_ERROR("crypto", "SHA-256 failed");
        return SX_EIO;
    }
    return SX_OK;
}

int sx_crypto_sha256(const void *msg, size_t len, uint8_t out[SX_SHA256_LEN])
{
    return sha256_2(msg, len, NULL, 0, out);
}

/* HMAC as RFC 2104 defines it, over the one-shot SHA-256 above. */
int sx_crypto_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len,
                          uint8_t out[SX_SHA256_LEN])
{
    uint8_t k[64] = {0}, pad[64], inner[SX_SHA256_LEN];
    int rc;

    if (keylen > sizeof(k)) {
        if ((rc = sx_crypto_sha256(key, keylen, k)) != SX_OK)
            return rc;
    } else if (keylen) {
        memcpy(k, key, keylen);
    }
    for (size_t i = 0; i < sizeof(k); i++)
        pad[i] = k[i] ^ 0x36;
    rc = sha256_2(pad, sizeof(pad), msg, msg ? len : 0, inner);
    for (size_t i = 0; rc == SX_OK && i < sizeof(k); i++)
        pad[i] = k[i] ^ 0x5c;
    if (rc == SX_OK)
        rc = sha256_2(pad, sizeof(pad), inner, sizeof(inner), out);
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(pad, sizeof(pad));
    return rc;
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
