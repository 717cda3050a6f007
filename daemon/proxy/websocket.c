/*
 * RFC 6455 handshake checks, the Origin rule, the daemon's close frame and the frame-boundary
 * scanner (websocket.h). Pure functions: unit-tested in tests/unit/test_websocket.c.
 */
#include "proxy/websocket.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ---- Header helpers ------------------------------------------------------------------------ */

/* Index of the next header named `name` (exactly, without case) at or after `from`, or -1.
 * Only handshake heads are searched this way; every other request uses the field table. */
static int find_named(const struct http1_head *h, const char *name, size_t from)
{
    size_t len = strlen(name);
    for (size_t i = from; i < h->n; i++) {
        if (h->hdrs[i].name_len == len && strncasecmp(h->buf + h->hdrs[i].name_off, name, len) == 0)
            return (int)i;
    }
    return -1;
}

static size_t count_named(const struct http1_head *h, const char *name)
{
    size_t n = 0;
    for (int i = find_named(h, name, 0); i >= 0; i = find_named(h, name, (size_t)i + 1))
        n++;
    return n;
}

/* True when the comma-separated list `v` (`len` bytes) holds `token` (without case). */
static bool list_has_token(const char *v, size_t len, const char *token)
{
    size_t tlen = strlen(token), i = 0;
    while (i < len) {
        size_t start, end;
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        start = i;
        while (i < len && v[i] != ',')
            i++;
        end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == tlen && strncasecmp(v + start, token, tlen) == 0)
            return true;
    }
    return false;
}

