/* Unit tests for proxy/errors.c: the exact bytes of an error response, every code's status,
 * Retry-After and WWW-Authenticate, HEAD, sanitised messages and the size bound. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "proxy/errors.h"

static void test_exact_response(void **state)
{
    char out[ERRORS_RESPONSE_MAX];
    int n;
    (void)state;
    n = errors_render(PROXY_ERR_ATTESTATION_FAILED, "whisper", "attestation failed: policy: x", 0,
                      false, false, out, sizeof(out));
    assert_true(n > 0);
    out[n] = '\0';
    assert_string_equal(out, "HTTP/1.1 502 Bad Gateway\r\n"
                             "Content-Type: application/json\r\n"
                             "Content-Length: 102\r\n"
                             "Cache-Control: no-store\r\n"
                             "Connection: keep-alive\r\n"
                             "\r\n"
                             "{\"error\":{\"code\":\"attestation_failed\",\"message\":"
                             "\"attestation failed: policy: x\",\"service\":\"whisper\"}}\n");
}

static void test_codes_and_statuses(void **state)
{
    struct {
        enum proxy_error e;
        const char *code;
        unsigned status;
    } t[] = {
        {PROXY_ERR_ATTESTATION_FAILED, "attestation_failed", 502},
        {PROXY_ERR_ATTESTATION_UNAVAILABLE, "attestation_unavailable", 503},
        {PROXY_ERR_UPSTREAM_UNREACHABLE, "upstream_unreachable", 502},
        {PROXY_ERR_UPSTREAM_TIMEOUT, "upstream_timeout", 504},
        {PROXY_ERR_BAD_REQUEST, "bad_request", 400},
        {PROXY_ERR_HEADER_TOO_LARGE, "header_too_large", 431},
        {PROXY_ERR_PAYLOAD_TOO_LARGE, "payload_too_large", 413},
        {PROXY_ERR_HOST_NOT_ALLOWED, "host_not_allowed", 421},
        {PROXY_ERR_UNAUTHORIZED, "unauthorized", 401},
        {PROXY_ERR_TOO_MANY_CONNECTIONS, "too_many_connections", 503},
        {PROXY_ERR_UPSTREAM_PROXY_REFUSED, "upstream_proxy_refused", 502},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char out[ERRORS_RESPONSE_MAX], status[16];
        const char *body;
        json_t *j;
        json_error_t err;
        int n = errors_render(t[i].e, "svc", "m", 0, true, false, out, sizeof(out));
        assert_true(n > 0);
        out[n] = '\0';
        assert_string_equal(errors_code_name(t[i].e), t[i].code);
        assert_int_equal(errors_status(t[i].e), t[i].status);
        snprintf(status, sizeof(status), "HTTP/1.1 %u ", t[i].status);
        assert_memory_equal(out, status, strlen(status));
        assert_non_null(strstr(out, "Connection: close\r\n"));
        body = strstr(out, "\r\n\r\n") + 4;
        j = json_loads(body, 0, &err);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                            t[i].code);
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(j, "error"), "service")), "svc");
        json_decref(j);
    }
}

static void test_retry_after_and_authenticate(void **state)
{
    char out[ERRORS_RESPONSE_MAX];
    int n;
    (void)state;
    n = errors_render(PROXY_ERR_ATTESTATION_UNAVAILABLE, "s", "m", 0, false, false, out,
                      sizeof(out));
    out[n] = '\0';
    assert_non_null(strstr(out, "\r\nRetry-After: 1\r\n"));
    n = errors_render(PROXY_ERR_ATTESTATION_UNAVAILABLE, "s", "m", 7, false, false, out,
                      sizeof(out));
    out[n] = '\0';
    assert_non_null(strstr(out, "\r\nRetry-After: 7\r\n"));
    n = errors_render(PROXY_ERR_BAD_REQUEST, "s", "m", 0, false, false, out, sizeof(out));
    out[n] = '\0';
    assert_null(strstr(out, "Retry-After"));
    n = errors_render(PROXY_ERR_UNAUTHORIZED, "s", "m", 0, false, false, out, sizeof(out));
    out[n] = '\0';
    assert_non_null(strstr(out, "\r\nWWW-Authenticate: Bearer realm=\"attestproxy\"\r\n"));
}

static void test_head_has_no_body(void **state)
{
    char out[ERRORS_RESPONSE_MAX];
    int n;
    (void)state;
    n = errors_render(PROXY_ERR_UPSTREAM_TIMEOUT, "s", "m", 0, false, true, out, sizeof(out));
    assert_true(n > 4);
    out[n] = '\0';
    assert_non_null(strstr(out, "Content-Length: "));
    assert_string_equal(out + n - 4, "\r\n\r\n");
}

static void test_message_is_sanitised_and_bounded(void **state)
{
    char out[ERRORS_RESPONSE_MAX], msg[2000];
    const char *body;
    json_t *j;
    int n;
    (void)state;
    n = errors_render(PROXY_ERR_HOST_NOT_ALLOWED, "s", "Host 'a\r\nX-Evil: 1\"\xff' refused", 0,
                      true, false, out, sizeof(out));
    assert_true(n > 0);
    out[n] = '\0';
    body = strstr(out, "\r\n\r\n") + 4;
    assert_null(strstr(out, "\r\nX-Evil"));
    j = json_loads(body, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "message")),
                        "Host 'a??X-Evil: 1\"?' refused");
    json_decref(j);
    memset(msg, 'x', sizeof(msg) - 1);
    msg[sizeof(msg) - 1] = '\0';
    n = errors_render(PROXY_ERR_BAD_REQUEST, "s", msg, 0, true, false, out, sizeof(out));
    assert_true(n > 0 && n < ERRORS_RESPONSE_MAX);
    assert_int_equal(errors_render(PROXY_ERR_BAD_REQUEST, "s", "m", 0, true, false, out, 64),
                     -ENOSPC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_response),
        cmocka_unit_test(test_codes_and_statuses),
        cmocka_unit_test(test_retry_after_and_authenticate),
        cmocka_unit_test(test_head_has_no_body),
        cmocka_unit_test(test_message_is_sanitised_and_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
