/*
 * TLS for upstream connections: the client SSL_CTX and a BIO bridge between OpenSSL and
 * libuv. The connection owner moves ciphertext: bytes read from the socket go in with
 * tls_feed(); bytes OpenSSL wants sent wait in the connection's output queue, read in place
 * with tls_out_peek() and tls_out_consume() after every operation. The BIO is this module's own:
 * two byte queues that OpenSSL reads and appends to, with none of a memory BIO's generality
 * (docs/benchmarks.md, "Instructions per request").
 *
 * The upstream certificate is NOT verified against any CA: an enclave's TLS certificate is
 * self-signed, and trust comes from attestation instead. The handshake therefore accepts any
 * certificate, and the connection carries no request until its peer key (the pin) is found in
 * the service's attested key set or attested over this very connection (upstream.c, attest.c).
 */
#ifndef ATTESTPROXY_PROXY_TLS_H
#define ATTESTPROXY_PROXY_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "verify/binding.h"

#define TLS_RECORD_MAX (16 * 1024) /* plaintext per record: the unit of SSL_read/SSL_write */

/* Bytes buf[off, off + len) wait; the storage is allocated on demand. */
struct tls_queue {
    char *buf;
    size_t off, len, cap;
};

struct tls_conn {
    SSL *ssl;
    struct tls_queue in;  /* ciphertext received, for OpenSSL to read */
    struct tls_queue out; /* ciphertext OpenSSL produced, to send */
    /* Called when the server issues a session (TLS 1.3: after the handshake, during reads).
     * Returns true when it kept the reference to `s`. */
    bool (*on_session)(void *arg, SSL_SESSION *s);
    void *arg;
};

enum tls_result {
    TLS_OK = 0, /* done (handshake complete, data read) */
    TLS_WANT,   /* more ciphertext is needed */
    TLS_CLOSED, /* the peer sent close_notify */
    TLS_ERROR,  /* fatal; the connection must be closed */
};

/**
 * Creates the client context: TLS 1.2 minimum (1.3 preferred by OpenSSL's negotiation),
 * certificate verification off (see above), session tickets kept by the caller through
 * tls_conn.on_session, ALPN "http/1.1". Returns NULL with a message in `err`.
 */
SSL_CTX *tls_client_ctx_new(char *err, size_t cap);

/**
 * Prepares a client connection: SNI `sni` when non-empty, offering `resume` (may be NULL) for
 * resumption. With `on_session` NULL the connection asks for no session ticket and keeps no
 * session (BRIEF §2.7: resumption off). Returns 0 or -ENOMEM. Free with tls_conn_free().
 */
int tls_conn_init(struct tls_conn *t, SSL_CTX *ctx, const char *sni, SSL_SESSION *resume,
                  bool (*on_session)(void *arg, SSL_SESSION *s), void *arg);
void tls_conn_free(struct tls_conn *t);

/**
 * Prepares a server connection on `ctx` (a server context of the caller's, e.g. the enclave
 * companion's), over the same ciphertext queues: the owner feeds, reads, writes and sends
 * exactly as for a client connection. Returns 0 or -ENOMEM. Free with tls_conn_free().
 */
int tls_conn_init_server(struct tls_conn *t, SSL_CTX *ctx);

/** Hands ciphertext from the socket to OpenSSL. Returns 0 or -ENOMEM. */
int tls_feed(struct tls_conn *t, const char *data, size_t len);

/** True when no received byte waits anywhere (input queue, OpenSSL's record buffer): a read
 *  could then only answer "want more", so the caller need not ask. */
bool tls_in_empty(const struct tls_conn *t);

/** Frees OpenSSL's read and write record buffers and the empty ciphertext queues (allocated
 *  again by the next record). Returns false, keeping OpenSSL's, while they hold a partial
 *  record. */
bool tls_release_buffers(struct tls_conn *t);

/** The ciphertext waiting to be sent, in place (valid until the next TLS operation), and
 *  marking its first `n` bytes sent. */
const char *tls_out_peek(const struct tls_conn *t, size_t *len);
void tls_out_consume(struct tls_conn *t, size_t n);

/** Advances the handshake. */
enum tls_result tls_handshake(struct tls_conn *t);

/** Reads decrypted bytes: TLS_OK with `*n` > 0, TLS_WANT, TLS_CLOSED or TLS_ERROR. */
enum tls_result tls_read(struct tls_conn *t, char *buf, size_t cap, size_t *n);

/** Encrypts `len` bytes (always accepted: the output queue grows). Returns 0 or -EIO. */
int tls_write(struct tls_conn *t, const char *buf, size_t len);

/** Queues a close_notify (best effort). */
void tls_close_notify(struct tls_conn *t);

/** True when the handshake resumed a session. */
bool tls_resumed(const struct tls_conn *t);

/** The negotiated protocol name ("TLSv1.3"). */
const char *tls_version(const struct tls_conn *t);

/** The peer's leaf certificate (borrowed; valid while the connection lives), or NULL. */
X509 *tls_peer_cert(const struct tls_conn *t);

/**
 * The pin of the peer: SHA-256 of its SubjectPublicKeyInfo DER, or of its certificate DER when
 * `cert_hash` (bindings that hash the certificate). Returns 0 or -EINVAL (no certificate).
 */
int tls_peer_pin(const struct tls_conn *t, bool cert_hash, uint8_t out[32]);

/**
 * Session-bound evidence (docs/evidence-protocol.md, §12): the connection's TLS exporter for
 * BINDING_SESSION_LABEL (no context, BINDING_SESSION_LEN bytes), which both ends hash into the
 * document's user_data. It binds the session only on TLS 1.3, or on TLS 1.2 with the extended
 * master secret (RFC 7627) and an ephemeral (ECDHE, DHE) key exchange: on any other connection
 * this returns -EPROTO with the reason in `*why`. 0, or -EPROTO / -EIO.
 */
int tls_session_exporter(const struct tls_conn *t, uint8_t out[BINDING_SESSION_LEN],
                         const char **why);

/** Describes the last OpenSSL error of this thread into `buf` and clears the queue. */
const char *tls_error_string(char *buf, size_t cap);

#endif
