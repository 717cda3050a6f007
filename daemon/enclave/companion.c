/*
 * The companion's listeners: TCP through libuv's own handle, AF_VSOCK through a socket made
 * in vsock.c and watched with a uv_poll_t (libuv has no vsock handle); each accepted vsock
 * socket is given to a uv_pipe_t, which reads and writes any stream socket.
 */
#include "enclave/companion.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

#include "base/log.h"

#define BACKLOG 128

static void on_tcp_connection(uv_stream_t *server, int status)
{
    struct companion *co = server->data;
    int rc;
    if (status < 0 || co->stopping)
        return;
    rc = conn_accept_tcp(co, server);
    if (rc < 0 && rc != -EMFILE)
        log_event(LOG_LEVEL_WARN, "accept_failed", "listener", "tcp", "reason", uv_strerror(rc),
                  NULL);
}

static void on_vsock_ready(uv_poll_t *p, int status, int events)
{
    struct companion *co = p->data;
    (void)events;
    if (status < 0 || co->stopping)
        return;
    /* Level-triggered: take what is queued now, a bounded number per wake-up. */
    for (int i = 0; i < 64; i++) {
        int fd = accept4(co->vsock_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_event(LOG_LEVEL_WARN, "accept_failed", "listener", "vsock", "reason",
                          strerror(errno), NULL);
            return;
        }
        conn_adopt_fd(co, fd);
    }
}

int companion_listen(struct companion *co, char *err, size_t cap)
{
    const struct enclave_config *cfg = co->cfg;
    char port[16];
    int rc;

    co->vsock_fd = -1;
    if (cfg->listen_tcp) {
        struct sockaddr_storage ss;
        if (uv_ip4_addr(cfg->listen.host, cfg->listen.port, (struct sockaddr_in *)&ss) != 0 &&
            uv_ip6_addr(cfg->listen.host, cfg->listen.port, (struct sockaddr_in6 *)&ss) != 0) {
            snprintf(err, cap, "listen: %s is not an IP address", cfg->listen.host);
            return -EINVAL;
        }
        uv_tcp_init(co->loop, &co->tcp);
        co->tcp.data = co;
        co->tcp_open = true;
        rc = uv_tcp_bind(&co->tcp, (struct sockaddr *)&ss, 0);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&co->tcp, BACKLOG, on_tcp_connection);
        if (rc < 0) {
            snprintf(err, cap, "cannot listen on %s:%u: %s", cfg->listen.host, cfg->listen.port,
                     uv_strerror(rc));
            return rc;
        }
        snprintf(port, sizeof(port), "%u", cfg->listen.port);
        log_event(LOG_LEVEL_INFO, "listening", "transport", "tcp", "host", cfg->listen.host, "port",
                  port, NULL);
    }
    if (cfg->listen_vsock) {
        rc = vsock_listen_fd(VMADDR_CID_ANY, cfg->vsock_port, BACKLOG);
        if (rc < 0) {
            snprintf(err, cap, "cannot listen on vsock port %u: %s", cfg->vsock_port,
                     strerror(-rc));
            return rc;
        }
        co->vsock_fd = rc;
        rc = uv_poll_init(co->loop, &co->vsock, co->vsock_fd);
        if (rc < 0) {
            close(co->vsock_fd);
            co->vsock_fd = -1;
            snprintf(err, cap, "cannot watch the vsock socket: %s", uv_strerror(rc));
            return rc;
        }
        co->vsock.data = co;
        co->vsock_open = true;
        uv_poll_start(&co->vsock, UV_READABLE, on_vsock_ready);
        snprintf(port, sizeof(port), "%u", cfg->vsock_port);
        log_event(LOG_LEVEL_INFO, "listening", "transport", "vsock", "cid", "any", "port", port,
                  NULL);
    }
    return 0;
}

static void on_vsock_closed(uv_handle_t *h)
{
    struct companion *co = h->data;
    close(co->vsock_fd); /* uv_poll_t does not own its descriptor */
    co->vsock_fd = -1;
}

void companion_stop(struct companion *co)
{
    co->stopping = true;
    if (co->tcp_open) {
        uv_close((uv_handle_t *)&co->tcp, NULL);
        co->tcp_open = false;
    }
    if (co->vsock_open) {
        uv_close((uv_handle_t *)&co->vsock, on_vsock_closed);
        co->vsock_open = false;
    } else if (co->vsock_fd >= 0) {
        close(co->vsock_fd);
        co->vsock_fd = -1;
    }
    while (co->conns != NULL)
        conn_abort(co->conns);
}
