/* Unit tests for ops/admin.c: the admin server runs in-process on 127.0.0.1:0 (or a Unix
 * socket) on the test's loop; a client thread speaks raw HTTP to it with blocking sockets and
 * the test parses each response: endpoints, HEAD, 405/404/400/413/414/421/431, Host checks,
 * the strictness shared with the relay's parser, timeouts, the connection limit, socket
 * adoption, and a clean close (uv_loop_close == 0). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
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

#include "ops/admin.h"
#include "base/metrics.h"
#include "proxy/http1.h"

#define RESP_MAX 65536

static char tmpdir[] = "/tmp/test_admin.XXXXXX";

struct fixture {
    uv_loop_t loop;
    uv_async_t async;
    uv_check_t check;        /* after each poll: counts the loop's open streams */
    atomic_int open_streams; /* the listener plus one per accepted client (read by the client) */
    struct admin *admin;
    struct admin_source src;
    struct metrics *metrics;
    bool ready;
    int attestation_mode; /* 0: object, 1: NULL, 2: an array */
    int attestation_calls;
    bool is_unix;
    char path[160];
    int port;
    int closed;

    /* The client thread's work. */
    void (*script)(struct fixture *f);
    char resp[RESP_MAX];
    size_t resp_len;
    char resp2[RESP_MAX];
    size_t resp2_len;
    bool resp2_closed; /* the second connection ended (EOF or reset), not timed out */
    const char *request;
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

/* Copies a path that must fit (the test's paths are short). */
static void copy_path(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    assert_true(n < cap);
    memcpy(dst, src, n + 1);
}

static bool src_ready(void *ctx)
{
    struct fixture *f = ctx;
    return f->ready;
}

static json_t *src_attestation(void *ctx)
{
    struct fixture *f = ctx;
    f->attestation_calls++;
    if (f->attestation_mode == 1)
        return NULL;
    if (f->attestation_mode == 2)
        return json_array();
    return json_pack("{s:I,s:o,s:{s:{s:s,s:[{s:s,s:{s:s},s:s}],s:n}}}", "policy_generation",
                     (json_int_t)3, "generated_at", admin_json_time(1700000000123ull), "services",
                     "whisper", "policy_digest", "sha256:00ff", "pins", "pin", "sha256:abcd",
                     "pcrs", "0", "aa", "module_id", "i-0-enc0", "last_failure");
}

static uint64_t src_now(void *ctx)
{
    (void)ctx;
    return 1700000000000ull;
}

static void on_async(uv_async_t *a)
{
    uv_stop(a->loop);
}

static void count_stream(uv_handle_t *h, void *arg)
{
    int *n = arg;
    if ((h->type == UV_TCP || h->type == UV_NAMED_PIPE) && !uv_is_closing(h))
        (*n)++;
}

/* Publishes how many streams the loop holds, so that the client thread can wait for the server
 * to have accepted a connection instead of sleeping and hoping it did. */
static void on_check(uv_check_t *c)
{
    struct fixture *f = c->data;
    int n = 0;
    uv_walk(c->loop, count_stream, &n);
    atomic_store(&f->open_streams, n);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct metrics_service *ms;

    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_async_init(&f->loop, &f->async, on_async), 0);
    assert_int_equal(uv_check_init(&f->loop, &f->check), 0);
    f->check.data = f;
    assert_int_equal(uv_check_start(&f->check, on_check), 0);
    uv_unref((uv_handle_t *)&f->check); /* it must not keep the loop running by itself */
    f->metrics = metrics_new();
    ms = metrics_service(f->metrics, "whisper");
    metrics_inc_requests(ms, 200);
    metrics_set_pin_expiry(ms, 1700000030000ull);
    f->src.ctx = f;
    f->src.ready = src_ready;
    f->src.attestation = src_attestation;
    f->src.metrics = f->metrics;
    f->src.now_ms = src_now;
    *state = f;
    return 0;
}

