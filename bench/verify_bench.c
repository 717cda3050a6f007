/*
 * Verification cost of one real Nitro document, cold (empty caches: full OpenSSL chain
 * verification) and warm (the leaf verdict cached: only the COSE signature is checked), beside
 * the cost of one P-384 ECDSA verification measured in the same process, which is the floor of
 * a warm verification. Warm and P-384 are timed in alternating rounds and each figure is the
 * fastest round, so that a noisy (shared) machine slows both alike rather than one of them.
 *
 *   verify_bench [DOCUMENT] [ITERATIONS]     (default: $NITRO_VECTORS/real-2.cbor, 2000)
 *
 * The document is verified at its own timestamp with an offline policy (no PCR sets, no nonce,
 * no binding), i.e. everything but the policy comparisons, which cost nanoseconds.
 *
 * Last, what session-bound evidence (profile native-session, docs/evidence-protocol.md §12)
 * adds on each side of an attestation: one TLS exporter and one SHA-256 over the key's SPKI
 * and the exporter, on a live TLS 1.3 connection (tls_session_exporter() and
 * binding_session_digest(), over an in-memory BIO pair).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "base/log.h"
#include "proxy/tls.h"
#include "verify/chain.h"
#include "verify/cose.h"
#include "verify/evidence.h"
#include "verify/verifier.h"

#define ROUNDS 10 /* alternating rounds of warm verifications and P-384 verifies */

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = malloc(VERIFY_MAX_ENVELOPE + 1);
    size_t n = 0;
    if (f == NULL || buf == NULL) {
        fprintf(stderr, "verify_bench: cannot read %s\n", path);
        exit(2);
    }
    n = fread(buf, 1, VERIFY_MAX_ENVELOPE + 1, f);
    fclose(f);
    *len = n;
    return buf;
}

static void verify_once(struct verifier *v, const struct verify_request *req, const uint8_t *doc,
                        size_t len)
{
    struct verify_result res;
    if (verifier_verify(v, req, doc, len, &res) != 0 || !res.accepted) {
        fprintf(stderr, "verify_bench: document rejected: %s\n", res.reason);
        exit(1);
    }
}

/* One P-384 verification exactly as the COSE check does it: EVP_PKEY_verify over a SHA-384
 * digest with a DER signature, on a fresh EVP_PKEY_CTX. */
static double p384_verify_us(int iterations)
{
    EVP_PKEY *key = EVP_EC_gen("P-384");
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);
    uint8_t digest[48] = {1, 2, 3};
    uint8_t sig[128];
    size_t siglen = sizeof(sig);
    double t0, t1;

    if (key == NULL || ctx == NULL || EVP_PKEY_sign_init(ctx) != 1 ||
        EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha384()) != 1 ||
        EVP_PKEY_sign(ctx, sig, &siglen, digest, sizeof(digest)) != 1) {
        fprintf(stderr, "verify_bench: cannot sign\n");
        exit(2);
    }
    EVP_PKEY_CTX_free(ctx);
    t0 = now_us();
    for (int i = 0; i < iterations; i++) {
        ctx = EVP_PKEY_CTX_new(key, NULL);
        if (ctx == NULL || EVP_PKEY_verify_init(ctx) != 1 ||
            EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha384()) != 1 ||
            EVP_PKEY_verify(ctx, sig, siglen, digest, sizeof(digest)) != 1) {
            fprintf(stderr, "verify_bench: verify failed\n");
            exit(2);
        }
        EVP_PKEY_CTX_free(ctx);
    }
    t1 = now_us();
    EVP_PKEY_free(key);
    return (t1 - t0) / iterations;
}

