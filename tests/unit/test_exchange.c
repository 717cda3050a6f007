/*
 * Transcripts through the whole relay (client.c, exchange.c, acquire.c, relay.c, upstream.c,
 * pool.c, attest.c), in the manner of curl's tests/data: each case is the bytes a client sends,
 * the script of the in-process enclave (harness_relay.h), the exact bytes the client gets back
 * and the exact bytes each enclave connection received. The proxy is the real one on a real
 * loop, between real sockets on 127.0.0.1; the enclave attests with documents the harness signs
 * for the nonce of each evidence request, under a test root the verifier trusts.
 *
 * To add a case: append an entry to `cases` below. A connection the enclave was not given a
 * script for may carry nothing; enclave_in[i] == NULL says connection i must not exist.
 */
#include "harness_relay.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define CONNS 3

struct relay_case {
    const char *name;
    const char *config;              /* extra service keys */
    const char *client_in;           /* sent at once on one connection */
    const char *client_out;          /* exactly what the client receives */
    bool client_closed;              /* and then the proxy closes the connection */
    struct hr_script enclave[CONNS]; /* the scripts of the enclave's connections, in order */
    const char *enclave_in[CONNS];   /* what each received (application bytes); NULL: none */
    size_t evidence[CONNS];          /* evidence requests each received */
};

/* ---- Pieces of transcripts ---------------------------------------------------------------- */

#define GET_A      "GET /a HTTP/1.1\r\nHost: app.test\r\n\r\n"
#define GET_A_UP   "GET /a HTTP/1.1\r\nHost: {authority}\r\n\r\n"
#define GET_B      "GET /b HTTP/1.1\r\nHost: app.test\r\nAccept: */*\r\n\r\n"
#define GET_B_UP   "GET /b HTTP/1.1\r\nHost: {authority}\r\nAccept: */*\r\n\r\n"
#define POST_B     "POST /b HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\nhi"
#define POST_B_UP  "POST /b HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 2\r\n\r\nhi"
#define RESP_A     "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA"
#define RESP_A_OUT "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA"
#define RESP_B     "HTTP/1.1 200 OK\r\nX-Seq: 2\r\nContent-Length: 1\r\n\r\nB"
#define RESP_B_OUT "HTTP/1.1 200 OK\r\nX-Seq: 2\r\nContent-Length: 1\r\n\r\nB"

#define ERROR_502_CLOSED                                                                           \
    "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: 125\r\n"        \
    "Cache-Control: no-store\r\nConnection: keep-alive\r\n\r\n"                                    \
    "{\"error\":{\"code\":\"upstream_unreachable\",\"message\":\"the upstream closed the "         \
    "connection without responding\",\"service\":\"demo\"}}\n"