/* True when any header of `field` lists `token`. */
static bool field_has_token(const struct http1_head *h, enum http1_field field, const char *token)
{
    for (int i = http1_head_find(h, field, 0); i >= 0;
         i = http1_head_find(h, field, (size_t)i + 1)) {
        if (list_has_token(h->buf + h->hdrs[i].value_off, h->hdrs[i].value_len, token))
            return true;
    }
    return false;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* A Sec-WebSocket-Key: base64 of exactly 16 bytes, i.e. 22 characters, the last of which
 * carries no stray bits, then "==". */
static bool valid_key(const char *v, size_t len)
{
    if (len != WS_KEY_LEN || v[22] != '=' || v[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++) {
        if (b64_value((unsigned char)v[i]) < 0)
            return false;
    }
    return (b64_value((unsigned char)v[21]) & 0x0f) == 0;
}

/* ---- Handshake ----------------------------------------------------------------------------- */

enum ws_request_verdict ws_check_request(const struct http1_head *h, bool is_get,
                                         unsigned http_minor, char key[WS_KEY_LEN + 1], char *why,
                                         size_t cap)
{
    int ki, vi;

    key[0] = '\0';
    if (!field_has_token(h, HTTP1_FIELD_UPGRADE, "websocket"))
        return WS_REQUEST_NOT_WS;
    if (!is_get || http_minor != 1) {
        snprintf(why, cap, "a WebSocket handshake must be a GET over HTTP/1.1");
        return WS_REQUEST_BAD;
    }
    if (!field_has_token(h, HTTP1_FIELD_CONNECTION, "upgrade")) {
        snprintf(why, cap, "a WebSocket handshake needs 'Connection: Upgrade'");
        return WS_REQUEST_BAD;
    }
    ki = find_named(h, "sec-websocket-key", 0);
    if (ki < 0 || count_named(h, "sec-websocket-key") != 1 ||
        !valid_key(h->buf + h->hdrs[ki].value_off, h->hdrs[ki].value_len)) {
        snprintf(why, cap,
                 "a WebSocket handshake needs one Sec-WebSocket-Key of 16 bytes in "
                 "base64");
        return WS_REQUEST_BAD;
    }
    vi = find_named(h, "sec-websocket-version", 0);
    if (vi < 0 || count_named(h, "sec-websocket-version") != 1 || h->hdrs[vi].value_len != 2 ||
        memcmp(h->buf + h->hdrs[vi].value_off, "13", 2) != 0) {
        snprintf(why, cap, "only WebSocket version 13 is supported (Sec-WebSocket-Version: 13)");
        return WS_REQUEST_BAD;
    }
    memcpy(key, h->buf + h->hdrs[ki].value_off, WS_KEY_LEN);
    key[WS_KEY_LEN] = '\0';
    return WS_REQUEST_OK;
}

int ws_accept_for_key(const char *key, size_t key_len, char out[WS_ACCEPT_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok;

    out[0] = '\0';
    if (ctx == NULL)
        return -1;
    ok = EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
         EVP_DigestUpdate(ctx, key, key_len) == 1 &&
         EVP_DigestUpdate(ctx, WS_GUID, sizeof(WS_GUID) - 1) == 1 &&
         EVP_DigestFinal_ex(ctx, md, &md_len) == 1 && md_len == 20;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return -1;
    /* 20 bytes give 28 characters and the NUL. */
    return EVP_EncodeBlock((unsigned char *)out, md, 20) == WS_ACCEPT_LEN ? 0 : -1;
}

bool ws_check_response(const struct http1_head *h, const char *key, char *why, size_t cap)
{
    char want[WS_ACCEPT_LEN + 1];
    int ai;

    if (!field_has_token(h, HTTP1_FIELD_UPGRADE, "websocket") ||
        !field_has_token(h, HTTP1_FIELD_CONNECTION, "upgrade")) {
        snprintf(why, cap, "the enclave's 101 lacks 'Upgrade: websocket' or 'Connection: Upgrade'");
        return false;
    }
    ai = find_named(h, "sec-websocket-accept", 0);
    if (ai < 0 || count_named(h, "sec-websocket-accept") != 1) {
        snprintf(why, cap, "the enclave's 101 has no single Sec-WebSocket-Accept");
        return false;
    }
    if (ws_accept_for_key(key, strlen(key), want) < 0 || h->hdrs[ai].value_len != WS_ACCEPT_LEN ||
        CRYPTO_memcmp(h->buf + h->hdrs[ai].value_off, want, WS_ACCEPT_LEN) != 0) {
        snprintf(why, cap, "the enclave's Sec-WebSocket-Accept does not match the key");
        return false;
    }
    return true;
}

/* ---- Origin -------------------------------------------------------------------------------- */

bool ws_origin_allowed(const struct http1_head *h, const char *const *allowed, size_t n)
{
    int oi = find_named(h, "origin", 0);
    const char *v;
    size_t len;

    if (oi < 0)
        return true;
    if (count_named(h, "origin") != 1)
        return false;
    v = h->buf + h->hdrs[oi].value_off;
    len = h->hdrs[oi].value_len;
    if (n == 0) {
        int hi = http1_head_find(h, HTTP1_FIELD_HOST, 0);
        size_t hlen;
        if (hi < 0)
            return false;
        hlen = h->hdrs[hi].value_len;
        return len == 7 + hlen && strncasecmp(v, "http://", 7) == 0 &&
               strncasecmp(v + 7, h->buf + h->hdrs[hi].value_off, hlen) == 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (strlen(allowed[i]) == len && strncasecmp(allowed[i], v, len) == 0)
            return true;
    }
    return false;
}

/* ---- Close frame --------------------------------------------------------------------------- */

size_t ws_close_frame(uint16_t code, const char *reason, uint8_t out[WS_CLOSE_FRAME_MAX])
{
    size_t n = reason != NULL ? strlen(reason) : 0;
    if (n > WS_CLOSE_REASON_MAX)
        n = WS_CLOSE_REASON_MAX;
    out[0] = 0x88;             /* FIN, opcode 8 (close) */
    out[1] = (uint8_t)(2 + n); /* unmasked: a server never masks */
    out[2] = (uint8_t)(code >> 8);
    out[3] = (uint8_t)(code & 0xff);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)reason[i];
        out[4 + i] = (c >= 0x20 && c < 0x7f) ? c : '?';
    }
    return 4 + n;
}

/* ---- Frame boundaries ---------------------------------------------------------------------- */

/* The header length a frame needs, from its first two bytes. */
static size_t header_len(const uint8_t hdr[2])
{
    size_t len7 = hdr[1] & 0x7f;
    size_t n = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
    return n + ((hdr[1] & 0x80) ? 4 : 0);
}

static uint64_t payload_len(const uint8_t *hdr)
{
    uint64_t len7 = hdr[1] & 0x7f, v = 0;
    if (len7 < 126)
        return len7;
    if (len7 == 126)
        return (uint64_t)hdr[2] << 8 | hdr[3];
    for (int i = 0; i < 8; i++)
        v = v << 8 | hdr[2 + i];
    return v;
}

void ws_scan_feed(struct ws_scan *s, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (s->in_payload) {
            uint64_t take = s->payload_left < n ? s->payload_left : n;
            s->payload_left -= take;
            p += take;
            n -= (size_t)take;
            if (s->payload_left == 0) {
                s->in_payload = false;
                s->hdr_len = 0;
            }
            continue;
        }
        s->hdr[s->hdr_len++] = *p++;
        n--;
        if (s->hdr_len < 2 || s->hdr_len < header_len(s->hdr))
            continue;
        s->payload_left = payload_len(s->hdr);
        s->in_payload = s->payload_left > 0;
        if (!s->in_payload)
            s->hdr_len = 0;
    }
}

bool ws_scan_at_boundary(const struct ws_scan *s)
{
    return !s->in_payload && s->hdr_len == 0;
}
