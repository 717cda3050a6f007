/*
 * The trust boundary through the whole relay (acquire.c, the gate of upstream.c, attest.c):
 * NO APPLICATION BYTE IS WRITTEN UPSTREAM BEFORE THE GATE PASSED, on new and on pooled
 * connections. The enclave of harness_relay.h records every plaintext byte it receives; when its
 * evidence fails (a PCR the policy does not trust, a document bound to another key), it must
 * have received exactly the evidence request and nothing else, and a key the negative cache
 * refuses must receive no byte at all.
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
#define GET_B    "GET /b HTTP/1.1\r\nHost: app.test\r\n\r\n"
#define POST_B   "POST /b HTTP/1.1\r\nHost: app.test\r\nContent-Length: 6\r\n\r\nsecret"
#define RESP_A   "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA"

#define ERROR_HEAD(status, len, extra)                                                             \
    "HTTP/1.1 " status "\r\nContent-Type: application/json\r\nContent-Length: " len "\r\n"         \
    "Cache-Control: no-store\r\n" extra "\r\n"

/* The verifier's refusal; `conn`: keep-alive when the request was read whole, else close. */
#define FAILED_PCR(retry, conn)                                                                    \
    ERROR_HEAD("502 Bad Gateway", "134", "Retry-After: " retry "\r\nConnection: " conn "\r\n")     \
    "{\"error\":{\"code\":\"attestation_failed\",\"message\":\"attestation failed: policy: pcrs "  \
    "match no measurement set (pcr0)\",\"service\":\"demo\"}}\n"

/* A new connection whose evidence fails: the enclave saw the evidence request and nothing
 * else (the request, and its body, never left the proxy), and the connection was closed. */
static void new_connection_refused(enum hr_evidence ev, const char *client_in, const char *want,
                                   bool closed)
{
    static const struct hr_script bad[] = {
        {{EVIDENCE(HR_EV_WRONG_PCR)}},
        {{EVIDENCE(HR_EV_WRONG_BINDING)}},
    };
    struct hr *h = hr_start(hr_group_pki, "");
    const struct hr_script *scripts[] = {&bad[ev == HR_EV_WRONG_PCR ? 0 : 1], NULL};
    size_t c;

    hr_enclave_script(h, scripts);
    c = hr_client_open(h);
    hr_client_send(h, c, client_in);
    hr_expect_client(h, c, want, closed);
    hr_wait_peer_closed(h, 0);
    assert_int_equal(h->n_conns, 1);
    hr_expect_enclave(h, 0, "", 1);
    hr_stop(h);
}

static void test_new_connection_wrong_pcr_gets_no_application_byte(void **state)
{
    (void)state;
    new_connection_refused(HR_EV_WRONG_PCR, GET_A, FAILED_PCR("5", "keep-alive"), false);
    /* A body waiting in the proxy's buffer does not leak either (and, unread, it ends the
     * client's connection). */
    new_connection_refused(HR_EV_WRONG_PCR, POST_B, FAILED_PCR("5", "close"), true);
}

static void test_new_connection_wrong_binding_gets_no_application_byte(void **state)
{
    (void)state;
    new_connection_refused(
        HR_EV_WRONG_BINDING, POST_B,
        ERROR_HEAD("502 Bad Gateway", "135",
                   "Retry-After: 5\r\nConnection: close\r\n") "{\"error\":{\"code\":\"attestation_"
                                                              "failed\",\"message\":\"attestation "
                                                              "failed: binding: user_data does not "
                                                              "hash the peer key\",\"service\":"
                                                              "\"demo\"}}\n",
        true);
}

/* After a failed attestation the key is negative-cached: the next connection to it completes
 * its TLS handshake, the gate refuses it, and it receives no byte at all — not even an evidence
 * request. The 503 says why the key failed. */
