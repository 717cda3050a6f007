#include "enclave/wellknown.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int lower_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

enum wellknown_target wellknown_parse(const char *target, size_t len,
                                      uint8_t nonce[WELLKNOWN_NONCE_LEN])
{
    static const char path[] = WELLKNOWN_PATH;
    static const char session[] = "session_";
    static const char key[] = "nonce=";
    const size_t plen = sizeof(path) - 1, slen = sizeof(session) - 1, klen = sizeof(key) - 1;
    enum wellknown_target kind = WELLKNOWN_NONCE;
    const char *q;

    if (len < plen || memcmp(target, path, plen) != 0 || (len > plen && target[plen] != '?'))
        return WELLKNOWN_OTHER;
    q = target + plen + 1;
    if (len == plen + 1 + slen + klen + 2 * WELLKNOWN_NONCE_LEN && memcmp(q, session, slen) == 0) {
        kind = WELLKNOWN_SESSION;
        q += slen;
    } else if (len != plen + 1 + klen + 2 * WELLKNOWN_NONCE_LEN) {
        return WELLKNOWN_BAD_NONCE;
    }
    if (memcmp(q, key, klen) != 0)
        return WELLKNOWN_BAD_NONCE;
    q += klen;
    for (size_t i = 0; i < WELLKNOWN_NONCE_LEN; i++) {
        int hi = lower_hex(q[2 * i]), lo = lower_hex(q[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return WELLKNOWN_BAD_NONCE;
        nonce[i] = (uint8_t)(hi << 4 | lo);
    }
    return kind;
}

int wellknown_response_head(size_t len, bool close, char *out, size_t cap)
{
    int n = snprintf(out, cap,
                     "HTTP/1.1 200 OK\r\n"
                     "Content-Type: application/cbor\r\n"
                     "Content-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n"
                     "Connection: %s\r\n"
                     "\r\n",
                     len, close ? "close" : "keep-alive");
    return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}