static void on_admin_closed(void *arg)
{
    struct fixture *f = arg;
    f->closed++;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->admin != NULL) {
        admin_close(f->admin, on_admin_closed, f);
        admin_close(f->admin, on_admin_closed, f); /* idempotent */
    }
    uv_close((uv_handle_t *)&f->async, NULL);
    uv_close((uv_handle_t *)&f->check, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->closed, f->admin != NULL ? 1 : 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    metrics_free(f->metrics);
    free(f);
    return 0;
}

static void start_tcp(struct fixture *f, uint64_t timeout_ms, uint32_t max_clients)
{
    struct listen_addr addr;
    struct admin_options opt;

    memset(&addr, 0, sizeof(addr));
    snprintf(addr.host, sizeof(addr.host), "127.0.0.1");
    admin_options_init(&opt, &addr);
    opt.request_timeout_ms = timeout_ms;
    opt.max_clients = max_clients;
    assert_int_equal(admin_start(&f->loop, &opt, &f->src, &f->admin), 0);
    f->port = admin_port(f->admin);
    assert_true(f->port > 0);
}

/* ---- The client thread ----------------------------------------------------------------------- */

/* Waits up to 5 s until the server's loop holds at least `n` streams (its listener counts as
 * one); false when it never did. */
static bool wait_open_streams(struct fixture *f, int n)
{
    uint64_t deadline = uv_hrtime() + 5000000000ull;
    while (atomic_load(&f->open_streams) < n) {
        if (uv_hrtime() > deadline)
            return false;
        usleep(1000);
    }
    return true;
}

static int client_connect(struct fixture *f)
{
    struct timeval tv = {5, 0};
    int fd;

    if (f->is_unix) {
        struct sockaddr_un sa;
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        memset(&sa, 0, sizeof(sa));
        sa.sun_family = AF_UNIX;
        copy_path(sa.sun_path, sizeof(sa.sun_path), f->path);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
            close(fd);
            return -1;
        }
    } else {
        struct sockaddr_in sa;
        fd = socket(AF_INET, SOCK_STREAM, 0);
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)f->port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
            close(fd);
            return -1;
        }
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void send_all(int fd, const char *data, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
        if (w <= 0)
            return; /* the server may close early (431): the test checks the response */
        data += w;
        n -= (size_t)w;
    }
}

/* Reads until EOF (or error/timeout); returns the byte count. */
static size_t recv_all(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        ssize_t r;
        if (n + 1 >= cap)
            break;
        r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return n;
}

static void script_one_request(struct fixture *f)
{
    int fd = client_connect(f);
    if (fd < 0)
        return;
    send_all(fd, f->request, strlen(f->request));
    f->resp_len = recv_all(fd, f->resp, sizeof(f->resp));
    close(fd);
}

static void *client_main(void *arg)
{
    struct fixture *f = arg;
    f->script(f);
    uv_async_send(&f->async);
    return NULL;
}

