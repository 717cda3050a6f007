/*
 * Unit tests for base/audit.c: the chain (seq, prev = SHA-256 of the previous line) within a
 * file, across a reopen and across rotation; a torn last line cut and recorded at open; a
 * last line that is not a record refused.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "base/audit.h"

static char dir[] = "/tmp/test_audit.XXXXXX";
static char path[256];

static int setup(void **state)
{
    (void)state;
    memcpy(dir + strlen(dir) - 6, "XXXXXX", 6);
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static struct audit *open_log(uint64_t max_bytes)
{
    struct audit_options o = {.path = path, .max_bytes = max_bytes, .fsync = AUDIT_FSYNC_NONE};
    struct audit *a = NULL;
    char err[256];
    if (audit_open(&o, &a, err, sizeof(err)) < 0)
        fail_msg("audit_open: %s", err);
    return a;
}

static void append_n(struct audit *a, int n)
{
    for (int i = 0; i < n; i++) {
        json_t *f = json_pack("{s:i}", "i", i);
        assert_int_equal(audit_append(a, "test", f), 0);
        json_decref(f);
    }
}

/* Checks the chain of `file` starting after (seq0, prev0); returns the last seq, writes the
 * last line's hash into prev0. */
static uint64_t check_chain(const char *file, uint64_t seq0, char prev0[AUDIT_HASH_HEX])
{
    FILE *fp = fopen(file, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    assert_non_null(fp);
    while ((n = getline(&line, &cap, fp)) > 0) {
        json_t *j;
        assert_int_equal(line[n - 1], '\n');
        j = json_loadb(line, (size_t)n - 1, 0, NULL);
        assert_non_null(j);
        assert_int_equal(json_integer_value(json_object_get(j, "seq")), seq0 + 1);
        assert_string_equal(json_string_value(json_object_get(j, "prev")), prev0);
        json_decref(j);
        audit_sha256_hex(line, (size_t)n - 1, prev0);
        seq0++;
    }
    free(line);
    fclose(fp);
    return seq0;
}

static void test_chain_continues_across_a_reopen(void **state)
{
    char prev[AUDIT_HASH_HEX];
    struct audit *a = open_log(0);
    FILE *fp;
    char line[512];
    (void)state;
    append_n(a, 3);
    audit_close(a);
    a = open_log(0);
    assert_int_equal(audit_last_seq(a), 3);
    append_n(a, 2);
    audit_close(a);
    memset(prev, '0', 64);
    prev[64] = '\0';
    assert_int_equal(check_chain(path, 0, prev), 5);
    /* The fields: seq, ts, prev, type come first, in this order. */
    fp = fopen(path, "r");
    assert_non_null(fgets(line, sizeof(line), fp));
    fclose(fp);
    assert_memory_equal(line, "{\"seq\":1,\"ts\":\"", 15);
    assert_non_null(strstr(line, "\"prev\":\"0000000000000000000000000000000000000000000000000000"
                                 "000000000000\",\"type\":\"test\",\"i\":0}"));
    unlink(path);
}

static void test_rotation_links_files(void **state)
{
    char prev[AUDIT_HASH_HEX], p1[300], p2[300];
    struct audit *a = open_log(600);
    uint64_t seq;
    (void)state;
    append_n(a, 12); /* each record is about 130 bytes: several files */
    audit_close(a);
    snprintf(p1, sizeof(p1), "%s.1", path);
    snprintf(p2, sizeof(p2), "%s.2", path);
    assert_int_equal(access(p2, F_OK), 0);
    memset(prev, '0', 64);
    prev[64] = '\0';
    /* Oldest first; each file's first record links to the previous file's last. */
    {
        char pn[300];
        int top = 2;
        for (;; top++) {
            snprintf(pn, sizeof(pn), "%s.%d", path, top + 1);
            if (access(pn, F_OK) != 0)
                break;
        }
        seq = 0;
        for (int k = top; k >= 1; k--) {
            snprintf(pn, sizeof(pn), "%s.%d", path, k);
            seq = check_chain(pn, seq, prev);
        }
        seq = check_chain(path, seq, prev);
        assert_int_equal(seq, 12);
        for (int k = top; k >= 1; k--) {
            snprintf(pn, sizeof(pn), "%s.%d", path, k);
            unlink(pn);
        }
        unlink(path);
    }
    /* An empty file next to FILE.1 continues FILE.1's chain (a crash right after rotating). */
    a = open_log(0);
    append_n(a, 1);
    audit_close(a);
    rename(path, p1);
    a = open_log(0);
    assert_int_equal(audit_last_seq(a), 1);
    audit_close(a);
    unlink(p1);
    unlink(path);
}

static void test_torn_last_line_is_cut_and_recorded(void **state)
{
    char prev[AUDIT_HASH_HEX];
    struct audit *a = open_log(0);
    FILE *fp;
    char line[1024];
    (void)state;
    append_n(a, 2);
    audit_close(a);
    fp = fopen(path, "a");
    fputs("{\"seq\":3,\"ts\":\"2026-", fp); /* what a writer killed mid-record leaves */
    fclose(fp);
    a = open_log(0);
    assert_int_equal(audit_last_seq(a), 3); /* the "recovered" record */
    audit_close(a);
    memset(prev, '0', 64);
    prev[64] = '\0';
    assert_int_equal(check_chain(path, 0, prev), 3);
    fp = fopen(path, "r");
    for (int i = 0; i < 3; i++)
        assert_non_null(fgets(line, sizeof(line), fp));
    fclose(fp);
    assert_non_null(strstr(line, "\"type\":\"recovered\",\"torn_bytes\":20"));
    unlink(path);
}

static void test_a_foreign_last_line_is_refused(void **state)
{
    struct audit_options o = {.path = path, .fsync = AUDIT_FSYNC_NONE};
    struct audit *a = NULL;
    char err[256];
    FILE *fp = fopen(path, "w");
    (void)state;
    fputs("hello\n", fp);
    fclose(fp);
    assert_int_equal(audit_open(&o, &a, err, sizeof(err)), -EINVAL);
    assert_null(a);
    assert_non_null(strstr(err, "not an audit record"));
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain_continues_across_a_reopen),
        cmocka_unit_test(test_rotation_links_files),
        cmocka_unit_test(test_torn_last_line_is_cut_and_recorded),
        cmocka_unit_test(test_a_foreign_last_line_is_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
