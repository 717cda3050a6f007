/*
 * Unit tests for base/file.c: whole-file reads (bounded, one byte past the limit shown,
 * FILE_REGULAR refusing what is not a regular file), the stale-socket check (a live socket
 * is kept and never waited on) and atomic replacement (mode, old or new
 * content and nothing between, the temporary file gone after a failure).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/file.h"

static char dir[] = "/tmp/test_file.XXXXXX";

static void path_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

static void put(const char *name, const char *text)
{
    char p[256];
    FILE *f;
    path_of(p, sizeof(p), name);
    f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_read_whole_and_bounded(void **state)
{
    char p[256];
    uint8_t *data = NULL;
    size_t len = 0;
    (void)state;
    put("ten", "0123456789");
    path_of(p, sizeof(p), "ten");
    assert_int_equal(file_read(p, 10, FILE_REGULAR, &data, &len), 0);
    assert_int_equal(len, 10);
    assert_memory_equal(data, "0123456789", 10);
    free(data);
    /* One byte past the limit is read, so that the caller sees the input is too large. */
    assert_int_equal(file_read(p, 4, 0, &data, &len), 0);
    assert_int_equal(len, 5);
    free(data);
    put("empty", "");
    path_of(p, sizeof(p), "empty");
    assert_int_equal(file_read(p, 4, FILE_REGULAR, &data, &len), 0);
    assert_int_equal(len, 0);
    free(data);
    path_of(p, sizeof(p), "missing");
    assert_int_equal(file_read(p, 4, 0, &data, &len), -ENOENT);
}

static void test_regular_only_refuses_directories_and_fifos(void **state)
{
    char p[256];
    uint8_t *data = NULL;
    size_t len = 0;
    (void)state;
    assert_int_equal(file_read(dir, 4, FILE_REGULAR, &data, &len), -EINVAL);
    path_of(p, sizeof(p), "fifo");
    assert_int_equal(mkfifo(p, 0600), 0);
    /* Refused at once: no writer is waited for. */
    assert_int_equal(file_read(p, 4, FILE_REGULAR, &data, &len), -EINVAL);
}

static void test_stale_socket_cleared_live_one_kept(void **state)
{
    char p[256];
    struct sockaddr_un sa;
    int fd;
    (void)state;
    assert_int_equal(file_clear_stale_socket("/nonexistent-dir/x.sock"), 0); /* free */
    path_of(p, sizeof(p), "sock");
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    assert_true(strlen(p) < sizeof(sa.sun_path));
    memcpy(sa.sun_path, p, strlen(p) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    /* Live: listening, and a backlog of 0 filled by a first connection does not block. */
    assert_int_equal(listen(fd, 0), 0);
    assert_int_equal(file_clear_stale_socket(p), -EADDRINUSE);
    assert_int_equal(file_clear_stale_socket(p), -EADDRINUSE);
    assert_int_equal(access(p, F_OK), 0);
    /* Stale: nobody accepts any more. */
    close(fd);
    assert_int_equal(file_clear_stale_socket(p), 0);
    assert_int_equal(access(p, F_OK), -1);
    /* Not a socket: left alone. */
    put("plain", "x");
    path_of(p, sizeof(p), "plain");
    assert_int_equal(file_clear_stale_socket(p), -EEXIST);
}

static void test_fopen_regular_refuses_fifos_and_directories(void **state)
{
    char p[256], line[16];
    FILE *f;
    (void)state;
    put("conf", "[daemon]\n");
    path_of(p, sizeof(p), "conf");
    f = file_fopen_regular(p);
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof(line), f));
    assert_string_equal(line, "[daemon]\n");
    fclose(f);
    errno = 0;
    assert_null(file_fopen_regular(dir));
    assert_int_equal(errno, EISDIR);
    path_of(p, sizeof(p), "fifo2");
    assert_int_equal(mkfifo(p, 0600), 0);
    errno = 0;
    assert_null(file_fopen_regular(p)); /* at once: no writer is waited for */
    assert_int_equal(errno, EINVAL);
    assert_string_equal(file_strerror(EINVAL), "not a regular file");
}

static void test_atomic_write_replaces_with_mode(void **state)
{
    char p[256], tmp[256];
    uint8_t *data = NULL;
    size_t len = 0;
    struct stat st;
    (void)state;
    path_of(p, sizeof(p), "state");
    path_of(tmp, sizeof(tmp), "state.tmp");
    assert_int_equal(file_write_atomic(p, tmp, "first", 5, 0600, true), 0);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(file_write_atomic(p, tmp, "second!", 7, 0600, false), 0);
    assert_int_equal(file_read(p, 64, FILE_REGULAR, &data, &len), 0);
    assert_int_equal(len, 7);
    assert_memory_equal(data, "second!", 7);
    free(data);
    assert_int_equal(access(tmp, F_OK), -1);
}

static void test_atomic_write_failure_keeps_the_old_file(void **state)
{
    char p[256], tmp[256];
    uint8_t *data = NULL;
    size_t len = 0;
    (void)state;
    path_of(p, sizeof(p), "kept");
    path_of(tmp, sizeof(tmp), "kept.tmp");
    assert_int_equal(file_write_atomic(p, tmp, "old", 3, 0600, true), 0);
    /* The temporary file cannot be made: nothing changes. */
    assert_int_equal(file_write_atomic(p, "/nonexistent-dir/x.tmp", "new", 3, 0600, true), -ENOENT);
    assert_int_equal(file_read(p, 64, 0, &data, &len), 0);
    assert_memory_equal(data, "old", 3);
    free(data);
    /* A rename over a directory fails after the write: the temporary file is removed. */
    path_of(p, sizeof(p), "adir");
    assert_int_equal(mkdir(p, 0700), 0);
    assert_true(file_write_atomic(p, tmp, "new", 3, 0600, true) < 0);
    assert_int_equal(access(tmp, F_OK), -1);
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    char cmd[300];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_whole_and_bounded),
        cmocka_unit_test(test_regular_only_refuses_directories_and_fifos),
        cmocka_unit_test(test_stale_socket_cleared_live_one_kept),
        cmocka_unit_test(test_fopen_regular_refuses_fifos_and_directories),
        cmocka_unit_test(test_atomic_write_replaces_with_mode),
        cmocka_unit_test(test_atomic_write_failure_keeps_the_old_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
