/* Unit tests for ops/sdnotify.c: the exact sd_notify datagrams (filesystem and abstract
 * NOTIFY_SOCKET), the watchdog timer, environment errors, closing, and LISTEN_FDS parsing with
 * real inherited fds (set up by dup2 in a forked child so the test process's own fds stay). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <cmocka.h>

#include "base/listenfds.h"
#include "ops/sdnotify.h"

static char tmpdir[] = "/tmp/test_sdnotify.XXXXXX";

struct fixture {
    uv_loop_t loop;
    int rx; /* the test's NOTIFY_SOCKET receiver */
    char path[108];
    struct sdnotify sn;
    int closed;
};

static int group_setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    return rmdir(tmpdir) == 0 ? 0 : -1;
}

static void clear_env(void)
{
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

/* Binds a datagram receiver at a filesystem path (abstract when `abstract`). */
static int bind_receiver(const char *name, bool abstract, char *env_value, size_t cap)
{
    struct sockaddr_un sa;
    socklen_t len;
    size_t n = strlen(name);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    assert_true(n + 1 < sizeof(sa.sun_path));
    if (abstract) {
        memcpy(sa.sun_path + 1, name, n);
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
        snprintf(env_value, cap, "@%s", name);
    } else {
        memcpy(sa.sun_path, name, n + 1);
        len = (socklen_t)sizeof(sa);
        snprintf(env_value, cap, "%s", name);
    }
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
    return fd;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char env[128];

    clear_env();
    assert_int_equal(uv_loop_init(&f->loop), 0);
    snprintf(f->path, sizeof(f->path), "%s/notify", tmpdir);
    f->rx = bind_receiver(f->path, false, env, sizeof(env));
    setenv("NOTIFY_SOCKET", env, 1);
    *state = f;
    return 0;
}

static void on_closed(struct sdnotify *sn)
{
    struct fixture *f = sn->data;
    f->closed++;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->sn.loop != NULL && !f->sn.closing) {
        f->sn.data = f;
        sdnotify_close(&f->sn, on_closed);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    close(f->rx);
    unlink(f->path);
    clear_env();
    free(f);
    return 0;
}

/* Receives one datagram (waiting at most 2 s) as a NUL-terminated string. */
static void recv_msg(int fd, char *buf, size_t cap)
{
    struct timeval tv = {2, 0};
    ssize_t n;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    n = recv(fd, buf, cap - 1, 0);
    assert_true(n >= 0);
    buf[n] = '\0';
}

static bool nothing_pending(int fd)
{
    char buf[16];
    return recv(fd, buf, sizeof(buf), MSG_DONTWAIT) == -1 && errno == EAGAIN;
}

static void expect_msg(struct fixture *f, const char *want)
{
    char buf[SDNOTIFY_MESSAGE_MAX + 16];
    recv_msg(f->rx, buf, sizeof(buf));
    assert_string_equal(buf, want);
}

static void test_messages_exact(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(sdnotify_init(&f->sn, &f->loop), 0);
    assert_true(sdnotify_enabled(&f->sn));
    assert_int_equal(sdnotify_config_error(&f->sn), 0);

    assert_int_equal(sdnotify_ready(&f->sn, NULL), 0);
    expect_msg(f, "READY=1");
    assert_int_equal(sdnotify_ready(&f->sn, "2 services listening"), 0);
    expect_msg(f, "READY=1\nSTATUS=2 services listening");
    assert_int_equal(sdnotify_stopping(&f->sn, NULL), 0);
    expect_msg(f, "STOPPING=1");
    assert_int_equal(sdnotify_stopping(&f->sn, "draining 3 exchanges"), 0);
    expect_msg(f, "STOPPING=1\nSTATUS=draining 3 exchanges");
    assert_int_equal(sdnotify_status(&f->sn, "attesting whisper"), 0);
    expect_msg(f, "STATUS=attesting whisper");
    assert_int_equal(sdnotify_watchdog(&f->sn), 0);
    expect_msg(f, "WATCHDOG=1");
    assert_int_equal(sdnotify_extend_timeout(&f->sn, 30000000), 0);
    expect_msg(f, "EXTEND_TIMEOUT_USEC=30000000");
    assert_int_equal(sdnotify_send(&f->sn, "FDSTORE=0"), 0);
    expect_msg(f, "FDSTORE=0");
    assert_true(nothing_pending(f->rx));
}

static uint64_t mono_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void test_reloading_carries_monotonic_usec(void **state)
{
    struct fixture *f = *state;
    char buf[256];
    uint64_t before;
    uint64_t after;
    unsigned long long got;
    char *end;
    const char *prefix = "RELOADING=1\nMONOTONIC_USEC=";

    assert_int_equal(sdnotify_init(&f->sn, &f->loop), 0);
    before = mono_usec();
    assert_int_equal(sdnotify_reloading(&f->sn, NULL), 0);
    after = mono_usec();
    recv_msg(f->rx, buf, sizeof(buf));
    assert_memory_equal(buf, prefix, strlen(prefix));
    got = strtoull(buf + strlen(prefix), &end, 10);
    assert_true(*end == '\0');
    assert_true(got >= before && got <= after);

    assert_int_equal(sdnotify_reloading(&f->sn, "reloading /etc/x.conf"), 0);
    recv_msg(f->rx, buf, sizeof(buf));
    assert_memory_equal(buf, prefix, strlen(prefix));
    strtoull(buf + strlen(prefix), &end, 10);
    assert_string_equal(end, "\nSTATUS=reloading /etc/x.conf");
}

static void test_status_is_sanitised_and_bounded(void **state)
{
    struct fixture *f = *state;
    char status[600];
    char want[SDNOTIFY_MESSAGE_MAX];

    assert_int_equal(sdnotify_init(&f->sn, &f->loop), 0);
    /* A newline in a status cannot smuggle a second assignment. */
    assert_int_equal(sdnotify_ready(&f->sn, "ok\nWATCHDOG=trigger\r\x01"), 0);
    expect_msg(f, "READY=1\nSTATUS=ok WATCHDOG=trigger  ");

    memset(status, 'x', sizeof(status) - 1);
    status[sizeof(status) - 1] = '\0';
    assert_int_equal(sdnotify_status(&f->sn, status), 0);
    memcpy(want, "STATUS=", 7);
    memset(want + 7, 'x', SDNOTIFY_STATUS_MAX);
    want[7 + SDNOTIFY_STATUS_MAX] = '\0';
    expect_msg(f, want);

    assert_int_equal(sdnotify_status(&f->sn, NULL), -EINVAL);
    assert_int_equal(sdnotify_send(&f->sn, ""), -EINVAL);
    {
        char big[SDNOTIFY_MESSAGE_MAX + 2];
        memset(big, 'A', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        assert_int_equal(sdnotify_send(&f->sn, big), -EINVAL);
    }
    assert_true(nothing_pending(f->rx));
}

static void test_abstract_socket(void **state)
{
    struct fixture *f = *state;
    char name[64];
    char env[80];
    int rx;
    char buf[64];

    snprintf(name, sizeof(name), "attestproxy-test-%ld", (long)getpid());
    rx = bind_receiver(name, true, env, sizeof(env));
    setenv("NOTIFY_SOCKET", env, 1);
    assert_int_equal(sdnotify_init(&f->sn, &f->loop), 0);
    assert_true(sdnotify_enabled(&f->sn));
    assert_int_equal(sdnotify_ready(&f->sn, NULL), 0);
    recv_msg(rx, buf, sizeof(buf));
    assert_string_equal(buf, "READY=1");
    assert_true(nothing_pending(f->rx));
    close(rx);
}

static void test_without_notify_socket_everything_is_a_noop(void **state)
{
    struct fixture *f = *state;

    unsetenv("NOTIFY_SOCKET");
    setenv("WATCHDOG_USEC", "1000000", 1);
    assert_int_equal(sdnotify_init(&f->sn, &f->loop), 0);
    assert_false(sdnotify_enabled(&f->sn));
    assert_int_equal(sdnotify_config_error(&f->sn), 0);
    assert_int_equal(sdnotify_ready(&f->sn, "x"), 0);
    assert_int_equal(sdnotify_reloading(&f->sn, NULL), 0);
    assert_int_equal(sdnotify_stopping(&f->sn, NULL), 0);
    assert_int_equal(sdnotify_watchdog(&f->sn), 0);
    /* No socket: the watchdog timer is not started, so the loop has nothing to wait for. */
    assert_int_equal(sdnotify_watchdog_start(&f->sn), 0);
    assert_false(uv_is_active((uv_handle_t *)&f->sn.watchdog_timer));
    assert_true(nothing_pending(f->rx));
}

static void test_bad_environment_is_reported_not_fatal(void **state)
{
    struct fixture *f = *state;
    const char *bad[] = {"relative/path", "@", "vsock:2:1234", "x"};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sdnotify sn;
        setenv("NOTIFY_SOCKET", bad[i], 1);
        assert_int_equal(sdnotify_init(&sn, &f->loop), 0);
        assert_false(sdnotify_enabled(&sn));
        assert_int_equal(sdnotify_config_error(&sn), -EINVAL);
        assert_int_equal(sdnotify_ready(&sn, NULL), 0);
        sn.data = f;
        sdnotify_close(&sn, on_closed);
        uv_run(&f->loop, UV_RUN_DEFAULT);
        assert_int_equal(f->closed, (int)i + 1);
    }

    /* A path longer than sun_path. */
    {
        struct sdnotify sn;
        char longpath[200];
        memset(longpath, 'a', sizeof(longpath) - 1);
        longpath[0] = '/';
        longpath[sizeof(longpath) - 1] = '\0';
        setenv("NOTIFY_SOCKET", longpath, 1);
        assert_int_equal(sdnotify_init(&sn, &f->loop), 0);
        assert_int_equal(sdnotify_config_error(&sn), -ENAMETOOLONG);
        sdnotify_close(&sn, NULL);
        uv_run(&f->loop, UV_RUN_DEFAULT);
    }

    /* A malformed WATCHDOG_USEC disables the watchdog and is reported. */
    {
        struct sdnotify sn;
        setenv("NOTIFY_SOCKET", f->path, 1);
        setenv("WATCHDOG_USEC", "10s", 1);
        assert_int_equal(sdnotify_init(&sn, &f->loop), 0);
        assert_true(sdnotify_enabled(&sn));
        assert_int_equal(sdnotify_config_error(&sn), -EINVAL);
        assert_int_equal(sdnotify_watchdog_usec(&sn), 0);
        sdnotify_close(&sn, NULL);
        uv_run(&f->loop, UV_RUN_DEFAULT);
    }
}

static void test_nobody_listening_returns_errno(void **state)
{
    struct fixture *f = *state;
    char path[160];

    snprintf(path, sizeof(path), "%s/nobody", tmpdir);
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(sdnotify_init(&f->sn, &f->loop), 0);
    assert_int_equal(sdnotify_ready(&f->sn, NULL), -ENOENT);
}

static void test_watchdog_pid_and_usec(void **state)
{
    struct fixture *f = *state;
    char pid[32];
    struct sdnotify sn;

    setenv("WATCHDOG_USEC", "4000000", 1);
    setenv("WATCHDOG_PID", "1", 1); /* another process's watchdog */
    assert_int_equal(sdnotify_init(&sn, &f->loop), 0);
    assert_int_equal(sdnotify_watchdog_usec(&sn), 0);
    assert_int_equal(sdnotify_config_error(&sn), 0);
    sdnotify_close(&sn, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);

    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    assert_int_equal(sdnotify_init(&f->sn, &f->loop), 0);
    assert_int_equal(sdnotify_watchdog_usec(&f->sn), 4000000);

    unsetenv("WATCHDOG_PID");
    assert_int_equal(sdnotify_init(&sn, &f->loop), 0);
    assert_int_equal(sdnotify_watchdog_usec(&sn), 4000000);
    sdnotify_close(&sn, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);

    setenv("WATCHDOG_USEC", "0", 1);
    assert_int_equal(sdnotify_init(&sn, &f->loop), 0);
    assert_int_equal(sdnotify_watchdog_usec(&sn), 0);
    assert_int_equal(sdnotify_watchdog_start(&sn), 0);
    assert_false(uv_is_active((uv_handle_t *)&sn.watchdog_timer));
    sdnotify_close(&sn, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* `sn` lives on this stack until its handle closed */
}

struct watch_run {
    struct fixture *f;
    uv_timer_t stop;
};

static void on_stop_timer(uv_timer_t *t)
{
    struct watch_run *w = t->data;
    w->f->sn.data = w->f;
    sdnotify_close(&w->f->sn, on_closed);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_watchdog_timer_pings_at_half_interval(void **state)
{
    struct fixture *f = *state;
    struct watch_run w;
    char buf[64];
    int pings = 0;

    setenv("WATCHDOG_USEC", "40000", 1); /* 40 ms: a ping every 20 ms */
    assert_int_equal(sdnotify_init(&f->sn, &f->loop), 0);
    assert_int_equal(sdnotify_watchdog_usec(&f->sn), 40000);
    assert_int_equal(sdnotify_watchdog_start(&f->sn), 0);
    assert_true(uv_is_active((uv_handle_t *)&f->sn.watchdog_timer));

    /* Let it run for 110 ms: pings at 0, 20, 40, 60, 80, 100 ms (6), give or take scheduling. */
    w.f = f;
    uv_timer_init(&f->loop, &w.stop);
    w.stop.data = &w;
    uv_timer_start(&w.stop, on_stop_timer, 110, 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->closed, 1);

    while (recv(f->rx, buf, sizeof(buf) - 1, MSG_DONTWAIT) > 0) {
        buf[8] = '\0';
        assert_string_equal(buf, "WATCHDOG");
        pings++;
        assert_true(pings < 100);
    }
    assert_true(pings >= 3);
    assert_true(pings <= 7);
}

static void test_watchdog_stop_and_close_semantics(void **state)
{
    struct fixture *f = *state;

    setenv("WATCHDOG_USEC", "1000000", 1);
    assert_int_equal(sdnotify_init(&f->sn, &f->loop), 0);
    assert_int_equal(sdnotify_watchdog_start(&f->sn), 0);
    sdnotify_watchdog_stop(&f->sn);
    assert_false(uv_is_active((uv_handle_t *)&f->sn.watchdog_timer));
    sdnotify_watchdog_stop(&f->sn); /* idempotent */

    f->sn.data = f;
    sdnotify_close(&f->sn, on_closed);
    sdnotify_close(&f->sn, on_closed); /* a second close is ignored */
    assert_int_equal(f->closed, 0);    /* done fires from the loop, not inline */
    /* After close nothing is sent, and nothing fails. */
    assert_int_equal(sdnotify_ready(&f->sn, NULL), 0);
    assert_false(sdnotify_enabled(&f->sn));
    assert_int_equal(sdnotify_watchdog_start(&f->sn), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->closed, 1);
    assert_true(nothing_pending(f->rx));
}

/* ---- LISTEN_FDS --------------------------------------------------------------------------------
 */

/* Checks inside the forked child: print the failing line and exit non-zero. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "child check failed at line %d: %s\n", __LINE__, #cond);               \
            _exit(1);                                                                              \
        }                                                                                          \
    } while (0)

static void run_in_child(void (*fn)(void))
{
    int status = 0;
    pid_t pid;

    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fn();
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static int tcp_listener(uint16_t *port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(listen(fd, 4) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static int unix_listener(const char *path, bool abstract)
{
    struct sockaddr_un sa;
    socklen_t len;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (abstract) {
        memcpy(sa.sun_path + 1, path, strlen(path));
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(path));
    } else {
        unlink(path);
        memcpy(sa.sun_path, path, strlen(path) + 1);
        len = sizeof(sa);
    }
    CHECK(bind(fd, (struct sockaddr *)&sa, len) == 0);
    CHECK(listen(fd, 4) == 0);
    return fd;
}

/* Moves `fd` to `target` without FD_CLOEXEC (as systemd passes them). */
static void place(int fd, int target)
{
    CHECK(dup2(fd, target) == target);
    if (fd != target)
        close(fd);
    CHECK((fcntl(target, F_GETFD) & FD_CLOEXEC) == 0);
}

static void set_listen_env(const char *count, const char *names)
{
    char pid[32];
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDS", count, 1);
    if (names != NULL)
        setenv("LISTEN_FDNAMES", names, 1);
    else
        unsetenv("LISTEN_FDNAMES");
}

static char child_unix_path[160];

static void child_parse_three(void)
{
    static struct listenfds lf;
    uint16_t port = 0;
    int pipefd[2];
    struct listen_addr want;
    char abstract_name[64];

    /* Create everything first on high fds, then place at 3, 4, 5, 6. */
    int t = tcp_listener(&port);
    int u = unix_listener(child_unix_path, false);
    snprintf(abstract_name, sizeof(abstract_name), "attestproxy-lfd-%ld", (long)getpid());
    int a = unix_listener(abstract_name, true);
    CHECK(pipe(pipefd) == 0);
    int moved[4];
    moved[0] = fcntl(t, F_DUPFD, 20);
    moved[1] = fcntl(u, F_DUPFD, 20);
    moved[2] = fcntl(a, F_DUPFD, 20);
    moved[3] = fcntl(pipefd[0], F_DUPFD, 20);
    close(t);
    close(u);
    close(a);
    close(pipefd[0]);
    close(pipefd[1]);
    for (int i = 0; i < 4; i++)
        place(moved[i], 3 + i);

    set_listen_env("4", "whisper:admin:abstract:stdin");
    CHECK(listenfds_parse(&lf, true) == 0);
    CHECK(getenv("LISTEN_PID") == NULL && getenv("LISTEN_FDS") == NULL &&
          getenv("LISTEN_FDNAMES") == NULL);
    CHECK(lf.count == 4);
    for (int i = 0; i < 4; i++) {
        CHECK(lf.fds[i].fd == 3 + i);
        CHECK((fcntl(3 + i, F_GETFD) & FD_CLOEXEC) != 0);
        CHECK(!lf.fds[i].taken);
    }
    CHECK(strcmp(lf.fds[0].name, "whisper") == 0);
    CHECK(lf.fds[0].kind == LISTENFD_TCP && lf.fds[0].listening);
    CHECK(strcmp(lf.fds[0].addr.host, "127.0.0.1") == 0 && lf.fds[0].addr.port == port);
    CHECK(!lf.fds[0].addr.is_unix);
    CHECK(strcmp(lf.fds[1].name, "admin") == 0);
    CHECK(lf.fds[1].kind == LISTENFD_UNIX && lf.fds[1].listening && lf.fds[1].addr.is_unix);
    CHECK(strcmp(lf.fds[1].addr.path, child_unix_path) == 0);
    CHECK(strcmp(lf.fds[2].name, "abstract") == 0 && lf.fds[2].kind == LISTENFD_UNIX);
    CHECK(lf.fds[2].addr.path[0] == '@' && strcmp(lf.fds[2].addr.path + 1, abstract_name) == 0);
    CHECK(strcmp(lf.fds[3].name, "stdin") == 0);
    CHECK(lf.fds[3].kind == LISTENFD_OTHER && !lf.fds[3].listening);
    CHECK(strcmp(listenfd_kind_name(lf.fds[3].kind), "other") == 0);
    CHECK(strcmp(listenfd_kind_name(lf.fds[0].kind), "tcp") == 0);
    CHECK(strcmp(listenfd_kind_name(lf.fds[1].kind), "unix") == 0);

    /* Matching configured addresses to inherited sockets. */
    memset(&want, 0, sizeof(want));
    snprintf(want.host, sizeof(want.host), "127.0.0.1");
    want.port = port;
    CHECK(listenfds_find(&lf, &want) == 0);
    want.port = (uint16_t)(port + 1);
    CHECK(listenfds_find(&lf, &want) == -ENOENT);
    want.port = port;
    snprintf(want.host, sizeof(want.host), "::1");
    CHECK(listenfds_find(&lf, &want) == -ENOENT);
    memset(&want, 0, sizeof(want));
    want.is_unix = true;
    snprintf(want.path, sizeof(want.path), "%s", child_unix_path);
    CHECK(listenfds_find(&lf, &want) == 1);
    CHECK(listenfds_find_name(&lf, "admin") == 1);
    CHECK(listenfds_find_name(&lf, "nope") == -ENOENT);

    /* Taking transfers ownership once; a taken fd is not found again nor closed. */
    CHECK(listenfds_take(&lf, 0) == 3);
    CHECK(listenfds_take(&lf, 0) == -EINVAL);
    CHECK(listenfds_take(&lf, 9) == -EINVAL);
    memset(&want, 0, sizeof(want));
    snprintf(want.host, sizeof(want.host), "127.0.0.1");
    want.port = port;
    CHECK(listenfds_find(&lf, &want) == -ENOENT);
    CHECK(listenfds_close_unused(&lf) == 3);
    CHECK(fcntl(3, F_GETFD) != -1);
    CHECK(fcntl(4, F_GETFD) == -1 && errno == EBADF);
    CHECK(fcntl(5, F_GETFD) == -1 && fcntl(6, F_GETFD) == -1);
    CHECK(listenfds_close_unused(&lf) == 0);
    close(3);
    unlink(child_unix_path);
}

static void test_listenfds_real_fds(void **state)
{
    (void)state;
    snprintf(child_unix_path, sizeof(child_unix_path), "%s/listen.sock", tmpdir);
    run_in_child(child_parse_three);
}

static void child_ipv6_and_names(void)
{
    static struct listenfds lf;
    struct sockaddr_in6 sa;
    socklen_t len = sizeof(sa);
    struct listen_addr want;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);

    CHECK(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = in6addr_loopback;
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0); /* the parent checked ::1 exists */
    CHECK(listen(fd, 1) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    place(fcntl(fd, F_DUPFD, 20), 3);
    close(fd);

    /* LISTEN_FDNAMES with the wrong number of names: every name is "unknown". */
    set_listen_env("1", "a:b");
    CHECK(listenfds_parse(&lf, false) == 0);
    CHECK(getenv("LISTEN_FDS") != NULL); /* not unset when not asked */
    CHECK(lf.count == 1 && strcmp(lf.fds[0].name, "unknown") == 0);
    CHECK(lf.fds[0].kind == LISTENFD_TCP && strcmp(lf.fds[0].addr.host, "::1") == 0);
    memset(&want, 0, sizeof(want));
    snprintf(want.host, sizeof(want.host), "0:0:0:0:0:0:0:1");
    want.port = ntohs(sa.sin6_port);
    CHECK(listenfds_find(&lf, &want) == 0);

    set_listen_env("1", NULL);
    CHECK(listenfds_parse(&lf, false) == 0);
    CHECK(strcmp(lf.fds[0].name, "unknown") == 0);
}

/* Whether this machine has an IPv6 loopback to bind (containers often have none). */
static bool ipv6_loopback_available(void)
{
    struct sockaddr_in6 sa;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    bool ok;

    if (fd < 0)
        return false;
    memset(&sa, 0, sizeof(sa));
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = in6addr_loopback;
    ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static void test_listenfds_ipv6_and_unknown_names(void **state)
{
    (void)state;
    /* Without ::1 there is nothing to test: say so in the results rather than pass. */
    if (!ipv6_loopback_available()) {
        print_message("no IPv6 loopback (::1) on this machine: skipped\n");
        skip();
    }
    run_in_child(child_ipv6_and_names);
}

static void child_errors(void)
{
    static struct listenfds lf;
    int fd;

    /* Not for us: another pid. Nothing touched, count 0. */
    setenv("LISTEN_PID", "1", 1);
    setenv("LISTEN_FDS", "1", 1);
    CHECK(listenfds_parse(&lf, false) == 0 && lf.count == 0);
    /* Absent variables. */
    unsetenv("LISTEN_PID");
    CHECK(listenfds_parse(&lf, false) == 0 && lf.count == 0);

    set_listen_env("abc", NULL);
    CHECK(listenfds_parse(&lf, false) == -EINVAL && lf.count == 0);
    set_listen_env("-1", NULL);
    CHECK(listenfds_parse(&lf, false) == -EINVAL);
    set_listen_env("1x", NULL);
    CHECK(listenfds_parse(&lf, false) == -EINVAL);
    setenv("LISTEN_PID", "12z", 1);
    CHECK(listenfds_parse(&lf, false) == -EINVAL);
    set_listen_env("100", NULL);
    CHECK(listenfds_parse(&lf, false) == -E2BIG);
    set_listen_env("99999999999999999999999", NULL);
    CHECK(listenfds_parse(&lf, true) == -EINVAL);
    CHECK(getenv("LISTEN_FDS") == NULL); /* unset even on error */

    /* A gap: fd 3 open, fd 4 closed. */
    fd = open("/dev/null", O_RDONLY);
    place(fd, 3);
    close(4);
    set_listen_env("2", NULL);
    CHECK(listenfds_parse(&lf, false) == -EBADF && lf.count == 0);
    /* LISTEN_FDS=0 is valid and empty. */
    set_listen_env("0", NULL);
    CHECK(listenfds_parse(&lf, false) == 0 && lf.count == 0);
    /* A plain file is "other". */
    set_listen_env("1", "file");
    CHECK(listenfds_parse(&lf, false) == 0 && lf.count == 1);
    CHECK(lf.fds[0].kind == LISTENFD_OTHER && !lf.fds[0].listening);
    close(3);
}

static void test_listenfds_errors(void **state)
{
    (void)state;
    run_in_child(child_errors);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_messages_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reloading_carries_monotonic_usec, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_is_sanitised_and_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abstract_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_without_notify_socket_everything_is_a_noop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_environment_is_reported_not_fatal, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_nobody_listening_returns_errno, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_pid_and_usec, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_timer_pings_at_half_interval, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_stop_and_close_semantics, setup, teardown),
        cmocka_unit_test(test_listenfds_real_fds),
        cmocka_unit_test(test_listenfds_ipv6_and_unknown_names),
        cmocka_unit_test(test_listenfds_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
