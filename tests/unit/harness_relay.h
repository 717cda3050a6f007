/*
 * The connection-test harness: the real proxy (proxy_start() with a struct proxy_env — a real
 * loop, a configuration loaded from text, a real verifier trusting a test root) between a
 * client socket and an in-process TLS "enclave" on 127.0.0.1 that plays a scripted transcript.
 *
 * One thread. hr_run_until() alternates uv_run(UV_RUN_NOWAIT) on the proxy's loop with the
 * enclave's non-blocking steps and the clients' non-blocking reads, sleeping in poll(2) on every
 * descriptor involved (the loop's backend fd included), until a condition holds or a deadline
 * passes: every wait is bounded.
 *
 * The enclave. Each TCP connection it accepts takes the next script of hr_enclave_script()
 * (a connection beyond them gets an empty script: it may carry nothing). A script is a list of
 * steps run in order: read an evidence request and answer it with a document the harness signs
 * itself (HR_EVIDENCE, with the nonce the request carried, bound to the enclave's TLS key unless
 * told otherwise), wait for exact application bytes (HR_EXPECT), send bytes (HR_SEND), wait for
 * the test (HR_WAIT), or close (HR_CLOSE). Everything the connection receives is recorded, and
 * the evidence requests are told apart from the application bytes, so that a test asserts
 * "exactly the evidence request and no application byte" or "exactly these bytes".
 *
 * The PKI (struct hr_pki) is shaped like AWS's (root -> regional -> zonal -> instance -> leaf,
 * P-384, ES384), minted at the current time: documents verify under the wall clock the proxy
 * uses. Build it once per test program (hr_pki_new() in a group setup): minting costs a few ms.
 *
 * In expected strings, "{authority}" stands for the upstream authority the proxy writes in Host
 * (127.0.0.1:<the enclave's port>).
 */
#ifndef ATTESTPROXY_TESTS_HARNESS_RELAY_H
#define ATTESTPROXY_TESTS_HARNESS_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <uv.h>

#include "base/config.h"
#include "proxy/proxy.h"

#define HR_MAX_STEPS    10
#define HR_MAX_CONNS    8
#define HR_MAX_CLIENTS  4
#define HR_MAX_EVIDENCE 4
#define HR_TIMEOUT_MS   3000 /* the bound of every wait */

/* PCR0 of the enclave the harness plays, and of the default policy (96 hex digits). */
#define HR_PCR0_HEX                                                                                \
    "1111111111111111111111111111111111111111111111111111111111111111"                             \
    "11111111111111111111111111111111"
#define HR_OTHER_PCR0_HEX                                                                          \
    "2222222222222222222222222222222222222222222222222222222222222222"                             \
    "22222222222222222222222222222222"

/* ---- Shared with test_upstream.c ---------------------------------------------------------- */

/* A self-signed certificate for `key` (CN enclave.test, valid for an hour). */
X509 *hr_self_signed(EVP_PKEY *key);

/* A connected pair of TCP sockets on 127.0.0.1. */
void hr_tcp_pair(int *client, int *server);

/* A TLS server context with a fresh P-256 key and its self-signed certificate (*key, *cert
 * owned by the caller). */
SSL_CTX *hr_server_ctx(EVP_PKEY **key, X509 **cert);

/* ---- The PKI and the documents ------------------------------------------------------------ */

struct hr_pki;

struct hr_pki *hr_pki_new(void);
void hr_pki_free(struct hr_pki *pki);
/* The test program's one PKI, made by hr_group_setup() and freed by hr_group_teardown(): pass
 * both to cmocka_run_group_tests(). */
extern struct hr_pki *hr_group_pki;
int hr_group_setup(void **state);
int hr_group_teardown(void **state);
/* Writes the root as PEM into `path` (for verifier_new()). */
void hr_pki_write_root(const struct hr_pki *pki, const char *path);

/* A COSE_Sign1 attestation document (malloc'd, *len bytes) with PCR0 `pcr0` (48 bytes; the
 * other PCRs zero), user_data `ud` and nonce `nonce` (NULL: CBOR null). */
uint8_t *hr_pki_sign(const struct hr_pki *pki, const uint8_t *pcr0, const uint8_t *ud,
                     size_t ud_len, const uint8_t *nonce, size_t nonce_len, size_t *len);

/* ---- The enclave's script ----------------------------------------------------------------- */

enum hr_step_kind {
    HR_END = 0,  /* the script is done: the connection stays open, still recording */
    HR_EVIDENCE, /* read one request head, answer it with evidence (enum hr_evidence) */
    HR_EXPECT,   /* wait until these application bytes (their length) have arrived */
    HR_SEND,     /* send these bytes */
    HR_WAIT,     /* wait until the test calls hr_go(h, flag) */
    HR_CLOSE,    /* close the TCP connection (no close_notify) */
};

enum hr_evidence {
    HR_EV_GOOD = 0,      /* verifies: the policy's PCR0, bound to this key, the request's nonce */
    HR_EV_WRONG_PCR,     /* PCR0 is HR_OTHER_PCR0_HEX */
    HR_EV_WRONG_BINDING, /* user_data is the SHA-256 of another key's SPKI */
    HR_EV_TOO_LARGE,     /* a 200 whose Content-Length is 64 KiB + 1 (zeros) */
    HR_EV_TRAILING,      /* a good response, and in the same write the head of another one */
};

