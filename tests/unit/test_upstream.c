/*
 * Unit tests for proxy/upstream.c, the trust gate's write side: upstream_write() takes bytes only
 * in UP_BUSY (an exchange the gate admitted) and UP_ATTESTING (attest.c's evidence request),
 * and refuses them with -EPERM in every other state without staging, encrypting, queueing or
 * sending anything. The connection under test is real: a TCP connection on 127.0.0.1 opened
 * into a uv_tcp_t on a real loop, and a finished TLS handshake with an in-process OpenSSL
 * server, so that an allowed write can be followed to the server's plaintext and a refused one
 * shown to have left no byte anywhere. Also upstream_input_pending(), which attest.c asks before
 * handing a freshly attested connection to a request, and the verdicts of the gate,
 * upstream_begin_exchange(), for each state of the connection's pin.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "harness_relay.h"
#include "proxy/pinset.h"
#include "proxy/proxy_internal.h"
#include "proxy/tls.h"
#include "proxy/upstream.h"

#define SMALL "GET /secret HTTP/1.1\r\nHost: enclave\r\n\r\n"
#define LARGE (UPSTREAM_STAGE + 1) /* too large for the stage: encrypted and sent at once */

struct harness {
    uv_loop_t loop;
    SSL_CTX *client_ctx;
    SSL_CTX *server_ctx;
    EVP_PKEY *key;
    X509 *cert;
    SSL *server;
    BIO *server_in, *server_out;
    int server_fd; /* the enclave's end of the TCP connection */
    struct upstream *up;
};

/* Runs the TLS handshake between the upstream's tls_conn and the in-process server, moving
 * ciphertext by hand (the TCP connection carries only what upstream_write() sends later). */
static void handshake(struct harness *h)
{
    bool client_done = false, server_done = false;
    for (int round = 0; round < 20 && !(client_done && server_done); round++) {
        size_t n;
        const char *out;
        char buf[16384];
        int r;

        if (!client_done) {
            enum tls_result tr = tls_handshake(&h->up->tls);
            assert_true(tr == TLS_OK || tr == TLS_WANT);
            client_done = tr == TLS_OK;
        }
        out = tls_out_peek(&h->up->tls, &n);
        if (n > 0) {
            assert_int_equal(BIO_write(h->server_in, out, (int)n), (int)n);
            tls_out_consume(&h->up->tls, n);
        }
        if (!server_done) {
            r = SSL_do_handshake(h->server);
            if (r == 1)
                server_done = true;
            else
                assert_int_equal(SSL_get_error(h->server, r), SSL_ERROR_WANT_READ);
        }
        while ((r = BIO_read(h->server_out, buf, sizeof(buf))) > 0)
            assert_int_equal(tls_feed(&h->up->tls, buf, (size_t)r), 0);
    }
    assert_true(client_done && server_done);
    /* TLS 1.3 session tickets arrive after the handshake: let the client read them, so that
     * nothing but what the test writes is left in either direction. */
    {
        char buf[64];
        size_t got = 0;
        assert_int_equal(tls_read(&h->up->tls, buf, sizeof(buf), &got), TLS_WANT);
    }
    assert_true(tls_in_empty(&h->up->tls));
}

static struct harness *harness_new(enum upstream_state state)
{
    struct harness *h = calloc(1, sizeof(*h));
    char err[256];
    int client_fd;
    assert_non_null(h);
    assert_int_equal(uv_loop_init(&h->loop), 0);

    h->server_ctx = hr_server_ctx(&h->key, &h->cert);
    h->server = SSL_new(h->server_ctx);
    assert_non_null(h->server);
    h->server_in = BIO_new(BIO_s_mem());
    h->server_out = BIO_new(BIO_s_mem());
    assert_non_null(h->server_in);
    assert_non_null(h->server_out);
    BIO_set_mem_eof_return(h->server_in, -1);
    SSL_set_bio(h->server, h->server_in, h->server_out);
    SSL_set_accept_state(h->server);

    h->client_ctx = tls_client_ctx_new(err, sizeof(err));
    if (h->client_ctx == NULL)
        fail_msg("tls_client_ctx_new: %s", err);

    h->up = calloc(1, sizeof(*h->up));
    assert_non_null(h->up);
    hr_tcp_pair(&client_fd, &h->server_fd);
    assert_int_equal(uv_tcp_init(&h->loop, &h->up->tcp), 0);
    assert_int_equal(uv_tcp_open(&h->up->tcp, client_fd), 0);
    assert_int_equal(tls_conn_init(&h->up->tls, h->client_ctx, "", NULL, NULL, NULL), 0);
    handshake(h);
    h->up->state = state;
    return h;
}

static void harness_free(struct harness *h)
{
    tls_conn_free(&h->up->tls);
    uv_close((uv_handle_t *)&h->up->tcp, NULL);
    assert_int_equal(uv_run(&h->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&h->loop), 0);
    close(h->server_fd);
    free(h->up);
    SSL_free(h->server);
    SSL_CTX_free(h->server_ctx);
    SSL_CTX_free(h->client_ctx);
    X509_free(h->cert);
    EVP_PKEY_free(h->key);
    free(h);
}

