/*
 * `attestproxy verify` (daemon/verify/verify_cmd.c): time parsing, exit codes, the one-line
 * reason on stderr, and the JSON report.
 */
#include "verify_helpers.h"

#include <fcntl.h>
#include <unistd.h>

#include <jansson.h>

#include "base/log.h"
#include "app/verify_cmd.h"

static char out_path[64], err_path[64];

/* Runs the command with stdout and stderr captured into files; returns the exit code. */
static int run(const char *const *args)
{
    char *argv[32];
    int argc = 0;
    int saved_out = dup(1), saved_err = dup(2);
    int fo, fe, rc;

    argv[argc++] = (char *)"verify";
    for (; args[argc - 1] != NULL; argc++)
        argv[argc] = (char *)args[argc - 1];
    argv[argc] = NULL;
    fflush(stdout);
    fflush(stderr);
    fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fo >= 0 && fe >= 0);
    dup2(fo, 1);
    dup2(fe, 2);
    rc = verify_cmd_main(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(fo);
    close(fe);
    close(saved_out);
    close(saved_err);
    return rc;
}

static char *slurp(const char *path)
{
    size_t n;
    uint8_t *buf = th_read_file(path, &n);
    buf[n] = '\0';
    return (char *)buf;
}

static int setup(void **state)
{
    int fd;
    (void)state;
    snprintf(out_path, sizeof(out_path), "/tmp/attestproxy-out-XXXXXX");
    snprintf(err_path, sizeof(err_path), "/tmp/attestproxy-err-XXXXXX");
    assert_true((fd = mkstemp(out_path)) >= 0);
    close(fd);
    assert_true((fd = mkstemp(err_path)) >= 0);
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(out_path);
    unlink(err_path);
    return 0;
}

/* A certificate name cut at the end of its buffer must stay valid UTF-8 (json_string() returns
 * NULL otherwise, and the field went missing from the report). */
static void test_utf8_whole(void **state)
{
    const char *s = "CN=\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91";
    (void)state;
    assert_int_equal(verify_cmd_utf8_whole(s, 5), 5);   /* "CN=é" whole */
    assert_int_equal(verify_cmd_utf8_whole(s, 4), 3);   /* é cut after its first byte */
    assert_int_equal(verify_cmd_utf8_whole(s, 10), 9);  /* € cut after one byte */
    assert_int_equal(verify_cmd_utf8_whole(s, 11), 9);  /* ... after two */
    assert_int_equal(verify_cmd_utf8_whole(s, 12), 12); /* € whole */
    assert_int_equal(verify_cmd_utf8_whole(s, 16), 13); /* the 4-byte key cut after three */
    assert_int_equal(verify_cmd_utf8_whole(s, 17), 17);
    assert_int_equal(verify_cmd_utf8_whole("plain", 5), 5);
}

static void test_parse_time(void **state)
{
    int64_t ms;
    (void)state;
    assert_int_equal(verify_cmd_parse_time("1684948070", &ms), 0);
    assert_int_equal(ms, 1684948070000LL);
    assert_int_equal(verify_cmd_parse_time("1684948070.5", &ms), 0);
    assert_int_equal(ms, 1684948070500LL);
    assert_int_equal(verify_cmd_parse_time("2023-05-24T17:07:50Z", &ms), 0);
    assert_int_equal(ms, 1684948070000LL);
    assert_int_equal(verify_cmd_parse_time("2023-05-24t17:07:50.582z", &ms), 0);
    assert_int_equal(ms, 1684948070582LL);
    assert_int_equal(verify_cmd_parse_time("2023-05-24T17:07:50.123456789Z", &ms), 0);
    assert_int_equal(ms, 1684948070123LL);
    assert_int_equal(verify_cmd_parse_time("2024-02-29T00:00:00Z", &ms), 0);
    assert_int_equal(ms, 1709164800000LL);
    assert_int_equal(verify_cmd_parse_time("1970-01-01T00:00:00Z", &ms), 0);
    assert_int_equal(ms, 0);

    const char *bad[] = {"",
                         "-5",
                         "12a",
                         "1.",
                         "2023-05-24T17:07:50",
                         "2023-05-24T17:07:50+00:00",
                         "2023-05-24 17:07:50Z",
                         "2023-02-29T00:00:00Z",
                         "2023-13-01T00:00:00Z",
                         "2023-05-24T24:00:00Z",
                         "2023-05-24T17:07:50.Z",
                         "2023-05-24T17:07:50.1234567890Z",
                         "99999999999999999999",
                         "2023-05-24T17:07:50Zjunk"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (verify_cmd_parse_time(bad[i], &ms) == 0)
            fail_msg("accepted \"%s\"", bad[i]);
    }
}

