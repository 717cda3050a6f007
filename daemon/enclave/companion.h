/*
 * The companion's running state: the loop, the configuration, the TLS identity, the NSM
 * backend, the listeners (AF_VSOCK and TCP) and the open connections. One per process; main.c
 * owns it and passes it explicitly.
 */
#ifndef ATTESTPROXY_ENCLAVE_COMPANION_H
#define ATTESTPROXY_ENCLAVE_COMPANION_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "enclave/enclave_config.h"
#include "enclave/identity.h"
#include "enclave/nsm.h"

struct econn;

struct companion {
    uv_loop_t *loop;
    const struct enclave_config *cfg;
    struct identity *id;
    struct nsm_backend *nsm;
    uv_tcp_t tcp;    /* the TCP listener, when cfg->listen_tcp */
    uv_poll_t vsock; /* readiness of the vsock listening socket, when cfg->listen_vsock */
    int vsock_fd;    /* -1 when none */
    bool tcp_open, vsock_open;
    struct econn *conns; /* every open connection, for shutdown */
    size_t n_conns;
    bool stopping;
    unsigned long long next_id;
};

/** Binds and listens on the configured addresses. Returns 0, or a negative errno (err). */
int companion_listen(struct companion *co, char *err, size_t cap);

/** Closes the listeners and every connection; the loop then ends once the handles closed. */
void companion_stop(struct companion *co);

/* ---- conn.c ------------------------------------------------------------------------------ */

/** Accepts one connection from the TCP listener and starts its TLS handshake. Returns 0 or a
 *  negative errno (the connection is then closed). */
int conn_accept_tcp(struct companion *co, uv_stream_t *server);

/** Takes an accepted stream socket of another family (AF_VSOCK, which libuv's TCP handle does
 *  not know) through a pipe handle, and starts its handshake. `fd` is owned from here on. */
int conn_adopt_fd(struct companion *co, int fd);

/** Closes a connection at once (shutdown). */
void conn_abort(struct econn *c);

/* ---- vsock.c ----------------------------------------------------------------------------- */

/** A non-blocking AF_VSOCK stream socket bound to (cid, port) and listening. Returns the fd or
 *  a negative errno. */
int vsock_listen_fd(unsigned cid, unsigned port, int backlog);

#endif