/* Bytes the enclave's socket holds right now (never blocks). uv_try_write() writes in the
 * caller's stack frame and loopback TCP delivers within send(), so whatever upstream_write()
 * or upstream_flush() sent is already here. */
static size_t server_pending(struct harness *h)
{
    struct pollfd pfd = {.fd = h->server_fd, .events = POLLIN};
    char probe[1];
    assert_true(poll(&pfd, 1, 0) >= 0);
    if (!(pfd.revents & POLLIN))
        return 0;
    return recv(h->server_fd, probe, sizeof(probe), MSG_PEEK | MSG_DONTWAIT) > 0 ? 1 : 0;
}

/* Reads ciphertext from the socket and decrypts it until `want` plaintext bytes arrived. */
static void server_expect(struct harness *h, const char *want, size_t want_len)
{
    char *got = malloc(want_len + 1);
    size_t have = 0;
    assert_non_null(got);
    for (int rounds = 0; have < want_len && rounds < 1000; rounds++) {
        char buf[16384];
        struct pollfd pfd = {.fd = h->server_fd, .events = POLLIN};
        ssize_t n;
        size_t r = 0;
        while (have < want_len && SSL_read_ex(h->server, got + have, want_len - have, &r) == 1)
            have += r;
        if (have == want_len)
            break;
        assert_int_equal(poll(&pfd, 1, 5000), 1);
        n = recv(h->server_fd, buf, sizeof(buf), 0);
        assert_true(n > 0);
        assert_int_equal(BIO_write(h->server_in, buf, (int)n), (int)n);
    }
    assert_int_equal(have, want_len);
    assert_memory_equal(got, want, want_len);
    free(got);
}

static const enum upstream_state all_states[] = {
    UP_CONNECTING, UP_HANDSHAKING, UP_UNVERIFIED, UP_ATTESTING, UP_BUSY, UP_IDLE, UP_CLOSING,
};

/* Every state but busy and attesting: both write sizes are refused with -EPERM and nothing is
 * staged, encrypted, queued on the socket or sent; a flush sends nothing either. */
static void test_write_refused_outside_busy_and_attesting(void **state)
{
    char *large = malloc(LARGE);
    (void)state;
    assert_non_null(large);
    memset(large, 'x', LARGE);
    for (size_t i = 0; i < sizeof(all_states) / sizeof(all_states[0]); i++) {
        enum upstream_state s = all_states[i];
        struct harness *h;
        size_t n = 99;
        if (s == UP_BUSY || s == UP_ATTESTING)
            continue;
        h = harness_new(s);
        if (upstream_write(h->up, SMALL, sizeof(SMALL) - 1) != -EPERM)
            fail_msg("state %s: a small write was not refused", upstream_state_name(s));
        if (upstream_write(h->up, large, LARGE) != -EPERM)
            fail_msg("state %s: a large write was not refused", upstream_state_name(s));
        upstream_flush(h->up);
        assert_int_equal(uv_run(&h->loop, UV_RUN_NOWAIT), 0);
        if (h->up->out_len != 0)
            fail_msg("state %s: %zu bytes staged", upstream_state_name(s), h->up->out_len);
        assert_int_equal(h->up->write_queued, 0);
        assert_int_equal(h->up->tcp.write_queue_size, 0);
        (void)tls_out_peek(&h->up->tls, &n);
        if (n != 0)
            fail_msg("state %s: %zu bytes of ciphertext produced", upstream_state_name(s), n);
        if (server_pending(h) != 0)
            fail_msg("state %s: bytes reached the enclave", upstream_state_name(s));
        assert_int_equal(h->up->state, s);
        harness_free(h);
    }
    free(large);
}

/* Busy and attesting: a small write is staged and leaves at the flush, a large one is encrypted
 * and sent at once; the enclave decrypts exactly those bytes, in order. */
static void test_write_allowed_in_busy_and_attesting(void **state)
{
    static const enum upstream_state allowed[] = {UP_BUSY, UP_ATTESTING};
    size_t total = sizeof(SMALL) - 1 + LARGE;
    char *want = malloc(total);
    (void)state;
    assert_non_null(want);
    memcpy(want, SMALL, sizeof(SMALL) - 1);
    memset(want + sizeof(SMALL) - 1, 'x', LARGE);
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++) {
        struct harness *h = harness_new(allowed[i]);
        assert_int_equal(upstream_write(h->up, SMALL, sizeof(SMALL) - 1), 0);
        assert_int_equal(h->up->out_len, sizeof(SMALL) - 1);
        assert_memory_equal(h->up->outbuf, SMALL, sizeof(SMALL) - 1);
        assert_int_equal(server_pending(h), 0);
        assert_int_equal(upstream_write(h->up, want + sizeof(SMALL) - 1, LARGE), 0);
        assert_int_equal(h->up->out_len, 0);
        upstream_flush(h->up);
        server_expect(h, want, total);
        assert_int_equal(h->up->state, allowed[i]);
        harness_free(h);
    }
    free(want);
}

