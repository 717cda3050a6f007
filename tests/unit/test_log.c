/* Unit tests for core/log.c: escaping in both formats, level filtering, line shape. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/log.h"

static void test_escape_logfmt_plain(void **state)
{
    char out[64];
    (void)state;
    assert_int_equal(log_escape(LOG_FORMAT_LOGFMT, "whisper", out, sizeof(out)), 7);
    assert_string_equal(out, "whisper");
}

static void test_escape_logfmt_quotes_when_needed(void **state)
{
    char out[64];
    (void)state;
    log_escape(LOG_FORMAT_LOGFMT, "two words", out, sizeof(out));
    assert_string_equal(out, "\"two words\"");
    log_escape(LOG_FORMAT_LOGFMT, "", out, sizeof(out));
    assert_string_equal(out, "\"\"");
    log_escape(LOG_FORMAT_LOGFMT, "a=b", out, sizeof(out));
    assert_string_equal(out, "\"a=b\"");
}

static void test_escape_logfmt_cannot_forge_lines(void **state)
{
    char out[128];
    (void)state;
    /* A hostile value must not end the line or add a field. */
    log_escape(LOG_FORMAT_LOGFMT, "x\nlevel=error event=forged \"q\"\\", out, sizeof(out));
    assert_string_equal(out, "\"x\\nlevel=error event=forged \\\"q\\\"\\\\\"");
    log_escape(LOG_FORMAT_LOGFMT, "\x01\x7f\xff", out, sizeof(out));
    assert_string_equal(out, "\"\\x01\\x7f\\xff\"");
}

static void test_escape_json(void **state)
{
    char out[128];
    (void)state;
    log_escape(LOG_FORMAT_JSON, "plain", out, sizeof(out));
    assert_string_equal(out, "\"plain\"");
    log_escape(LOG_FORMAT_JSON, "a\"b\\c\nd\te\x02\xc3", out, sizeof(out));
    assert_string_equal(out, "\"a\\\"b\\\\c\\nd\\te\\u0002\\u00c3\"");
}

static void test_escape_truncates_safely(void **state)
{
    char out[12];
    (void)state;
    assert_int_equal(log_escape(LOG_FORMAT_LOGFMT, "abcdefghijklmnopqrstuvwxyz", out, sizeof(out)),
                     -1);
    assert_true(strlen(out) < sizeof(out));
    assert_non_null(strstr(out, "..."));
    /* An escape sequence is never cut in half. */
    assert_int_equal(log_escape(LOG_FORMAT_JSON, "\x01\x01\x01\x01\x01", out, sizeof(out)), -1);
    assert_null(strstr(out, "\\u00..."));
}

static char *capture(enum log_level min, enum log_format fmt, void (*emit)(void))
{
    /* Static so the stream's view of them outlives this frame (open_memstream updates them). */
    static char *buf;
    static size_t len;
    FILE *fp;
    buf = NULL;
    len = 0;
    fp = open_memstream(&buf, &len);
    assert_non_null(fp);
    log_configure(min, fmt, fp);
    emit();
    fclose(fp);
    log_configure(LOG_LEVEL_INFO, LOG_FORMAT_LOGFMT, NULL);
    return buf;
}

static void emit_two(void)
{
    log_event(LOG_LEVEL_DEBUG, "hidden", "k", "v", NULL);
    log_event(LOG_LEVEL_WARN, "attestation", "service", "whisper", "reason",
              "policy: pcr0 matches no measurement set", "empty", NULL, NULL);
}

static void test_event_logfmt_line(void **state)
{
    char *line = capture(LOG_LEVEL_INFO, LOG_FORMAT_LOGFMT, emit_two);
    (void)state;
    assert_null(strstr(line, "hidden"));
    assert_non_null(strstr(line,
                           " level=warn event=attestation service=whisper "
                           "reason=\"policy: pcr0 matches no measurement set\" empty=\"\"\n"));
    assert_int_equal(strncmp(line, "ts=", 3), 0);
    assert_int_equal(strchr(line, '\n') - line + 1, (long)strlen(line)); /* exactly one line */
    free(line);
}

static void test_event_json_line(void **state)
{
    char *line = capture(LOG_LEVEL_DEBUG, LOG_FORMAT_JSON, emit_two);
    char *second;
    (void)state;
    assert_non_null(strstr(line, "\"event\":\"hidden\""));
    second = strchr(line, '\n') + 1;
    assert_int_equal(second[0], '{');
    assert_non_null(strstr(second, "\"level\":\"warn\",\"event\":\"attestation\","
                                   "\"service\":\"whisper\""));
    assert_non_null(strstr(second, "\"empty\":\"\"}\n"));
    free(line);
}

static void emit_huge(void)
{
    static char big[10000];
    memset(big, 'a', sizeof(big) - 1);
    log_event(LOG_LEVEL_INFO, "big", "first", "kept", "value", big, NULL);
}

static void test_event_overlong_is_cut_and_marked(void **state)
{
    char *line = capture(LOG_LEVEL_INFO, LOG_FORMAT_JSON, emit_huge);
    size_t n = strlen(line);
    (void)state;
    assert_true(n <= 4096);
    assert_non_null(strstr(line, "\"first\":\"kept\""));
    assert_non_null(strstr(line, "\"truncated\":\"true\"}\n"));
    free(line);
}

static void test_parse_level_and_format(void **state)
{
    enum log_level l;
    enum log_format f;
    (void)state;
    assert_int_equal(log_parse_level("warn", &l), 0);
    assert_int_equal(l, LOG_LEVEL_WARN);
    assert_int_not_equal(log_parse_level("WARN", &l), 0);
    assert_int_equal(log_parse_format("json", &f), 0);
    assert_int_equal(f, LOG_FORMAT_JSON);
    assert_int_not_equal(log_parse_format("xml", &f), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_logfmt_plain),
        cmocka_unit_test(test_escape_logfmt_quotes_when_needed),
        cmocka_unit_test(test_escape_logfmt_cannot_forge_lines),
        cmocka_unit_test(test_escape_json),
        cmocka_unit_test(test_escape_truncates_safely),
        cmocka_unit_test(test_event_logfmt_line),
        cmocka_unit_test(test_event_json_line),
        cmocka_unit_test(test_event_overlong_is_cut_and_marked),
        cmocka_unit_test(test_parse_level_and_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
