#include "proxy/listener.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/file.h"
#include "base/log.h"
#include "base/listenfds.h"
#include "proxy/client.h"
#include "proxy/proxy_internal.h"

#define BACKLOG 511

#define ACCEPT_RETRY_MS 100

static void on_retry(uv_timer_t *t);

/* Takes the next connection; when the daemon cannot (out of memory), it stays queued and is
 * tried again shortly, since libuv accepts nothing more on this socket until it is taken. */
static void accept_next(struct listener *l)
{
    if (!client_accept(l->svc, &l->h.stream, l->is_unix, l->id))
        uv_timer_start(&l->retry, on_retry, ACCEPT_RETRY_MS, 0);
}

static void on_retry(uv_timer_t *t)
{
    struct listener *l = t->data;
    if (!l->closing)
        accept_next(l);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;
    if (l->closing)
        return;
    /* A staged listener is attached or closed before the loop runs again. */
    assert(l->svc != NULL);
    if (status < 0) {
        log_event(LOG_LEVEL_WARN, "accept_failed", "service", l->svc->name, "error",
                  uv_strerror(status), NULL);
        return;
    }
    accept_next(l);
}

static void on_closed(uv_handle_t *h)
{
    struct listener *l = h->data;
    struct proxy *p = l->proxy;
    if (--l->pending_closes > 0)
        return;
    free(l);
    proxy__object_closed(p);
}

void listener_close(struct listener *l)
{
    if (l->closing)
        return;
    l->closing = true;
    if (l->unlink_on_close)
        unlink(l->addr.path);
    l->pending_closes = 2;
    uv_close(&l->h.handle, on_closed);
    uv_close((uv_handle_t *)&l->retry, on_closed);
}

static int bind_unix(struct listener *l, uv_loop_t *loop, unsigned mode)
{
    mode_t old;
    int rc = uv_pipe_init(loop, &l->h.pipe, 0);
    if (rc < 0)
        return rc;
    rc = file_clear_stale_socket(l->addr.path);
    if (rc < 0)
        return rc;
    /* The socket file must never exist with wider permissions than unix_mode, not even for a
     * moment: the umask is narrowed around bind() (the loop is single-threaded). */
    old = umask((mode_t)(~mode & 0777));
    rc = uv_pipe_bind(&l->h.pipe, l->addr.path);
    umask(old);
    if (rc < 0)
        return rc;
    l->unlink_on_close = true;
    if (chmod(l->addr.path, (mode_t)mode) < 0)
        return -errno;
    return 0;
}

static int bind_tcp(struct listener *l, uv_loop_t *loop)
{
    struct sockaddr_storage ss;
    int rc = uv_tcp_init(loop, &l->h.tcp);
    if (rc < 0)
        return rc;
    if (uv_ip4_addr(l->addr.host, l->addr.port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(l->addr.host, l->addr.port, (struct sockaddr_in6 *)&ss) != 0)
        return UV_EINVAL;
    return uv_tcp_bind(&l->h.tcp, (const struct sockaddr *)&ss,
                       ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
}

bool listener_is(const struct listener *l, const struct listen_addr *a)
{
    return config_listen_equal(&l->addr, a);
}

int listener_set_mode(struct listener *l, unsigned mode)
{
    if (!l->is_unix || l->mode == mode)
        return 0;
    if (chmod(l->addr.path, (mode_t)mode) < 0)
        return -errno;
    l->mode = mode;
    return 0;
}

/* Adopts the socket-activation fd at `idx` into l's handle. */
static int adopt(struct listener *l, uv_loop_t *loop, struct listenfds *lfds, int idx)
{
    int fd = listenfds_take(lfds, (size_t)idx);
    int rc = l->is_unix ? uv_pipe_init(loop, &l->h.pipe, 0) : uv_tcp_init(loop, &l->h.tcp);
    if (rc == 0)
        rc = l->is_unix ? uv_pipe_open(&l->h.pipe, fd) : uv_tcp_open(&l->h.tcp, fd);
    if (rc < 0)
        close(fd);
    return rc;
}

int listener_open(struct proxy *p, const struct service_config *cfg, const struct listen_addr *a,
                  struct listener **out)
{
    uv_loop_t *loop = p->env.loop;
    struct listener *l;
    int idx = -1, rc;

    *out = NULL;
    /* Checked again here, whatever the configuration loader did: a listener reachable from
     * other hosts without a token would hand the enclave to anyone on the network. */
    if (!config_listen_is_loopback(a) && (!cfg->allow_remote || cfg->token[0] == '\0'))
        return -EPERM;
    l = calloc(1, sizeof(*l));
    if (l == NULL)
        return -ENOMEM;
    l->proxy = p;
    l->id = ++p->next_id;
    l->addr = *a;
    l->is_unix = a->is_unix;
    l->mode = cfg->unix_mode;

    if (p->env.lfds != NULL)
        idx = listenfds_find(p->env.lfds, a);
    l->adopted = idx >= 0;
    if (l->adopted)
        rc = adopt(l, loop, p->env.lfds, idx);
    else
        rc = a->is_unix ? bind_unix(l, loop, cfg->unix_mode) : bind_tcp(l, loop);
    if (rc < 0 && l->h.handle.type == UV_UNKNOWN_HANDLE) {
        free(l); /* the handle was never initialised */
        return rc;
    }
    l->h.handle.data = l;
    uv_timer_init(loop, &l->retry);
    l->retry.data = l;
    proxy__object_opened(p);
    /* libuv reports some bind errors (an address in use) only here. */
    if (rc == 0)
        rc = uv_listen(&l->h.stream, BACKLOG, on_connection);
    if (rc < 0) {
        listener_close(l);
        return rc;
    }
    *out = l;
    return 0;
}

void listener_attach(struct listener *l, struct proxy_service *svc)
{
    assert(l->svc == NULL && !l->closing);
    l->svc = svc;
    l->next = svc->listeners;
    svc->listeners = l;
}

int listener_start(struct proxy_service *svc, const struct listen_addr *a)
{
    char desc[CONFIG_PATH_MAX + 16];
    struct listener *l;
    int rc;

    config_listen_describe(a, desc, sizeof(desc));
    rc = listener_open(svc->proxy, svc->cfg, a, &l);
    if (rc == -EPERM) {
        log_event(LOG_LEVEL_ERROR, "listen_refused", "service", svc->name, "listen", desc, "why",
                  "a non-loopback listener needs allow_remote = yes and a token", NULL);
        return rc;
    }
    if (rc < 0) {
        log_event(LOG_LEVEL_ERROR, "listen_failed", "service", svc->name, "listen", desc, "error",
                  uv_strerror(rc), NULL);
        return rc;
    }
    listener_attach(l, svc);
    log_event(LOG_LEVEL_INFO, "listening", "service", svc->name, "listen", desc, "socket",
              l->adopted ? "adopted" : "bound", NULL);
    return 0;
}
