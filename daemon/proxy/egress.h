/*
 * The proxy hop (issue #24): an HTTP forward proxy between the daemon and the enclave, crossed
 * with a CONNECT tunnel. upstream.c opens TCP to the proxy instead of the enclave, writes the
 * CONNECT request built here, feeds what the proxy answers to egress_feed() in state
 * UP_PROXYING and, on a 2xx head, runs TLS, the gate and attestation inside the tunnel exactly
 * as over a direct connection. The proxy carries bytes only: the TLS session and the attested
 * key are end to end, so a proxy that terminates TLS with its own key fails the binding check
 * of attestation (egress_binding_hint() names that likely cause in the error).
 *
 * The proxy's answer is parsed with the one strict HTTP/1 parser (http1.h), its head bounded
 * to EGRESS_HEAD_MAX bytes. Bytes the proxy sends after its 2xx head are not the proxy's: they
 * belong to the TLS stream, and egress_feed() reports where they start.
 *
 * Ownership: a `struct egress` is embedded in nothing; upstream.c allocates one per proxied
 * connection (egress_new()) and frees it with the connection (egress_free()). No callback.
 */
#ifndef ATTESTPROXY_PROXY_EGRESS_H
#define ATTESTPROXY_PROXY_EGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "base/config.h"
#include "proxy/http1.h"
#include "verify/reason.h"

#define EGRESS_HEAD_MAX    (8 * 1024) /* the proxy's response head, status line included */
#define EGRESS_HEADERS_MAX 64
#define EGRESS_REASON_MAX  64 /* the reason phrase kept for messages, sanitized */
#define EGRESS_NAME_MAX    (CONFIG_HOST_MAX + 8) /* "host:port", "[v6]:port" */
/* "CONNECT a HTTP/1.1", "Host: a", "Proxy-Authorization: Basic b" and the CRLFs. */
#define EGRESS_REQUEST_MAX (2 * EGRESS_NAME_MAX + CONFIG_PROXY_AUTH_MAX + 128)

enum egress_result {
    EGRESS_NEED_MORE = 0, /* every byte was taken; the head is not complete yet */
    EGRESS_ESTABLISHED,   /* a 2xx head: the bytes from *consumed on belong to the tunnel */
    EGRESS_REFUSED,       /* another status: tunnel_status() and the reason say which */
    EGRESS_BAD_RESPONSE,  /* not a valid HTTP/1 response head (or over EGRESS_HEAD_MAX) */
};

struct egress {
    char proxy[EGRESS_NAME_MAX];  /* the proxy, "host:port": logs and messages */
    char target[EGRESS_NAME_MAX]; /* the enclave asked for, "host:port" */
    /* The CONNECT request; holds the credentials, wiped once written (egress_wipe_request()). */
    char request[EGRESS_REQUEST_MAX];
    size_t request_len;
    uv_write_t write_req; /* upstream.c's write of `request` */
    struct http1_parser parser;
    bool parser_ready;
    unsigned status;                /* of the proxy's answer, once its head is complete */
    char reason[EGRESS_REASON_MAX]; /* its reason phrase, printable ASCII only */
    char why[192];                  /* EGRESS_BAD_RESPONSE: what was wrong */
};

/**
 * Writes the CONNECT request for `host`:`port` (an IPv6 literal is bracketed) into `out`:
 * "CONNECT host:port HTTP/1.1", "Host: host:port" and, when `basic` is not empty,
 * "Proxy-Authorization: Basic <basic>". `basic` must be base64 already (config.c encodes it).
 * Returns the length, -EINVAL for a host or credential with bytes that cannot be sent in a
 * header, or -ENOSPC. Pure.
 */
int egress_build_connect(const char *host, uint16_t port, const char *basic, char *out, size_t cap);

/** Writes "host:port" or "[v6]:port" into `out`; returns its length or -ENOSPC. Pure. */
int egress_authority(const char *host, uint16_t port, char *out, size_t cap);

/**
 * A tunnel for service configuration `cfg` (which has upstream_proxy set): names, the CONNECT
 * request and the response parser. Returns NULL when out of memory or when the request cannot
 * be built. Free with egress_free().
 */
struct egress *egress_new(const struct service_config *cfg);

/** Wipes (OPENSSL_cleanse) and frees; NULL is a no-op. */
void egress_free(struct egress *t);

/** Wipes the request (it carries the credentials) once it was written. */
void egress_wipe_request(struct egress *t);

/**
 * Parses the proxy's answer to CONNECT, as it arrives. Returns EGRESS_NEED_MORE (all `len`
 * bytes taken), or a verdict once the head is complete or broken; `*consumed` is then the
 * number of head bytes, and for EGRESS_ESTABLISHED the rest of `data` is the start of the
 * tunnel's byte stream (TLS), not the proxy's. After a verdict the parser is freed and further
 * calls return EGRESS_BAD_RESPONSE.
 */
enum egress_result egress_feed(struct egress *t, const char *data, size_t len, size_t *consumed);

/**
 * The hint for an attestation rejected for `reason` over a connection through `cfg`'s
 * upstream_proxy: when the document binds another key than the one of this TLS connection,
 * the likeliest cause is a TLS-inspecting proxy. NULL when it does not apply (no proxy, or
 * another reason).
 */
const char *egress_binding_hint(const struct service_config *cfg, enum verify_reason reason);

#endif
