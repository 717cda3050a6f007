/* Unit tests for proxy/egress.c: the exact bytes of the CONNECT request (with and without
 * credentials, IPv6, refusals and the size bound), the proxy's answer whole and byte by byte
 * (2xx and where the tunnel's own bytes start, refusals with their reason, malformed and
 * oversized heads), and the TLS-inspecting-proxy hint. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/egress.h"

static void test_connect_request(void **state)
{
    char out[EGRESS_REQUEST_MAX];
    int n;
    (void)state;

    n = egress_build_connect("enclave.example", 443, "", out, sizeof(out));
    assert_int_equal(n, (int)strlen(out));
    assert_string_equal(out, "CONNECT enclave.example:443 HTTP/1.1\r\n"
                             "Host: enclave.example:443\r\n"
                             "\r\n");

    n = egress_build_connect("10.0.0.7", 8443, "YWxpY2U6cHc=", out, sizeof(out));
    assert_int_equal(n, (int)strlen(out));
    assert_string_equal(out, "CONNECT 10.0.0.7:8443 HTTP/1.1\r\n"
                             "Host: 10.0.0.7:8443\r\n"
                             "Proxy-Authorization: Basic YWxpY2U6cHc=\r\n"
                             "\r\n");

    /* An IPv6 literal is bracketed; NULL credentials are none. */
    n = egress_build_connect("fd00::1", 443, NULL, out, sizeof(out));
    assert_true(n > 0);
    assert_string_equal(out, "CONNECT [fd00::1]:443 HTTP/1.1\r\nHost: [fd00::1]:443\r\n\r\n");
}

static void test_connect_request_refusals(void **state)
{
    char out[EGRESS_REQUEST_MAX], small[40];
    (void)state;

    /* Bytes that would end the request line or a header line are never sent. */
    assert_int_equal(egress_build_connect("a\r\nX: y", 443, "", out, sizeof(out)), -EINVAL);
    assert_int_equal(egress_build_connect("a b", 443, "", out, sizeof(out)), -EINVAL);
    assert_int_equal(egress_build_connect("", 443, "", out, sizeof(out)), -EINVAL);
    assert_int_equal(egress_build_connect("a", 0, "", out, sizeof(out)), -EINVAL);
    assert_int_equal(egress_build_connect("a", 443, "abc\r\nX: y", out, sizeof(out)), -EINVAL);

    /* Too small: -ENOSPC, and nothing of the credentials is left in the buffer. */
    memset(small, 'z', sizeof(small));
    assert_int_equal(egress_build_connect("h", 1, "SECRETSECRETSECRET", small, sizeof(small)),
                     -ENOSPC);
    for (size_t i = 0; i < sizeof(small); i++)
        assert_int_equal(small[i], 0);
}

static struct egress *new_tunnel(const char *auth)
{
    static struct service_config cfg;
    struct egress *t;
    memset(&cfg, 0, sizeof(cfg));
    snprintf(cfg.upstream_host, sizeof(cfg.upstream_host), "enclave.example");
    cfg.upstream_port = 443;
    snprintf(cfg.upstream_proxy_host, sizeof(cfg.upstream_proxy_host), "127.0.0.1");
    cfg.upstream_proxy_port = 3128;
    snprintf(cfg.upstream_proxy_auth, sizeof(cfg.upstream_proxy_auth), "%s", auth);
    t = egress_new(&cfg);
    assert_non_null(t);
    return t;
}

static void test_new_tunnel_names_and_request(void **state)
{
    struct egress *t = new_tunnel("dTpw");
    (void)state;
    assert_string_equal(t->proxy, "127.0.0.1:3128");
    assert_string_equal(t->target, "enclave.example:443");
    assert_int_equal(t->request_len, strlen(t->request));
    assert_non_null(strstr(t->request, "Proxy-Authorization: Basic dTpw\r\n"));
    egress_wipe_request(t);
    assert_int_equal(t->request_len, 0);
    for (size_t i = 0; i < sizeof(t->request); i++)
        assert_int_equal(t->request[i], 0);
    egress_free(t);
    egress_free(NULL);
}

/* The answer whole, then byte by byte: the verdict comes exactly at the end of the head and
 * `consumed` says where the tunnel's own bytes begin. */
static void expect_answer(const char *head, const char *after, enum egress_result want,
                          unsigned status, const char *reason)
{
    char data[EGRESS_HEAD_MAX + 64];
    size_t head_len = strlen(head), len, used = 0;
    struct egress *t;
    enum egress_result r;

    len = (size_t)snprintf(data, sizeof(data), "%s%s", head, after);

    t = new_tunnel("");
    r = egress_feed(t, data, len, &used);
    assert_int_equal(r, want);
    if (want == EGRESS_ESTABLISHED || want == EGRESS_REFUSED) {
        assert_int_equal(used, head_len);
        assert_int_equal(t->status, status);
        assert_string_equal(t->reason, reason);
    }
    /* After a verdict, nothing more is parsed. */
    assert_int_equal(egress_feed(t, "x", 1, &used), EGRESS_BAD_RESPONSE);
    egress_free(t);

    t = new_tunnel("");
    for (size_t i = 0; i < len; i++) {
        r = egress_feed(t, data + i, 1, &used);
        if (r != EGRESS_NEED_MORE) {
            assert_int_equal(r, want);
            if (want != EGRESS_BAD_RESPONSE) {
                assert_int_equal(i + 1, head_len); /* the last byte of the head */
                assert_int_equal(used, 1);
            }
            break;
        }
        assert_int_equal(used, 1);
        assert_true(i + 1 < len);
    }
    egress_free(t);
}