/* upstream_input_pending(): an empty receive queue is the only "no"; a byte the enclave sent,
 * or its FIN, that the loop has not read yet is a "yes". */
static void test_input_pending(void **state)
{
    struct harness *h = harness_new(UP_IDLE);
    struct pollfd pfd = {.events = POLLIN};
    (void)state;
    assert_int_equal(uv_fileno((const uv_handle_t *)&h->up->tcp, &pfd.fd), 0);
    assert_false(upstream_input_pending(h->up));
    assert_int_equal(send(h->server_fd, "x", 1, 0), 1);
    assert_int_equal(poll(&pfd, 1, 5000), 1);
    assert_true(upstream_input_pending(h->up));
    assert_true(upstream_input_pending(h->up)); /* peeked, not consumed */
    harness_free(h);

    h = harness_new(UP_IDLE);
    assert_int_equal(uv_fileno((const uv_handle_t *)&h->up->tcp, &pfd.fd), 0);
    assert_int_equal(shutdown(h->server_fd, SHUT_WR), 0);
    assert_int_equal(poll(&pfd, 1, 5000), 1);
    assert_true(upstream_input_pending(h->up));
    harness_free(h);
}

/* The gate, upstream_begin_exchange(): GATE_PASS (and UP_BUSY, with the facts of the admitting
 * attestation) only for a pin attested and fresh at that moment; for any other pin the
 * connection stays UP_UNVERIFIED and the verdict says what to do: attest (unknown), re-attest
 * (expired), refuse (negative-cached, for how long), or drop it (opened before the upstream
 * settings changed, whatever its pin). */
static void test_gate_verdicts(void **state)
{
    struct harness *h = harness_new(UP_UNVERIFIED);
    struct proxy_service *svc = calloc(1, sizeof(*svc));
    struct service_config sc;
    const int64_t wall = 1700000000000LL;
    struct pin_info info;
    uint64_t now, retry = 0;
    (void)state;
    assert_non_null(svc);
    pinset_init(&svc->pins);
    memset(&sc, 0, sizeof(sc));
    sc.nonce = NONCE_QUERY;
    svc->cfg = &sc;
    h->up->svc = svc;
    h->up->has_pin = true;
    memset(h->up->pin, 0xa5, PIN_LEN);
    memset(&info, 0, sizeof(info));
    info.leaf_not_after_ms = wall + 24LL * 3600 * 1000;
    now = uv_now(&h->loop);
    assert_true(now > 120000);

    assert_int_equal(upstream_begin_exchange(h->up, &retry), GATE_ATTEST);
    assert_int_equal(h->up->state, UP_UNVERIFIED);

    pinset_add_negative(&svc->pins, h->up->pin, now, 5000);
    assert_int_equal(upstream_begin_exchange(h->up, &retry), GATE_REFUSED);
    assert_int_equal(retry, 5000);
    assert_int_equal(h->up->state, UP_UNVERIFIED);

    /* Attested 2 min ago for 1 min: expired now. */
    assert_int_equal(pinset_add(&svc->pins, h->up->pin, &info, now - 120000, wall, 60000, 0), 0);
    assert_int_equal(upstream_begin_exchange(h->up, &retry), GATE_REATTEST);
    assert_int_equal(h->up->state, UP_UNVERIFIED);
    assert_false(h->up->has_info);

    /* Another enclave's key is fresh: this connection's is still expired. */
    {
        uint8_t other[PIN_LEN];
        memset(other, 0x5a, PIN_LEN);
        assert_int_equal(pinset_add(&svc->pins, other, &info, now, wall, 60000, 0), 0);
        assert_int_equal(upstream_begin_exchange(h->up, &retry), GATE_REATTEST);
    }

    /* Opened before a reload moved the upstream: never passes, fresh pin or not. */
    assert_int_equal(pinset_add(&svc->pins, h->up->pin, &info, now, wall, 60000, 0), 0);
    svc->upstream_gen++;
    assert_int_equal(upstream_begin_exchange(h->up, &retry), GATE_STALE);
    assert_int_equal(h->up->state, UP_UNVERIFIED);
    h->up->gen = svc->upstream_gen;

    /* Session-bound evidence: the key's fresh pin does not admit a connection that was not
     * attested over itself. */
    sc.nonce = NONCE_SESSION;
    assert_int_equal(upstream_begin_exchange(h->up, &retry), GATE_ATTEST);
    assert_int_equal(h->up->state, UP_UNVERIFIED);
    h->up->attested_here = true;

    assert_int_equal(upstream_begin_exchange(h->up, &retry), GATE_PASS);
    assert_int_equal(h->up->state, UP_BUSY);
    assert_true(h->up->has_info);
    assert_int_equal(h->up->info_serial, pinset_find(&svc->pins, h->up->pin)->serial);
    assert_int_equal(h->up->exchanges, 1);

    free(svc);
    harness_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_refused_outside_busy_and_attesting),
        cmocka_unit_test(test_write_allowed_in_busy_and_attesting),
        cmocka_unit_test(test_input_pending),
        cmocka_unit_test(test_gate_verdicts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
