#include "proxy/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "verify/verifier.h"

/* ---- The ciphertext queues and their BIO ------------------------------------------------- */

#define QUEUE_MIN  4096
#define QUEUE_KEEP (TLS_RECORD_MAX + 1024) /* a drained queue larger than this is freed */

static void queue_free(struct tls_queue *q)
{
    free(q->buf);
    memset(q, 0, sizeof(*q));
}

/* Appends `len` bytes; the waiting bytes move to the front first when that makes room. */
static int queue_put(struct tls_queue *q, const char *data, size_t len)
{
    if (len == 0)
        return 0;
    if (len > q->cap - q->off - q->len) {
        if (q->off > 0) {
            memmove(q->buf, q->buf + q->off, q->len);
            q->off = 0;
        }
        if (len > q->cap - q->len) {
            size_t cap = q->cap > QUEUE_MIN ? q->cap : QUEUE_MIN;
            char *nb;
            if (len > SIZE_MAX / 2 - q->len)
                return -ENOMEM;
            while (cap < q->len + len)
                cap *= 2;
            nb = realloc(q->buf, cap);
            if (nb == NULL)
                return -ENOMEM;
            q->buf = nb;
            q->cap = cap;
        }
    }
    memcpy(q->buf + q->off + q->len, data, len);
    q->len += len;
    return 0;
}

/* Marks `n` waiting bytes as gone; a drained queue starts at the front again, and gives its
 * storage back when it grew beyond a record (a large feed), so that no idle connection keeps
 * a large buffer. */
static void queue_drop(struct tls_queue *q, size_t n)
{
    q->off += n;
    q->len -= n;
    if (q->len == 0) {
        q->off = 0;
        if (q->cap > QUEUE_KEEP)
            queue_free(q);
    }
}

static int bio_write(BIO *b, const char *data, size_t len, size_t *written)
{
    struct tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (queue_put(&t->out, data, len) < 0) {
        *written = 0;
        return 0; /* no retry flag: a fatal error for OpenSSL */
    }
    *written = len;
    return 1;
}

/* An empty input queue asks OpenSSL to retry (want read), as a non-blocking socket would. */
static int bio_read(BIO *b, char *out, size_t cap, size_t *got)
{
    struct tls_conn *t = BIO_get_data(b);
    size_t n = t->in.len < cap ? t->in.len : cap;
    BIO_clear_retry_flags(b);
    if (n == 0) {
        BIO_set_retry_read(b);
        *got = 0;
        return 0;
    }
    memcpy(out, t->in.buf + t->in.off, n);
    queue_drop(&t->in, n);
    *got = n;
    return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    struct tls_conn *t = BIO_get_data(b);
    (void)num;
    (void)ptr;
    switch (cmd) {
    case BIO_CTRL_PENDING:
        return (long)t->in.len;
    case BIO_CTRL_WPENDING:
        return (long)t->out.len;
    case BIO_CTRL_FLUSH:
        return 1; /* nothing to flush: the owner sends the output queue */
    default:
        return 0; /* no kTLS, no datagram controls, no EOF: queues only wait for bytes */
    }
}

/* One method table for every connection, made with the first context and kept for the
 * process's life (like OpenSSL's own method tables). */
static BIO_METHOD *queue_method;

static BIO_METHOD *queue_bio_method(void)
{
    BIO_METHOD *m;
    if (queue_method != NULL)
        return queue_method;
    m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "attestproxy ciphertext queues");
    if (m == NULL || BIO_meth_set_write_ex(m, bio_write) != 1 ||
        BIO_meth_set_read_ex(m, bio_read) != 1 || BIO_meth_set_ctrl(m, bio_ctrl) != 1) {
        BIO_meth_free(m);
        return NULL;
    }
    queue_method = m;
    return m;
}

/* ---- Context and connections -------------------------------------------------------------- */

static int new_session_cb(SSL *ssl, SSL_SESSION *s)
{
    struct tls_conn *t = SSL_get_app_data(ssl);
    if (t == NULL || t->on_session == NULL)
        return 0;
    return t->on_session(t->arg, s) ? 1 : 0;
}

/*
 * Certificate verification callback: accepts every certificate. This is deliberate and safe
 * only because no request byte is ever sent before the peer key is attested (see tls.h): the
 * Nitro attestation document, bound to this key, is the trust decision, not a CA.
 */
static int accept_any_certificate(int preverify_ok, X509_STORE_CTX *ctx)
{
    (void)preverify_ok;
    (void)ctx;
    return 1;
}

