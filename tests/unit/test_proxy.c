/*
 * Unit tests for proxy/proxy.c and proxy/listener.c on a real loop: start binds TCP and Unix
 * listeners (mode applied, stale sockets replaced, foreign files and live sockets refused),
 * the loopback rule is enforced again at bind, reload stops removed services, shutdown closes
 * every handle and calls `done` once, so that uv_loop_close() succeeds. A connection accepted
 * while memory runs out is taken on the next try (calloc is wrapped here, see meson.build).
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
#include <netinet/in.h>
#include <poll.h>

#include "base/config.h"
#include "app/daemon.h"
#include "base/log.h"
#include "base/metrics.h"
#include "proxy/listener.h"
#include "proxy/pool.h"
#include "proxy/proxy.h"
#include "proxy/proxy_internal.h"

struct fixture {
    char dir[64];
    char conf[128];
    char sock[128];
    uint16_t port;
    uv_loop_t loop;
    struct config *cfg;
    struct verifier *verifier; /* none: nothing here attests */
    struct metrics *metrics;
    struct proxy *proxy;
    struct proxy_env env;
    int done_calls;
};

static struct sockaddr_in loopback(uint16_t port)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons(port);
    return sin;
}

static uint16_t free_port(void)
{
    struct sockaddr_in sin = loopback(0);
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

static void write_config(struct fixture *f, const char *extra)
{
    FILE *fp = fopen(f->conf, "w");
    assert_non_null(fp);
    fprintf(fp,
            "[daemon]\nlog_level = error\nshutdown_timeout = 2s\n\n"
            "[service demo]\nlisten = 127.0.0.1:%u\nlisten = unix:%s\nunix_mode = 0640\n"
            "upstream = 127.0.0.1:9\nmeasurement = pcr0=%096d\n%s",
            f->port, f->sock, 1, extra);
    fclose(fp);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[CONFIG_ERROR_MAX];
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_proxy.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->conf, sizeof(f->conf), "%s/a.conf", f->dir);
    snprintf(f->sock, sizeof(f->sock), "%s/demo.sock", f->dir);
    f->port = free_port();
    write_config(f, "");
    log_configure(LOG_LEVEL_ERROR, LOG_FORMAT_LOGFMT, NULL);
    assert_int_equal(config_load(f->conf, &f->cfg, err, sizeof(err)), 0);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->metrics = metrics_new();
    assert_non_null(f->metrics);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    assert_null(f->proxy);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    config_free(f->cfg);
    metrics_free(f->metrics);
    unlink(f->sock);
    unlink(f->conf);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void on_done(void *ctx)
{
    struct fixture *f = ctx;
    f->proxy = NULL;
    f->done_calls++;
}

/* proxy_start() with the fixture as the proxy's environment. */
static int start(struct fixture *f)
{
    memset(&f->env, 0, sizeof(f->env));
    f->env.loop = &f->loop;
    f->env.cfg = &f->cfg;
    f->env.verifier = &f->verifier;
    f->env.metrics = f->metrics;
    f->env.ctx = f;
    return proxy_start(&f->env, &f->proxy);
}

static void stop(struct fixture *f)
{
    proxy_shutdown(f->proxy, on_done);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->done_calls, 1);
}

/* A connected socket to 127.0.0.1:port, or -1. */
static int tcp_open(uint16_t port)
{
    struct sockaddr_in sin = loopback(port);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0)
        return fd;
    close(fd);
    return -1;
}

static bool tcp_accepts(uint16_t port)
{
    int fd = tcp_open(port);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

static int unix_listen(const char *path)
{
    struct sockaddr_un sun;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, strlen(path));
    assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    return fd;
}

/* Linked with -Wl,--wrap=calloc: the daemon's calloc calls come here. */
static bool fail_calloc;
void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size)
{
    return fail_calloc ? NULL : __real_calloc(n, size);
}

static int tcp_connect(uint16_t port)
{
    int fd = tcp_open(port);
    assert_true(fd >= 0);
    return fd;
}

/* Runs the loop until `fd` has something to read (at most ~3 s); returns what came. */
static ssize_t answer_within(struct fixture *f, int fd, char *buf, size_t cap)
{
    for (int i = 0; i < 300; i++) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        uv_run(&f->loop, UV_RUN_NOWAIT);
        if (poll(&pfd, 1, 10) == 1)
            return recv(fd, buf, cap, 0);
    }
    return -1;
}