/* Runs `script` on a thread while the loop serves; returns when the script finished. */
static void run_client(struct fixture *f, void (*script)(struct fixture *f))
{
    pthread_t t;
    f->script = script;
    f->resp_len = 0;
    f->resp[0] = '\0';
    f->resp2_len = 0;
    f->resp2[0] = '\0';
    assert_int_equal(pthread_create(&t, NULL, client_main, f), 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(pthread_join(t, NULL), 0);
}

static const char *exchange(struct fixture *f, const char *request)
{
    f->request = request;
    run_client(f, script_one_request);
    return f->resp;
}

/* ---- Response parsing ------------------------------------------------------------------------ */

static int status_of(const char *resp)
{
    if (strncmp(resp, "HTTP/1.1 ", 9) != 0)
        return -1;
    return (int)strtol(resp + 9, NULL, 10);
}

/* The value of header `name` (case-sensitive, as we send it), copied into `buf`; NULL if absent. */
static const char *header_of(const char *resp, const char *name, char *buf, size_t cap)
{
    const char *end = strstr(resp, "\r\n\r\n");
    const char *p = strstr(resp, "\r\n");
    size_t n = strlen(name);

    while (p != NULL && end != NULL && p < end) {
        p += 2;
        if (strncmp(p, name, n) == 0 && p[n] == ':' && p[n + 1] == ' ') {
            const char *eol = strstr(p, "\r\n");
            size_t vlen = (size_t)(eol - (p + n + 2));
            assert_true(vlen < cap);
            memcpy(buf, p + n + 2, vlen);
            buf[vlen] = '\0';
            return buf;
        }
        p = strstr(p, "\r\n");
    }
    return NULL;
}

static const char *body_of(const char *resp)
{
    const char *end = strstr(resp, "\r\n\r\n");
    assert_non_null(end);
    return end + 4;
}

static void expect_response(const char *resp, int status, const char *content_type,
                            const char *body)
{
    char buf[256];
    char len[32];

    if (status_of(resp) != status)
        fail_msg("want status %d, got: %.200s", status, resp);
    if (content_type != NULL) {
        assert_non_null(header_of(resp, "Content-Type", buf, sizeof(buf)));
        assert_string_equal(buf, content_type);
    }
    assert_non_null(header_of(resp, "Connection", buf, sizeof(buf)));
    assert_string_equal(buf, "close");
    assert_non_null(header_of(resp, "Cache-Control", buf, sizeof(buf)));
    assert_string_equal(buf, "no-store");
    assert_non_null(header_of(resp, "Content-Length", len, sizeof(len)));
    assert_int_equal(strtoul(len, NULL, 10), strlen(body_of(resp)));
    if (body != NULL)
        assert_string_equal(body_of(resp), body);
}

#define GET(path)  "GET " path " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
#define HEAD(path) "HEAD " path " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

/* ---- Tests ----------------------------------------------------------------------------------- */

static void test_healthz_and_head(void **state)
{
    struct fixture *f = *state;
    char buf[64];

    start_tcp(f, 0, 0);
    expect_response(exchange(f, GET("/healthz")), 200, "text/plain; charset=utf-8", "ok\n");
    expect_response(exchange(f, GET("/healthz?verbose=1")), 200, NULL, "ok\n");

    /* HEAD: the same head, Content-Length of the GET body, no body. */
    exchange(f, HEAD("/healthz"));
    assert_int_equal(status_of(f->resp), 200);
    assert_string_equal(header_of(f->resp, "Content-Length", buf, sizeof(buf)), "3");
    assert_string_equal(body_of(f->resp), "");
}

static void test_readyz_follows_callback(void **state)
{
    struct fixture *f = *state;

    start_tcp(f, 0, 0);
    f->ready = false;
    expect_response(exchange(f, GET("/readyz")), 503, "text/plain; charset=utf-8", "not ready\n");
    f->ready = true;
    expect_response(exchange(f, GET("/readyz")), 200, "text/plain; charset=utf-8", "ready\n");
}

static void test_metrics_exposition(void **state)
{
    struct fixture *f = *state;
    const char *body;

    start_tcp(f, 0, 0);
    exchange(f, GET("/metrics"));
    expect_response(f->resp, 200, "text/plain; version=0.0.4; charset=utf-8", NULL);
    body = body_of(f->resp);
    assert_non_null(strstr(body, "# TYPE attestproxy_requests_total counter\n"));
    assert_non_null(
        strstr(body, "attestproxy_requests_total{service=\"whisper\",code=\"200\"} 1\n"));
    /* The injected clock drives pin_expiry_seconds. */
    assert_non_null(strstr(body, "attestproxy_pin_expiry_seconds{service=\"whisper\"} 30.000\n"));

    /* Without a registry the endpoint does not exist. */
    admin_close(f->admin, on_admin_closed, f);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    f->admin = NULL;
    f->closed = 0;
    f->src.metrics = NULL;
    start_tcp(f, 0, 0);
    assert_int_equal(status_of(exchange(f, GET("/metrics"))), 404);
}

static void test_attestation_json(void **state)
{
    struct fixture *f = *state;
    char buf[64];
    json_t *doc;
    json_error_t err;

    start_tcp(f, 0, 0);
    exchange(f, GET("/attestation"));
    expect_response(f->resp, 200, "application/json", NULL);
    assert_string_equal(header_of(f->resp, "X-Content-Type-Options", buf, sizeof(buf)), "nosniff");
    doc = json_loads(body_of(f->resp), JSON_REJECT_DUPLICATES, &err);
    assert_non_null(doc);
    assert_int_equal(json_integer_value(json_object_get(doc, "policy_generation")), 3);
    assert_string_equal(json_string_value(json_object_get(doc, "generated_at")),
                        "2023-11-14T22:13:20.123Z");
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(
                json_object_get(json_object_get(json_object_get(doc, "services"), "whisper"),
                                "pins"),
                0),
            "module_id")),
        "i-0-enc0");
    json_decref(doc);
    assert_int_equal(f->attestation_calls, 1);

    /* No state yet: 503 with a JSON error. */
    f->attestation_mode = 1;
    exchange(f, GET("/attestation"));
    expect_response(f->resp, 503, "application/json",
                    "{\"error\":{\"code\":\"unavailable\",\"message\":\"attestation state is not "
                    "available yet\"}}\n");
    /* A callback bug (not an object) is a 500, and the reference is released (ASan checks). */
    f->attestation_mode = 2;
    assert_int_equal(status_of(exchange(f, GET("/attestation"))), 500);
    /* No callback at all. */
    f->src.attestation = NULL;
    admin_close(f->admin, on_admin_closed, f);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    f->admin = NULL;
    f->closed = 0;
    start_tcp(f, 0, 0);
    assert_int_equal(status_of(exchange(f, GET("/attestation"))), 503);
}

