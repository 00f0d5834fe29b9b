/* CIDR blocks for the per-tenant IP allowlist: parsing "10.0.0.0/8",
 * "2001:db8::/32" or bare addresses, and matching a client address, with
 * IPv4-mapped IPv6 clients ("::ffff:10.1.2.3") matched as IPv4. */
#include "tenancy/tenancy.h"

#include "base/err.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Parses a textual address into 4 or 16 bytes; mapped IPv6 becomes IPv4. */
static int parse_addr(const char *s, uint8_t out[16], bool *v6)
{
    uint8_t buf[16];

    if (inet_pton(AF_INET, s, buf) == 1) {
        memcpy(out, buf, 4);
        *v6 = false;
        return 0;
    }
    if (inet_pton(AF_INET6, s, buf) == 1) {
        if (memcmp(buf, v4_mapped, 12) == 0) {
            memcpy(out, buf + 12, 4);
            *v6 = false;
        } else {
            memcpy(out, buf, 16);
            *v6 = true;
        }
        return 0;
    }
    return SX_EINVAL;
}

int sx_cidr_parse(const char *s, struct sx_cidr *out, char *why, size_t whylen)
{
    char addr[64];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    int max, bits;

    if (alen == 0 || alen >= sizeof(addr)) {
        snprintf(why, whylen, "\"%.64s\" is not an IPv4 or IPv6 address or CIDR block", s);
        return SX_EINVAL;
    }
    memcpy(addr, s, alen);
    addr[alen] = 0;
    memset(out, 0, sizeof(*out));
    if (parse_addr(addr, out->addr, &out->v6) != 0 || strchr(addr, '%')) {
        snprintf(why, whylen, "\"%.64s\" is not an IPv4 or IPv6 address or CIDR block", s);
        return SX_EINVAL;
    }
    max = out->v6 ? 128 : 32;
    bits = max;
    if (slash) {
        char *end;
        long v;

        if (slash[1] < '0' || slash[1] > '9') {
            snprintf(why, whylen, "\"%.64s\": the prefix length after '/' must be a number",
                     s);
            return SX_EINVAL;
        }
        v = strtol(slash + 1, &end, 10);
        if (*end || v < 0 || v > max || end - (slash + 1) > 3) {
            snprintf(why, whylen, "\"%.64s\": the prefix length must be 0..%d", s, max);
            return SX_EINVAL;
        }
        bits = (int)v;
    }
    out->bits = bits;

    /* Host bits set usually means a typo that would allow more than meant. */
    for (int i = bits; i < max; i++)
        if (out->addr[i / 8] & (0x80 >> (i % 8))) {
            snprintf(why, whylen,
                     "\"%.64s\" has host bits set after the /%d prefix; write the network "
                     "address of the block instead", s, bits);
            return SX_EINVAL;
        }
    return 0;
}

int sx_cidr_match(const struct sx_cidr *c, const char *ip)
{
    uint8_t a[16];
    bool v6;
    int full, rest;

    if (!ip || parse_addr(ip, a, &v6) != 0 || v6 != c->v6)
        return 0;
    full = c->bits / 8;
    rest = c->bits % 8;
    if (memcmp(a, c->addr, (size_t)full) != 0)
        return 0;
    if (rest) {
        uint8_t mask = (uint8_t)(0xff << (8 - rest));

        if ((a[full] & mask) != (c->addr[full] & mask))
            return 0;
    }
    return 1;
}
