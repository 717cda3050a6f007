/*
 * `attestproxy health` (daemon/ops/health_cmd.c): the strict status-line parser and the one-line
 * reason drawn from a /readyz body. The exchange itself runs against a real daemon in
 * tests/e2e/test_health_cmd.py.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ops/health_cmd.h"

static int parse(const char *s, int *status)
{
    return health_parse_status_line(s, strlen(s), status);
}

static void test_status_line_accepted(void **state)
{
    int status = 0;
    (void)state;

    assert_int_equal(parse("HTTP/1.1 200 OK\r\n", &status), 17);
    assert_int_equal(status, 200);
    assert_int_equal(parse("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n", &status),
                     34);
    assert_int_equal(status, 503);
    assert_int_equal(parse("HTTP/1.0 404 \r\n", &status), 15); /* empty reason */
    assert_int_equal(status, 404);
    assert_int_equal(parse("HTTP/1.1 100 a\tb \x80\xff\r\n", &status), 21); /* HTAB, obs-text */
    assert_int_equal(status, 100);
    assert_int_equal(parse("HTTP/1.1 599 x\r\n", &status), 16);
    assert_int_equal(status, 599);
}

static void test_status_line_incomplete(void **state)
{
    static const char full[] = "HTTP/1.1 200 OK\r\n";
    int status = -1;
    (void)state;

    /* Every proper prefix is "not yet", never an error or a verdict. */
    for (size_t n = 0; n < sizeof(full) - 1; n++)
        assert_int_equal(health_parse_status_line(full, n, &status), 0);
    assert_int_equal(status, -1);
}

static void test_status_line_rejected(void **state)
{
    static const char *const bad[] = {
        "HTTP/1.1 200 OK\n",       /* bare LF */
        "HTTP/1.1 200 OK\rX",      /* CR not followed by LF */
        "HTTP/1.1 200\r\n",        /* no SP before the reason */
        "HTTP/1.1  200 OK\r\n",    /* two SP */
        "HTTP/1.2 200 OK\r\n",     /* unknown minor version */
        "HTTP/2 200 OK\r\n",       /* not HTTP/1.x */
        "http/1.1 200 OK\r\n",     /* case matters */
        " HTTP/1.1 200 OK\r\n",    /* leading space */
        "HTTP/1.1 20 OK\r\n",      /* two digits */
        "HTTP/1.1 2000 OK\r\n",    /* four digits */
        "HTTP/1.1 099 OK\r\n",     /* below 100 */
        "HTTP/1.1 600 OK\r\n",     /* above 599 */
        "HTTP/1.1 2x0 OK\r\n",     /* not a digit */
        "HTTP/1.1 200 O\x01K\r\n", /* control character in the reason */
        "HTTP/1.1 200 O\x7fK\r\n", /* DEL in the reason */
        "ICY 200 OK\r\n",
    };
    int status = 0;
    (void)state;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse(bad[i], &status) != -EINVAL)
            fail_msg("accepted: %s", bad[i]);
    }
    /* The NUL byte is a control character, not the end of the line. */
    assert_int_equal(health_parse_status_line("HTTP/1.1 200 O\0K\r\n", 18, &status), -EINVAL);
}

static void test_status_line_bounded(void **state)
{
    char line[HEALTH_STATUS_LINE_MAX + 16];
    int status = 0;
    (void)state;

    /* A reason phrase that never ends is refused once the line reaches the maximum. */
    memset(line, 'a', sizeof(line));
    memcpy(line, "HTTP/1.1 200 ", 13);
    assert_int_equal(health_parse_status_line(line, HEALTH_STATUS_LINE_MAX - 3, &status), 0);
    assert_int_equal(health_parse_status_line(line, sizeof(line), &status), -EINVAL);
    assert_int_equal(health_parse_status_line(line, HEALTH_STATUS_LINE_MAX, &status), -EINVAL);
    /* The longest line accepted, CRLF included, is exactly the maximum. */
    memcpy(line + HEALTH_STATUS_LINE_MAX - 2, "\r\n", 2);
    assert_int_equal(health_parse_status_line(line, sizeof(line), &status), HEALTH_STATUS_LINE_MAX);
    assert_int_equal(status, 200);
    memcpy(line + HEALTH_STATUS_LINE_MAX - 2, "a\r\n", 3);
    assert_int_equal(health_parse_status_line(line, sizeof(line), &status), -EINVAL);
}

