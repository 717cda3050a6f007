/*
 * Header rewriting of the HTTP/1 module, pure functions over a parsed head: the request head
 * sent upstream (http1_build_request(): Host replaced by the upstream authority, hop-by-hop and
 * Connection-named headers removed, X-Forwarded-* and Forwarded removed unless kept, our bearer
 * token and "Expect: 100-continue" dropped, framing regenerated), the response head sent to the
 * client (http1_build_response()), the Host allow-list, the bearer token check and the
 * chunk-size line of re-framed bodies.
 */
#include "proxy/http1.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* ---- Rewriting ---------------------------------------------------------------------------- */

/* A bounded output buffer: a write that does not fit sets `overflow` and writes nothing. */
struct out {
    char *buf;
    size_t len, cap;
    bool overflow;
};

static void out_put(struct out *o, const char *s, size_t n)
{
    if (n == 0)
        return;
    if (o->overflow || n > o->cap - o->len) {
        o->overflow = true;
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void out_str(struct out *o, const char *s)
{
    out_put(o, s, strlen(s));
}

static void out_u64(struct out *o, uint64_t v)
{
    char num[20];
    size_t n = sizeof(num);
    do {
        num[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    out_put(o, num + n, sizeof(num) - n);
}

/* True when request header `i` is left out for what it is: Host (replaced), our own bearer
 * token, "Expect: 100-continue" (answered by the proxy once the upstream is attested). */
static bool dropped_request_field(const struct http1_head *h, size_t i,
                                  const struct http1_request_opts *o)
{
    const char *v = h->buf + h->hdrs[i].value_off;
    switch ((enum http1_field)h->hdrs[i].field) {
    case HTTP1_FIELD_HOST:
        return true;
    case HTTP1_FIELD_EXPECT:
        return h->hdrs[i].value_len == 12 && strncasecmp(v, "100-continue", 12) == 0;
    case HTTP1_FIELD_AUTHORIZATION:
        return o->strip_authorization;
    default:
        return false;
    }
}

/* Copies the end-to-end headers of `h`: not hop-by-hop, not named by Connection, and for a
 * request (`req` set) not X-Forwarded-* unless kept, nor a field dropped_request_field() drops. */
static void copy_headers(struct out *o, const struct http1_head *h,
                         const struct http1_request_opts *req)
{
    unsigned skip = HTTP1_HDR_HOP | HTTP1_HDR_NAMED;
    if (req != NULL && !req->keep_forwarded)
        skip |= HTTP1_HDR_FORWARDED;
    if (req == NULL)
        skip |= HTTP1_HDR_OURS; /* a response: the proxy's own headers come from the proxy */
    for (size_t i = 0; i < h->n; i++) {
        const struct http1_header *hd = &h->hdrs[i];
        if ((hd->flags & skip) != 0 ||
            (req != NULL && hd->field != HTTP1_FIELD_OTHER && dropped_request_field(h, i, req)))
            continue;
        out_put(o, h->buf + hd->name_off, hd->name_len);
        out_put(o, ": ", 2);
        out_put(o, h->buf + hd->value_off, hd->value_len);
        out_put(o, "\r\n", 2);
    }
}

static void out_framing(struct out *o, enum http1_framing framing, uint64_t content_length)
{
    if (framing == HTTP1_FRAMING_LENGTH) {
        out_str(o, "Content-Length: ");
        out_u64(o, content_length);
        out_str(o, "\r\n");
    } else if (framing == HTTP1_FRAMING_CHUNKED) {
        out_str(o, "Transfer-Encoding: chunked\r\n");
    }
}

int http1_build_request(const struct http1_parser *p, const struct http1_request_opts *o, char *buf,
                        size_t cap)
{
    struct out out = {buf, 0, cap, false};
    const struct http1_head *h = &p->head;

    out_str(&out, llhttp_method_name((llhttp_method_t)p->ll.method));
    out_put(&out, " ", 1);
    out_put(&out, h->buf + h->target_off, h->target_len);
    out_str(&out, " HTTP/1.1\r\nHost: ");
    out_str(&out, o->authority);
    out_str(&out, "\r\n");
    copy_headers(&out, h, o);
    if (o->upgrade != NULL) {
        out_str(&out, "Upgrade: ");
        out_str(&out, o->upgrade);
        out_str(&out, "\r\nConnection: Upgrade\r\n");
    }
    out_framing(&out, o->framing, o->content_length);
    out_str(&out, "\r\n");
    return out.overflow ? -ENOSPC : (int)out.len;
}

int http1_build_response(const struct http1_parser *p, const struct http1_response_opts *o,
                         char *buf, size_t cap)
{
    struct out out = {buf, 0, cap, false};
    const struct http1_head *h = &p->head;
    unsigned code = (unsigned)p->ll.status_code % 1000; /* llhttp allows three digits only */
    char status[4] = {(char)('0' + code / 100), (char)('0' + code / 10 % 10),
                      (char)('0' + code % 10), ' '};

    out_str(&out, "HTTP/1.1 ");
    out_put(&out, status, sizeof(status));
    out_put(&out, h->buf + h->target_off, h->target_len);
    out_str(&out, "\r\n");
    copy_headers(&out, h, NULL);
    out_framing(&out, o->framing, o->content_length);
    if (o->extra_headers != NULL)
        out_str(&out, o->extra_headers);
    if (o->close)
        out_str(&out, "Connection: close\r\n");
    out_str(&out, "\r\n");
    return out.overflow ? -ENOSPC : (int)out.len;
}

/* ---- Host allow-list and bearer token ----------------------------------------------------- */

static bool valid_port(const char *s, size_t n)
{
    unsigned long v = 0;
    if (n == 0 || n > 5)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    return v >= 1 && v <= 65535;
}

bool http1_host_allowed(const char *host, size_t len, const char *const *allowed, size_t n)
{
    size_t name_len = len;
    const char *colon;

    if (len == 0)
        return false;
    /* Split off a port: after the closing bracket for IPv6, after the last colon otherwise
     * (a bare IPv6 address without brackets is not a valid Host and matches nothing). */
    if (host[0] == '[') {
        const char *rb = memchr(host, ']', len);
        if (rb == NULL)
            return false;
        name_len = (size_t)(rb - host) + 1;
        if (name_len < len) {
            if (host[name_len] != ':' || !valid_port(host + name_len + 1, len - name_len - 1))
                return false;
        }
    } else {
        colon = memchr(host, ':', len);
        if (colon != NULL) {
            name_len = (size_t)(colon - host);
            if (!valid_port(colon + 1, len - name_len - 1))
                return false;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const char *a = allowed[i];
        size_t alen = strlen(a);
        bool a_has_port = a[0] == '[' ? strstr(a, "]:") != NULL : strchr(a, ':') != NULL;
        if (a_has_port) {
            if (alen == len && strncasecmp(a, host, len) == 0)
                return true;
        } else if (alen == name_len && strncasecmp(a, host, name_len) == 0) {
            return true;
        }
    }
    return false;
}

bool http1_bearer_matches(const char *value, size_t len, const char *token)
{
    uint8_t a[32], b[32];
    unsigned alen = 0, blen = 0;
    size_t i = 6;
    bool ok;

    if (len < 7 || strncasecmp(value, "bearer", 6) != 0 || (value[6] != ' ' && value[6] != '\t'))
        return false;
    while (i < len && (value[i] == ' ' || value[i] == '\t'))
        i++;
    /* Digests of equal length are compared, so neither the token's length nor its content
     * shows in the time taken. */
    if (EVP_Digest(value + i, len - i, a, &alen, EVP_sha256(), NULL) != 1 ||
        EVP_Digest(token, strlen(token), b, &blen, EVP_sha256(), NULL) != 1)
        return false;
    ok = alen == 32 && blen == 32 && CRYPTO_memcmp(a, b, 32) == 0;
    OPENSSL_cleanse(a, sizeof(a));
    OPENSSL_cleanse(b, sizeof(b));
    return ok && token[0] != '\0';
}

size_t http1_chunk_header(uint64_t n, char out[HTTP1_CHUNK_HEADER_MAX])
{
    int len = snprintf(out, HTTP1_CHUNK_HEADER_MAX, "%llx\r\n", (unsigned long long)n);
    return (size_t)len;
}