static void test_answers(void **state)
{
    (void)state;
    /* The TLS bytes after a 2xx head are not the proxy's. */
    expect_answer("HTTP/1.1 200 Connection established\r\n\r\n", "\x16\x03\x03\x00\x02zz",
                  EGRESS_ESTABLISHED, 200, "Connection established");
    expect_answer("HTTP/1.0 200 OK\r\nProxy-agent: tinyproxy/1.11.1\r\n\r\n", "",
                  EGRESS_ESTABLISHED, 200, "OK");
    /* A 2xx whose head announces a body is a tunnel all the same: what follows is TLS. */
    expect_answer("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "\x15\x03\x03",
                  EGRESS_ESTABLISHED, 204, "No Content");
    expect_answer("HTTP/1.1 407 Proxy Authentication Required\r\n"
                  "Proxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 4\r\n\r\n",
                  "nope", EGRESS_REFUSED, 407, "Proxy Authentication Required");
    expect_answer("HTTP/1.1 403 Forbidden\r\n\r\n", "", EGRESS_REFUSED, 403, "Forbidden");
    expect_answer("HTTP/1.1 502 \r\n\r\n", "", EGRESS_REFUSED, 502, "");
    expect_answer("HTTP/1.1 100 Continue\r\n\r\n", "", EGRESS_REFUSED, 100, "Continue");
    /* Not valid HTTP/1 (bare LF, obs-fold, not HTTP at all). */
    expect_answer("HTTP/1.1 200 OK\n\n", "", EGRESS_BAD_RESPONSE, 0, NULL);
    expect_answer("HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", "", EGRESS_BAD_RESPONSE, 0, NULL);
    expect_answer("SSH-2.0-OpenSSH_9.2\r\n\r\n", "", EGRESS_BAD_RESPONSE, 0, NULL);
}

static void test_reason_is_sanitized(void **state)
{
    struct egress *t = new_tunnel("");
    const char head[] = "HTTP/1.1 403 Bad \x80\xff name "
                        "which goes on and on and on well past sixty-four bytes of reason\r\n\r\n";
    size_t used;
    (void)state;
    assert_int_equal(egress_feed(t, head, sizeof(head) - 1, &used), EGRESS_REFUSED);
    assert_int_equal(strlen(t->reason), EGRESS_REASON_MAX - 1);
    assert_memory_equal(t->reason, "Bad ?? name", 11);
    egress_free(t);
}

static void test_head_is_bounded(void **state)
{
    static char data[EGRESS_HEAD_MAX + 256];
    struct egress *t = new_tunnel("");
    size_t n = 0, used;
    enum egress_result r;
    (void)state;

    n += (size_t)snprintf(data, sizeof(data), "HTTP/1.1 200 OK\r\n");
    while (n < EGRESS_HEAD_MAX + 64)
        n += (size_t)snprintf(data + n, sizeof(data) - n, "X-Pad: %050d\r\n", 0);
    n += (size_t)snprintf(data + n, sizeof(data) - n, "\r\n");
    r = egress_feed(t, data, n, &used);
    assert_int_equal(r, EGRESS_BAD_RESPONSE);
    assert_non_null(strstr(t->why, "8192"));
    egress_free(t);
}

static void test_binding_hint(void **state)
{
    struct service_config cfg;
    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    assert_null(egress_binding_hint(&cfg, VERIFY_R_BINDING_SPKI_SHA256));
    snprintf(cfg.upstream_proxy_host, sizeof(cfg.upstream_proxy_host), "proxy");
    assert_non_null(strstr(egress_binding_hint(&cfg, VERIFY_R_BINDING_SPKI_SHA256),
                           "a TLS-inspecting proxy between here and the enclave?"));
    assert_non_null(egress_binding_hint(&cfg, VERIFY_R_BINDING_CERT_SHA256));
    assert_non_null(egress_binding_hint(&cfg, VERIFY_R_BINDING_NITRIDING));
    /* Not a key mismatch: no hint. */
    assert_null(egress_binding_hint(&cfg, VERIFY_R_BINDING_USER_DATA_ABSENT));
    assert_null(egress_binding_hint(&cfg, VERIFY_R_POLICY_PCR_MISMATCH));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_request),
        cmocka_unit_test(test_connect_request_refusals),
        cmocka_unit_test(test_new_tunnel_names_and_request),
        cmocka_unit_test(test_answers),
        cmocka_unit_test(test_reason_is_sanitized),
        cmocka_unit_test(test_head_is_bounded),
        cmocka_unit_test(test_binding_hint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
