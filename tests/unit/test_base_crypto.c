/* Tests of base/crypto: HMAC-SHA256 against RFC 4231 vectors (every key
 * length branch) and a
 * Python-computed webhook signature, SHA-256, base62 against vectors
 * computed independently, random base62 alphabet and spread, comparisons. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/crypto.h"
#include "base/err.h"

#include <string.h>

static void test_hmac_rfc4231(void **state)
{
    uint8_t key1[20];
    char hex[SX_SHA256_HEX_LEN + 1];

    (void)state;
    memset(key1, 0x0b, sizeof(key1));
    assert_int_equal(sx_crypto_hmac_sha256_hex(key1, sizeof(key1), "Hi There", 8, hex), 0);
    assert_string_equal(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    assert_int_equal(sx_crypto_hmac_sha256_hex("Jefe", 4, "what do ya want for nothing?", 28,
                                               hex), 0);
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

/* The key lengths where RFC 2104 branches: longer than a block (hashed
 * first, RFC 4231 case 6), exactly a block, empty (Python's hmac). */
static void test_hmac_key_lengths(void **state)
{
    const char *msg6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    uint8_t key6[131], block[64];
    char hex[SX_SHA256_HEX_LEN + 1];

    (void)state;
    memset(key6, 0xaa, sizeof(key6));
    assert_int_equal(sx_crypto_hmac_sha256_hex(key6, sizeof(key6), msg6, strlen(msg6), hex), 0);
    assert_string_equal(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    memset(block, 'k', sizeof(block));
    assert_int_equal(sx_crypto_hmac_sha256_hex(block, sizeof(block), "abc", 3, hex), 0);
    assert_string_equal(hex, "ae0c0e4a2340cf50185eb46aaa8723f4769153661612e212fb0d1fa3170c6202");
    assert_int_equal(sx_crypto_hmac_sha256_hex("", 0, "", 0, hex), 0);
    assert_string_equal(hex, "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

/* A thread keeps its last key and only resets the MAC when the same key
 * comes again: the same results in any order of keys, including a key
 * that differs from the kept one in its last byte or its length, and the
 * empty key and a long one in between. */
static void test_hmac_key_reuse(void **state)
{
    static const struct {
        const char *key, *msg, *hex;
    } v[] = {
        {"Jefe", "what do ya want for nothing?",
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {"whsec_test", "1700000000.{\"id\":\"evt_1\"}",
         "c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925"},
        {"", "", "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad"},
    };
    static const int order[] = {0, 0, 1, 1, 0, 2, 2, 1, 0, 2, 0};
    uint8_t key6[131];
    char hex[SX_SHA256_HEX_LEN + 1], other[SX_SHA256_HEX_LEN + 1];

    (void)state;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        int k = order[i];

        assert_int_equal(sx_crypto_hmac_sha256_hex(v[k].key, strlen(v[k].key), v[k].msg,
                                                   strlen(v[k].msg), hex), 0);
        assert_string_equal(hex, v[k].hex);
    }
    assert_int_equal(sx_crypto_hmac_sha256_hex("Jefd", 4, v[0].msg, strlen(v[0].msg), other),
                     0);
    assert_string_not_equal(other, v[0].hex);
    assert_int_equal(sx_crypto_hmac_sha256_hex("Jef", 3, v[0].msg, strlen(v[0].msg), other), 0);
    assert_string_not_equal(other, v[0].hex);
    memset(key6, 0xaa, sizeof(key6));
    assert_int_equal(sx_crypto_hmac_sha256_hex(key6, sizeof(key6), "x", 1, other), 0);
    assert_int_equal(sx_crypto_hmac_sha256_hex("Jefe", 4, v[0].msg, strlen(v[0].msg), hex), 0);
    assert_string_equal(hex, v[0].hex);
}

static void test_hmac_webhook_signature(void **state)
{
    const char *msg = "1700000000.{\"id\":\"evt_1\"}";
    char hex[SX_SHA256_HEX_LEN + 1];

    (void)state;
    /* Python: hmac.new(b'whsec_test', msg, hashlib.sha256).hexdigest() */
    assert_int_equal(sx_crypto_hmac_sha256_hex("whsec_test", 10, msg, strlen(msg), hex), 0);
    assert_string_equal(hex, "c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925");
}

static void test_sha256(void **state)
{
    uint8_t d[SX_SHA256_LEN];
    char hex[SX_SHA256_HEX_LEN + 1];

    (void)state;
    assert_int_equal(sx_crypto_sha256("abc", 3, d), 0);
    sx_crypto_hex(d, sizeof(d), hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_base62_vectors(void **state)
{
    uint8_t ff[32];
    char out[64];

    (void)state;
    memset(ff, 0xff, sizeof(ff));
    assert_int_equal(sx_crypto_base62_encode("Hello, World!", 13, out, sizeof(out)), 18);
    assert_string_equal(out, "1wJfrzvdbtXUOlUjUf");
    assert_int_equal(sx_crypto_base62_encode("\0\0\1", 3, out, sizeof(out)), 3);
    assert_string_equal(out, "001");
    assert_int_equal(sx_crypto_base62_encode(ff, 32, out, sizeof(out)), 43);
    assert_string_equal(out, "yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1");
    assert_int_equal(sx_crypto_base62_encode("=", 1, out, sizeof(out)), 1);
    assert_string_equal(out, "z");
    assert_int_equal(sx_crypto_base62_encode("", 0, out, sizeof(out)), 0);
    assert_string_equal(out, "");
    /* Too small an output buffer is an error, not an overflow. */
    assert_int_equal(sx_crypto_base62_encode(ff, 32, out, 43), SX_ETOOBIG);
}

static void test_random_base62(void **state)
{
    char a[44], b[44];
    int seen[128] = {0}, distinct = 0;

    (void)state;
    assert_int_equal(sx_crypto_random_base62(a, 43), 0);
    assert_int_equal(sx_crypto_random_base62(b, 43), 0);
    assert_int_equal(strlen(a), 43);
    assert_string_not_equal(a, b);
    for (int round = 0; round < 50; round++) {
        assert_int_equal(sx_crypto_random_base62(a, 43), 0);
        for (int i = 0; i < 43; i++) {
            unsigned char c = (unsigned char)a[i];
            assert_true((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
                        (c >= 'a' && c <= 'z'));
            distinct += !seen[c]++;
        }
    }
    /* 2150 draws over 62 symbols: every symbol shows up. */
    assert_int_equal(distinct, 62);
}

static void test_compare(void **state)
{
    (void)state;
    assert_true(sx_crypto_equal("abcd", "abcd", 4));
    assert_false(sx_crypto_equal("abcd", "abce", 4));
    assert_true(sx_crypto_streq("sk-admin-x", "sk-admin-x"));
    assert_false(sx_crypto_streq("sk-admin-x", "sk-admin-y"));
    assert_false(sx_crypto_streq("sk-admin", "sk-admin-x"));
    assert_false(sx_crypto_streq("", "a"));
    assert_true(sx_crypto_streq("", ""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_hmac_key_lengths),
        cmocka_unit_test(test_hmac_key_reuse),
        cmocka_unit_test(test_hmac_webhook_signature),
        cmocka_unit_test(test_sha256),        cmocka_unit_test(test_base62_vectors),
        cmocka_unit_test(test_random_base62), cmocka_unit_test(test_compare),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