static void test_exit_codes(void **state)
{
    char real2[4096], real1[4096], cert6[4096], root[4096];
    char *err;
    (void)state;
    snprintf(real2, sizeof(real2), "%s", th_vector_path("real-2.cbor"));
    snprintf(real1, sizeof(real1), "%s", th_vector_path("real-1.cbor"));
    snprintf(cert6, sizeof(cert6), "%s", th_vector_path("bind-real-6-tls-cert.der"));
    snprintf(root, sizeof(root), "%s", th_vector_path("aws-nitro-root-g1.pem"));

    assert_int_equal(run((const char *[]){"--help", NULL}), 0);
    assert_int_equal(run((const char *[]){"--at", "1684948070", real2, NULL}), 0);
    assert_int_equal(
        run((const char *[]){"--root", root, "--at", "2023-05-24T17:07:50Z", real2, NULL}), 0);
    assert_int_equal(
        run((const char *[]){"--at", "1684948070", "--pcr",
                             "0=28de6557cce896cf8c580d8674fbc13c45c1a7636545ef022a01007336b8752b"
                             "9a1cd9ce69df2ecacc7696a1203b45c2",
                             real2, NULL}),
        0);

    /* Rejections: exit 1 and exactly one line on stderr. */
    assert_int_equal(run((const char *[]){real2, NULL}), 1); /* now: long expired */
    err = slurp(err_path);
    assert_true(strncmp(err, "rejected: chain: certificate expired", 36) == 0);
    assert_non_null(strchr(err, '\n'));
    assert_string_equal(strchr(err, '\n'), "\n");
    free(err);
    assert_int_equal(run((const char *[]){"--at", "1684358512", real1, NULL}), 1);
    err = slurp(err_path);
    assert_string_equal(err, "rejected: policy: debug-mode enclave (pcr0, pcr1, pcr2 all zero)\n");
    free(err);
    assert_int_equal(run((const char *[]){"--at", "1684358512", "--allow-debug", real1, NULL}), 0);
    assert_int_equal(
        run((const char *[]){"--at", "1684948070", "--pcr",
                             "pcr0=38de6557cce896cf8c580d8674fbc13c45c1a7636545ef022a01007336b875"
                             "2b9a1cd9ce69df2ecacc7696a1203b45c2",
                             real2, NULL}),
        1);
    err = slurp(err_path);
    assert_string_equal(err, "rejected: policy: pcrs match no measurement set (pcr0)\n");
    free(err);
    assert_int_equal(run((const char *[]){"--at", "1684948070", "--nonce", "00ff", real2, NULL}),
                     1);
    assert_int_equal(run((const char *[]){"--at", "1684948370", "--max-age", "1m", real2, NULL}),
                     1);
    assert_int_equal(run((const char *[]){"--at", "1684948000", "--skew", "0", real2, NULL}), 1);
    assert_int_equal(run((const char *[]){"--at", "1684948070", "--binding", "spki_der",
                                          "--peer-cert", cert6, real2, NULL}),
                     1);

    /* Usage and I/O errors: exit 2. */
    const char *usage[][8] = {
        {NULL},
        {real2, real2, NULL},
        {"--bogus", real2, NULL},
        {"--at", "yesterday", real2, NULL},
        {"--pcr", "32=00", real2, NULL},
        {"--pcr", "0=00", real2, NULL},
        {"--nonce", "abc", real2, NULL},
        {"--max-age", "5", real2, NULL},
        {"--binding", "spki_der", real2, NULL},
        {"--binding", "none", "--peer-cert", cert6, real2, NULL},
        {"--peer-cert", cert6, real2, NULL},
        {"--binding", "spki_der", "--peer-cert", real2, real2, NULL},
        {"/nonexistent/doc.cbor", NULL},
        {"--root", "/nonexistent/root.pem", real2, NULL},
        {"--at", NULL},
    };
    for (size_t i = 0; i < sizeof(usage) / sizeof(usage[0]); i++) {
        if (run(usage[i]) != 2)
            fail_msg("usage case %zu did not exit 2", i);
    }
}

