/*
 * Attestation over the connection that carries the traffic (attest.c), through the relay:
 * the evidence request goes over the very connection the request then uses, with a fresh
 * lowercase-hex nonce of the profile's length; an evidence response larger than 64 KiB is
 * refused (503, nothing relayed); bytes after the evidence response make the connection unfit
 * for the request, which goes over another connection. Driven through harness_relay.h.
 */
#include "harness_relay.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define GET_A    "GET /a HTTP/1.1\r\nHost: app.test\r\n\r\n"
#define GET_A_UP "GET /a HTTP/1.1\r\nHost: {authority}\r\n\r\n"
#define RESP_A   "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA"
#define EVIL     "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"

/* One connection: the evidence request, then the request, over it. */
static void test_evidence_over_the_same_connection(void **state)
{
    static const struct hr_script script = {{EVIDENCE(HR_EV_GOOD), EXPECT(GET_A_UP), SEND(RESP_A)}};
    const struct hr_script *scripts[] = {&script, NULL};
    struct hr *h = hr_start(hr_group_pki, "");
    const struct hr_conn *k;
    const char *prefix = "GET /.well-known/nitro-attestation?nonce=";
    char want[CONFIG_HOST_MAX + 64];
    size_t c;
    (void)state;

    hr_enclave_script(h, scripts);
    c = hr_client_open(h);
    hr_client_send(h, c, GET_A);
    hr_expect_client(h, c, RESP_A, false);
    hr_wait_script_done(h, 0);
    assert_int_equal(h->n_conns, 1);
    hr_expect_enclave(h, 0, GET_A_UP, 1);
    /* The evidence request came first, with a 32-byte nonce in lowercase hex. */
    k = &h->conns[0];
    assert_int_equal(k->ev_off[0], 0);
    assert_memory_equal(k->rx, prefix, strlen(prefix));
    for (size_t i = 0; i < 64; i++) {
        char ch = k->rx[strlen(prefix) + i];
        assert_true((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'));
    }
    snprintf(want, sizeof(want), " HTTP/1.1\r\nHost: %s\r\n", h->authority);
    assert_memory_equal(k->rx + strlen(prefix) + 64, want, strlen(want));
    hr_stop(h);
}

/* An evidence response of 64 KiB + 1 is refused: no verdict, 503, nothing relayed, the
 * connection closed. */
static void test_evidence_larger_than_64k_is_refused(void **state)
{
    static const struct hr_script script = {{EVIDENCE(HR_EV_TOO_LARGE)}};
    const struct hr_script *scripts[] = {&script, NULL};
    struct hr *h = hr_start(hr_group_pki, "");
    size_t c;
    (void)state;

    hr_enclave_script(h, scripts);
    c = hr_client_open(h);
    hr_client_send(h, c, GET_A);
    hr_expect_client(h, c,
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                     "Content-Length: 166\r\nCache-Control: no-store\r\nRetry-After: 5\r\n"
                     "Connection: keep-alive\r\n\r\n"
                     "{\"error\":{\"code\":\"attestation_unavailable\",\"message\":\"attestation "
                     "unavailable: bad evidence response: the evidence response is larger than "
                     "64 KiB\",\"service\":\"demo\"}}\n",
                     false);
    hr_wait_peer_closed(h, 0);
    assert_int_equal(h->n_conns, 1);
    hr_expect_enclave(h, 0, "", 1);
    hr_stop(h);
}

/* Bytes after the evidence response — in the same record, or in a record of their own that
 * waits in the socket — would become the answer to the request: the key is attested, but that
 * connection is closed and the request goes over a new one (which passes the gate at once). */
static void trailing(const struct hr_script *first)
{
    static const struct hr_script second = {{EXPECT(GET_A_UP), SEND(RESP_A)}};
    const struct hr_script *scripts[] = {first, &second, NULL};
    struct hr *h = hr_start(hr_group_pki, "");
    size_t c;

    hr_enclave_script(h, scripts);
    c = hr_client_open(h);
    hr_client_send(h, c, GET_A);
    hr_expect_client(h, c, RESP_A, false);
    hr_wait_peer_closed(h, 0);
    hr_wait_script_done(h, 1);
    assert_int_equal(h->n_conns, 2);
    hr_expect_enclave(h, 0, "", 1);
    hr_expect_enclave(h, 1, GET_A_UP, 0);
    hr_stop(h);
}

static void test_bytes_after_evidence_make_the_connection_unfit(void **state)
{
    static const struct hr_script same_record = {{EVIDENCE(HR_EV_TRAILING)}};
    static const struct hr_script next_record = {{EVIDENCE(HR_EV_GOOD), SEND(EVIL)}};
    (void)state;
    trailing(&same_record);
    trailing(&next_record);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_evidence_over_the_same_connection),
        cmocka_unit_test(test_evidence_larger_than_64k_is_refused),
        cmocka_unit_test(test_bytes_after_evidence_make_the_connection_unfit),
    };
    return cmocka_run_group_tests(tests, hr_group_setup, hr_group_teardown);
}
