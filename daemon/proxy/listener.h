/*
 * Listening sockets of a service: TCP (loopback unless allow_remote with a token) or Unix
 * (created with unix_mode), bound here or adopted from systemd socket activation.
 */
#ifndef ATTESTPROXY_PROXY_LISTENER_H
#define ATTESTPROXY_PROXY_LISTENER_H

#include <stdbool.h>

#include <uv.h>

#include "core/config.h"

struct proxy_service;

struct listener {
    struct proxy_service *svc;
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
        uv_stream_t stream;
        uv_handle_t handle;
    } h;
    /* A connection the daemon could not take (out of memory) stays in the kernel's queue, and
     * libuv accepts nothing more until it is taken: this timer tries again. */
    uv_timer_t retry;
    int pending_closes;
    bool is_unix;
    bool unlink_on_close; /* we created the socket file */
    bool closing;
    struct listen_addr addr; /* a copy: the configuration may be replaced while we listen */
    struct listener *next;
};

/**
 * Binds (or adopts from d->lfds) `a` for `svc` and starts accepting. A non-loopback TCP
 * address is refused (-EPERM) unless the service has allow_remote and a token, whatever the
 * configuration loader checked. A Unix path that exists is replaced only when it is a socket
 * nobody listens on. Returns 0 and links the listener into svc->listeners, or a negative code
 * with the reason logged.
 */
int listener_start(struct proxy_service *svc, const struct listen_addr *a);

/** Stops accepting and closes (idempotent); the socket file is removed if we created it. */
void listener_close(struct listener *l);

/** "127.0.0.1:8080", "[::1]:8080" or "unix:/run/x.sock". */
void listener_describe(const struct listen_addr *a, char *out, size_t cap);

#endif
