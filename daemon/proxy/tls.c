#include "proxy/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "verify/verifier.h"

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
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    char e[256];

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
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
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
    memset(t, 0, sizeof(*t));
    t->ssl = SSL_new(ctx);
    t->net_in = BIO_new(BIO_s_mem());
    t->net_out = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->net_in == NULL || t->net_out == NULL)
        goto fail;
    /* An empty memory BIO reports "retry" instead of EOF. */
    BIO_set_mem_eof_return(t->net_in, -1);
    BIO_set_mem_eof_return(t->net_out, -1);
    SSL_set_bio(t->ssl, t->net_in, t->net_out);
    SSL_set_connect_state(t->ssl);
    SSL_set_app_data(t->ssl, t);
    t->on_session = on_session;
    t->arg = arg;
    if (sni != NULL && sni[0] != '\0' && !is_ip_literal(sni) &&
        SSL_set_tlsext_host_name(t->ssl, sni) != 1)
        goto fail_ssl;
    if (resume != NULL)
        SSL_set_session(t->ssl, resume);
    return 0;
fail:
    BIO_free(t->net_in);
    BIO_free(t->net_out);
    SSL_free(t->ssl);
    memset(t, 0, sizeof(*t));
    return -ENOMEM;
fail_ssl:
    tls_conn_free(t);
    return -EINVAL;
}

void tls_conn_free(struct tls_conn *t)
{
    if (t->ssl != NULL) {
        SSL_set_app_data(t->ssl, NULL);
        SSL_free(t->ssl); /* frees both BIOs */
    }
    memset(t, 0, sizeof(*t));
}

int tls_feed(struct tls_conn *t, const char *data, size_t len)
{
    while (len > 0) {
        int chunk = len > (size_t)INT32_MAX ? INT32_MAX : (int)len;
        int n = BIO_write(t->net_in, data, chunk);
        if (n <= 0)
            return -ENOMEM;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

bool tls_in_empty(const struct tls_conn *t)
{
    return BIO_ctrl_pending(t->net_in) == 0 && SSL_has_pending(t->ssl) == 0;
}

size_t tls_out_pending(const struct tls_conn *t)
{
    return t->net_out != NULL ? BIO_ctrl_pending(t->net_out) : 0;
}

size_t tls_out_take(struct tls_conn *t, char *buf, size_t cap)
{
    int n;
    if (cap > (size_t)INT32_MAX)
        cap = INT32_MAX;
    n = BIO_read(t->net_out, buf, (int)cap);
    return n > 0 ? (size_t)n : 0;
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
