/*
 * proxy/websocket.c: the handshake checks (request and the enclave's 101 with its
 * Sec-WebSocket-Accept), the Origin rule, the close frame the daemon writes, and the frame
 * boundary scanner that decides whether such a frame may be written now.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/http1.h"
#include "proxy/websocket.h"

/* RFC 6455 1.3's example. */
#define RFC_KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static int keep_head(struct http1_parser *p)
{
    (void)p;
    return HTTP1_CB_PAUSE;
}

static const struct http1_callbacks head_only = {keep_head, NULL, NULL};

/* Parses `text` (a request or a response head) into `p`. */
static void parse(struct http1_parser *p, llhttp_type_t type, const char *text)
{
    size_t used = 0;
    assert_int_equal(http1_parser_init(p, type, 16384, 100, &head_only, NULL), 0);
    assert_int_equal(http1_parser_execute(p, text, strlen(text), &used), HTTP1_PAUSED);
}

static enum ws_request_verdict check_request(const char *text, char key[WS_KEY_LEN + 1])
{
    struct http1_parser p;
    char why[160];
    enum ws_request_verdict v;
    parse(&p, HTTP_REQUEST, text);
    v = ws_check_request(&p.head, p.ll.method == HTTP_GET, p.ll.http_minor, key, why, sizeof(why));
    http1_parser_free(&p);
    return v;
}

#define HANDSHAKE(method, extra)                                                                   \
    method " /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"     \
           "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 13\r\n" extra "\r\n"

static void test_accept_of_the_rfc_example(void **state)
{
    char out[WS_ACCEPT_LEN + 1];
    (void)state;
    assert_int_equal(ws_accept_for_key(RFC_KEY, strlen(RFC_KEY), out), 0);
    assert_string_equal(out, RFC_ACCEPT);
    /* Another key, another answer: the digest is over the key itself. */
    assert_int_equal(ws_accept_for_key("AQIDBAUGBwgJCgsMDQ4PEA==", 24, out), 0);
    assert_string_not_equal(out, RFC_ACCEPT);
}

static void test_valid_handshake(void **state)
{
    char key[WS_KEY_LEN + 1];
    (void)state;
    assert_int_equal(check_request(HANDSHAKE("GET", ""), key), WS_REQUEST_OK);
    assert_string_equal(key, RFC_KEY);
    /* Tokens in lists, any case. */
    assert_int_equal(check_request("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\n"
                                   "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " RFC_KEY
                                   "\r\nSec-WebSocket-Version: 13\r\n\r\n",
                                   key),
                     WS_REQUEST_OK);
}

static void test_other_upgrades_are_not_websocket(void **state)
{
    char key[WS_KEY_LEN + 1];
    (void)state;
    assert_int_equal(check_request("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n"
                                   "Connection: Upgrade, HTTP2-Settings\r\n\r\n",
                                   key),
                     WS_REQUEST_NOT_WS);
    assert_int_equal(check_request("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocketx\r\n"
                                   "Connection: Upgrade\r\n\r\n",
                                   key),
                     WS_REQUEST_NOT_WS);
}