/* The batching sleep: after a busy pass, not after a lone read, nor after a pass so busy that
 * the events had gathered already. */
static void test_batch_waits_only_after_a_moderately_busy_pass(void **state)
{
    (void)state;
    /* Many exchanges in flight: a pass of 2 to 15 reads waits. */
    assert_false(proxy__batch_waits(0, 64));
    assert_false(proxy__batch_waits(1, 64));
    assert_true(proxy__batch_waits(2, 64));
    assert_true(proxy__batch_waits(15, 64));
    assert_false(proxy__batch_waits(16, 64));
    assert_false(proxy__batch_waits(1000, 64));
    /* Few in flight: never (the wait would delay every client: 4 and 16 connections). */
    assert_false(proxy__batch_waits(2, 0));
    assert_false(proxy__batch_waits(8, 16));
    assert_false(proxy__batch_waits(8, 31));
    assert_true(proxy__batch_waits(8, 32));
}

/* The pool's purge rule (pool.h): demand is the peak in use, or the decaying estimate of it;
 * half of the connections beyond demand close per interval, never the ones demand needs. */
static void test_pool_purge_releases_a_burst_gradually(void **state)
{
    /* 64 connections busy during one interval, then all idle: what stays after each purge. */
    static const size_t after[] = {64, 64, 48, 32, 20, 12, 7, 4, 2, 1, 1};
    size_t est = 0, idle = 0, peak = 64, in_use = 64;
    (void)state;
    for (size_t i = 0; i < sizeof(after) / sizeof(after[0]); i++) {
        idle -= pool_purge_count(in_use, idle, peak, &est);
        assert_int_equal(idle + in_use, after[i]);
        if (i == 0) {
            idle = 64; /* the burst ends: every connection goes back to the pool */
            in_use = 0;
        }
        peak = in_use;
    }
    /* Steady demand keeps every connection it uses, and the surplus never closes all at once. */
    est = 0;
    assert_int_equal(pool_purge_count(40, 24, 64, &est), 0);
    assert_int_equal(est, 64);
    est = 0;
    assert_int_equal(pool_purge_count(0, 1000, 0, &est), 500);
    assert_int_equal(pool_purge_count(0, 1, 0, &est), 0);
    est = 0;
    assert_int_equal(pool_purge_count(0, 3, 0, &est), 1);
}

static void test_accept_is_retried_after_out_of_memory(void **state)
{
    struct fixture *f = *state;
    const char bad[] = "BAD\r\n\r\n"; /* answered 400 by the daemon itself */
    char buf[512];
    int fd, fd2;
    assert_int_equal(start(f), 0);
    fail_calloc = true;
    fd = tcp_connect(f->port);
    assert_int_equal(send(fd, bad, sizeof(bad) - 1, 0), (ssize_t)(sizeof(bad) - 1));
    for (int i = 0; i < 5; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT); /* the accept finds no memory for the client */
    fail_calloc = false;
    /* Taken by the retry (100 ms later): it is answered, and the listener goes on accepting. */
    assert_true(answer_within(f, fd, buf, sizeof(buf)) > 12);
    assert_memory_equal(buf, "HTTP/1.1 400", 12);
    fd2 = tcp_connect(f->port);
    assert_int_equal(send(fd2, bad, sizeof(bad) - 1, 0), (ssize_t)(sizeof(bad) - 1));
    assert_true(answer_within(f, fd2, buf, sizeof(buf)) > 12);
    assert_memory_equal(buf, "HTTP/1.1 400", 12);
    close(fd);
    close(fd2);
    stop(f);
}