/* The parts of a warm verification, each timed alone. */
static void breakdown(struct verifier *v, const uint8_t *body, size_t len, int64_t now_ms,
                      int iterations)
{
    static uint8_t scratch[VERIFY_MAX_INPUT];
    struct nitro_document doc;
    struct verify_error err;
    const uint8_t *bytes;
    size_t n;
    char msg[256];
    struct chain *c = chain_new(NULL, msg, sizeof(msg));
    X509 *leaf = NULL;
    int64_t nb, na;
    EVP_MD *sha384 = EVP_MD_fetch(NULL, "SHA384", NULL);
    double t0, t_decode, t_chain, t_sig;
    (void)v;

    if (c == NULL || evidence_decode(body, len, scratch, &bytes, &n, &err) != 0 ||
        cose_decode_document(bytes, n, &doc, &err) != 0 ||
        chain_verify(c, &doc, now_ms, 60000, &leaf, &nb, &na, &err) != 0) {
        fprintf(stderr, "verify_bench: breakdown setup failed\n");
        exit(2);
    }
    t0 = now_us();
    for (int i = 0; i < iterations; i++)
        cose_decode_document(bytes, n, &doc, &err);
    t_decode = (now_us() - t0) / iterations;
    t0 = now_us();
    for (int i = 0; i < iterations; i++) {
        X509 *l = NULL;
        chain_verify(c, &doc, now_ms, 60000, &l, &nb, &na, &err);
        X509_free(l);
    }
    t_chain = (now_us() - t0) / iterations;
    t0 = now_us();
    for (int i = 0; i < iterations; i++)
        cose_verify_signature(&doc, X509_get0_pubkey(leaf), sha384, &err);
    t_sig = (now_us() - t0) / iterations;
    printf("  decode (COSE + payload)   %8.1f us\n", t_decode);
    printf("  chain, warm (leaf verdict)%8.1f us\n", t_chain);
    printf("  COSE ES384 signature      %8.1f us\n", t_sig);
    X509_free(leaf);
    EVP_MD_free(sha384);
    chain_free(c);
}

/* A TLS 1.3 connection in memory between the daemon's client context and a server with a
 * self-signed P-384 certificate; returns the client end, or NULL. */
static SSL *memory_tls_pair(SSL_CTX *cctx, SSL_CTX *sctx, SSL **server)
{
    BIO *cb = NULL, *sb = NULL;
    SSL *c = SSL_new(cctx), *s = SSL_new(sctx);
    int cdone = 0, sdone = 0;
    if (c == NULL || s == NULL || BIO_new_bio_pair(&cb, 0, &sb, 0) != 1) {
        SSL_free(c);
        SSL_free(s);
        return NULL;
    }
    SSL_set_bio(c, cb, cb);
    SSL_set_bio(s, sb, sb);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    for (int i = 0; i < 20 && !(cdone && sdone); i++) {
        cdone = cdone || SSL_do_handshake(c) == 1;
        sdone = sdone || SSL_do_handshake(s) == 1;
    }
    *server = s;
    if (!cdone || !sdone) {
        SSL_free(c);
        return NULL;
    }
    return c;
}

static double session_binding_us(int iterations)
{
    char err[256];
    SSL_CTX *cctx = tls_client_ctx_new(err, sizeof(err));
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    EVP_PKEY *key = EVP_EC_gen("P-384");
    X509 *x = X509_new();
    SSL *server = NULL, *client = NULL;
    uint8_t exporter[BINDING_SESSION_LEN], out[32];
    const char *why = NULL;
    double t0, us = -1;

    if (cctx != NULL && sctx != NULL && key != NULL && x != NULL && X509_set_pubkey(x, key) == 1 &&
        X509_gmtime_adj(X509_getm_notBefore(x), 0) != NULL &&
        X509_gmtime_adj(X509_getm_notAfter(x), 3600) != NULL &&
        X509_sign(x, key, EVP_sha384()) > 0 && SSL_CTX_use_certificate(sctx, x) == 1 &&
        SSL_CTX_use_PrivateKey(sctx, key) == 1)
        client = memory_tls_pair(cctx, sctx, &server);
    if (client != NULL) {
        struct tls_conn t = {.ssl = client};
        t0 = now_us();
        for (int i = 0; i < iterations; i++) {
            if (tls_session_exporter(&t, exporter, &why) != 0 ||
                binding_session_digest(x, exporter, out) != 0) {
                fprintf(stderr, "verify_bench: session binding: %s\n", why ? why : "digest");
                break;
            }
        }
        us = (now_us() - t0) / iterations;
    }
    SSL_free(client);
    SSL_free(server);
    X509_free(x);
    EVP_PKEY_free(key);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    return us;
}

