#include "ops/sdnotify.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- Small parsers --------------------------------------------------------------------------- */

/* Parses a decimal unsigned integer with nothing around it. Returns 0 or -EINVAL/-ERANGE. */
static int parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v;

    if (s == NULL || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    if (errno != 0 || end == s || *end != '\0')
        return -EINVAL;
    *out = (uint64_t)v;
    return 0;
}

/* Fills `addr` from a NOTIFY_SOCKET value: "/path" or "@abstract". */
static int notify_address(const char *value, struct sockaddr_un *addr, socklen_t *len)
{
    size_t n = strlen(value);

    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    if (n < 2 || (value[0] != '/' && value[0] != '@'))
        return -EINVAL; /* relative paths and vsock: addresses are not supported */
    if (n >= sizeof(addr->sun_path))
        return -ENAMETOOLONG;
    memcpy(addr->sun_path, value, n);
    if (value[0] == '@') {
        /* An abstract address is the name after a leading NUL, without a terminator. */
        addr->sun_path[0] = '\0';
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

/* ---- sd_notify ------------------------------------------------------------------------------- */

int sdnotify_init(struct sdnotify *sn, uv_loop_t *loop)
{
    const char *sock = getenv("NOTIFY_SOCKET");
    const char *wd_usec = getenv("WATCHDOG_USEC");
    const char *wd_pid = getenv("WATCHDOG_PID");
    int rc;

    memset(sn, 0, sizeof(*sn));
    sn->loop = loop;
    sn->fd = -1;

    rc = uv_timer_init(loop, &sn->watchdog_timer);
    if (rc < 0)
        return rc;
    sn->watchdog_timer.data = sn;
    uv_unref((uv_handle_t *)&sn->watchdog_timer);

    if (sock != NULL && sock[0] != '\0') {
        rc = notify_address(sock, &sn->addr, &sn->addr_len);
        if (rc == 0) {
            sn->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
            if (sn->fd == -1)
                rc = -errno;
        }
        if (rc < 0)
            sn->config_error = rc;
        else
            sn->enabled = true;
    }

    if (wd_usec != NULL) {
        uint64_t usec = 0;
        uint64_t pid = 0;
        bool ours = true;
        if (parse_u64(wd_usec, &usec) < 0) {
            sn->config_error = sn->config_error ? sn->config_error : -EINVAL;
            usec = 0;
        }
        if (wd_pid != NULL) {
            if (parse_u64(wd_pid, &pid) < 0 || pid != (uint64_t)getpid())
                ours = false;
        }
        sn->watchdog_usec = ours ? usec : 0;
    }
    return 0;
}

int sdnotify_config_error(const struct sdnotify *sn)
{
    return sn->config_error;
}

bool sdnotify_enabled(const struct sdnotify *sn)
{
    return sn->enabled && !sn->closing;
}

uint64_t sdnotify_watchdog_usec(const struct sdnotify *sn)
{
    return sn->watchdog_usec;
}

int sdnotify_send(struct sdnotify *sn, const char *message)
{
    size_t n = strnlen(message, SDNOTIFY_MESSAGE_MAX + 1);
    ssize_t sent;

    if (n == 0 || n > SDNOTIFY_MESSAGE_MAX)
        return -EINVAL;
    if (!sn->enabled || sn->closing || sn->fd == -1)
        return 0;
    sent =
        sendto(sn->fd, message, n, MSG_NOSIGNAL, (const struct sockaddr *)&sn->addr, sn->addr_len);
    if (sent == -1)
        return -errno;
    return (size_t)sent == n ? 0 : -EMSGSIZE;
}

/*
 * Builds "<head>[\nSTATUS=<status>]" into `buf`. Control characters in the status become spaces
 * so that a status can never add a second assignment to the datagram.
 */
static int compose(char *buf, size_t cap, const char *head, const char *status)
{
    size_t n = strlen(head);
    size_t i;

    if (n >= cap)
        return -EINVAL;
    memcpy(buf, head, n);
    if (status != NULL) {
        static const char key[] = "\nSTATUS=";
        size_t klen = sizeof(key) - 1;
        if (n + klen >= cap)
            return -EINVAL;
        memcpy(buf + n, key, klen);
        n += klen;
        for (i = 0; status[i] != '\0' && i < SDNOTIFY_STATUS_MAX && n + 1 < cap; i++) {
            unsigned char c = (unsigned char)status[i];
            buf[n++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
        }
    }
    buf[n] = '\0';
    return 0;
}

static int send_with_status(struct sdnotify *sn, const char *head, const char *status)
{
    char buf[SDNOTIFY_MESSAGE_MAX + 1];
    int rc = compose(buf, sizeof(buf), head, status);
    if (rc < 0)
        return rc;
    return sdnotify_send(sn, buf);
}

int sdnotify_ready(struct sdnotify *sn, const char *status)
{
    return send_with_status(sn, "READY=1", status);
}

int sdnotify_reloading(struct sdnotify *sn, const char *status)
{
    char head[64];
    struct timespec ts;
    uint64_t usec;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return -errno;
    usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    snprintf(head, sizeof(head), "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)usec);
    return send_with_status(sn, head, status);
}

int sdnotify_stopping(struct sdnotify *sn, const char *status)
{
    return send_with_status(sn, "STOPPING=1", status);
}

int sdnotify_status(struct sdnotify *sn, const char *status)
{
    char buf[SDNOTIFY_MESSAGE_MAX + 1];
    int rc;

    if (status == NULL)
        return -EINVAL;
    /* compose() adds "\nSTATUS="; skip its leading newline. */
    rc = compose(buf, sizeof(buf), "", status);
    if (rc < 0)
        return rc;
    return sdnotify_send(sn, buf + 1);
}

int sdnotify_watchdog(struct sdnotify *sn)
{
    return sdnotify_send(sn, "WATCHDOG=1");
}

int sdnotify_extend_timeout(struct sdnotify *sn, uint64_t usec)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "EXTEND_TIMEOUT_USEC=%llu", (unsigned long long)usec);
    return sdnotify_send(sn, buf);
}

static void on_watchdog_tick(uv_timer_t *t)
{
    struct sdnotify *sn = t->data;
    /* A full queue or a restarting manager is not our failure: the next tick tries again. */
    (void)sdnotify_watchdog(sn);
}

int sdnotify_watchdog_start(struct sdnotify *sn)
{
    uint64_t period_ms;

    if (sn->closing || !sn->enabled || sn->watchdog_usec == 0)
        return 0;
    /* Half the interval, as sd_watchdog_enabled(3) recommends; at least 1 ms. */
    period_ms = sn->watchdog_usec / 2000u;
    if (period_ms == 0)
        period_ms = 1;
    return uv_timer_start(&sn->watchdog_timer, on_watchdog_tick, 0, period_ms);
}

void sdnotify_watchdog_stop(struct sdnotify *sn)
{
    if (!sn->closing)
        uv_timer_stop(&sn->watchdog_timer);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct sdnotify *sn = h->data;
    sdnotify_close_cb cb = sn->close_cb;
    sn->close_cb = NULL;
    if (cb != NULL)
        cb(sn);
}

void sdnotify_close(struct sdnotify *sn, sdnotify_close_cb done)
{
    if (sn->closing)
        return;
    uv_timer_stop(&sn->watchdog_timer);
    sn->closing = true;
    sn->close_cb = done;
    if (sn->fd != -1) {
        close(sn->fd);
        sn->fd = -1;
    }
    uv_close((uv_handle_t *)&sn->watchdog_timer, on_timer_closed);
}

/* ---- Socket activation ----------------------------------------------------------------------- */

const char *listenfd_kind_name(enum listenfd_kind kind)
{
    switch (kind) {
    case LISTENFD_TCP:
        return "tcp";
    case LISTENFD_UNIX:
        return "unix";
    case LISTENFD_OTHER:
        break;
    }
    return "other";
}

/* Fills the kind, the listening flag and the bound address of one inherited fd. */
static int describe_fd(struct listenfd *e)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int type = 0;
    int acc = 0;
    socklen_t olen;

    e->kind = LISTENFD_OTHER;
    memset(&e->addr, 0, sizeof(e->addr));
    if (fcntl(e->fd, F_GETFD) == -1)
        return -EBADF;

    olen = sizeof(type);
    if (getsockopt(e->fd, SOL_SOCKET, SO_TYPE, &type, &olen) == -1)
        return 0; /* not a socket: "other" */
    olen = sizeof(acc);
    if (getsockopt(e->fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &olen) == 0)
        e->listening = acc != 0;
    memset(&ss, 0, sizeof(ss));
    if (getsockname(e->fd, (struct sockaddr *)&ss, &len) == -1 || type != SOCK_STREAM)
        return 0;

    if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
        const void *src;
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
            src = &in->sin_addr;
            e->addr.port = ntohs(in->sin_port);
        } else {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
            src = &in6->sin6_addr;
            e->addr.port = ntohs(in6->sin6_port);
        }
        if (inet_ntop(ss.ss_family, src, e->addr.host, sizeof(e->addr.host)) == NULL)
            return 0;
        e->kind = LISTENFD_TCP;
    } else if (ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
        size_t plen = 0;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        if (len > off)
            plen = len - off;
        if (plen > sizeof(un->sun_path))
            plen = sizeof(un->sun_path);
        e->addr.is_unix = true;
        if (plen > 0 && un->sun_path[0] == '\0') {
            /* Abstract: shown as "@name"; the name is exactly plen - 1 bytes. */
            size_t nlen = plen - 1;
            if (nlen + 2 > sizeof(e->addr.path))
                nlen = sizeof(e->addr.path) - 2;
            e->addr.path[0] = '@';
            memcpy(e->addr.path + 1, un->sun_path + 1, nlen);
            e->addr.path[nlen + 1] = '\0';
        } else {
            size_t n = strnlen(un->sun_path, plen);
            if (n >= sizeof(e->addr.path))
                n = sizeof(e->addr.path) - 1;
            memcpy(e->addr.path, un->sun_path, n);
            e->addr.path[n] = '\0';
        }
        e->kind = LISTENFD_UNIX;
    }
    return 0;
}

