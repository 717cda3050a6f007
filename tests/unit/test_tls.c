/*
 * Unit tests for proxy/tls.c: the ciphertext-queue bridge against an in-process OpenSSL server
 * (bytes pumped by hand, no sockets): handshake, SNI (names only, never IP literals), TLS 1.2
 * minimum, any certificate accepted (trust comes from attestation), both pin kinds, data both
 * ways, the queues (large writes sent in pieces, input fed a byte at a time, buffers released
 * and allocated again), session capture and resumption, renegotiation refused, the
 * session-bound evidence exporter.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "proxy/tls.h"

struct server {
    SSL_CTX *ctx;
    EVP_PKEY *key;
    X509 *cert;
    char sni_seen[256];
};

struct peer {
    SSL *ssl;
    BIO *in, *out;
};

static X509 *self_signed(EVP_PKEY *key)
{
    X509 *x = X509_new();
    X509_NAME *name;
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"enclave", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    return x;
}

static int servername_cb(SSL *ssl, int *al, void *arg)
{
    struct server *s = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    (void)al;
    snprintf(s->sni_seen, sizeof(s->sni_seen), "%s", name != NULL ? name : "");
    return SSL_TLSEXT_ERR_OK;
}

static void server_init(struct server *s, int max_version)
{
    memset(s, 0, sizeof(*s));
    s->key = EVP_EC_gen("P-256");
    assert_non_null(s->key);
    s->cert = self_signed(s->key);
    s->ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(s->ctx);
    assert_int_equal(SSL_CTX_use_certificate(s->ctx, s->cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(s->ctx, s->key), 1);
    SSL_CTX_set_tlsext_servername_callback(s->ctx, servername_cb);
    SSL_CTX_set_tlsext_servername_arg(s->ctx, s);
    if (max_version != 0) {
        SSL_CTX_set_security_level(s->ctx, 0);
        SSL_CTX_set_min_proto_version(s->ctx, 0);
        SSL_CTX_set_max_proto_version(s->ctx, max_version);
    }
}

static void server_free(struct server *s)
{
    SSL_CTX_free(s->ctx);
    X509_free(s->cert);
    EVP_PKEY_free(s->key);
}

static void peer_init(struct peer *p, struct server *s)
{
    p->ssl = SSL_new(s->ctx);
    p->in = BIO_new(BIO_s_mem());
    p->out = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(p->in, -1);
    BIO_set_mem_eof_return(p->out, -1);
    SSL_set_bio(p->ssl, p->in, p->out);
    SSL_set_accept_state(p->ssl);
}

/* Moves every pending byte both ways once; returns how many moved. */
static size_t pump(struct tls_conn *c, struct peer *p)
{
    char buf[65536];
    const char *out;
    size_t moved = 0, n;
    int k;
    if ((out = tls_out_peek(c, &n)) != NULL) {
        BIO_write(p->in, out, (int)n);
        tls_out_consume(c, n);
        moved += n;
    }
    SSL_do_handshake(p->ssl); /* no-op once done; drives the server otherwise */
    while ((k = BIO_read(p->out, buf, sizeof(buf))) > 0) {
        assert_int_equal(tls_feed(c, buf, (size_t)k), 0);
        moved += (size_t)k;
    }
    return moved;
}

static enum tls_result handshake(struct tls_conn *c, struct peer *p)
{
    enum tls_result r = TLS_WANT;
    for (int i = 0; i < 20 && r == TLS_WANT; i++) {
        r = tls_handshake(c);
        pump(c, p);
    }
    return r;
}

struct sessions {
    SSL_SESSION *kept;
    int calls;
};

static bool keep_session(void *arg, SSL_SESSION *s)
{
    struct sessions *ss = arg;
    ss->calls++;
    if (ss->kept != NULL)
        SSL_SESSION_free(ss->kept);
    ss->kept = s;
    return true;
}

static void expected_pins(X509 *cert, uint8_t spki[32], uint8_t whole[32])
{
    unsigned char *der = NULL;
    unsigned len = 0;
    int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    assert_true(n > 0);
    EVP_Digest(der, (size_t)n, spki, &len, EVP_sha256(), NULL);
    OPENSSL_free(der);
    der = NULL;
    n = i2d_X509(cert, &der);
    assert_true(n > 0);
    EVP_Digest(der, (size_t)n, whole, &len, EVP_sha256(), NULL);
    OPENSSL_free(der);
}