struct hr_step {
    enum hr_step_kind kind;
    const char *data; /* HR_EXPECT, HR_SEND (NUL-terminated; "{authority}" is expanded) */
    enum hr_evidence ev;
    unsigned flag; /* HR_WAIT */
};

struct hr_script {
    struct hr_step steps[HR_MAX_STEPS];
};

/* Shorthands for script tables (one line each: they read as a transcript). */
/* clang-format off */
#define EVIDENCE(e)  {.kind = HR_EVIDENCE, .ev = (e)}
#define EXPECT(s)    {.kind = HR_EXPECT, .data = (s)}
#define SEND(s)      {.kind = HR_SEND, .data = (s)}
#define WAIT(f)      {.kind = HR_WAIT, .flag = (f)}
#define CLOSE        {.kind = HR_CLOSE}
/* clang-format on */

/* One TCP connection the enclave accepted. */
struct hr_conn {
    int fd; /* -1 once closed by the enclave */
    SSL *ssl;
    const struct hr_script *script;
    size_t step;
    bool handshake_done;
    bool peer_closed; /* the proxy closed it (EOF or an error) */
    char *rx;         /* every plaintext byte received */
    size_t rx_len, rx_cap;
    size_t cursor;                                           /* where the next step reads from */
    size_t ev_off[HR_MAX_EVIDENCE], ev_len[HR_MAX_EVIDENCE]; /* the evidence requests in rx */
    size_t n_evidence;
};

struct hr_client {
    int fd;
    char *buf; /* everything received */
    size_t len, cap;
    bool eof;
};

struct hr {
    char dir[64];
    char conf[128];
    char root[128];
    uint16_t port; /* the proxy's listener */
    char authority[CONFIG_HOST_MAX + 8];
    uv_loop_t loop;
    struct config *cfg;
    struct verifier *verifier;
    struct metrics *metrics;
    struct proxy *proxy;
    struct proxy_env env;
    int done_calls;
    const struct hr_pki *pki;

    /* The enclave. */
    int lfd;
    uint16_t enclave_port;
    SSL_CTX *ctx;
    EVP_PKEY *key;
    X509 *cert;
    uint8_t user_data[32]; /* SHA-256 of the key's SPKI: the spki_sha256 binding */
    const struct hr_script *scripts[HR_MAX_CONNS];
    size_t n_scripts;
    struct hr_conn conns[HR_MAX_CONNS];
    size_t n_conns;
    bool go[8];
    struct hr_script empty;

    struct hr_client clients[HR_MAX_CLIENTS];
    size_t n_clients;
};

/* Starts the enclave and the proxy; `extra` is appended to the service section (may be "").
 * The default service: native profile (nonce, spki_sha256), warm_attestation = no, the policy
 * pcr0 = HR_PCR0_HEX (unless `extra` has a measurement of its own), allowed_hosts = app.test. */
struct hr *hr_start(const struct hr_pki *pki, const char *extra);

/* Shuts the proxy down, runs the loop to its end, asserts uv_loop_close() == 0, frees all. */
void hr_stop(struct hr *h);

/* Loads a configuration with `extra` (as hr_start's) and applies it with proxy_reload(). */
void hr_reload(struct hr *h, const char *extra);

/* Sets the scripts of the next connections the enclave accepts, in order (NULL-terminated). */
void hr_enclave_script(struct hr *h, const struct hr_script *const *scripts);

/* Releases HR_WAIT(flag). */
void hr_go(struct hr *h, unsigned flag);

/* Opens a client connection to the proxy; returns its index. */
size_t hr_client_open(struct hr *h);
void hr_client_send(struct hr *h, size_t client, const char *data);

/* Runs everything until cond(h, arg) or HR_TIMEOUT_MS; returns whether cond held. */
bool hr_run_until(struct hr *h, bool (*cond)(struct hr *h, void *arg), void *arg);
/* Runs everything for `ms` milliseconds. */
void hr_run_for(struct hr *h, unsigned ms);

/* Waits until client `client` received exactly `want` (fails the test on a timeout or on
 * different bytes, showing both), then checks that no further byte follows within a short
 * settle, and that the proxy closed the connection when `closed` (else that it did not). */
void hr_expect_client(struct hr *h, size_t client, const char *want, bool closed);

/* Waits until enclave connection `i` finished its script (HR_END). */
void hr_wait_script_done(struct hr *h, size_t i);
/* Waits until the proxy closed enclave connection `i`. */
void hr_wait_peer_closed(struct hr *h, size_t i);

/* Asserts that enclave connection `i` received exactly `want` as application bytes (every
 * byte but its evidence requests) and exactly `n_evidence` evidence requests, each of them a
 * well-formed GET of the service's evidence path. */
void hr_expect_enclave(struct hr *h, size_t i, const char *want, size_t n_evidence);

/* The string with "{authority}" expanded (static storage, overwritten by the next call). */
const char *hr_expand(const struct hr *h, const char *s);

#endif
