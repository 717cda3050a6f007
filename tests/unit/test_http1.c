/*
 * Unit tests for proxy/http1.c: transcripts of request bytes in and the rewritten bytes sent
 * upstream out; every strictness rule of BRIEF §6 as a refusal; pipelining; the Host
 * allow-list, the bearer token and response rewriting. Each transcript is fed whole and one
 * byte at a time, so that no rule depends on how reads split the input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/http1.h"

#define OUT_MAX 16384

struct run {
    struct http1_request_opts opts;
    char up[OUT_MAX]; /* every rewritten head, concatenated */
    size_t up_len;
    char body[OUT_MAX]; /* decoded bodies, concatenated */
    size_t body_len;
    int heads, completes;
    uint64_t content_length;
    bool chunked;
};

static int on_head(struct http1_parser *p)
{
    struct run *r = p->data;
    struct http1_request_opts o = r->opts;
    int n;
    r->heads++;
    r->chunked = (p->ll.flags & F_CHUNKED) != 0;
    r->content_length = p->ll.content_length;
    if (r->chunked)
        o.framing = HTTP1_FRAMING_CHUNKED;
    else if ((p->ll.flags & F_CONTENT_LENGTH) && p->ll.content_length > 0) {
        o.framing = HTTP1_FRAMING_LENGTH;
        o.content_length = p->ll.content_length;
    }
    n = http1_build_request(p, &o, r->up + r->up_len, sizeof(r->up) - r->up_len);
    assert_true(n > 0);
    r->up_len += (size_t)n;
    return HTTP1_CB_OK;
}

static int on_body(struct http1_parser *p, const char *at, size_t len)
{
    struct run *r = p->data;
    assert_true(r->body_len + len <= sizeof(r->body));
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    return HTTP1_CB_OK;
}

static int on_complete(struct http1_parser *p)
{
    struct run *r = p->data;
    r->completes++;
    return HTTP1_CB_PAUSE; /* as the client does: one request at a time */
}

static const struct http1_callbacks cbs = {on_head, on_body, on_complete};

/* Feeds `in` in pieces of `step` bytes (0 = all at once); returns the failure, if any. */
static enum http1_fail feed_limits(const char *in, size_t len, size_t step, struct run *r,
                                   size_t head_limit, size_t max_headers, char *msg, size_t cap)
{
    struct http1_parser p;
    size_t off = 0, end = 0;
    enum http1_fail fail = HTTP1_FAIL_NONE;

    if (r->opts.authority == NULL)
        r->opts.authority = "enclave.example:8443";
    http1_parser_init(&p, HTTP_REQUEST, head_limit, max_headers, &cbs, r);
    while (off < len) {
        size_t used = 0;
        enum http1_status st;
        if (end <= off)
            end = step == 0 ? len : (off + step < len ? off + step : len);
        st = http1_parser_execute(&p, in + off, end - off, &used);
        off += used;
        if (st == HTTP1_ERROR) {
            fail = p.fail;
            if (msg != NULL)
                snprintf(msg, cap, "%s", p.fail_msg);
            break;
        }
        if (st == HTTP1_PAUSED)
            http1_parser_resume(&p);
    }
    http1_parser_free(&p);
    return fail;
}

static enum http1_fail feed(const char *in, size_t step, struct run *r)
{
    return feed_limits(in, strlen(in), step, r, 8192, 100, NULL, 0);
}

/* Runs a transcript whole and byte by byte; both must give `want_up` and `want_body`. */
static void transcript(const char *in, const struct http1_request_opts *opts, const char *want_up,
                       const char *want_body, int want_requests)
{
    size_t steps[] = {0, 1, 7};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct run *r = calloc(1, sizeof(*r));
        assert_non_null(r);
        if (opts != NULL)
            r->opts = *opts;
        assert_int_equal(feed(in, steps[i], r), HTTP1_FAIL_NONE);
        r->up[r->up_len] = '\0';
        r->body[r->body_len] = '\0';
        assert_string_equal(r->up, want_up);
        assert_string_equal(r->body, want_body);
        assert_int_equal(r->completes, want_requests);
        free(r);
    }
}

/* ---- Rewriting transcripts ---------------------------------------------------------------- */

static void test_rewrite_removes_hop_by_hop_and_rewrites_host(void **state)
{
    (void)state;
    transcript("GET /v1/models?x=1 HTTP/1.1\r\n"
               "Host: localhost:8080\r\n"
               "Connection: keep-alive, X-Secret-Hop\r\n"
               "Keep-Alive: timeout=5\r\n"
               "Proxy-Connection: keep-alive\r\n"
               "TE: trailers\r\n"
               "Upgrade: websocket\r\n"
               "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
               "X-Secret-Hop: 1\r\n"
               "Accept: application/json\r\n"
               "X-Forwarded-For: 10.0.0.1\r\n"
               "X-Forwarded-Proto: http\r\n"
               "Forwarded: for=10.0.0.1\r\n"
               "User-Agent: test\r\n"
               "\r\n",
               NULL,
               "GET /v1/models?x=1 HTTP/1.1\r\n"
               "Host: enclave.example:8443\r\n"
               "Accept: application/json\r\n"
               "User-Agent: test\r\n"
               "\r\n",
               "", 1);
}

static void test_rewrite_keeps_forwarded_when_configured(void **state)
{
    struct http1_request_opts o = {.authority = "e:1", .keep_forwarded = true};
    (void)state;
    transcript("GET / HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 10.0.0.1\r\n"
               "Forwarded: for=10.0.0.1\r\n\r\n",
               &o,
               "GET / HTTP/1.1\r\nHost: e:1\r\nX-Forwarded-For: 10.0.0.1\r\nForwarded: "
               "for=10.0.0.1\r\n\r\n",
               "", 1);
}