SSL_CTX *tls_client_ctx_new(char *err, size_t cap)
{
    static const unsigned char alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX *ctx;
    char e[256];

    if (queue_bio_method() == NULL) {
        snprintf(err, cap, "cannot make the TLS BIO method: %s", tls_error_string(e, sizeof(e)));
        return NULL;
    }
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        snprintf(err, cap, "SSL_CTX_new: %s", tls_error_string(e, sizeof(e)));
        return NULL;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        snprintf(err, cap, "cannot require TLS 1.2: %s", tls_error_string(e, sizeof(e)));
        goto fail;
    }
    /* The pin is taken from the handshake once; a TLS 1.2 renegotiation could present another
     * certificate on the same connection afterwards. Refusing renegotiation keeps "the pin is
     * this connection's peer" true by construction (TLS 1.3 has no renegotiation). */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, accept_any_certificate);
    /* Sessions are kept per service by the proxy (with the pin of the key they were made
     * with), never in OpenSSL's internal cache. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    /* OpenSSL takes all the ciphertext waiting in the input queue with one BIO read, instead
     * of a record's header and then its body (two reads per record). What it took but has not
     * decrypted yet still counts as waiting: tls_in_empty() asks SSL_has_pending(). */
    SSL_CTX_set_read_ahead(ctx, 1);
    /* OpenSSL's record buffers (~17 KiB each way) are kept across records and requests, not
     * released after every record (SSL_MODE_RELEASE_BUFFERS): a keep-alive request would
     * otherwise allocate and free both. A connection left waiting in the middle of an exchange
     * gives them back (tls_release_buffers(), upstream.c deliver()). */
    if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn)) != 0) {
        snprintf(err, cap, "cannot set ALPN: %s", tls_error_string(e, sizeof(e)));
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static bool is_ip_literal(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

int tls_conn_init(struct tls_conn *t, SSL_CTX *ctx, const char *sni, SSL_SESSION *resume,
                  bool (*on_session)(void *arg, SSL_SESSION *s), void *arg)
{
    BIO *bio = NULL;

    memset(t, 0, sizeof(*t));
    t->ssl = SSL_new(ctx);
    if (t->ssl == NULL || queue_method == NULL || (bio = BIO_new(queue_method)) == NULL)
        goto fail;
    /* One BIO both ways: OpenSSL reads t->in and appends to t->out. The connection must not
     * move while the BIO lives (it is freed with the SSL object). */
    BIO_set_data(bio, t);
    BIO_set_init(bio, 1);
    SSL_set_bio(t->ssl, bio, bio); /* one reference, taken by the SSL object */
    SSL_set_connect_state(t->ssl);
    SSL_set_app_data(t->ssl, t);
    t->on_session = on_session;
    t->arg = arg;
    if (sni != NULL && sni[0] != '\0' && !is_ip_literal(sni) &&
        SSL_set_tlsext_host_name(t->ssl, sni) != 1)
        goto fail_ssl;
    /* Without a keeper of sessions the server is not even asked for a TLS 1.2 ticket; a TLS
     * 1.3 ticket it sends anyway is dropped by new_session_cb. */
    if (on_session == NULL)
        SSL_set_options(t->ssl, SSL_OP_NO_TICKET);
    if (resume != NULL)
        SSL_set_session(t->ssl, resume);
    return 0;
fail:
    BIO_free(bio);
    SSL_free(t->ssl);
    memset(t, 0, sizeof(*t));
    return -ENOMEM;
fail_ssl:
    tls_conn_free(t);
    return -EINVAL;
}

int tls_conn_init_server(struct tls_conn *t, SSL_CTX *ctx)
{
    BIO *bio;

    memset(t, 0, sizeof(*t));
    if (queue_bio_method() == NULL || (t->ssl = SSL_new(ctx)) == NULL)
        goto fail;
    bio = BIO_new(queue_method);
    if (bio == NULL)
        goto fail;
    BIO_set_data(bio, t);
    BIO_set_init(bio, 1);
    SSL_set_bio(t->ssl, bio, bio);
    SSL_set_accept_state(t->ssl);
    SSL_set_app_data(t->ssl, t);
    return 0;
fail:
    SSL_free(t->ssl);
    memset(t, 0, sizeof(*t));
    return -ENOMEM;
}

void tls_conn_free(struct tls_conn *t)
{
    if (t->ssl != NULL) {
        SSL_set_app_data(t->ssl, NULL);
        SSL_free(t->ssl); /* frees the BIO */
    }
    queue_free(&t->in);
    queue_free(&t->out);
    memset(t, 0, sizeof(*t));
}

int tls_feed(struct tls_conn *t, const char *data, size_t len)
{
    return queue_put(&t->in, data, len);
}

bool tls_in_empty(const struct tls_conn *t)
{
    return t->in.len == 0 && SSL_has_pending(t->ssl) == 0;
}

bool tls_release_buffers(struct tls_conn *t)
{
    if (t->in.len == 0)
        queue_free(&t->in);
    if (t->out.len == 0)
        queue_free(&t->out);
    return t->ssl != NULL && SSL_free_buffers(t->ssl) == 1;
}

const char *tls_out_peek(const struct tls_conn *t, size_t *len)
{
    *len = t->out.len;
    return t->out.len > 0 ? t->out.buf + t->out.off : NULL;
}

void tls_out_consume(struct tls_conn *t, size_t n)
{
    queue_drop(&t->out, n < t->out.len ? n : t->out.len);
}

static enum tls_result map_error(struct tls_conn *t, int rc)
{
    switch (SSL_get_error(t->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return TLS_WANT;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_CLOSED;
    default:
        return TLS_ERROR;
    }
}

enum tls_result tls_handshake(struct tls_conn *t)
{
    int rc = SSL_do_handshake(t->ssl);
    return rc == 1 ? TLS_OK : map_error(t, rc);
}

enum tls_result tls_read(struct tls_conn *t, char *buf, size_t cap, size_t *n)
{
    size_t got = 0;
    int rc = SSL_read_ex(t->ssl, buf, cap, &got);
    *n = 0;
    if (rc == 1) {
        *n = got;
        return TLS_OK;
    }
    return map_error(t, rc);
}

int tls_write(struct tls_conn *t, const char *buf, size_t len)
{
    size_t written = 0;
    while (len > 0) {
        if (SSL_write_ex(t->ssl, buf, len, &written) != 1)
            return -EIO;
        buf += written;
        len -= written;
    }
    return 0;
}

void tls_close_notify(struct tls_conn *t)
{
    if (t->ssl != NULL && SSL_is_init_finished(t->ssl))
        SSL_shutdown(t->ssl);
    ERR_clear_error();
}

bool tls_resumed(const struct tls_conn *t)
{
    return t->ssl != NULL && SSL_session_reused(t->ssl) == 1;
}

const char *tls_version(const struct tls_conn *t)
{
    return t->ssl != NULL ? SSL_get_version(t->ssl) : "none";
}

X509 *tls_peer_cert(const struct tls_conn *t)
{
    return t->ssl != NULL ? SSL_get0_peer_certificate(t->ssl) : NULL;
}

int tls_peer_pin(const struct tls_conn *t, bool cert_hash, uint8_t out[32])
{
    X509 *cert = tls_peer_cert(t);
    unsigned char *der = NULL;
    unsigned mdlen = 0;
    int len, rc = -EINVAL;

    if (cert == NULL)
        return -EINVAL;
    if (!cert_hash)
        return verifier_spki_pin(cert, out) == 0 ? 0 : -EINVAL;
    len = i2d_X509(cert, &der);
    if (len > 0 && EVP_Digest(der, (size_t)len, out, &mdlen, EVP_sha256(), NULL) == 1 &&
        mdlen == 32)
        rc = 0;
    OPENSSL_free(der);
    return rc;
}

int tls_session_exporter(const struct tls_conn *t, uint8_t out[BINDING_SESSION_LEN],
                         const char **why)
{
    static const char label[] = BINDING_SESSION_LABEL;

    if (t->ssl == NULL || !SSL_is_init_finished(t->ssl)) {
        *why = "the TLS handshake is not complete";
        return -EPROTO;
    }
    if (SSL_version(t->ssl) < TLS1_3_VERSION) {
        /* TLS 1.2: the extended master secret (else a relay can give two sessions one master
         * secret), and an ephemeral key exchange (with RSA key transport whoever holds the
         * server's key decrypts the pre-master secret, and so knows the exporter, of a session
         * it only passed through). */
        const SSL_CIPHER *cipher = SSL_get_current_cipher(t->ssl);
        int kx = cipher != NULL ? SSL_CIPHER_get_kx_nid(cipher) : NID_undef;
        if (SSL_get_extms_support(t->ssl) != 1) {
            *why = "session-bound evidence needs TLS 1.3, or TLS 1.2 with the extended master "
                   "secret";
            return -EPROTO;
        }
        if (kx != NID_kx_ecdhe && kx != NID_kx_dhe) {
            *why = "session-bound evidence needs an ephemeral (ECDHE or DHE) key exchange on "
                   "TLS 1.2";
            return -EPROTO;
        }
    }
    if (SSL_export_keying_material(t->ssl, out, BINDING_SESSION_LEN, label, sizeof(label) - 1, NULL,
                                   0, 0) != 1) {
        ERR_clear_error();
        *why = "the TLS exporter failed";
        return -EIO;
    }
    return 0;
}

const char *tls_error_string(char *buf, size_t cap)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(buf, cap, "unknown TLS error");
    else
        ERR_error_string_n(e, buf, cap);
    ERR_clear_error();
    return buf;
}