static void test_start_binds_and_shutdown_closes_everything(void **state)
{
    struct fixture *f = *state;
    struct stat st;
    assert_int_equal(start(f), 0);
    assert_non_null(f->proxy);
    assert_true(tcp_accepts(f->port));
    assert_int_equal(stat(f->sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0640);
    uv_run(&f->loop, UV_RUN_NOWAIT); /* accept and see the probe close */
    stop(f);
    /* The socket file we created is gone; the port is free again. */
    assert_int_equal(stat(f->sock, &st), -1);
    assert_false(tcp_accepts(f->port));
}

static void test_non_loopback_refused_at_bind(void **state)
{
    struct fixture *f = *state;
    struct service_config *svc = &f->cfg->services[0];
    /* As if the loader had let it through: the listener checks again. */
    snprintf(svc->listen[0].host, sizeof(svc->listen[0].host), "0.0.0.0");
    assert_int_equal(start(f), -EPERM);
    stop(f);
    /* allow_remote without a token is not enough either. */
    svc->allow_remote = true;
    f->done_calls = 0;
    assert_int_equal(start(f), -EPERM);
    stop(f);
}

static void test_stale_socket_is_replaced(void **state)
{
    struct fixture *f = *state;
    int fd = unix_listen(f->sock); /* bound, never listening, then closed: stale */
    close(fd);
    assert_int_equal(start(f), 0);
    stop(f);
}

static void test_live_socket_and_foreign_file_are_refused(void **state)
{
    struct fixture *f = *state;
    int fd = unix_listen(f->sock);
    FILE *fp;
    assert_int_equal(listen(fd, 1), 0);
    assert_int_equal(start(f), -EADDRINUSE);
    stop(f);
    close(fd);
    unlink(f->sock);
    fp = fopen(f->sock, "w");
    assert_non_null(fp);
    fclose(fp);
    f->done_calls = 0;
    assert_int_equal(start(f), -EEXIST);
    stop(f);
    /* A file that is not ours is left alone. */
    assert_int_equal(access(f->sock, F_OK), 0);
}

static void test_reload_removing_the_service_stops_listening(void **state)
{
    struct fixture *f = *state;
    char err[CONFIG_ERROR_MAX];
    struct config *old = f->cfg, *fresh = NULL;
    FILE *fp;
    uint16_t port2 = free_port();

    assert_int_equal(start(f), 0);
    fp = fopen(f->conf, "w");
    assert_non_null(fp);
    fprintf(fp,
            "[daemon]\nlog_level = error\n\n[service other]\nlisten = 127.0.0.1:%u\n"
            "upstream = 127.0.0.1:9\nmeasurement = pcr0=%096d\n",
            port2, 2);
    fclose(fp);
    assert_int_equal(config_load(f->conf, &fresh, err, sizeof(err)), 0);
    f->cfg = fresh;
    proxy_reload(f->proxy, old, false); /* takes ownership of `old` */
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_false(tcp_accepts(f->port));
    assert_true(tcp_accepts(port2));
    assert_int_equal(access(f->sock, F_OK), -1);
    assert_false(proxy_service_attested(f->proxy, "demo"));
    assert_false(proxy_service_attested(f->proxy, "other"));
    stop(f);
}

/* A second shutdown while the first drains does nothing: `done` runs once. */
static void test_shutdown_twice_calls_done_once(void **state)
{
    struct fixture *f = *state;
    struct proxy *p;
    assert_int_equal(start(f), 0);
    p = f->proxy;
    proxy_shutdown(p, on_done);
    proxy_shutdown(p, on_done);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(f->done_calls, 1);
}

static void test_listener_helpers(void **state)
{
    struct listen_addr a;
    char out[64];
    (void)state;
    memset(&a, 0, sizeof(a));
    snprintf(a.host, sizeof(a.host), "127.0.0.2");
    a.port = 8080;
    assert_true(config_listen_is_loopback(&a));
    config_listen_describe(&a, out, sizeof(out));
    assert_string_equal(out, "127.0.0.2:8080");
    snprintf(a.host, sizeof(a.host), "::1");
    assert_true(config_listen_is_loopback(&a));
    config_listen_describe(&a, out, sizeof(out));
    assert_string_equal(out, "[::1]:8080");
    snprintf(a.host, sizeof(a.host), "10.0.0.1");
    assert_false(config_listen_is_loopback(&a));
    snprintf(a.host, sizeof(a.host), "::");
    assert_false(config_listen_is_loopback(&a));
    snprintf(a.host, sizeof(a.host), "128.0.0.1");
    assert_false(config_listen_is_loopback(&a));
    a.is_unix = true;
    snprintf(a.path, sizeof(a.path), "/run/x.sock");
    assert_true(config_listen_is_loopback(&a));
    config_listen_describe(&a, out, sizeof(out));
    assert_string_equal(out, "unix:/run/x.sock");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_start_binds_and_shutdown_closes_everything, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_non_loopback_refused_at_bind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_socket_is_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_socket_and_foreign_file_are_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reload_removing_the_service_stops_listening, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_twice_calls_done_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_accept_is_retried_after_out_of_memory, setup,
                                        teardown),
        cmocka_unit_test(test_batch_waits_only_after_a_moderately_busy_pass),
        cmocka_unit_test(test_pool_purge_releases_a_burst_gradually),
        cmocka_unit_test(test_listener_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