static void test_handshake_pins_data_and_sni(void **state)
{
    char err[256], buf[64];
    struct server s;
    struct peer p;
    struct tls_conn c;
    SSL_CTX *ctx = tls_client_ctx_new(err, sizeof(err));
    uint8_t pin[32], want_spki[32], want_cert[32];
    size_t n = 0;
    int k;
    (void)state;

    assert_non_null(ctx);
    server_init(&s, 0);
    peer_init(&p, &s);
    assert_int_equal(tls_conn_init(&c, ctx, "enclave.example", NULL, NULL, NULL), 0);
    /* A self-signed certificate from no CA is accepted: the pin decides, not a CA. */
    assert_int_equal(handshake(&c, &p), TLS_OK);
    assert_string_equal(tls_version(&c), "TLSv1.3");
    assert_string_equal(s.sni_seen, "enclave.example");
    assert_false(tls_resumed(&c));

    expected_pins(s.cert, want_spki, want_cert);
    assert_int_equal(tls_peer_pin(&c, false, pin), 0);
    assert_memory_equal(pin, want_spki, 32);
    assert_int_equal(tls_peer_pin(&c, true, pin), 0);
    assert_memory_equal(pin, want_cert, 32);

    assert_int_equal(tls_write(&c, "ping", 4), 0);
    pump(&c, &p);
    k = SSL_read(p.ssl, buf, sizeof(buf));
    assert_int_equal(k, 4);
    assert_memory_equal(buf, "ping", 4);
    assert_int_equal(SSL_write(p.ssl, "pong!", 5), 5);
    pump(&c, &p);
    assert_false(tls_in_empty(&c)); /* a record waits */
    assert_int_equal(tls_read(&c, buf, sizeof(buf), &n), TLS_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "pong!", 5);
    assert_true(tls_in_empty(&c)); /* so a read could only want more: */
    assert_int_equal(tls_read(&c, buf, sizeof(buf), &n), TLS_WANT);

    /* Two records fed at once: OpenSSL reads ahead, taking both from the input queue with the
     * first read, and the second still counts as waiting (deliver() reads until it does not). */
    assert_int_equal(SSL_write(p.ssl, "one", 3), 3);
    assert_int_equal(SSL_write(p.ssl, "two", 3), 3);
    pump(&c, &p);
    assert_int_equal(tls_read(&c, buf, sizeof(buf), &n), TLS_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(buf, "one", 3);
    assert_int_equal(c.in.len, 0);
    assert_false(tls_in_empty(&c));
    assert_int_equal(tls_read(&c, buf, sizeof(buf), &n), TLS_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(buf, "two", 3);
    assert_true(tls_in_empty(&c));

    /* close_notify from the server reads as TLS_CLOSED. */
    SSL_shutdown(p.ssl);
    pump(&c, &p);
    assert_false(tls_in_empty(&c));
    assert_int_equal(tls_read(&c, buf, sizeof(buf), &n), TLS_CLOSED);

    tls_conn_free(&c);
    SSL_free(p.ssl);
    server_free(&s);
    SSL_CTX_free(ctx);
}

/* Reads from the server until `want` bytes came, checking them against `expect`. */
static void server_reads(struct peer *p, const char *expect, size_t want)
{
    static char got[200 * 1024];
    size_t have = 0;
    while (have < want) {
        int k = SSL_read(p->ssl, got + have, (int)(want - have));
        assert_true(k > 0);
        have += (size_t)k;
    }
    assert_memory_equal(got, expect, want);
}

static void test_queues_order_pieces_and_release(void **state)
{
    char err[256], buf[TLS_RECORD_MAX];
    static char big[150 * 1024], wire[200 * 1024];
    struct server s;
    struct peer p;
    struct tls_conn c;
    SSL_CTX *ctx = tls_client_ctx_new(err, sizeof(err));
    size_t n = 0, len = 0, sent = 0, have = 0;
    const char *out;
    int k;
    (void)state;

    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)(i * 7 + i / 251);
    assert_non_null(ctx);
    server_init(&s, 0);
    peer_init(&p, &s);
    assert_int_equal(tls_conn_init(&c, ctx, "enclave.example", NULL, NULL, NULL), 0);
    assert_int_equal(handshake(&c, &p), TLS_OK);

    /* A write of many records waits whole in the output queue; it leaves in uneven pieces, read
     * in place, and arrives in order. */
    assert_int_equal(tls_write(&c, big, sizeof(big)), 0);
    assert_non_null(tls_out_peek(&c, &len));
    assert_true(len > sizeof(big));
    for (size_t step = 1; (out = tls_out_peek(&c, &len)) != NULL; step = step * 3 + 1) {
        size_t take = len < step ? len : step;
        memcpy(wire + sent, out, take);
        sent += take;
        tls_out_consume(&c, take);
    }
    assert_null(tls_out_peek(&c, &len));
    assert_int_equal(len, 0);
    BIO_write(p.in, wire, (int)sent);
    server_reads(&p, big, sizeof(big));

    /* The server's records fed one byte at a time: a partial record is "not empty" yet reads
     * as want-more, and the whole answer comes out intact. */
    assert_int_equal(SSL_write(p.ssl, big, 40000), 40000);
    while ((k = BIO_read(p.out, wire + have, (int)(sizeof(wire) - have))) > 0)
        have += (size_t)k;
    assert_int_equal(tls_feed(&c, wire, 1), 0);
    assert_false(tls_in_empty(&c));
    assert_int_equal(tls_read(&c, buf, sizeof(buf), &n), TLS_WANT);
    for (size_t i = 1, got = 0; got < 40000;) {
        enum tls_result r = tls_read(&c, buf, sizeof(buf), &n);
        if (r == TLS_OK) {
            assert_memory_equal(buf, big + got, n);
            got += n;
            continue;
        }
        assert_int_equal(r, TLS_WANT);
        assert_true(i < have);
        assert_int_equal(tls_feed(&c, wire + i, 1), 0);
        i++;
    }
    assert_true(tls_in_empty(&c));

    /* Buffers released between exchanges come back with the next record, both ways. */
    assert_true(tls_release_buffers(&c));
    assert_null(c.in.buf);
    assert_null(c.out.buf);
    assert_int_equal(tls_write(&c, "again", 5), 0);
    pump(&c, &p);
    server_reads(&p, "again", 5);
    assert_int_equal(SSL_write(p.ssl, "back", 4), 4);
    pump(&c, &p);
    assert_int_equal(tls_read(&c, buf, sizeof(buf), &n), TLS_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(buf, "back", 4);

    /* A partial record is kept by a release (OpenSSL's buffer holds it). */
    assert_int_equal(SSL_write(p.ssl, "partial", 7), 7);
    have = 0;
    while ((k = BIO_read(p.out, wire + have, (int)(sizeof(wire) - have))) > 0)
        have += (size_t)k;
    assert_int_equal(tls_feed(&c, wire, have - 3), 0);
    assert_int_equal(tls_read(&c, buf, sizeof(buf), &n), TLS_WANT);
    (void)tls_release_buffers(&c);
    assert_int_equal(tls_feed(&c, wire + have - 3, 3), 0);
    assert_int_equal(tls_read(&c, buf, sizeof(buf), &n), TLS_OK);
    assert_int_equal(n, 7);
    assert_memory_equal(buf, "partial", 7);

    tls_conn_free(&c);
    SSL_free(p.ssl);
    server_free(&s);
    SSL_CTX_free(ctx);
}

static void test_no_sni_for_ip_literals(void **state)
{
    const char *literals[] = {"127.0.0.1", "::1", "", NULL};
    char err[256];
    SSL_CTX *ctx = tls_client_ctx_new(err, sizeof(err));
    (void)state;
    assert_non_null(ctx);
    for (size_t i = 0; i < sizeof(literals) / sizeof(literals[0]); i++) {
        struct server s;
        struct peer p;
        struct tls_conn c;
        server_init(&s, 0);
        peer_init(&p, &s);
        snprintf(s.sni_seen, sizeof(s.sni_seen), "unset");
        assert_int_equal(tls_conn_init(&c, ctx, literals[i], NULL, NULL, NULL), 0);
        assert_int_equal(handshake(&c, &p), TLS_OK);
        assert_string_equal(s.sni_seen, "");
        tls_conn_free(&c);
        SSL_free(p.ssl);
        server_free(&s);
    }
    SSL_CTX_free(ctx);
}

static void test_session_kept_and_resumed_with_the_same_pin(void **state)
{
    char err[256], buf[16];
    struct server s;
    struct sessions ss = {NULL, 0};
    SSL_CTX *ctx = tls_client_ctx_new(err, sizeof(err));
    uint8_t pin1[32], pin2[32];
    size_t n;
    (void)state;
    assert_non_null(ctx);
    server_init(&s, 0);
    for (int round = 0; round < 2; round++) {
        struct peer p;
        struct tls_conn c;
        peer_init(&p, &s);
        assert_int_equal(tls_conn_init(&c, ctx, "enclave.example", round == 1 ? ss.kept : NULL,
                                       keep_session, &ss),
                         0);
        assert_int_equal(handshake(&c, &p), TLS_OK);
        /* TLS 1.3 tickets arrive after the handshake, while reading. */
        assert_int_equal(SSL_write(p.ssl, "x", 1), 1);
        pump(&c, &p);
        assert_int_equal(tls_read(&c, buf, sizeof(buf), &n), TLS_OK);
        assert_int_equal(tls_peer_pin(&c, false, round == 0 ? pin1 : pin2), 0);
        if (round == 1) {
            assert_int_equal(SSL_session_reused(p.ssl), 1);
            assert_true(tls_resumed(&c));
            /* The resumed session carries the certificate of the full handshake. */
            assert_memory_equal(pin1, pin2, 32);
        }
        /* As upstream_close() does: a connection freed without close_notify marks its
         * session not resumable in OpenSSL. */
        tls_close_notify(&c);
        tls_conn_free(&c);
        SSL_free(p.ssl);
    }
    assert_true(ss.calls >= 1);
    SSL_SESSION_free(ss.kept);
    server_free(&s);
    SSL_CTX_free(ctx);
}

static void test_tls_1_1_is_refused(void **state)
{
    char err[256];
    struct server s;
    struct peer p;
    struct tls_conn c;
    SSL_CTX *ctx = tls_client_ctx_new(err, sizeof(err));
    (void)state;
    assert_non_null(ctx);
    server_init(&s, TLS1_1_VERSION);
    peer_init(&p, &s);
    assert_int_equal(tls_conn_init(&c, ctx, "enclave.example", NULL, NULL, NULL), 0);
    assert_int_equal(handshake(&c, &p), TLS_ERROR);
    tls_conn_free(&c);
    SSL_free(p.ssl);
    server_free(&s);
    SSL_CTX_free(ctx);
}

static void test_tls_1_2_renegotiation_is_refused(void **state)
{
    char err[256], buf[16];
    struct server s;
    struct peer p;
    struct tls_conn c;
    SSL_CTX *ctx = tls_client_ctx_new(err, sizeof(err));
    size_t n = 0;
    enum tls_result r = TLS_WANT;
    (void)state;
    assert_non_null(ctx);
    server_init(&s, TLS1_2_VERSION);
    SSL_CTX_set_security_level(s.ctx, 1);
    SSL_CTX_set_min_proto_version(s.ctx, TLS1_2_VERSION);
    peer_init(&p, &s);
    assert_int_equal(tls_conn_init(&c, ctx, "enclave.example", NULL, NULL, NULL), 0);
    assert_int_equal(handshake(&c, &p), TLS_OK);
    assert_string_equal(tls_version(&c), "TLSv1.2");
    /* The server asks for a new handshake (which could present another certificate). */
    assert_int_equal(SSL_renegotiate(p.ssl), 1);
    SSL_do_handshake(p.ssl);
    for (int i = 0; i < 10; i++) {
        pump(&c, &p);
        r = tls_read(&c, buf, sizeof(buf), &n);
        pump(&c, &p);
        SSL_read(p.ssl, buf, sizeof(buf));
    }
    /* The client never renegotiates: the server's request is refused (a no_renegotiation
     * warning), so the certificate the pin was taken from stays the connection's. */
    assert_int_equal(SSL_renegotiate_pending(p.ssl), 1);
    (void)r;
    tls_conn_free(&c);
    SSL_free(p.ssl);
    server_free(&s);
    SSL_CTX_free(ctx);
}

/* TLS-Exporter(BINDING_SESSION_LABEL, no context, 32) of `ssl`, taken here straight from
 * OpenSSL: what the other side of the connection derives. */
static void expected_exporter(SSL *ssl, uint8_t out[32])
{
    assert_int_equal(SSL_export_keying_material(ssl, out, 32, BINDING_SESSION_LABEL,
                                                strlen(BINDING_SESSION_LABEL), NULL, 0, 0),
                     1);
}

/* One session's exporter on the client side, checked against the server's. Returns what
 * tls_session_exporter() returned. */
static int session_exporter_of(int max_version, bool no_ems, uint8_t out[32])
{
    char err[256];
    const char *why = NULL;
    struct server s;
    struct peer p;
    struct tls_conn c;
    SSL_CTX *ctx = tls_client_ctx_new(err, sizeof(err));
    uint8_t server_side[32];
    int rc;
    assert_non_null(ctx);
    server_init(&s, max_version);
    if (max_version != 0) {
        SSL_CTX_set_security_level(s.ctx, 1);
        SSL_CTX_set_min_proto_version(s.ctx, TLS1_2_VERSION);
    }
    if (no_ems)
        SSL_CTX_set_options(s.ctx, SSL_OP_NO_EXTENDED_MASTER_SECRET);
    peer_init(&p, &s);
    assert_int_equal(tls_conn_init(&c, ctx, "enclave.example", NULL, NULL, NULL), 0);
    /* Before the handshake there is no session to bind to. */
    assert_int_equal(tls_session_exporter(&c, out, &why), -EPROTO);
    assert_int_equal(handshake(&c, &p), TLS_OK);
    rc = tls_session_exporter(&c, out, &why);
    if (rc == 0) {
        expected_exporter(p.ssl, server_side);
        assert_memory_equal(out, server_side, 32);
    } else {
        assert_non_null(why);
    }
    tls_conn_free(&c);
    SSL_free(p.ssl);
    server_free(&s);
    SSL_CTX_free(ctx);
    return rc;
}

/* TLS 1.2 with RSA key transport (cipher `list`, an RSA server key): whoever holds the key
 * decrypts the pre-master secret, so the exporter binds nothing; ECDHE does. */
static int session_exporter_rsa(const char *list, uint8_t out[32])
{
    char err[256];
    const char *why = NULL;
    struct server s;
    struct peer p;
    struct tls_conn c;
    SSL_CTX *ctx = tls_client_ctx_new(err, sizeof(err));
    int rc;
    assert_non_null(ctx);
    server_init(&s, TLS1_2_VERSION);
    SSL_CTX_set_min_proto_version(s.ctx, TLS1_2_VERSION);
    EVP_PKEY_free(s.key);
    X509_free(s.cert);
    s.key = EVP_RSA_gen(2048);
    assert_non_null(s.key);
    s.cert = self_signed(s.key);
    assert_int_equal(SSL_CTX_use_certificate(s.ctx, s.cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(s.ctx, s.key), 1);
    assert_int_equal(SSL_CTX_set_cipher_list(s.ctx, list), 1);
    peer_init(&p, &s);
    assert_int_equal(tls_conn_init(&c, ctx, "enclave.example", NULL, NULL, NULL), 0);
    assert_int_equal(handshake(&c, &p), TLS_OK);
    assert_string_equal(tls_version(&c), "TLSv1.2");
    rc = tls_session_exporter(&c, out, &why);
    tls_conn_free(&c);
    SSL_free(p.ssl);
    server_free(&s);
    SSL_CTX_free(ctx);
    return rc;
}

/* Session-bound evidence: both ends take the same exporter from their session; another
 * session gives another one; TLS 1.2 only with the extended master secret (without it, a
 * relay can give two sessions one master secret, and so one exporter). */
static void test_session_exporter_binds_the_session(void **state)
{
    uint8_t a[32], b[32], d[32];
    (void)state;
    assert_int_equal(session_exporter_of(0, false, a), 0);
    assert_int_equal(session_exporter_of(0, false, b), 0);
    assert_memory_not_equal(a, b, 32);
    assert_int_equal(session_exporter_of(TLS1_2_VERSION, false, d), 0);
    assert_int_equal(session_exporter_of(TLS1_2_VERSION, true, d), -EPROTO);
    assert_int_equal(session_exporter_rsa("AES256-GCM-SHA384", d), -EPROTO);
    assert_int_equal(session_exporter_rsa("ECDHE-RSA-AES256-GCM-SHA384", d), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_pins_data_and_sni),
        cmocka_unit_test(test_queues_order_pieces_and_release),
        cmocka_unit_test(test_no_sni_for_ip_literals),
        cmocka_unit_test(test_session_kept_and_resumed_with_the_same_pin),
        cmocka_unit_test(test_tls_1_1_is_refused),
        cmocka_unit_test(test_tls_1_2_renegotiation_is_refused),
        cmocka_unit_test(test_session_exporter_binds_the_session),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