static void test_bad_handshakes(void **state)
{
    char key[WS_KEY_LEN + 1];
    (void)state;
    assert_int_equal(check_request(HANDSHAKE("POST", "Content-Length: 0\r\n"), key),
                     WS_REQUEST_BAD);
    /* No Connection: Upgrade. */
    assert_int_equal(check_request("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                                   "Sec-WebSocket-Key: " RFC_KEY
                                   "\r\nSec-WebSocket-Version: 13\r\n\r\n",
                                   key),
                     WS_REQUEST_BAD);
    /* Version 8. */
    assert_int_equal(check_request("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                                   "Connection: Upgrade\r\nSec-WebSocket-Key: " RFC_KEY
                                   "\r\nSec-WebSocket-Version: 8\r\n\r\n",
                                   key),
                     WS_REQUEST_BAD);
    /* A key of 15 bytes, of 17, with stray bits, two keys. */
    assert_int_equal(check_request("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                                   "Connection: Upgrade\r\nSec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4P"
                                   "\r\nSec-WebSocket-Version: 13\r\n\r\n",
                                   key),
                     WS_REQUEST_BAD);
    assert_int_equal(check_request("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                                   "Connection: Upgrade\r\nSec-WebSocket-Key: "
                                   "AQIDBAUGBwgJCgsMDQ4PEBE=\r\nSec-WebSocket-Version: 13\r\n\r\n",
                                   key),
                     WS_REQUEST_BAD);
    assert_int_equal(check_request("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                                   "Connection: Upgrade\r\nSec-WebSocket-Key: "
                                   "AQIDBAUGBwgJCgsMDQ4PEB==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                                   key),
                     WS_REQUEST_BAD);
    assert_int_equal(check_request(HANDSHAKE("GET", "Sec-WebSocket-Key: " RFC_KEY "\r\n"), key),
                     WS_REQUEST_BAD);
    /* HTTP/1.0. */
    assert_int_equal(check_request("GET / HTTP/1.0\r\nHost: a\r\nUpgrade: websocket\r\n"
                                   "Connection: Upgrade\r\nSec-WebSocket-Key: " RFC_KEY
                                   "\r\nSec-WebSocket-Version: 13\r\n\r\n",
                                   key),
                     WS_REQUEST_BAD);
}

static bool check_101(const char *accept_line, const char *key)
{
    char text[512], why[160];
    struct http1_parser p;
    bool ok;
    snprintf(text, sizeof(text),
             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "%s\r\n",
             accept_line);
    parse(&p, HTTP_RESPONSE, text);
    ok = ws_check_response(&p.head, key, why, sizeof(why));
    http1_parser_free(&p);
    return ok;
}

static void test_the_101_must_answer_the_key(void **state)
{
    (void)state;
    assert_true(check_101("Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n", RFC_KEY));
    /* The accept of another key, a changed character, none, two. */
    assert_false(check_101("Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n", "AQIDBAUGBwgJCgsMDQ4PEA=="));
    assert_false(check_101("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOp=\r\n", RFC_KEY));
    assert_false(check_101("", RFC_KEY));
    assert_false(check_101("Sec-WebSocket-Accept: " RFC_ACCEPT
                           "\r\nSec-WebSocket-Accept: " RFC_ACCEPT "\r\n",
                           RFC_KEY));
}

static bool origin_ok(const char *origin_line, const char *const *allowed, size_t n)
{
    char text[512];
    struct http1_parser p;
    bool ok;
    snprintf(text, sizeof(text), "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n%s\r\n", origin_line);
    parse(&p, HTTP_REQUEST, text);
    ok = ws_origin_allowed(&p.head, allowed, n);
    http1_parser_free(&p);
    return ok;
}

static void test_origin_rule(void **state)
{
    const char *const list[] = {"https://app.example.com", "http://localhost:3000"};
    (void)state;
    /* No browser, no Origin: allowed. */
    assert_true(origin_ok("", NULL, 0));
    /* Without a list: only the page this listener served. */
    assert_true(origin_ok("Origin: http://127.0.0.1:8080\r\n", NULL, 0));
    assert_true(origin_ok("Origin: HTTP://127.0.0.1:8080\r\n", NULL, 0));
    assert_false(origin_ok("Origin: http://127.0.0.1:8081\r\n", NULL, 0));
    assert_false(origin_ok("Origin: https://evil.example\r\n", NULL, 0));
    assert_false(origin_ok("Origin: null\r\n", NULL, 0));
    /* With a list: exactly its entries. */
    assert_true(origin_ok("Origin: https://app.example.com\r\n", list, 2));
    assert_true(origin_ok("Origin: http://LOCALHOST:3000\r\n", list, 2));
    assert_false(origin_ok("Origin: https://app.example.com.evil\r\n", list, 2));
    assert_false(origin_ok("Origin: http://127.0.0.1:8080\r\n", list, 2));
    assert_false(origin_ok("Origin: https://app.example.com\r\nOrigin: https://app.example.com\r\n",
                           list, 2));
}

static void test_close_frame(void **state)
{
    uint8_t f[WS_CLOSE_FRAME_MAX];
    char long_reason[300];
    size_t n;
    (void)state;

    n = ws_close_frame(WS_CLOSE_POLICY, "policy_changed", f);
    assert_int_equal(n, 4 + 14);
    assert_int_equal(f[0], 0x88);
    assert_int_equal(f[1], 16); /* unmasked, payload 2 + 14 */
    assert_int_equal(f[2], 1008 >> 8);
    assert_int_equal(f[3], 1008 & 0xff);
    assert_memory_equal(f + 4, "policy_changed", 14);

    memset(long_reason, 'a', sizeof(long_reason) - 1);
    long_reason[sizeof(long_reason) - 1] = '\0';
    long_reason[5] = (char)0xc3; /* not ASCII: replaced, so the payload stays UTF-8 */
    n = ws_close_frame(WS_CLOSE_INTERNAL_ERROR, long_reason, f);
    assert_int_equal(n, 4 + WS_CLOSE_REASON_MAX);
    assert_int_equal(f[1], 125); /* a control frame's largest payload */
    assert_int_equal(f[4 + 5], '?');

    n = ws_close_frame(WS_CLOSE_GOING_AWAY, NULL, f);
    assert_int_equal(n, 4);
    assert_int_equal(f[1], 2);
}

static void test_scanner_follows_frames(void **state)
{
    struct ws_scan s;
    uint8_t small[] = {0x81, 0x03, 'a', 'b', 'c'};
    uint8_t mid[4 + 300];
    uint8_t big[10] = {0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}; /* 65536 bytes of payload */
    uint8_t empty_ping[] = {0x89, 0x00};
    uint8_t masked[] = {0x81, 0x82, 1, 2, 3, 4, 'x', 'y'};
    static uint8_t payload[65536];
    (void)state;

    memset(&s, 0, sizeof(s));
    assert_true(ws_scan_at_boundary(&s));
    ws_scan_feed(&s, small, 2);
    assert_false(ws_scan_at_boundary(&s));
    ws_scan_feed(&s, small + 2, 3);
    assert_true(ws_scan_at_boundary(&s));

    /* A 16-bit length, fed byte by byte. */
    mid[0] = 0x82;
    mid[1] = 126;
    mid[2] = 300 >> 8;
    mid[3] = 300 & 0xff;
    memset(mid + 4, 0, 300);
    for (size_t i = 0; i < sizeof(mid); i++) {
        assert_true(ws_scan_at_boundary(&s) == (i == 0));
        ws_scan_feed(&s, mid + i, 1);
    }
    assert_true(ws_scan_at_boundary(&s));

    /* A 64-bit length, then an empty ping and a masked frame in the same feed. */
    ws_scan_feed(&s, big, sizeof(big));
    ws_scan_feed(&s, payload, sizeof(payload) - 1);
    assert_false(ws_scan_at_boundary(&s));
    {
        uint8_t tail[1 + sizeof(empty_ping) + sizeof(masked)];
        tail[0] = 0;
        memcpy(tail + 1, empty_ping, sizeof(empty_ping));
        memcpy(tail + 1 + sizeof(empty_ping), masked, sizeof(masked));
        ws_scan_feed(&s, tail, sizeof(tail) - 1);
        assert_false(ws_scan_at_boundary(&s));
        ws_scan_feed(&s, tail + sizeof(tail) - 1, 1);
        assert_true(ws_scan_at_boundary(&s));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_of_the_rfc_example),
        cmocka_unit_test(test_valid_handshake),
        cmocka_unit_test(test_other_upgrades_are_not_websocket),
        cmocka_unit_test(test_bad_handshakes),
        cmocka_unit_test(test_the_101_must_answer_the_key),
        cmocka_unit_test(test_origin_rule),
        cmocka_unit_test(test_close_frame),
        cmocka_unit_test(test_scanner_follows_frames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