/* Splits LISTEN_FDNAMES into exactly `count` names; returns false when the count differs. */
static bool split_names(const char *names, struct listenfds *lf, size_t count)
{
    const char *p = names;
    size_t i = 0;

    if (names == NULL)
        return false;
    for (;;) {
        const char *colon = strchr(p, ':');
        size_t n = colon != NULL ? (size_t)(colon - p) : strlen(p);
        if (i >= count)
            return false;
        if (n >= LISTENFDS_NAME_MAX)
            n = LISTENFDS_NAME_MAX - 1;
        memcpy(lf->fds[i].name, p, n);
        lf->fds[i].name[n] = '\0';
        i++;
        if (colon == NULL)
            break;
        p = colon + 1;
    }
    return i == count;
}

static void unset_listen_env(void)
{
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
}

int listenfds_parse(struct listenfds *out, bool unset_env)
{
    const char *s_pid = getenv("LISTEN_PID");
    const char *s_fds = getenv("LISTEN_FDS");
    const char *s_names = getenv("LISTEN_FDNAMES");
    uint64_t pid = 0;
    uint64_t n = 0;
    size_t i;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    if (s_pid == NULL || s_fds == NULL)
        goto out;
    if (parse_u64(s_pid, &pid) < 0 || parse_u64(s_fds, &n) < 0) {
        rc = -EINVAL;
        goto out;
    }
    if (pid != (uint64_t)getpid())
        goto out; /* meant for another process (we were exec'd by a wrapper that forked) */
    if (n > LISTENFDS_MAX) {
        rc = -E2BIG;
        goto out;
    }

    for (i = 0; i < n; i++) {
        out->fds[i].fd = LISTENFDS_START + (int)i;
        if (fcntl(out->fds[i].fd, F_GETFD) == -1) {
            rc = -EBADF;
            goto out;
        }
    }
    if (!split_names(s_names, out, (size_t)n)) {
        for (i = 0; i < n; i++)
            memcpy(out->fds[i].name, "unknown", sizeof("unknown"));
    }
    for (i = 0; i < n; i++) {
        int flags = fcntl(out->fds[i].fd, F_GETFD);
        if (flags == -1 || fcntl(out->fds[i].fd, F_SETFD, flags | FD_CLOEXEC) == -1) {
            rc = -EBADF;
            goto out;
        }
        rc = describe_fd(&out->fds[i]);
        if (rc < 0)
            goto out;
    }
    out->count = (size_t)n;

out:
    if (rc < 0)
        memset(out, 0, sizeof(*out));
    if (unset_env)
        unset_listen_env();
    return rc;
}

