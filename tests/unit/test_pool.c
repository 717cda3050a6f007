/*
 * The idle pool (pool.c) through the relay: connections are reused newest first (LIFO), and a
 * connection that has anything to say while idle — or said more than its response — is closed,
 * never handed to the next request. Driven through harness_relay.h: the real proxy, a scripted
 * TLS enclave on 127.0.0.1, exact bytes on both sides.
 */
#include "harness_relay.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define GET(p)    "GET " p " HTTP/1.1\r\nHost: app.test\r\n\r\n"
#define GET_UP(p) "GET " p " HTTP/1.1\r\nHost: {authority}\r\n\r\n"
#define RESP(b)   "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n" b
#define EVIL      "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"

static bool at_wait(struct hr *h, void *arg)
{
    size_t i = *(size_t *)arg;
    return i < h->n_conns && h->conns[i].script->steps[h->conns[i].step].kind == HR_WAIT;
}

/* Two connections in use at once; the one that went back to the pool last carries the next
 * request. Connection 0 answers last, so it is on top. */
static void test_lifo_reuse(void **state)
{
    static const struct hr_script first = {{EVIDENCE(HR_EV_GOOD), EXPECT(GET_UP("/a")), WAIT(0),
                                            SEND(RESP("A")), EXPECT(GET_UP("/c")),
                                            SEND(RESP("C"))}};
    /* The key is attested by then: the second connection passes the gate without evidence. */
    static const struct hr_script second = {{EXPECT(GET_UP("/b")), SEND(RESP("B"))}};
    const struct hr_script *scripts[] = {&first, &second, NULL};
    struct hr *h = hr_start(hr_group_pki, "");
    size_t a, b, zero = 0;
    (void)state;

    hr_enclave_script(h, scripts);
    a = hr_client_open(h);
    b = hr_client_open(h);
    hr_client_send(h, a, GET("/a"));
    assert_true(hr_run_until(h, at_wait, &zero));
    hr_client_send(h, b, GET("/b"));
    hr_expect_client(h, b, RESP("B"), false); /* connection 1 goes back to the pool first */
    hr_go(h, 0);
    hr_expect_client(h, a, RESP("A"), false); /* then connection 0: the top */
    hr_client_send(h, b, GET("/c"));
    hr_expect_client(h, b, RESP("C"), false);
    hr_wait_script_done(h, 0);
    assert_int_equal(h->n_conns, 2);
    hr_expect_enclave(h, 0, GET_UP("/a") GET_UP("/c"), 1);
    hr_expect_enclave(h, 1, GET_UP("/b"), 0);
    assert_false(h->conns[1].peer_closed); /* still pooled */
    hr_stop(h);
}

/* A pooled connection that receives data while idle is closed; the next request gets a new
 * connection and nothing of it reaches the old one. */
static void test_idle_connection_with_data_is_closed(void **state)
{
    static const struct hr_script first = {
        {EVIDENCE(HR_EV_GOOD), EXPECT(GET_UP("/a")), SEND(RESP("A")), WAIT(0), SEND(EVIL)}};
    static const struct hr_script second = {{EXPECT(GET_UP("/b")), SEND(RESP("B"))}};
    const struct hr_script *scripts[] = {&first, &second, NULL};
    struct hr *h = hr_start(hr_group_pki, "");
    size_t c;
    (void)state;

    hr_enclave_script(h, scripts);
    c = hr_client_open(h);
    hr_client_send(h, c, GET("/a"));
    hr_expect_client(h, c, RESP("A"), false);
    hr_go(h, 0); /* the enclave speaks while the connection is pooled */
    hr_wait_peer_closed(h, 0);
    hr_client_send(h, c, GET("/b"));
    hr_expect_client(h, c, RESP("B"), false);
    hr_wait_script_done(h, 1);
    assert_int_equal(h->n_conns, 2);
    hr_expect_enclave(h, 0, GET_UP("/a"), 1);
    hr_expect_enclave(h, 1, GET_UP("/b"), 0);
    hr_stop(h);
}

/* Bytes past the response, in the same write, would answer the next request: the connection
 * is not pooled, and the client never sees them. */
static void test_bytes_after_response_are_not_reused(void **state)
{
    static const struct hr_script first = {
        {EVIDENCE(HR_EV_GOOD), EXPECT(GET_UP("/a")), SEND(RESP("A") EVIL)}};
    static const struct hr_script second = {{EXPECT(GET_UP("/b")), SEND(RESP("B"))}};
    const struct hr_script *scripts[] = {&first, &second, NULL};
    struct hr *h = hr_start(hr_group_pki, "");
    size_t c;
    (void)state;

    hr_enclave_script(h, scripts);
    c = hr_client_open(h);
    hr_client_send(h, c, GET("/a"));
    hr_expect_client(h, c, RESP("A"), false);
    hr_wait_peer_closed(h, 0);
    hr_client_send(h, c, GET("/b"));
    hr_expect_client(h, c, RESP("B"), false);
    hr_wait_script_done(h, 1);
    assert_int_equal(h->n_conns, 2);
    hr_expect_enclave(h, 0, GET_UP("/a"), 1);
    hr_expect_enclave(h, 1, GET_UP("/b"), 0);
    hr_stop(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifo_reuse),
        cmocka_unit_test(test_idle_connection_with_data_is_closed),
        cmocka_unit_test(test_bytes_after_response_are_not_reused),
    };
    return cmocka_run_group_tests(tests, hr_group_setup, hr_group_teardown);
}