static void test_rewrite_strips_our_token_only_when_asked(void **state)
{
    struct http1_request_opts strip = {.authority = "e", .strip_authorization = true};
    struct http1_request_opts keep = {.authority = "e"};
    (void)state;
    transcript(
        "GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret-token-0123\r\n\r\n",
        &strip, "GET / HTTP/1.1\r\nHost: e\r\n\r\n", "", 1);
    transcript("GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer sk-upstream\r\n\r\n",
               &keep, "GET / HTTP/1.1\r\nHost: e\r\nAuthorization: Bearer sk-upstream\r\n\r\n", "",
               1);
}

static void test_rewrite_content_length_body(void **state)
{
    struct http1_request_opts o = {.authority = "e"};
    (void)state;
    transcript("POST /whisper/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
               "Content-Length: 11\r\nExpect: 100-continue\r\n\r\nhello world",
               &o,
               "POST /whisper/predict HTTP/1.1\r\nHost: e\r\nContent-Type: text/plain\r\n"
               "Content-Length: 11\r\n\r\n",
               "hello world", 1);
}

static void test_rewrite_chunked_body_and_trailers(void **state)
{
    struct http1_request_opts o = {.authority = "e"};
    (void)state;
    /* Chunk extensions and trailers are parsed and dropped; the body is decoded. */
    transcript("POST /up HTTP/1.1\r\nHost: [::1]:8080\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
               &o, "POST /up HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n",
               "hello world", 1);
}

static void test_rewrite_keeps_other_expectations_and_values(void **state)
{
    struct http1_request_opts o = {.authority = "e"};
    (void)state;
    /* Trailing whitespace of a value is not part of it; inner whitespace is kept. */
    transcript(
        "GET / HTTP/1.1\r\nHost: localhost\r\nExpect: something-else\r\nX-A:  a  b  \r\n\r\n", &o,
        "GET / HTTP/1.1\r\nHost: e\r\nExpect: something-else\r\nX-A: a  b\r\n\r\n", "", 1);
}

static void test_pipelined_requests_in_order(void **state)
{
    struct http1_request_opts o = {.authority = "e"};
    (void)state;
    transcript("GET /a HTTP/1.1\r\nHost: localhost\r\n\r\n"
               "POST /b HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nxyz"
               "GET /c HTTP/1.1\r\nHost: localhost\r\n\r\n",
               &o,
               "GET /a HTTP/1.1\r\nHost: e\r\n\r\n"
               "POST /b HTTP/1.1\r\nHost: e\r\nContent-Length: 3\r\n\r\n"
               "GET /c HTTP/1.1\r\nHost: e\r\n\r\n",
               "xyz", 3);
}

/* The head storage leaves the parser between two messages (an idle keep-alive connection holds
 * none) and stays while a head or a body is being read; storage of the first sizes is handed
 * out for reuse, storage that grew is freed. */
static void test_release_hands_the_head_out_only_between_messages(void **state)
{
    struct http1_parser p, q;
    struct http1_storage st = {NULL, NULL};
    struct run r;
    size_t used = 0;
    const char req[] = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab";
    const char *next = "GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
    char big[3000];
    (void)state;
    memset(&r, 0, sizeof(r));
    r.opts.authority = "enclave.example:8443";
    http1_parser_init(&p, HTTP_REQUEST, 8192, 100, &cbs, &r);
    assert_false(http1_parser_release(&p, &st));                                 /* nothing yet */
    assert_int_equal(http1_parser_execute(&p, req, 10, &used), HTTP1_NEED_MORE); /* in the head */
    assert_false(http1_parser_release(&p, &st));
    assert_non_null(p.head.buf);
    assert_int_equal(http1_parser_execute(&p, req + 10, sizeof(req) - 1 - 10, &used),
                     HTTP1_NEED_MORE);
    assert_int_equal(r.heads, 1);
    assert_false(http1_parser_release(&p, &st)); /* in the body */
    assert_non_null(p.head.buf);
    assert_int_equal(http1_parser_execute(&p, "cd", 2, &used), HTTP1_PAUSED);
    http1_parser_resume(&p);
    assert_true(http1_parser_release(&p, &st)); /* between messages */
    assert_null(p.head.buf);
    assert_null(p.head.hdrs);
    assert_non_null(st.buf);
    assert_non_null(st.hdrs);
    /* Another parser takes it and parses its head into it, allocating nothing. */
    http1_parser_init(&q, HTTP_REQUEST, 8192, 100, &cbs, &r);
    http1_parser_adopt(&q, &st);
    assert_int_equal(http1_parser_execute(&q, next, strlen(next), &used), HTTP1_PAUSED);
    assert_ptr_equal(q.head.buf, st.buf);
    assert_int_equal(r.heads, 2);
    assert_int_equal(r.completes, 2);
    http1_parser_resume(&q);
    /* A head that made its storage grow: freed, not handed out. */
    memset(big, 0, sizeof(big));
    snprintf(big, sizeof(big), "GET /c HTTP/1.1\r\nHost: x\r\nX-Big: %02000d\r\n\r\n", 7);
    assert_int_equal(http1_parser_execute(&q, big, strlen(big), &used), HTTP1_PAUSED);
    http1_parser_resume(&q);
    st.buf = NULL;
    st.hdrs = NULL;
    assert_false(http1_parser_release(&q, &st));
    assert_null(q.head.buf);
    assert_null(st.buf);
    http1_parser_free(&p);
    http1_parser_free(&q);
}

static void test_leading_empty_line_is_ignored(void **state)
{
    struct http1_request_opts o = {.authority = "e"};
    (void)state;
    transcript("\r\nGET / HTTP/1.1\r\nHost: localhost\r\n\r\n", &o,
               "GET / HTTP/1.1\r\nHost: e\r\n\r\n", "", 1);
}

/* Names and values as llhttp delimits them: the name is what precedes the first ':', the value
 * has no leading or trailing spaces and tabs (inner ones stay), an empty value stays empty, a
 * ':' inside a value is part of it. Fed whole and in pieces of 1 and 7 bytes, so that every
 * boundary falls inside leading and trailing whitespace. */
