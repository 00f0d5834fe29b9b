/* Small cryptographic helpers for the gateway: kernel randomness, base62
 * secrets, SHA-256, HMAC-SHA256 (OpenSSL) and constant-time comparison.
 * API keys, webhook signatures and request ids are built from these. */
#ifndef SX_BASE_CRYPTO_H
#define SX_BASE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define SX_SHA256_LEN 32
#define SX_SHA256_HEX_LEN 64 /* without the terminating NUL */

/* Fills buf with len bytes from getrandom(2). Returns 0 or SX_EIO (the
 * failure is logged). Safe from any thread. */
int sx_crypto_random(void *buf, size_t len);

/* Writes n uniformly distributed base62 characters ([0-9A-Za-z]) and a NUL
 * to out (which holds at least n + 1 bytes). Each character carries
 * log2(62) ~ 5.95 bits, so 43 characters give more than 256 bits.
 * Returns 0 or SX_EIO. */
int sx_crypto_random_base62(char *out, size_t n);

/* Encodes len bytes as one big-endian number in base62 (alphabet
 * 0-9A-Za-z). Each leading zero byte becomes one '0' so that the encoding
 * is reversible. Writes a NUL-terminated string; returns its length, or
 * SX_ETOOBIG if outlen is too small (len * 138 / 100 + 2 always suffices),
 * SX_EINVAL if len > 1024. */
int sx_crypto_base62_encode(const void *in, size_t len, char *out, size_t outlen);

/* Lower-case hex of len bytes into out (2 * len + 1 bytes). */
void sx_crypto_hex(const void *in, size_t len, char *out);

/* SHA-256 of msg into out (32 bytes). Returns 0 or SX_EIO. */
int sx_crypto_sha256(const void *msg, size_t len, uint8_t out[SX_SHA256_LEN]);

/* HMAC-SHA256(key, msg) into out (32 bytes) or as 64 lower-case hex
 * characters plus NUL. Return 0 or SX_EIO. */
int sx_crypto_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len,
                          uint8_t out[SX_SHA256_LEN]);
int sx_crypto_hmac_sha256_hex(const void *key, size_t keylen, const void *msg, size_t len,
                              char out[SX_SHA256_HEX_LEN + 1]);

/* 1 when a and b hold the same n bytes, else 0; the time taken depends
 * only on n. */
int sx_crypto_equal(const void *a, const void *b, size_t n);

/* Constant-time string comparison: 1 when equal. Time depends on the
 * lengths only (which an attacker may learn), never on the contents. */
int sx_crypto_streq(const char *a, const char *b);

#endif