int main(int argc, char **argv)
{
    char path[4096];
    char err[256];
    const char *vectors = getenv("NITRO_VECTORS");
    int iterations = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 2000;
    int cold_iterations;
    size_t len;
    uint8_t *doc;
    struct nitro_document d;
    struct verify_error verr;
    struct policy policy = {.max_age_ms = 5 * 60 * 1000, .skew_ms = 60 * 1000};
    struct verify_request req = {
        .policy = &policy, .binding = BINDING_NONE, .skip_measurements = true};
    struct verifier *v;
    struct verifier_stats st;
    double t0, cold, warm, p384;

    if (iterations < 10 * ROUNDS)
        iterations = 10 * ROUNDS;
    cold_iterations = iterations / 5 > 10 ? iterations / 5 : 10;
    if (argc > 1)
        snprintf(path, sizeof(path), "%s", argv[1]);
    else
        snprintf(path, sizeof(path), "%s/real-2.cbor",
                 vectors != NULL ? vectors : "tests/vectors/nitro");
    log_configure(LOG_LEVEL_ERROR, LOG_FORMAT_LOGFMT, NULL);
    doc = read_file(path, &len);
    if (cose_decode_document(doc, len, &d, &verr) != 0) {
        fprintf(stderr, "verify_bench: %s: %s\n", path, verify_reason_string(verr.reason));
        return 2;
    }
    req.now_ms = (int64_t)d.timestamp_ms;
    policy.allow_debug = true;
    v = verifier_new(NULL, err, sizeof(err));
    if (v == NULL) {
        fprintf(stderr, "verify_bench: %s\n", err);
        return 2;
    }

    verify_once(v, &req, doc, len); /* warm-up: code paths, provider fetches */
    t0 = now_us();
    for (int i = 0; i < cold_iterations; i++) {
        verifier_clear_cache(v);
        verify_once(v, &req, doc, len);
    }
    cold = (now_us() - t0) / cold_iterations;

    verify_once(v, &req, doc, len);
    warm = p384 = 0;
    for (int r = 0; r < ROUNDS; r++) {
        double w, k;
        t0 = now_us();
        for (int i = 0; i < iterations / ROUNDS; i++)
            verify_once(v, &req, doc, len);
        w = (now_us() - t0) / (iterations / ROUNDS);
        k = p384_verify_us(iterations / ROUNDS);
        warm = r == 0 || w < warm ? w : warm;
        p384 = r == 0 || k < p384 ? k : p384;
    }
    verifier_get_stats(v, &st);

    printf("document                    %s (%zu bytes), checked at its timestamp\n", path, len);
    printf("cold verification           %8.1f us/op  (n=%d; empty intermediate cache)\n", cold,
           cold_iterations);
    printf(
        "warm verification           %8.1f us/op  (n=%d, fastest of %d rounds; %llu warm, %llu of "
        "them leaf verdicts, %llu cold chain checks)\n",
        warm, iterations, ROUNDS, (unsigned long long)st.chain_warm,
        (unsigned long long)st.chain_leaf_hits, (unsigned long long)st.chain_cold);
    breakdown(v, doc, len, req.now_ms, iterations);
    printf("P-384 verify (in process)   %8.1f us/op  (EVP_PKEY_verify, SHA-384; fastest of %d "
           "rounds)\n",
           p384, ROUNDS);
    printf("warm / P-384 verify         %8.2f      (target <= 1.20)\n", warm / p384);
    printf("cold / warm                 %8.2f\n", cold / warm);
    printf("session binding             %8.2f us/op  (TLS exporter + SHA-256(SPKI || exporter) on "
           "TLS 1.3, each side of a native-session attestation; n=%d)\n",
           session_binding_us(iterations * 10), iterations * 10);
    verifier_free(v);
    free(doc);
    return 0;
}