static void test_names_and_values_as_llhttp_splits_them(void **state)
{
    struct http1_request_opts o = {.authority = "e"};
    (void)state;
    transcript("GET /a HTTP/1.1\r\nHost: x\r\nA:   lead\r\nB: trail \t \r\nC:\r\nD: \t \r\n"
               "E:\tin  side\tv\r\nF-G:x:y: z\r\nVery-Long-Header-Name-Of-Many-Words: "
               "a value long enough to be skipped a word at a time\r\n\r\n",
               &o,
               "GET /a HTTP/1.1\r\nHost: e\r\nA: lead\r\nB: trail\r\nC: \r\nD: \r\n"
               "E: in  side\tv\r\nF-G: x:y: z\r\nVery-Long-Header-Name-Of-Many-Words: "
               "a value long enough to be skipped a word at a time\r\n\r\n",
               "", 1);
    /* The same head twice in a row (pipelined): the second is collected afresh. */
    transcript(
        "GET /1 HTTP/1.1\r\nHost: x\r\nA:  1 \r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nB:2\r\n\r\n", &o,
        "GET /1 HTTP/1.1\r\nHost: e\r\nA: 1\r\n\r\nGET /2 HTTP/1.1\r\nHost: e\r\nB: 2\r\n\r\n", "",
        2);
}

/* ---- Refusals ----------------------------------------------------------------------------- */

static void expect_refusal(const char *in, enum http1_fail want, const char *msg_part)
{
    size_t steps[] = {0, 1, 5};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct run *r = calloc(1, sizeof(*r));
        char msg[160] = "";
        assert_non_null(r);
        assert_int_equal(feed_limits(in, strlen(in), steps[i], r, 8192, 100, msg, sizeof(msg)),
                         want);
        if (msg_part != NULL && strstr(msg, msg_part) == NULL)
            fail_msg("message '%s' lacks '%s' (step %zu)", msg, msg_part, steps[i]);
        assert_int_equal(r->completes, 0);
        free(r);
    }
}