/* Compares two numeric host strings as addresses; falls back to string equality. */
static bool same_host(const char *a, const char *b)
{
    unsigned char x[sizeof(struct in6_addr)];
    unsigned char y[sizeof(struct in6_addr)];

    if (inet_pton(AF_INET, a, x) == 1 && inet_pton(AF_INET, b, y) == 1)
        return memcmp(x, y, sizeof(struct in_addr)) == 0;
    if (inet_pton(AF_INET6, a, x) == 1 && inet_pton(AF_INET6, b, y) == 1)
        return memcmp(x, y, sizeof(struct in6_addr)) == 0;
    return strcmp(a, b) == 0;
}

int listenfds_find(const struct listenfds *lf, const struct listen_addr *want)
{
    for (size_t i = 0; i < lf->count && i < LISTENFDS_MAX; i++) {
        const struct listenfd *e = &lf->fds[i];
        if (e->taken || !e->listening)
            continue;
        if (want->is_unix) {
            if (e->kind == LISTENFD_UNIX && strcmp(e->addr.path, want->path) == 0)
                return (int)i;
        } else if (e->kind == LISTENFD_TCP && e->addr.port == want->port &&
                   same_host(e->addr.host, want->host)) {
            return (int)i;
        }
    }
    return -ENOENT;
}

int listenfds_find_name(const struct listenfds *lf, const char *name)
{
    for (size_t i = 0; i < lf->count && i < LISTENFDS_MAX; i++) {
        if (!lf->fds[i].taken && strcmp(lf->fds[i].name, name) == 0)
            return (int)i;
    }
    return -ENOENT;
}

int listenfds_take(struct listenfds *lf, size_t index)
{
    if (index >= lf->count || index >= LISTENFDS_MAX || lf->fds[index].taken)
        return -EINVAL;
    lf->fds[index].taken = true;
    return lf->fds[index].fd;
}

size_t listenfds_close_unused(struct listenfds *lf)
{
    size_t closed = 0;
    for (size_t i = 0; i < lf->count && i < LISTENFDS_MAX; i++) {
        if (lf->fds[i].taken)
            continue;
        close(lf->fds[i].fd);
        lf->fds[i].taken = true; /* never closed twice */
        closed++;
    }
    return closed;
}
