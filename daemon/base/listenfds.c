#include "base/listenfds.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/num.h"

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
    if (num_parse_u64(s_pid, &pid) < 0 || num_parse_u64(s_fds, &n) < 0) {
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