static void test_refuses_smuggling_vectors(void **state)
{
    (void)state;
    expect_refusal(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\n",
        HTTP1_FAIL_BAD_MESSAGE, "Transfer-Encoding");
    expect_refusal(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
        "0\r\n\r\n",
        HTTP1_FAIL_BAD_MESSAGE, NULL);
    expect_refusal(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        HTTP1_FAIL_BAD_MESSAGE, "Content-Length");
    expect_refusal(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        HTTP1_FAIL_BAD_MESSAGE, "Content-Length");
    expect_refusal("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\nx",
                   HTTP1_FAIL_BAD_MESSAGE, NULL);
    expect_refusal("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                   HTTP1_FAIL_BAD_MESSAGE, NULL);
    expect_refusal("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                   HTTP1_FAIL_BAD_MESSAGE, NULL);
}

static void test_refuses_bad_chunks(void **state)
{
    (void)state;
    expect_refusal(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        HTTP1_FAIL_BAD_MESSAGE, "chunk size");
    expect_refusal("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "fffffffffffffffff\r\nx\r\n0\r\n\r\n",
                   HTTP1_FAIL_BAD_MESSAGE, NULL);
    expect_refusal(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
        HTTP1_FAIL_BAD_MESSAGE, NULL);
    /* Chunk data must be followed by CRLF (llhttp 8.1 without strict mode skips two bytes). */
    expect_refusal(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        HTTP1_FAIL_BAD_MESSAGE, "CRLF after chunk");
    expect_refusal(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\rX0\r\n\r\n",
        HTTP1_FAIL_BAD_MESSAGE, "CRLF after chunk");
}

/* Builds "POST ... chunked" + a chunk whose size line carries `ext_len` bytes of extension. */
static char *chunk_with_extension(size_t ext_len)
{
    static const char head[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;";
    static const char tail[] = "\r\nhello\r\n0\r\n\r\n";
    char *in = malloc(sizeof(head) + ext_len + sizeof(tail));
    assert_non_null(in);
    memcpy(in, head, sizeof(head) - 1);
    memset(in + sizeof(head) - 1, 'e', ext_len);
    memcpy(in + sizeof(head) - 1 + ext_len, tail, sizeof(tail));
    return in;
}

/* A chunk-size line is bounded: an endless extension is refused at HTTP1_CHUNK_EXT_MAX bytes,
 * not streamed until a timeout. */
static void test_chunk_extensions_are_bounded(void **state)
{
    char *in;
    struct run r;
    (void)state;
    in = chunk_with_extension(HTTP1_CHUNK_EXT_MAX);
    memset(&r, 0, sizeof(r));
    assert_int_equal(feed(in, 0, &r), HTTP1_FAIL_NONE);
    assert_int_equal(r.completes, 1);
    free(in);
    in = chunk_with_extension(HTTP1_CHUNK_EXT_MAX + 1);
    expect_refusal(in, HTTP1_FAIL_BAD_MESSAGE, "chunk extensions too long");
    free(in);
    /* The bound is per line: many chunks each with a long extension are fine. */
    memset(&r, 0, sizeof(r));
    {
        static const char head[] =
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        char *many = malloc(sizeof(head) + 3 * (HTTP1_CHUNK_EXT_MAX + 16) + 8);
        size_t n = sizeof(head) - 1;
        assert_non_null(many);
        memcpy(many, head, n);
        for (int i = 0; i < 3; i++) {
            memcpy(many + n, "1;", 2);
            n += 2;
            memset(many + n, 'e', HTTP1_CHUNK_EXT_MAX);
            n += HTTP1_CHUNK_EXT_MAX;
            memcpy(many + n, "\r\nx\r\n", 5);
            n += 5;
        }
        memcpy(many + n, "0\r\n\r\n", 6);
        assert_int_equal(feed_limits(many, n + 5, 0, &r, 8192, 100, NULL, 0), HTTP1_FAIL_NONE);
        assert_int_equal(r.completes, 1);
        assert_int_equal(r.body_len, 3);
        free(many);
    }
}

/* A chunked request whose trailer section is one field "X-T" with a value of `value_len`. */
static size_t with_trailer(char *in, size_t cap, size_t value_len)
{
    static const char head[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "5\r\nhello\r\n0\r\nX-T: ";
    size_t n = sizeof(head) - 1;
    assert_true(n + value_len + 5 <= cap);
    memcpy(in, head, n);
    memset(in + n, 'v', value_len);
    memcpy(in + n + value_len, "\r\n\r\n", 5);
    return n + value_len + 4;
}

/* Trailers are dropped but count against the head limits: name and value bytes against the
 * head's byte limit, fields against its field count. */
static void test_trailers_count_against_the_head_limits(void **state)
{
    char in[512];
    struct run r;
    size_t n;
    (void)state;
    /* "X-T" and 253 value bytes are 256: at a limit of 256 they pass, one more is refused. */
    n = with_trailer(in, sizeof(in), 253);
    memset(&r, 0, sizeof(r));
    assert_int_equal(feed_limits(in, n, 0, &r, 256, 100, NULL, 0), HTTP1_FAIL_NONE);
    assert_int_equal(r.completes, 1);
    n = with_trailer(in, sizeof(in), 254);
    for (size_t step = 0; step <= 1; step++) {
        char msg[160] = "";
        memset(&r, 0, sizeof(r));
        assert_int_equal(feed_limits(in, n, step, &r, 256, 100, msg, sizeof(msg)),
                         HTTP1_FAIL_BAD_MESSAGE);
        assert_non_null(strstr(msg, "trailer section is too large"));
        assert_int_equal(r.completes, 0);
    }
    /* Fields: two trailer fields pass max_headers = 2, three do not. */
    snprintf(in, sizeof(in),
             "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
             "0\r\nA: 1\r\nB: 2\r\n\r\n");
    memset(&r, 0, sizeof(r));
    assert_int_equal(feed_limits(in, strlen(in), 0, &r, 8192, 2, NULL, 0), HTTP1_FAIL_NONE);
    snprintf(in, sizeof(in),
             "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
             "0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
    memset(&r, 0, sizeof(r));
    assert_int_equal(feed_limits(in, strlen(in), 0, &r, 8192, 2, NULL, 0), HTTP1_FAIL_BAD_MESSAGE);
}

/* RFC 9112 3: exactly one SP between the parts of a request line. */
static void test_request_line_single_spaces(void **state)
{
    (void)state;
    expect_refusal("GET  /echo HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE,
                   "more than one space");
    expect_refusal("GET /echo  HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE,
                   "more than one space");
    transcript("GET /a HTTP/1.1\r\nHost: a\r\n\r\n", NULL,
               "GET /a HTTP/1.1\r\nHost: enclave.example:8443\r\n\r\n", "", 1);
}

/* Pauses at the head, as the client does before it obtains an upstream connection. */
static int pause_at_head(struct http1_parser *p)
{
    (void)p;
    return HTTP1_CB_PAUSE;
}

static const struct http1_callbacks head_pause_cbs = {pause_at_head, on_body, on_complete};

/* Parses `in` up to its first head; returns what is left after it in *rest. */
static void parse_to_head(struct http1_parser *p, struct run *r, const char *in, const char **rest)
{
    size_t used = 0;
    http1_parser_init(p, HTTP_REQUEST, 8192, 100, &head_pause_cbs, r);
    assert_int_equal(http1_parser_execute(p, in, strlen(in), &used), HTTP1_PAUSED);
    http1_parser_resume(p);
    *rest = in + used;
}

/* The look-ahead judges a body in hand without delivering it or changing the parser: the
 * real parse afterwards gives the same body, and the verdicts match the real parser's. */
static void test_check_ahead(void **state)
{
    static const char *const bad[] = {
        "zz\r\nhello\r\n0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        "5 \r\nhello\r\n0\r\n\r\n",
        "5\nhello\r\n0\r\n\r\n",
        "5\r\nhelloEXTRA\r\n0\r\n\r\n",
        "fffffffffffffffff\r\nx\r\n0\r\n\r\n",
        "5\r\nhello\r\n0\n\n",
    };
    static const char head[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    char in[256], why[160];
    struct http1_parser p;
    struct run r;
    const char *rest;
    size_t used;
    (void)state;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(in, sizeof(in), "%s%s", head, bad[i]);
        memset(&r, 0, sizeof(r));
        parse_to_head(&p, &r, in, &rest);
        why[0] = '\0';
        assert_int_equal(http1_parser_check_ahead(&p, rest, strlen(rest), why, sizeof(why)),
                         HTTP1_ERROR);
        assert_true(strstr(why, "malformed") != NULL);
        assert_int_equal(r.body_len, 0); /* nothing was delivered */
        /* The real parse of the same bytes refuses them too. */
        assert_int_equal(http1_parser_execute(&p, rest, strlen(rest), &used), HTTP1_ERROR);
        http1_parser_free(&p);
    }

    /* A whole valid body, then a pipelined request: PAUSED at the body's end; the real parse
     * then delivers the body as if no look-ahead had happened. */
    snprintf(in, sizeof(in),
             "%s5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\n", head);
    memset(&r, 0, sizeof(r));
    parse_to_head(&p, &r, in, &rest);
    assert_int_equal(http1_parser_check_ahead(&p, rest, strlen(rest), why, sizeof(why)),
                     HTTP1_PAUSED);
    assert_int_equal(r.body_len, 0);
    assert_int_equal(r.completes, 0);
    assert_int_equal(http1_parser_execute(&p, rest, strlen(rest), &used), HTTP1_PAUSED);
    assert_int_equal(r.completes, 1);
    assert_int_equal(r.body_len, 11);
    assert_memory_equal(r.body, "hello world", 11);
    http1_parser_free(&p);

    /* Valid so far, more to come: NEED_MORE, and the real parse goes on from the same place. */
    snprintf(in, sizeof(in), "%s5\r\nhel", head);
    memset(&r, 0, sizeof(r));
    parse_to_head(&p, &r, in, &rest);
    assert_int_equal(http1_parser_check_ahead(&p, rest, strlen(rest), why, sizeof(why)),
                     HTTP1_NEED_MORE);
    assert_int_equal(http1_parser_execute(&p, rest, strlen(rest), &used), HTTP1_NEED_MORE);
    assert_int_equal(http1_parser_execute(&p, "lo\r\n0\r\n\r\n", 10, &used), HTTP1_PAUSED);
    assert_int_equal(r.body_len, 5);
    http1_parser_free(&p);
}

static void test_refuses_bad_lines_and_names(void **state)
{
    (void)state;
    expect_refusal("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE,
                   "obs-fold");
    expect_refusal("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE,
                   "obs-fold");
    expect_refusal("GET / HTTP/1.1\nHost: a\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE, "bare LF");
    expect_refusal("GET / HTTP/1.1\r\nHost: a\n\r\n", HTTP1_FAIL_BAD_MESSAGE, "bare LF");
    expect_refusal("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE, "bare CR");
    expect_refusal("GET / HTTP/1.1\r\nHo\x01st: a\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE, NULL);
    expect_refusal("GET / HTTP/1.1\r\nHost : a\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE, "whitespace");
    expect_refusal("GET / HTTP/1.1\r\n: a\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE, "empty header");
    expect_refusal("GET / HTTP/1.1\r\nHost: a\r\nNo-Colon\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE, NULL);
    expect_refusal("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE, NULL);
    expect_refusal("GET / HTTP/1.1\r\nX: a\x01"
                   "b\r\n\r\n",
                   HTTP1_FAIL_BAD_MESSAGE, NULL);
    expect_refusal("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE, NULL);
    expect_refusal("GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE, NULL);
    expect_refusal("get / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE, NULL);
    /* Each special byte inside a run of plain ones, in each part of a line. (Fed byte by byte, a
     * CR in a name or request line is refused by llhttp before the next byte shows it bare.) */
    expect_refusal("GET / HTTP/1.1\r\nHo\rst: a\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE, NULL);
    expect_refusal("GET / HTTP/1.1\r\nHo\nst: a\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE, "bare LF");
    expect_refusal("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE, "whitespace");
    expect_refusal("GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE, NULL);
    expect_refusal("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_FAIL_BAD_MESSAGE, NULL);
    expect_refusal("GET / HTTP/1.1\r\nHost: a\r\nX: long value\rwith a CR\r\n\r\n",
                   HTTP1_FAIL_BAD_MESSAGE, "bare CR");
    expect_refusal("GET / HTTP/1.1\r\nHost: a\r\nX: long value\nwith a LF\r\n\r\n",
                   HTTP1_FAIL_BAD_MESSAGE, "bare LF");
}

static void test_refuses_nul_in_name(void **state)
{
    static const char in[] = "GET / HTTP/1.1\r\nHo\0st: a\r\n\r\n";
    struct run *r = calloc(1, sizeof(*r));
    (void)state;
    assert_non_null(r);
    assert_int_equal(feed_limits(in, sizeof(in) - 1, 0, r, 8192, 100, NULL, 0),
                     HTTP1_FAIL_BAD_MESSAGE);
    free(r);
}

/* The scanner skips plain bytes eight at a time: a special byte must stop it at any offset in
 * a long name or value (every control byte, DEL), names of every length must still end at their
 * colon, and bytes of 0x80 and above (obs-text) in a value pass at any offset, unchanged. */
/* Feeds `before` + 40 `plain` bytes with `special` at `pos` + `after`: refused. */
static void expect_refused_at(const char *before, char plain, size_t pos, char special,
                              const char *after)
{
    char in[160];
    size_t nb = strlen(before), na = strlen(after);
    struct run *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    assert_true(nb + 40 + na <= sizeof(in));
    memcpy(in, before, nb); /* built by hand: the special byte may be a NUL */
    memset(in + nb, plain, 40);
    in[nb + pos] = special;
    memcpy(in + nb + 40, after, na);
    assert_int_equal(feed_limits(in, nb + 40 + na, 0, r, 8192, 100, NULL, 0),
                     HTTP1_FAIL_BAD_MESSAGE);
    free(r);
}

static void test_special_byte_at_every_offset(void **state)
{
    static const char in_value[] = {'\r', '\n', '\0', '\x01', '\x1f', '\x7f'},
                      in_name[] = {' ', '\t', '\n', '\0', '\x01', '\x7f'};
    char in[160];
    (void)state;
    for (size_t pos = 0; pos < 40; pos++) {
        for (size_t k = 0; k < sizeof(in_value); k++)
            expect_refused_at("GET / HTTP/1.1\r\nHost: a\r\nX: ", 'v', pos, in_value[k],
                              "\r\n\r\n");
        for (size_t k = 0; k < sizeof(in_name); k++)
            expect_refused_at("GET / HTTP/1.1\r\nHost: a\r\n", 'n', pos, in_name[k], ": v\r\n\r\n");
    }
    for (size_t len = 1; len <= 40; len++) {
        char name[41], want[200];
        memset(name, 'n', len);
        name[len] = '\0';
        snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\n%s:%s\r\n\r\n", name, name);
        snprintf(want, sizeof(want),
                 "GET / HTTP/1.1\r\nHost: enclave.example:8443\r\n%s: %s\r\n\r\n", name, name);
        transcript(in, NULL, want, "", 1);
    }
    for (size_t pos = 0; pos < 24; pos++) {
        char value[25], want[200];
        memset(value, 'v', 24);
        value[24] = '\0';
        value[pos] = (char)0x80;
        value[23 - pos / 2] = (char)0xff;
        snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\nX: %s\r\n\r\n", value);
        snprintf(want, sizeof(want),
                 "GET / HTTP/1.1\r\nHost: enclave.example:8443\r\nX: %s\r\n\r\n", value);
        transcript(in, NULL, want, "", 1);
    }
}

/* The size limit counts every head byte, however the input is cut: a head of exactly the limit
 * passes, one byte less refuses it. */
static void test_head_limit_is_exact(void **state)
{
    static const char in[] = "GET /path HTTP/1.1\r\nHost: a\r\nX-Value: 0123456789abcdef\r\n\r\n";
    size_t n = sizeof(in) - 1, steps[] = {0, 1, 7};
    (void)state;
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct run *r = calloc(1, sizeof(*r));
        assert_non_null(r);
        assert_int_equal(feed_limits(in, n, steps[i], r, n, 100, NULL, 0), HTTP1_FAIL_NONE);
        assert_int_equal(r->completes, 1);
        memset(r, 0, sizeof(*r));
        assert_int_equal(feed_limits(in, n, steps[i], r, n - 1, 100, NULL, 0),
                         HTTP1_FAIL_TOO_LARGE);
        free(r);
    }
}

static void test_head_limits(void **state)
{
    char big[4096];
    struct run *r = calloc(1, sizeof(*r));
    int n;
    (void)state;
    assert_non_null(r);
    n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: a\r\nX: %0*d\r\n\r\n", 2000, 0);
    /* Bytes: a 1024-byte limit refuses, a 4096-byte one accepts. */
    assert_int_equal(feed_limits(big, (size_t)n, 0, r, 1024, 100, NULL, 0), HTTP1_FAIL_TOO_LARGE);
    memset(r, 0, sizeof(*r));
    assert_int_equal(feed_limits(big, (size_t)n, 0, r, 4096, 100, NULL, 0), HTTP1_FAIL_NONE);
    /* Count: three headers against a limit of two. */
    memset(r, 0, sizeof(*r));
    n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n");
    assert_int_equal(feed_limits(big, (size_t)n, 1, r, 4096, 2, NULL, 0), HTTP1_FAIL_TOO_LARGE);
    memset(r, 0, sizeof(*r));
    assert_int_equal(feed_limits(big, (size_t)n, 1, r, 4096, 3, NULL, 0), HTTP1_FAIL_NONE);
    free(r);
}

/* ---- Host, token, chunk header ------------------------------------------------------------ */

static void test_host_allow_list(void **state)
{
    const char *const list[] = {"localhost", "127.0.0.1", "[::1]", "api.internal:9000"};
    size_t n = sizeof(list) / sizeof(list[0]);
    struct {
        const char *host;
        bool ok;
    } cases[] = {
        {"localhost", true},
        {"LOCALHOST:8080", true},
        {"127.0.0.1:1", true},
        {"127.0.0.1:65535", true},
        {"[::1]", true},
        {"[::1]:8080", true},
        {"api.internal:9000", true},
        {"api.internal", false},
        {"api.internal:9001", false},
        {"localhost:0", false},
        {"localhost:65536", false},
        {"localhost:", false},
        {"localhost:80x", false},
        {"evil.example", false},
        {"localhost.evil.example", false},
        {"::1", false},
        {"[::1", false},
        {"[::1]x", false},
        {"", false},
        {"127.0.0.1.nip.io", false},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool got = http1_host_allowed(cases[i].host, strlen(cases[i].host), list, n);
        if (got != cases[i].ok)
            fail_msg("host '%s': got %d", cases[i].host, got);
    }
}

static void test_bearer_token(void **state)
{
    const char *tok = "0123456789abcdef-token";
    struct {
        const char *value;
        bool ok;
    } cases[] = {
        {"Bearer 0123456789abcdef-token", true},
        {"bearer 0123456789abcdef-token", true},
        {"Bearer   0123456789abcdef-token", true},
        {"Bearer 0123456789abcdef-toke", false},
        {"Bearer 0123456789abcdef-tokenX", false},
        {"Basic 0123456789abcdef-token", false},
        {"Bearer0123456789abcdef-token", false},
        {"Bearer ", false},
        {"", false},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool got = http1_bearer_matches(cases[i].value, strlen(cases[i].value), tok);
        if (got != cases[i].ok)
            fail_msg("value '%s': got %d", cases[i].value, got);
    }
    assert_false(http1_bearer_matches("Bearer x", 8, ""));
}

static void test_chunk_header(void **state)
{
    char out[HTTP1_CHUNK_HEADER_MAX];
    (void)state;
    assert_int_equal(http1_chunk_header(0x1a2b, out), 6);
    assert_string_equal(out, "1a2b\r\n");
    assert_int_equal(http1_chunk_header(UINT64_MAX, out), 18);
    assert_string_equal(out, "ffffffffffffffff\r\n");
}

/* ---- Responses ---------------------------------------------------------------------------- */

struct resp_run {
    char out[OUT_MAX];
    int n;
    struct http1_response_opts opts;
    char body[OUT_MAX];
    size_t body_len;
    bool done;
};

static int resp_head(struct http1_parser *p)
{
    struct resp_run *r = p->data;
    r->n = http1_build_response(p, &r->opts, r->out, sizeof(r->out));
    return HTTP1_CB_OK;
}

static int resp_body(struct http1_parser *p, const char *at, size_t len)
{
    struct resp_run *r = p->data;
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    return HTTP1_CB_OK;
}

static int resp_complete(struct http1_parser *p)
{
    struct resp_run *r = p->data;
    r->done = true;
    return HTTP1_CB_PAUSE;
}

static const struct http1_callbacks resp_cbs = {resp_head, resp_body, resp_complete};

static void test_response_rewrite(void **state)
{
    static const char in[] = "HTTP/1.1 200 OK\r\n"
                             "Content-Type: text/event-stream\r\n"
                             "Transfer-Encoding: chunked\r\n"
                             "Connection: keep-alive, X-Hop\r\n"
                             "X-Hop: 1\r\n"
                             "Keep-Alive: timeout=5\r\n"
                             "X-Attestation: pin=sha256:spoofed-by-the-upstream\r\n"
                             "Cache-Control: no-cache\r\n"
                             "x_attestation: spoofed-too\r\n\r\n"
                             "9\r\ndata: a\n\n\r\n0\r\n\r\n";
    struct resp_run *r = calloc(1, sizeof(*r));
    struct http1_parser p;
    size_t used = 0;
    (void)state;
    assert_non_null(r);
    r->opts.framing = HTTP1_FRAMING_CHUNKED;
    r->opts.close = true;
    r->opts.extra_headers = "X-Attestation: pin=sha256:00\r\n";
    http1_parser_init(&p, HTTP_RESPONSE, 4096, 50, &resp_cbs, r);
    assert_int_equal(http1_parser_execute(&p, in, sizeof(in) - 1, &used), HTTP1_PAUSED);
    assert_true(r->done);
    assert_true(r->n > 0);
    r->out[r->n] = '\0';
    assert_string_equal(r->out, "HTTP/1.1 200 OK\r\n"
                                "Content-Type: text/event-stream\r\n"
                                "Cache-Control: no-cache\r\n"
                                "Transfer-Encoding: chunked\r\n"
                                "X-Attestation: pin=sha256:00\r\n"
                                "Connection: close\r\n\r\n");
    assert_int_equal(r->body_len, 9);
    assert_memory_equal(r->body, "data: a\n\n", 9);
    http1_parser_free(&p);
    free(r);
}

static void test_response_eof_delimited(void **state)
{
    static const char in[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it";
    struct resp_run *r = calloc(1, sizeof(*r));
    struct http1_parser p;
    size_t used = 0;
    (void)state;
    assert_non_null(r);
    r->opts.framing = HTTP1_FRAMING_CHUNKED;
    http1_parser_init(&p, HTTP_RESPONSE, 4096, 50, &resp_cbs, r);
    assert_int_equal(http1_parser_execute(&p, in, sizeof(in) - 1, &used), HTTP1_NEED_MORE);
    assert_false(r->done);
    assert_int_equal(http1_parser_finish(&p), HTTP1_PAUSED);
    assert_true(r->done);
    assert_int_equal(r->body_len, 9);
    http1_parser_free(&p);
    free(r);
}

/* The reason phrase and the header strings are NUL-terminated where they lie in the raw head
 * storage: whole, and fed a byte at a time and 7 at a time (so that spans cross the pieces); an
 * empty or absent reason phrase is the empty string, not the bytes of the status line. */
struct reason_run {
    char reason[64], last_value[64];
    unsigned status;
    size_t n;
};

static int reason_head(struct http1_parser *p)
{
    struct reason_run *r = p->data;
    const struct http1_head *h = &p->head;
    snprintf(r->reason, sizeof(r->reason), "%s", http1_head_str(h, h->target_off));
    assert_int_equal(strlen(http1_head_str(h, h->target_off)), h->target_len);
    r->status = (unsigned)p->ll.status_code;
    r->n = h->n;
    if (h->n > 0) {
        const struct http1_header *hd = &h->hdrs[h->n - 1];
        assert_int_equal(strlen(http1_head_str(h, hd->name_off)), hd->name_len);
        assert_int_equal(strlen(http1_head_str(h, hd->value_off)), hd->value_len);
        snprintf(r->last_value, sizeof(r->last_value), "%s", http1_head_str(h, hd->value_off));
    }
    return HTTP1_CB_SKIP_BODY;
}

static int reason_complete(struct http1_parser *p)
{
    (void)p;
    return HTTP1_CB_PAUSE;
}

static const struct http1_callbacks reason_cbs = {reason_head, NULL, reason_complete};

static void expect_reason(const char *in, const char *reason, size_t n, const char *last_value)
{
    size_t steps[] = {0, 1, 7};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct reason_run r = {0};
        struct http1_parser p;
        size_t len = strlen(in), off = 0;
        enum http1_status st = HTTP1_NEED_MORE;
        http1_parser_init(&p, HTTP_RESPONSE, 4096, 50, &reason_cbs, &r);
        while (off < len && st == HTTP1_NEED_MORE) {
            size_t piece = steps[i] == 0 || len - off < steps[i] ? len - off : steps[i], used = 0;
            st = http1_parser_execute(&p, in + off, piece, &used);
            off += used;
        }
        assert_int_equal(st, HTTP1_PAUSED);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.reason, reason);
        assert_int_equal(r.n, n);
        if (last_value != NULL)
            assert_string_equal(r.last_value, last_value);
        http1_parser_free(&p);
    }
}

static void test_response_reason_phrase_in_place(void **state)
{
    (void)state;
    expect_reason("HTTP/1.1 200 Very Fine Indeed\r\nA: 1\r\nB:  two words \r\n\r\n",
                  "Very Fine Indeed", 2, "two words");
    expect_reason("HTTP/1.1 200 \r\nX: y\r\n\r\n", "", 1, "y");
    expect_reason("HTTP/1.1 200 OK\r\n\r\n", "OK", 0, NULL);
    expect_reason("HTTP/1.1 200 \r\n\r\n", "", 0, NULL);
}

/* Every name the proxy acts on is recognised, in any case, by the length-indexed table, and the
 * names of the same lengths that it does not act on are left alone. */
struct seen {
    size_t n;
    uint8_t field[40], flags[40];
};

static int record_head(struct http1_parser *p)
{
    struct seen *s = p->data;
    s->n = p->head.n;
    for (size_t i = 0; i < p->head.n && i < 40; i++) {
        s->field[i] = p->head.hdrs[i].field;
        s->flags[i] = p->head.hdrs[i].flags;
    }
    return HTTP1_CB_OK;
}

struct name_case {
    const char *name;
    uint8_t field, flags;
};

/* Parses a request with a header of each name in `cases`, all with `value`, and checks what each
 * was recognised as. */
static void check_names(const struct name_case *cases, size_t n, const char *value)
{
    static const struct http1_callbacks record = {record_head, NULL, NULL};
    char in[2048];
    size_t len = (size_t)snprintf(in, sizeof(in), "POST / HTTP/1.1\r\n");
    struct http1_parser p;
    struct seen seen = {0};
    size_t used;
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(in + len, sizeof(in) - len, "%s: %s\r\n", cases[i].name, value);
    len += (size_t)snprintf(in + len, sizeof(in) - len, "\r\n");
    http1_parser_init(&p, HTTP_REQUEST, 8192, 100, &record, &seen);
    assert_int_not_equal(http1_parser_execute(&p, in, len, &used), HTTP1_ERROR);
    assert_int_equal(seen.n, n);
    for (size_t i = 0; i < n; i++) {
        if (seen.field[i] != cases[i].field || seen.flags[i] != cases[i].flags)
            fail_msg("%s: field %u flags %u, want %u %u", cases[i].name, seen.field[i],
                     seen.flags[i], cases[i].field, cases[i].flags);
    }
    http1_parser_free(&p);
}

static void test_known_names_are_indexed_by_length(void **state)
{
    static const struct name_case cases[] = {
        {"TE", HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
        {"HOST", HTTP1_FIELD_HOST, 0},
        {"Expect", HTTP1_FIELD_EXPECT, 0},
        {"trailer", HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
        {"Upgrade", HTTP1_FIELD_UPGRADE, HTTP1_HDR_HOP},
        {"Forwarded", HTTP1_FIELD_OTHER, HTTP1_HDR_FORWARDED},
        {"connection", HTTP1_FIELD_CONNECTION, HTTP1_HDR_HOP},
        {"Keep-Alive", HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
        {"Authorization", HTTP1_FIELD_AUTHORIZATION, 0},
        {"X-Attestation", HTTP1_FIELD_OTHER, HTTP1_HDR_OURS},
        {"x_attestation", HTTP1_FIELD_OTHER, HTTP1_HDR_OURS},
        {"X-Attestatiom", HTTP1_FIELD_OTHER, 0},
        {"Proxy-Connection", HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
        {"Transfer-Encoding", HTTP1_FIELD_TRANSFER_ENCODING, HTTP1_HDR_HOP},
        {"Proxy-Authorization", HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
        /* '_' for '-' (CGI-style gateways read them alike): removed like the name, but it is
         * not the field */
        {"Transfer_Encoding", HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
        {"Content_Length", HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
        {"Proxy_Authorization", HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
        {"keep_alive", HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
        {"PROXY-CONNECTION", HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
        {"X-Forwarded-For", HTTP1_FIELD_OTHER, HTTP1_HDR_FORWARDED},
        {"x_forwarded_proto", HTTP1_FIELD_OTHER, HTTP1_HDR_FORWARDED},
        /* the same lengths and first letters, not known */
        {"Tk", HTTP1_FIELD_OTHER, 0},
        {"Date", HTTP1_FIELD_OTHER, 0},
        {"hosts", HTTP1_FIELD_OTHER, 0},
        {"Accept", HTTP1_FIELD_OTHER, 0},
        {"Expecx", HTTP1_FIELD_OTHER, 0},
        {"Referer", HTTP1_FIELD_OTHER, 0},
        {"Forwardee", HTTP1_FIELD_OTHER, 0},
        {"User-Agent", HTTP1_FIELD_OTHER, 0},
        {"keep-alivE2", HTTP1_FIELD_OTHER, 0},
        {"keep_alive_", HTTP1_FIELD_OTHER, 0},
        {"tee", HTTP1_FIELD_OTHER, 0},
        {"Accept-Ranges", HTTP1_FIELD_OTHER, 0},
        {"X-Forwarded", HTTP1_FIELD_OTHER, 0},
        {"Content-Type", HTTP1_FIELD_OTHER, 0},
        {"Content-Lengtx", HTTP1_FIELD_OTHER, 0},
        {"Proxy-Authorisation", HTTP1_FIELD_OTHER, 0},
        {"Transfer-Encodings", HTTP1_FIELD_OTHER, 0},
        {"A-name-longer-than-any-known-one", HTTP1_FIELD_OTHER, 0},
    };
    /* Content-Length beside Transfer-Encoding is refused, so it is checked on its own */
    static const struct name_case length[] = {{"Content-length", HTTP1_FIELD_OTHER, HTTP1_HDR_HOP}};
    (void)state;
    check_names(cases, sizeof(cases) / sizeof(cases[0]), "chunked");
    check_names(length, 1, "0");
}

static void test_rewrite_removes_underscore_spellings(void **state)
{
    (void)state;
    transcript("GET / HTTP/1.1\r\nHost: localhost\r\nX_Forwarded_For: 10.0.0.1\r\n"
               "x-forwarded_host: evil\r\nProxy_Authorization: Basic Zm9v\r\nX_Other: kept\r\n\r\n",
               NULL, "GET / HTTP/1.1\r\nHost: enclave.example:8443\r\nX_Other: kept\r\n\r\n", "",
               1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rewrite_removes_hop_by_hop_and_rewrites_host),
        cmocka_unit_test(test_rewrite_keeps_forwarded_when_configured),
        cmocka_unit_test(test_rewrite_strips_our_token_only_when_asked),
        cmocka_unit_test(test_rewrite_content_length_body),
        cmocka_unit_test(test_rewrite_chunked_body_and_trailers),
        cmocka_unit_test(test_rewrite_keeps_other_expectations_and_values),
        cmocka_unit_test(test_pipelined_requests_in_order),
        cmocka_unit_test(test_release_hands_the_head_out_only_between_messages),
        cmocka_unit_test(test_leading_empty_line_is_ignored),
        cmocka_unit_test(test_refuses_smuggling_vectors),
        cmocka_unit_test(test_refuses_bad_chunks),
        cmocka_unit_test(test_chunk_extensions_are_bounded),
        cmocka_unit_test(test_trailers_count_against_the_head_limits),
        cmocka_unit_test(test_request_line_single_spaces),
        cmocka_unit_test(test_check_ahead),
        cmocka_unit_test(test_names_and_values_as_llhttp_splits_them),
        cmocka_unit_test(test_refuses_bad_lines_and_names),
        cmocka_unit_test(test_refuses_nul_in_name),
        cmocka_unit_test(test_head_limits),
        cmocka_unit_test(test_head_limit_is_exact),
        cmocka_unit_test(test_special_byte_at_every_offset),
        cmocka_unit_test(test_host_allow_list),
        cmocka_unit_test(test_bearer_token),
        cmocka_unit_test(test_chunk_header),
        cmocka_unit_test(test_response_rewrite),
        cmocka_unit_test(test_response_eof_delimited),
        cmocka_unit_test(test_response_reason_phrase_in_place),
        cmocka_unit_test(test_known_names_are_indexed_by_length),
        cmocka_unit_test(test_rewrite_removes_underscore_spellings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