static const char *describe(const char *body, char *out, size_t cap)
{
    health_describe_body(body, strlen(body), out, cap);
    return out;
}

static void test_reason_from_readyz_json(void **state)
{
    char out[HEALTH_REASON_MAX];
    (void)state;

    /* What the daemon sends (core/status.c): the ready service is left out. */
    assert_string_equal(
        describe("{\n  \"ready\": false,\n  \"reason\": \"waiting for attestation\",\n"
                 "  \"services\": {\n    \"a\": {\"ready\": true},\n"
                 "    \"b\": {\"ready\": false, \"state\": \"backoff\", "
                 "\"reason\": \"attestation failed: pcr0\"}\n  }\n}\n",
                 out, sizeof(out)),
        "waiting for attestation; b: attestation failed: pcr0");
    /* reason null (stopping is a reason; so is nothing): services alone. */
    assert_string_equal(describe("{\"reason\": null, \"services\": {\"x\": {\"ready\": false, "
                                 "\"state\": \"connecting\"}}}",
                                 out, sizeof(out)),
                        "x: connecting");
    assert_string_equal(describe("{\"reason\": \"stopping\", \"services\": {}}", out, sizeof(out)),
                        "stopping");
    assert_string_equal(describe("{\"services\": {\"x\": {\"ready\": false}}}", out, sizeof(out)),
                        "x: not ready");
    /* Odd shapes do not crash or invent text. */
    assert_string_equal(describe("{\"reason\": 5, \"services\": [1, 2]}", out, sizeof(out)),
                        "{\"reason\": 5, \"services\": [1, 2]}");
    assert_string_equal(describe("{\"services\": {\"x\": 7}}", out, sizeof(out)),
                        "{\"services\": {\"x\": 7}}");
}

static void test_reason_from_text_and_bounds(void **state)
{
    char out[HEALTH_REASON_MAX], small[8];
    (void)state;

    assert_string_equal(describe("not ready\n", out, sizeof(out)), "not ready");
    assert_string_equal(describe("first\r\nsecond\r\n", out, sizeof(out)), "first");
    assert_string_equal(describe("", out, sizeof(out)), "");
    /* Control and non-ASCII bytes cannot reach the terminal or split the line. */
    assert_string_equal(describe("a\x1b[2Jb\tc\xc3\xa9", out, sizeof(out)), "a?[2Jb?c??");
    assert_string_equal(describe("{\"reason\": \"x\\u001b\\ny\"}", out, sizeof(out)), "x??y");
    /* Cut at cap - 1 bytes, always terminated. */
    assert_string_equal(describe("0123456789", small, sizeof(small)), "0123456");
    assert_string_equal(
        describe("{\"reason\": \"0123456789\", \"services\": {\"s\": {\"ready\": false}}}", small,
                 sizeof(small)),
        "0123456");
    small[0] = 'z';
    health_describe_body("abc", 3, small, 1);
    assert_int_equal(small[0], '\0');
    /* A body that is not terminated is read only within its length. */
    assert_string_equal((health_describe_body("okXXXX", 2, out, sizeof(out)), out), "ok");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_line_accepted),
        cmocka_unit_test(test_status_line_incomplete),
        cmocka_unit_test(test_status_line_rejected),
        cmocka_unit_test(test_status_line_bounded),
        cmocka_unit_test(test_reason_from_readyz_json),
        cmocka_unit_test(test_reason_from_text_and_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
