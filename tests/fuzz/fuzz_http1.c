/*
 * libFuzzer target: the HTTP/1.1 path (proxy/http1*.c over llhttp). The first input byte picks
 * requests or responses and how the rest is split into reads; the rest is the byte stream.
 *
 * Beyond "no crash, no leak, no overflow", one invariant is checked: every request head the
 * proxy would forward upstream (http1_build_request) must itself parse, with the same strict
 * parser, as exactly one complete head and nothing else. A rewrite that produced a second
 * request, or bytes a strict server would read differently, would be request smuggling.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/http1.h"

#define OUT_MAX (64 * 1024 + HTTP1_REWRITE_SLACK + 64)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct reparse {
    int heads;
};

static int re_head(struct http1_parser *p)
{
    ((struct reparse *)p->data)->heads++;
    return HTTP1_CB_PAUSE;
}

static int re_body(struct http1_parser *p, const char *at, size_t len)
{
    (void)p, (void)at, (void)len;
    return HTTP1_CB_OK;
}

static int re_complete(struct http1_parser *p)
{
    (void)p;
    return HTTP1_CB_OK;
}

static const struct http1_callbacks re_cbs = {re_head, re_body, re_complete};

/* The forwarded head must be one complete, valid request head. */
static void check_forwarded(const char *head, size_t len)
{
    struct http1_parser p;
    struct reparse r = {0};
    size_t used = 0;
    enum http1_status st;
    if (http1_parser_init(&p, HTTP_REQUEST, OUT_MAX, 1000, &re_cbs, &r) < 0)
        return;
    st = http1_parser_execute(&p, head, len, &used);
    if (st == HTTP1_ERROR || r.heads != 1 || used != len)
        abort(); /* the proxy would have forwarded something that is not one clean head */
    http1_parser_free(&p);
}

static int on_head(struct http1_parser *p)
{
    static char out[OUT_MAX];
    struct http1_request_opts o = {.authority = "enclave.example:8443"};
    int n;
    if (p->ll.type != HTTP_REQUEST)
        return HTTP1_CB_OK;
    if (p->ll.flags & F_CHUNKED)
        o.framing = HTTP1_FRAMING_CHUNKED;
    else if ((p->ll.flags & F_CONTENT_LENGTH) && p->ll.content_length > 0) {
        o.framing = HTTP1_FRAMING_LENGTH;
        o.content_length = p->ll.content_length;
    }
    n = http1_build_request(p, &o, out, sizeof(out));
    if (n > 0)
        check_forwarded(out, (size_t)n);
    return HTTP1_CB_OK;
}

static int on_body(struct http1_parser *p, const char *at, size_t len)
{
    (void)p, (void)at, (void)len;
    return HTTP1_CB_OK;
}

static int on_complete(struct http1_parser *p)
{
    (void)p;
    return HTTP1_CB_PAUSE; /* one message at a time, as the client and upstream sides do */
}

static const struct http1_callbacks cbs = {on_head, on_body, on_complete};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http1_parser p;
    size_t off = 0, step;
    int rounds = 0;
    if (size < 1)
        return 0;
    step = (data[0] & 0x3f) + 1; /* read sizes of 1..64 bytes, or everything at once */
    if (data[0] & 0x40)
        step = size;
    if (http1_parser_init(&p, (data[0] & 0x80) ? HTTP_RESPONSE : HTTP_REQUEST, 8192, 100, &cbs,
                          NULL) < 0)
        return 0;
    data++;
    size--;
    while (off < size && rounds++ < 100000) {
        size_t used = 0, n = size - off < step ? size - off : step;
        enum http1_status st = http1_parser_execute(&p, (const char *)data + off, n, &used);
        off += used;
        if (st == HTTP1_ERROR)
            break;
        if (st == HTTP1_PAUSED)
            http1_parser_resume(&p);
    }
    if (off >= size)
        http1_parser_finish(&p);
    http1_parser_free(&p);
    return 0;
}