static const struct relay_case cases[] = {
    {
        .name = "GET relayed exactly: Host rewritten, hop-by-hop and Connection-named removed",
        .client_in = "GET /v1/items?id=7 HTTP/1.1\r\nHost: app.test\r\nUser-Agent: t/1\r\n"
                     "Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n"
                     "Proxy-Connection: keep-alive\r\nTE: trailers\r\n"
                     "X-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\n\r\n",
        .enclave = {{{EVIDENCE(HR_EV_GOOD),
                      EXPECT("GET /v1/items?id=7 HTTP/1.1\r\nHost: {authority}\r\n"
                             "User-Agent: t/1\r\nAccept: */*\r\n\r\n"),
                      SEND("HTTP/1.1 200 OK\r\nServer: enclave\r\nConnection: keep-alive, X-Up\r\n"
                           "X-Up: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 5\r\n\r\nhello")}}},
        .enclave_in = {"GET /v1/items?id=7 HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: t/1\r\n"
                       "Accept: */*\r\n\r\n"},
        .evidence = {1},
        .client_out = "HTTP/1.1 200 OK\r\nServer: enclave\r\nContent-Length: 5\r\n\r\nhello",
    },
    {
        .name = "chunked POST re-framed: extensions and trailers dropped, chunked answer relayed",
        .client_in = "POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n"
                     "Content-Type: text/plain\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n"
                     "0\r\nX-Trailer: t\r\n\r\n",
        .enclave = {{{EVIDENCE(HR_EV_GOOD),
                      EXPECT("POST /upload HTTP/1.1\r\nHost: {authority}\r\n"
                             "Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
                      SEND("HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n")}}},
        .enclave_in = {"POST /upload HTTP/1.1\r\nHost: {authority}\r\nContent-Type: text/plain\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"},
        .evidence = {1},
        .client_out = "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "3\r\nabc\r\n0\r\n\r\n",
    },
    {
        .name = "a pipelined pair: one connection, attested once, answers in order",
        .client_in = GET_A GET_B,
        .enclave = {{{EVIDENCE(HR_EV_GOOD), EXPECT(GET_A_UP), SEND(RESP_A), EXPECT(GET_B_UP),
                      SEND(RESP_B)}}},
        .enclave_in = {GET_A_UP GET_B_UP},
        .evidence = {1},
        .client_out = RESP_A_OUT RESP_B_OUT,
    },
    {
        .name = "502 when the enclave closes without answering (a new connection: no retry)",
        .client_in = GET_A,
        .enclave = {{{EVIDENCE(HR_EV_GOOD), EXPECT(GET_A_UP), CLOSE}}},
        .enclave_in = {GET_A_UP},
        .evidence = {1},
        .client_out = ERROR_502_CLOSED,
    },
    {
        .name = "an idempotent request is retried when its pooled connection is dead",
        .client_in = GET_A GET_B,
        .enclave = {{{EVIDENCE(HR_EV_GOOD), EXPECT(GET_A_UP), SEND(RESP_A), EXPECT(GET_B_UP),
                      CLOSE}},
                    /* The key is attested already: the new connection passes the gate at once. */
                    {{EXPECT(GET_B_UP), SEND(RESP_B)}}},
        .enclave_in = {GET_A_UP GET_B_UP, GET_B_UP},
        .evidence = {1, 0},
        .client_out = RESP_A_OUT RESP_B_OUT,
    },
    {
        .name = "a POST whose pooled connection dies after its body went up is not retried",
        .client_in = GET_A POST_B,
        .enclave = {{{EVIDENCE(HR_EV_GOOD), EXPECT(GET_A_UP), SEND(RESP_A), EXPECT(POST_B_UP),
                      CLOSE}}},
        .enclave_in = {GET_A_UP POST_B_UP},
        .evidence = {1},
        .client_out = RESP_A_OUT ERROR_502_CLOSED,
    },
    {
        .name = "the proxy's own 400 for bad chunk framing: nothing reaches the enclave",
        .client_in = "POST /x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "zz\r\nhello\r\n0\r\n\r\n",
        .client_out = "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                      "Content-Length: 113\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
                      "{\"error\":{\"code\":\"bad_request\",\"message\":\"malformed message: "
                      "Invalid character in chunk size\",\"service\":\"demo\"}}\n",
        .client_closed = true,
    },
};

static void run_case(const struct relay_case *rc)
{
    struct hr *h = hr_start(hr_group_pki, rc->config != NULL ? rc->config : "");
    const struct hr_script *scripts[CONNS + 1] = {NULL};
    size_t n = 0, client;

    fprintf(stderr, "case: %s\n", rc->name);
    while (n < CONNS && rc->enclave_in[n] != NULL) {
        scripts[n] = &rc->enclave[n];
        n++;
    }
    hr_enclave_script(h, scripts);
    client = hr_client_open(h);
    hr_client_send(h, client, rc->client_in);
    hr_expect_client(h, client, rc->client_out, rc->client_closed);
    for (size_t i = 0; i < n; i++)
        hr_wait_script_done(h, i);
    hr_run_for(h, 20); /* anything sent late would arrive now */
    if (h->n_conns != n)
        fail_msg("%s: the enclave accepted %zu connections, expected %zu", rc->name, h->n_conns, n);
    for (size_t i = 0; i < n; i++)
        hr_expect_enclave(h, i, rc->enclave_in[i], rc->evidence[i]);
    hr_stop(h);
}

static void test_transcripts(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(&cases[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transcripts),
    };
    return cmocka_run_group_tests(tests, hr_group_setup, hr_group_teardown);
}
