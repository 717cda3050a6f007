/*
 * The proxy's own HTTP error responses: one JSON shape for every refusal,
 *   {"error": {"code": "...", "message": "...", "service": "..."}}
 * with a fixed code per failure (BRIEF §6). docs/architecture.md lists when each is sent.
 */
#ifndef ATTESTPROXY_PROXY_ERRORS_H
#define ATTESTPROXY_PROXY_ERRORS_H

#include <stdbool.h>
#include <stddef.h>

enum proxy_error {
    PROXY_ERR_ATTESTATION_FAILED = 0,  /* 502: the verifier rejected the enclave's evidence */
    PROXY_ERR_ATTESTATION_UNAVAILABLE, /* 503 + Retry-After: no evidence could be obtained, or
                                        * the key is negative-cached after a failure */
    PROXY_ERR_UPSTREAM_UNREACHABLE,    /* 502: connect, TLS or the connection failed */
    PROXY_ERR_UPSTREAM_TIMEOUT,        /* 504: no response (first byte) or a stalled stream */
    PROXY_ERR_BAD_REQUEST,             /* 400 */
    PROXY_ERR_HEADER_TOO_LARGE,        /* 431 */
    PROXY_ERR_PAYLOAD_TOO_LARGE,       /* 413 */
    PROXY_ERR_HOST_NOT_ALLOWED,        /* 421 */
    PROXY_ERR_UNAUTHORIZED,            /* 401 + WWW-Authenticate: Bearer */
    PROXY_ERR_TOO_MANY_CONNECTIONS,    /* 503 + Retry-After: max_connections reached */
    PROXY_ERR_POLICY_EXPIRED,          /* 503: the policy bundle in force expired (and its grace) */
    PROXY_ERR_ORIGIN_NOT_ALLOWED,      /* 403: a WebSocket handshake from a foreign page */
    PROXY_ERR_TOO_MANY_TUNNELS,        /* 503 + Retry-After: max_tunnels reached */
    PROXY_ERR_UPSTREAM_PROXY_REFUSED,  /* 502: the upstream proxy answered CONNECT with a
                                        * status other than 2xx (407, 403, 502, ...) */
    PROXY_ERR_COUNT_
};

#define ERRORS_MESSAGE_MAX  512  /* longer messages are cut (at a character boundary) */
#define ERRORS_RESPONSE_MAX 4096 /* a rendered response always fits in this many bytes */

/** The code string ("attestation_failed") and the HTTP status (502) of an error. */
const char *errors_code_name(enum proxy_error e);
unsigned errors_status(enum proxy_error e);

/**
 * Renders a complete HTTP/1.1 error response (status line, headers, JSON body) into `out`
 * (`cap` >= ERRORS_RESPONSE_MAX is always enough). `retry_after_s` is sent as Retry-After when
 * non-zero (at least 1 is sent for attestation_unavailable and too_many_connections);
 * `close` adds "Connection: close"; `head` leaves the body out (a response to HEAD) while
 * keeping its Content-Length. Returns the length, or -ENOSPC when `cap` is too small.
 */
int errors_render(enum proxy_error e, const char *service, const char *message,
                  unsigned retry_after_s, bool close, bool head, char *out, size_t cap);

#endif