static void test_methods_and_paths(void **state)
{
    struct fixture *f = *state;
    char buf[64];

    start_tcp(f, 0, 0);
    exchange(f, "POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
    expect_response(f->resp, 405, NULL, "method not allowed\n");
    assert_string_equal(header_of(f->resp, "Allow", buf, sizeof(buf)), "GET, HEAD");
    assert_int_equal(status_of(exchange(f, "DELETE /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")),
                     405);
    expect_response(exchange(f, GET("/nope")), 404, NULL, "not found\n");
    expect_response(exchange(f, GET("/healthz/")), 404, NULL, NULL);
    expect_response(exchange(f, GET("/")), 404, NULL, NULL);
}

static void test_malformed_requests(void **state)
{
    struct fixture *f = *state;
    char big[ADMIN_REQUEST_MAX + 512];
    char url[1200];
    size_t n;

    start_tcp(f, 0, 0);
    assert_int_equal(status_of(exchange(f, "GARBAGE\r\n\r\n")), 400);
    assert_int_equal(status_of(exchange(f, "GET /healthz HTTP/1.1\nHost: x\n\n")), 400);
    /* Strict parsing: obs-fold, CL with TE, a control character in a header name. */
    assert_int_equal(
        status_of(exchange(f, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX: a\r\n b\r\n\r\n")),
        400);
    assert_int_equal(status_of(exchange(f, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
                                           "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"
                                           "\r\n0\r\n\r\n")),
                     400);
    assert_int_equal(status_of(exchange(f, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
                                           "X\x01Y: 1\r\n\r\n")),
                     400);
    /* A body is never accepted. */
    expect_response(exchange(f, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
                                "Content-Length: 5\r\n\r\nhello"),
                    413, NULL, NULL);
    /* Over-long URL, over-long head. */
    memset(url, 'a', sizeof(url));
    snprintf(big, sizeof(big), "GET /%.*s HTTP/1.1\r\nHost: localhost\r\n\r\n", (int)sizeof(url),
             url);
    expect_response(exchange(f, big), 414, NULL, NULL);
    n = (size_t)snprintf(big, sizeof(big), "GET /healthz HTTP/1.1\r\nHost: localhost\r\n");
    while (n + 40 < sizeof(big) - 1)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "X-Filler: %026d\r\n", 0);
    big[n] = '\0';
    expect_response(exchange(f, big), 431, NULL, "request too large\n");
}

/* The reason the proxy's parser gives for `req` (which it must refuse as malformed), fed whole
 * to a request parser with the admin API's limit; "" when it accepts the head. */
static void proxy_refusal(const char *req, char *why, size_t cap)
{
    static const struct http1_callbacks no_cbs = {NULL, NULL, NULL};
    struct http1_parser p;
    size_t used = 0;

    why[0] = '\0';
    assert_int_equal(http1_parser_init(&p, HTTP_REQUEST, ADMIN_REQUEST_MAX, ADMIN_REQUEST_MAX / 4,
                                       &no_cbs, NULL),
                     0);
    if (http1_parser_execute(&p, req, strlen(req), &used) == HTTP1_ERROR &&
        p.fail == HTTP1_FAIL_BAD_MESSAGE)
        snprintf(why, cap, "%s", p.fail_msg);
    http1_parser_free(&p);
}

/* One strict parser serves the relay and the admin API (proxy/http1.h): every head the proxy
 * refuses as malformed gets 400 here too, and the body names the proxy parser's own reason.
 * With its former llhttp wrapper the admin API answered 200 to a bare LF after the request
 * line, an empty field name and two spaces in the request line, and "bad request" to the rest. */
static void test_shares_proxy_strictness(void **state)
{
    static const char *const bad[] = {
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX: a\r\n b\r\n\r\n", /* obs-fold */
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\tb\r\n\r\n",        /* obs-fold, tab */
        "GET /healthz HTTP/1.1\r\nHost: localhost\nX: a\r\n\r\n",         /* bare LF */
        "GET /healthz HTTP/1.1\nHost: localhost\r\n\r\n",                 /* bare LF, start line */
        "GET /healthz HTTP/1.1\r\nHost: localhost\rX: a\r\n\r\n",         /* bare CR */
        "GET /healthz HTTP/1.1\r\nHost : localhost\r\n\r\n",              /* space before ':' */
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX\t: a\r\n\r\n",     /* tab before ':' */
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\n: a\r\n\r\n",        /* empty name */
        "GET  /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",              /* two spaces */
        "GET /healthz\x7f HTTP/1.1\r\nHost: localhost\r\n\r\n",           /* DEL in request line */
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\n"                    /* CL with TE */
        "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\n" /* CL twice */
        "Content-Length: 0\r\nContent-Length: 0\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX\x01Y: 1\r\n\r\n", /* CTL in a name */
    };
    struct fixture *f = *state;
    char why[128], want[160];

    start_tcp(f, 0, 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        proxy_refusal(bad[i], why, sizeof(why));
        if (why[0] == '\0')
            fail_msg("case %zu: the proxy's parser accepts it", i);
        snprintf(want, sizeof(want), "bad request: %s\n", why);
        exchange(f, bad[i]);
        if (status_of(f->resp) != 400 || strcmp(body_of(f->resp), want) != 0)
            fail_msg("case %zu: want 400 \"%s\", got: %.200s", i, why, f->resp);
        expect_response(f->resp, 400, "text/plain; charset=utf-8", want);
    }
    /* Trailing whitespace is not part of a field value (RFC 9110 5.5): the parser drops it, so
     * the Host check sees "localhost", as the service listeners' allow-list does. */
    expect_response(exchange(f, "GET /healthz HTTP/1.1\r\nHost: localhost \t\r\n\r\n"), 200, NULL,
                    "ok\n");
}

/* Sends f->request in two parts, split at f->split, with a pause between them. */
static size_t split_at;

static void script_split_request(struct fixture *f)
{
    int fd = client_connect(f);
    if (fd < 0)
        return;
    send_all(fd, f->request, split_at);
    usleep(50000);
    send_all(fd, f->request + split_at, strlen(f->request) - split_at);
    f->resp_len = recv_all(fd, f->resp, sizeof(f->resp));
    close(fd);
}

static void test_values_split_across_reads(void **state)
{
    struct fixture *f = *state;
    const char *plain = "GET /healthz HTTP/1.1\r\nHost: local";
    const char *folded = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX: a";

    start_tcp(f, 0, 0);
    /* A value cut by a read boundary is one value: "localhost". */
    f->request = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    split_at = strlen(plain);
    run_client(f, script_split_request);
    expect_response(f->resp, 200, NULL, "ok\n");
    /* A folded line is refused even when the fold arrives in the next read. */
    f->request = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX: a\r\n b\r\n\r\n";
    split_at = strlen(folded);
    run_client(f, script_split_request);
    assert_int_equal(status_of(f->resp), 400);
    split_at = strlen(folded) + 2;
    run_client(f, script_split_request);
    assert_int_equal(status_of(f->resp), 400);
}

static void test_host_header_rules(void **state)
{
    struct fixture *f = *state;
    static const char *const good[] = {"localhost", "LocalHost:9180", "127.0.0.1", "127.1.2.3:80",
                                       "[::1]",     "[::1]:9180",     "localhost."};
    static const char *const bad[] = {"evil.example", "evil.example:9180", "10.0.0.1",
                                      "[::2]:9180",   "localhost:abc",     "127.0.0.1.evil.example",
                                      "[::1]x"};
    char req[256];

    start_tcp(f, 0, 0);
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", good[i]);
        if (status_of(exchange(f, req)) != 200)
            fail_msg("Host %s refused: %.80s", good[i], f->resp);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
        if (status_of(exchange(f, req)) != 421)
            fail_msg("Host %s not refused: %.80s", bad[i], f->resp);
    }
    /* HTTP/1.1 requires Host; HTTP/1.0 may omit it; two Host headers are refused. */
    assert_int_equal(status_of(exchange(f, "GET /healthz HTTP/1.1\r\n\r\n")), 400);
    assert_int_equal(status_of(exchange(f, "GET /healthz HTTP/1.0\r\n\r\n")), 200);
    /* An HTTP/0.9 request line (no version) is refused, as on the service listeners. */
    assert_int_equal(status_of(exchange(f, "GET /healthz\r\n\r\n")), 400);
    assert_int_equal(
        status_of(exchange(f, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nHost: x\r\n\r\n")), 400);
}

static void script_partial_then_wait(struct fixture *f)
{
    int fd = client_connect(f);
    if (fd < 0)
        return;
    send_all(fd, "GET /healthz HTTP/1.1\r\nHost: loc", 32);
    /* The server must close it after its request timeout; we only read. */
    f->resp_len = recv_all(fd, f->resp, sizeof(f->resp));
    close(fd);
}

static void test_request_timeout_closes(void **state)
{
    struct fixture *f = *state;
    uint64_t t0;

    start_tcp(f, 150, 0);
    t0 = uv_hrtime();
    run_client(f, script_partial_then_wait);
    assert_int_equal(f->resp_len, 0); /* closed without a response */
    assert_true(uv_hrtime() - t0 >= 100000000ull);
    assert_true(uv_hrtime() - t0 < 4000000000ull);
}

static void script_two_clients(struct fixture *f)
{
    int a = client_connect(f);
    int b;
    if (a < 0)
        return;
    send_all(a, "GET /healthz HTTP/1.1\r\n", 23);
    /* The server must have accepted `a` (listener + a) before `b` arrives over the limit. */
    if (!wait_open_streams(f, 2)) {
        close(a);
        return; /* resp_len stays 0: the test fails on the missing response */
    }
    b = client_connect(f);
    if (b >= 0) {
        /* Over the limit: accepted and closed at once, not left open until the receive
         * timeout (5 s) ends the wait. */
        ssize_t r = recv(b, f->resp2, sizeof(f->resp2) - 1, 0);
        f->resp2_closed = r == 0 || (r < 0 && errno == ECONNRESET);
        f->resp2_len = r > 0 ? (size_t)r : 0;
        close(b);
    }
    send_all(a, "Host: localhost\r\n\r\n", 19);
    f->resp_len = recv_all(a, f->resp, sizeof(f->resp));
    close(a);
}

static void test_connection_limit(void **state)
{
    struct fixture *f = *state;

    start_tcp(f, 0, 1);
    f->resp2_closed = false;
    run_client(f, script_two_clients);
    assert_int_equal(f->resp2_len, 0);
    assert_true(f->resp2_closed);
    expect_response(f->resp, 200, NULL, "ok\n");
    /* The slot is free again. */
    expect_response(exchange(f, GET("/healthz")), 200, NULL, "ok\n");
}

/* A Unix socket bound at `path` (listening when `live`); returns its fd. */
static int unix_socket_at(const char *path, bool live)
{
    struct sockaddr_un sa;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    copy_path(sa.sun_path, sizeof(sa.sun_path), path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    if (live)
        assert_int_equal(listen(fd, 4), 0);
    return fd;
}

static void test_unix_socket(void **state)
{
    struct fixture *f = *state;
    struct listen_addr addr;
    struct admin_options opt;
    struct stat st;
    int fd;

    memset(&addr, 0, sizeof(addr));
    addr.is_unix = true;
    snprintf(addr.path, sizeof(addr.path), "%s/admin.sock", tmpdir);
    copy_path(f->path, sizeof(f->path), addr.path);

    /* A stale socket from a previous run is replaced. */
    close(unix_socket_at(addr.path, false));
    admin_options_init(&opt, &addr);
    assert_int_equal(admin_start(&f->loop, &opt, &f->src, &f->admin), 0);
    assert_true(admin_port(f->admin) < 0);
    assert_int_equal(stat(addr.path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0660);

    f->is_unix = true;
    /* No Host check on a Unix socket (no browser can reach it), but HTTP/1.1 still needs one. */
    expect_response(exchange(f, "GET /healthz HTTP/1.1\r\nHost: anything.example\r\n\r\n"), 200,
                    NULL, "ok\n");
    f->ready = true;
    expect_response(exchange(f, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"), 200, NULL, "ready\n");

    admin_close(f->admin, on_admin_closed, f);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->closed, 1);
    assert_int_equal(stat(addr.path, &st), -1); /* unlinked on close */
    f->admin = NULL;
    f->closed = 0;

    /* A regular file at the path is never removed: start fails, the file stays. */
    fd = open(addr.path, O_CREAT | O_WRONLY, 0600);
    close(fd);
    assert_int_equal(admin_start(&f->loop, &opt, &f->src, &f->admin), UV_EEXIST);
    assert_null(f->admin);
    uv_run(&f->loop, UV_RUN_NOWAIT); /* the failed listener handle closes */
    assert_int_equal(stat(addr.path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    unlink(addr.path);

    /* Nor is a live socket (a service listener's): it keeps accepting, the admin fails. */
    {
        struct stat before;
        fd = unix_socket_at(addr.path, true);
        assert_int_equal(stat(addr.path, &before), 0);
        assert_int_equal(admin_start(&f->loop, &opt, &f->src, &f->admin), UV_EADDRINUSE);
        assert_null(f->admin);
        uv_run(&f->loop, UV_RUN_NOWAIT);
        assert_int_equal(stat(addr.path, &st), 0);
        assert_int_equal(st.st_ino, before.st_ino); /* the same socket file, not replaced */
        close(fd);
        unlink(addr.path);
    }
}

static int tcp_listen_fd(uint32_t addr)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 8), 0);
    return fd;
}

static void test_adopted_fd_and_refused_addresses(void **state)
{
    struct fixture *f = *state;
    struct listen_addr addr;
    struct admin_options opt;
    struct admin *a = NULL;
    int fd;

    /* Socket activation: an inherited loopback listener is adopted. */
    fd = tcp_listen_fd(INADDR_LOOPBACK);
    admin_options_init(&opt, NULL);
    opt.fd = fd;
    assert_int_equal(admin_start(&f->loop, &opt, &f->src, &f->admin), 0);
    f->port = admin_port(f->admin);
    expect_response(exchange(f, GET("/healthz")), 200, NULL, "ok\n");

    /* A non-loopback inherited socket is refused and closed. */
    fd = tcp_listen_fd(INADDR_ANY);
    opt.fd = fd;
    assert_int_equal(admin_start(&f->loop, &opt, &f->src, &a), -EINVAL);
    assert_null(a);
    assert_int_equal(fcntl(fd, F_GETFD), -1);

    /* Non-loopback and malformed addresses are refused. */
    memset(&addr, 0, sizeof(addr));
    snprintf(addr.host, sizeof(addr.host), "0.0.0.0");
    admin_options_init(&opt, &addr);
    assert_int_equal(admin_start(&f->loop, &opt, &f->src, &a), -EINVAL);
    snprintf(addr.host, sizeof(addr.host), "::");
    admin_options_init(&opt, &addr);
    assert_int_equal(admin_start(&f->loop, &opt, &f->src, &a), -EINVAL);
    snprintf(addr.host, sizeof(addr.host), "not-an-ip");
    admin_options_init(&opt, &addr);
    assert_true(admin_start(&f->loop, &opt, &f->src, &a) < 0);
    /* The port in use: UV_EADDRINUSE, nothing left open (teardown checks the loop). */
    snprintf(addr.host, sizeof(addr.host), "127.0.0.1");
    addr.port = (uint16_t)f->port;
    admin_options_init(&opt, &addr);
    assert_int_equal(admin_start(&f->loop, &opt, &f->src, &a), UV_EADDRINUSE);
    assert_null(a);
}

static void script_connect_and_hold(struct fixture *f)
{
    int fd = client_connect(f);
    if (fd < 0)
        return;
    send_all(fd, "GET /he", 7);
    /* Signal the loop (via the async in client_main) while this connection stays open. */
    f->resp_len = (size_t)fd;
}

static void test_close_with_client_in_flight(void **state)
{
    struct fixture *f = *state;
    char buf[16];

    start_tcp(f, 0, 0);
    run_client(f, script_connect_and_hold);
    /* Let the server accept and read the partial request. */
    for (int i = 0; i < 20; i++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(5000);
    }
    admin_close(f->admin, on_admin_closed, f);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->closed, 1);
    f->admin = NULL;
    f->closed = 0;
    /* The held connection sees EOF. */
    assert_true(recv((int)f->resp_len, buf, sizeof(buf), 0) <= 0);
    close((int)f->resp_len);
}

static void test_json_time(void **state)
{
    json_t *t;
    (void)state;
    t = admin_json_time(1700000000123ull);
    assert_string_equal(json_string_value(t), "2023-11-14T22:13:20.123Z");
    json_decref(t);
    t = admin_json_time(0);
    assert_string_equal(json_string_value(t), "1970-01-01T00:00:00.000Z");
    json_decref(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_healthz_and_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readyz_follows_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_exposition, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attestation_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_methods_and_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shares_proxy_strictness, setup, teardown),
        cmocka_unit_test_setup_teardown(test_values_split_across_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_header_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_timeout_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unix_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adopted_fd_and_refused_addresses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_client_in_flight, setup, teardown),
        cmocka_unit_test(test_json_time),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
