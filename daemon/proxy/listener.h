/*
 * Listening sockets of a service: TCP (loopback unless allow_remote with a token) or Unix
 * (created with unix_mode), bound here or adopted from systemd socket activation.
 */
#ifndef ATTESTPROXY_PROXY_LISTENER_H
#define ATTESTPROXY_PROXY_LISTENER_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "base/config.h"

struct proxy;
struct proxy_service;

struct listener {
    struct proxy *proxy;
    struct proxy_service *svc; /* NULL while a reload has it staged (listener_open) */
    uint64_t id;               /* clients record it: closing the listener drains them */
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
    unsigned mode;        /* Unix: the permissions last applied to the socket file */
    bool adopted;         /* passed by systemd socket activation */
    bool unlink_on_close; /* we created the socket file */
    bool closing;
    struct listen_addr addr; /* a copy: the configuration may be replaced while we listen */
    struct listener *next;
};

/**
 * Binds (or adopts from the daemon's socket-activation fds) `a` for the service configured by
 * `cfg` and makes it listen, so that every bind error (an address in use included) is known
 * now; connections are taken only once listener_attach() gave it its service, which must
 * happen before the loop runs again (a reload stages listeners this way, so that a listener
 * that cannot bind rejects the reload before anything changed). A non-loopback TCP address is
 * refused (-EPERM) unless `cfg` has allow_remote and a token, whatever the configuration loader
 * checked. A Unix path that exists is replaced only when it is a socket nobody listens on.
 * Returns 0 with `*out` set, or a negative code (nothing is logged: the caller says why).
 * A listener that is never attached is closed with listener_close().
 */
int listener_open(struct proxy *p, const struct service_config *cfg, const struct listen_addr *a,
                  struct listener **out);

/** Links a listener from listener_open() into `svc`, which then takes its connections. */
void listener_attach(struct listener *l, struct proxy_service *svc);

/**
 * listener_open() and listener_attach() for `svc`, logging the outcome. Returns 0, or the
 * negative code of listener_open().
 */
int listener_start(struct proxy_service *svc, const struct listen_addr *a);

/** Whether `l` listens on `a` (same kind, host and port, or path). */
bool listener_is(const struct listener *l, const struct listen_addr *a);

/**
 * Applies `mode` to the socket file of a Unix listener (chmod). Returns 0, or a negative errno
 * code; a TCP listener is left alone.
 */
int listener_set_mode(struct listener *l, unsigned mode);

/** Stops accepting and closes (idempotent); the socket file is removed if we created it. */
void listener_close(struct listener *l);

#endif
