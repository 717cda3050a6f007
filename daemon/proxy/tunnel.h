/*
 * WebSocket tunnels (issue #23): a client connection whose RFC 6455 handshake the enclave
 * accepted (101, with a Sec-WebSocket-Accept the daemon checked) becomes a byte tunnel over the
 * upstream connection that carried the handshake — the connection the gate admitted for it, so
 * a tunnel exists only over an attested, pinned channel. The tunnel lives while its key's pin
 * is fresh: live enforcement (proxy.c) ends it with a WebSocket close frame — 1008 when a policy
 * or trust-root change no longer admits the key, 1011 when the key failed re-attestation or its
 * pin lapsed — and nothing more reaches the enclave. docs/architecture.md, "Tunnels".
 *
 * The handshake itself is an ordinary exchange (exchange.c, acquire.c, relay.c); the
 * functions with the double-underscore prefix are the hooks those files and client.c call
 * (client_internal.h). tunnel_abort() is for live enforcement.
 */
#ifndef ATTESTPROXY_PROXY_TUNNEL_H
#define ATTESTPROXY_PROXY_TUNNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/errors.h"
#include "proxy/http1.h"

struct client;
struct upstream;

/* What a request carrying Upgrade is (tunnel__admit()). */
enum tunnel_admit {
    TUNNEL_ADMIT_NO = 0,  /* not a WebSocket handshake, or allow_upgrade = none: Upgrade is
                           * removed and the request relayed as plain HTTP, as before */
    TUNNEL_ADMIT_YES,     /* a valid handshake, admitted: counted against max_tunnels */
    TUNNEL_ADMIT_REFUSED, /* answered with *err: bad handshake (400), foreign Origin (403),
                           * max_tunnels (503) */
};

/**
 * Looks at a request head that carries Upgrade, after the Host and token checks passed. On
 * TUNNEL_ADMIT_YES the handshake's key is kept in the exchange and the exchange holds one of
 * the service's max_tunnels until it ends (exchange__free()) or becomes the tunnel.
 */
enum tunnel_admit tunnel__admit(struct client *c, const struct http1_parser *p,
                                enum proxy_error *err, char *msg, size_t cap);

/** True when the enclave's 101 answers the exchange's handshake (RFC 6455 4.1); else `why`. */
bool tunnel__accept_101(struct client *c, const struct http1_parser *p, char *why, size_t cap);

/**
 * The 101 head was written to the client: the client connection and the exchange's upstream
 * connection become a tunnel. `rest` holds enclave bytes that followed the head. Called from
 * the relay's data callback; may end the tunnel (and close the client) from inside.
 */
void tunnel__start(struct client *c, const char *rest, size_t len);

/* Hooks of client.c. */
void tunnel__client_drained(struct client *c);                  /* a write to the client ended */
uint64_t tunnel__timer_ms(struct client *c);                    /* the next deadline, from now */
void tunnel__on_timer(struct client *c);                        /* it fired */
void tunnel__drain(struct client *c);                           /* shutting down: 1001 */
void tunnel__client_closing(struct client *c, const char *why); /* client_close() */
void tunnel__free(struct client *c);                            /* the last close callback */

/**
 * Live enforcement: when `up` carries a tunnel, the tunnel ends at once — its upstream
 * connection is closed (no further byte reaches the enclave), the client gets a close frame
 * with code 1008 (`policy`) or 1011 and `reason` (an error code such as "attestation_failed"),
 * then the TCP close — and true is returned. False when `up` carries no tunnel.
 */
bool tunnel_abort(struct upstream *up, bool policy, const char *reason);

#endif