static void test_negative_cached_key_gets_no_byte_at_all(void **state)
{
    static const struct hr_script bad = {{EVIDENCE(HR_EV_WRONG_PCR)}};
    static const struct hr_script silent = {{{0}}};
    const struct hr_script *scripts[] = {&bad, &silent, NULL};
    struct hr *h = hr_start(hr_group_pki, "negative_cache = 30s");
    size_t c;
    (void)state;

    hr_enclave_script(h, scripts);
    c = hr_client_open(h);
    hr_client_send(h, c, GET_A);
    hr_expect_client(h, c, FAILED_PCR("30", "keep-alive"), false);
    hr_client_send(h, c, POST_B);
    hr_expect_client(
        h, c,
        ERROR_HEAD("503 Service Unavailable", "210",
                   "Retry-After: 30\r\nConnection: close\r\n") "{\"error\":{\"code\":\"attestation_"
                                                               "unavailable\",\"message\":\"the "
                                                               "enclave's key failed "
                                                               "attestation recently (attestation "
                                                               "failed: policy: pcrs match no "
                                                               "measurement set (pcr0)); "
                                                               "it is retried in 30 "
                                                               "s\",\"service\":\"demo\"}}\n",
        true);
    hr_wait_peer_closed(h, 1);
    assert_int_equal(h->n_conns, 2);
    hr_expect_enclave(h, 0, "", 1);
    assert_true(h->conns[1].handshake_done);
    assert_int_equal(h->conns[1].rx_len, 0);
    hr_stop(h);
}

/* A pooled connection whose pin expired (attestation_ttl) is attested again over itself before
 * it carries the next request; when that fails, it received the first exchange and the second
 * evidence request, and nothing of the second request. */
static void test_pooled_connection_with_expired_pin_is_attested_first(void **state)
{
    static const struct hr_script script = {
        {EVIDENCE(HR_EV_GOOD), EXPECT(GET_A_UP), SEND(RESP_A), EVIDENCE(HR_EV_WRONG_PCR)}};
    const struct hr_script *scripts[] = {&script, NULL};
    struct hr *h = hr_start(hr_group_pki, "attestation_ttl = 1s\nrefresh_before = 0");
    size_t c;
    (void)state;

    hr_enclave_script(h, scripts);
    c = hr_client_open(h);
    hr_client_send(h, c, GET_A);
    hr_expect_client(h, c, RESP_A, false);
    hr_run_for(h, 1100); /* the pin lapses; the connection stays pooled */
    assert_int_equal(h->conns[0].peer_closed, false);
    hr_client_send(h, c, POST_B);
    hr_expect_client(h, c, FAILED_PCR("5", "close"), true);
    hr_wait_peer_closed(h, 0);
    assert_int_equal(h->n_conns, 1);
    hr_expect_enclave(h, 0, GET_A_UP, 2);
    hr_stop(h);
}

/* A reload that changes the policy drops the pins and closes the pooled connection; the next
 * request's connection presents evidence that the new policy refuses, and receives nothing of
 * the request. */
static void test_policy_reload_drops_pin_and_nothing_leaks(void **state)
{
    static const struct hr_script first = {{EVIDENCE(HR_EV_GOOD), EXPECT(GET_A_UP), SEND(RESP_A)}};
    static const struct hr_script second = {{EVIDENCE(HR_EV_GOOD)}};
    const struct hr_script *scripts[] = {&first, &second, NULL};
    struct hr *h = hr_start(hr_group_pki, "");
    size_t c;
    (void)state;

    hr_enclave_script(h, scripts);
    c = hr_client_open(h);
    hr_client_send(h, c, GET_A);
    hr_expect_client(h, c, RESP_A, false);
    hr_reload(h, "measurement = pcr0=" HR_OTHER_PCR0_HEX);
    hr_wait_peer_closed(h, 0);
    hr_client_send(h, c, GET_B);
    hr_expect_client(h, c, FAILED_PCR("5", "keep-alive"), false);
    hr_wait_peer_closed(h, 1);
    assert_int_equal(h->n_conns, 2);
    hr_expect_enclave(h, 0, GET_A_UP, 1);
    hr_expect_enclave(h, 1, "", 1);
    hr_stop(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_connection_wrong_pcr_gets_no_application_byte),
        cmocka_unit_test(test_new_connection_wrong_binding_gets_no_application_byte),
        cmocka_unit_test(test_negative_cached_key_gets_no_byte_at_all),
        cmocka_unit_test(test_pooled_connection_with_expired_pin_is_attested_first),
        cmocka_unit_test(test_policy_reload_drops_pin_and_nothing_leaks),
    };
    return cmocka_run_group_tests(tests, hr_group_setup, hr_group_teardown);
}