static void test_json_report(void **state)
{
    char real6[4096], cert6[4096];
    json_error_t jerr;
    json_t *root;
    char *out;
    (void)state;
    snprintf(real6, sizeof(real6), "%s", th_vector_path("real-6.cbor"));
    snprintf(cert6, sizeof(cert6), "%s", th_vector_path("bind-real-6-tls-cert.der"));

    assert_int_equal(run((const char *[]){"--json", "--at", "1674047240", "--binding", "spki_der",
                                          "--peer-cert", cert6, real6, NULL}),
                     0);
    out = slurp(out_path);
    root = json_loads(out, 0, &jerr);
    if (root == NULL)
        fail_msg("not JSON: %s", jerr.text);
    assert_true(json_is_true(json_object_get(json_object_get(root, "verdict"), "accepted")));
    json_t *doc = json_object_get(root, "document");
    assert_string_equal(json_string_value(json_object_get(doc, "module_id")),
                        "i-0ec0e572c8263d8ff-enc0185c4fd382eeb25");
    assert_int_equal(json_integer_value(json_object_get(doc, "timestamp_ms")), 1674047239280LL);
    assert_string_equal(json_string_value(json_object_get(doc, "digest")), "SHA384");
    assert_int_equal(json_object_size(json_object_get(doc, "pcrs")), 16);
    assert_true(json_is_null(json_object_get(doc, "public_key")));
    assert_int_equal(strlen(json_string_value(json_object_get(doc, "user_data"))), 240);
    assert_int_equal(json_array_size(json_object_get(doc, "cabundle")), 4);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(doc, "cabundle"), 0), "subject")),
                        "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US");
    assert_non_null(json_object_get(json_object_get(doc, "certificate"), "not_after"));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(root, "check"), "binding")), "spki_der");
    json_decref(root);
    free(out);

    /* A rejected document still reports its decoded fields, marked unauthenticated. */
    assert_int_equal(run((const char *[]){"--json", real6, NULL}), 1);
    out = slurp(out_path);
    root = json_loads(out, 0, &jerr);
    assert_non_null(root);
    json_t *verdict = json_object_get(root, "verdict");
    assert_true(json_is_false(json_object_get(verdict, "accepted")));
    assert_string_equal(json_string_value(json_object_get(verdict, "stage")), "chain");
    assert_string_equal(json_string_value(json_object_get(verdict, "reason_id")), "chain_expired");
    assert_true(json_is_false(json_object_get(json_object_get(root, "document"), "authenticated")));
    json_decref(root);
    free(out);
}

static void test_stdin_and_base64(void **state)
{
    char path[] = "/tmp/attestproxy-b64-XXXXXX";
    size_t len;
    uint8_t *raw = th_read_vector("real-2.cbor", &len);
    char *text = malloc(4 * ((len + 2) / 3) + 1);
    int fd = mkstemp(path);
    int saved = dup(0);
    (void)state;

    int n = EVP_EncodeBlock((unsigned char *)text, raw, (int)len);
    assert_int_equal(write(fd, text, (size_t)n), n);
    close(fd);
    fd = open(path, O_RDONLY);
    dup2(fd, 0);
    assert_int_equal(run((const char *[]){"--at", "1684948070", "-", NULL}), 0);
    dup2(saved, 0);
    close(fd);
    close(saved);
    clearerr(stdin);
    unlink(path);
    free(text);
    free(raw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_time),       cmocka_unit_test(test_utf8_whole),
        cmocka_unit_test(test_exit_codes),       cmocka_unit_test(test_json_report),
        cmocka_unit_test(test_stdin_and_base64),
    };
    log_configure(LOG_LEVEL_ERROR, LOG_FORMAT_LOGFMT, NULL);
    return cmocka_run_group_tests(tests, setup, teardown);
}
