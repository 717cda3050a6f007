/*
 * Socket activation without libsystemd: systemd passes listening sockets as fds
 * 3 .. 3+LISTEN_FDS-1 when LISTEN_PID is our pid, with names in LISTEN_FDNAMES (colon-separated).
 * listenfds_parse() collects them, sets FD_CLOEXEC and describes each (TCP or Unix, bound
 * address) so that the relay and the admin API can match each to a configured listen address
 * and adopt it instead of binding.
 *
 * No global state: the set lives in the caller's context.
 */
#ifndef ATTESTPROXY_BASE_LISTENFDS_H
#define ATTESTPROXY_BASE_LISTENFDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "base/config.h"

#define LISTENFDS_START    3  /* SD_LISTEN_FDS_START */
#define LISTENFDS_MAX      64 /* inherited fds beyond this are refused */
#define LISTENFDS_NAME_MAX 256

enum listenfd_kind {
    LISTENFD_TCP = 0, /* AF_INET or AF_INET6, SOCK_STREAM */
    LISTENFD_UNIX,    /* AF_UNIX, SOCK_STREAM */
    LISTENFD_OTHER,   /* anything else (datagram, netlink, a pipe, a file) */
};

/* The bound address of an inherited socket, compact (the array lives inside struct daemon). */
struct listenfd_addr {
    bool is_unix;
    char host[INET6_ADDRSTRLEN]; /* TCP: numeric address, without brackets */
    uint16_t port;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 2]; /* Unix: path or "@name" */
};

struct listenfd {
    int fd;
    char name[LISTENFDS_NAME_MAX]; /* from LISTEN_FDNAMES, or "unknown" as systemd defaults */
    enum listenfd_kind kind;
    bool listening;            /* SO_ACCEPTCONN: listen() was called on it */
    struct listenfd_addr addr; /* bound address (TCP: numeric host and port; Unix: path, or
                                  "@name" for an abstract socket); zeroed for LISTENFD_OTHER */
    bool taken;                /* set by listenfds_take(): the daemon owns the fd now */
};

struct listenfds {
    struct listenfd fds[LISTENFDS_MAX];
    size_t count;
};

/**
 * Collects the fds passed by socket activation. Reads LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES;
 * when LISTEN_PID is absent or names another process, returns 0 with count 0 and touches no fd.
 * Otherwise each of fds 3 .. 3+LISTEN_FDS-1 gets FD_CLOEXEC and is described by getsockname()
 * and getsockopt(SO_TYPE, SO_ACCEPTCONN). LISTEN_FDNAMES is used only when it has exactly
 * LISTEN_FDS entries (otherwise every name is "unknown", as sd_listen_fds_with_names() does).
 *
 * With `unset_env`, the three variables are removed from the environment (whether or not they
 * were for us), as sd_listen_fds(1) does, so that they cannot leak into a later process.
 *
 * Returns 0; -EINVAL for a malformed LISTEN_PID or LISTEN_FDS; -E2BIG when LISTEN_FDS exceeds
 * LISTENFDS_MAX; -EBADF when one of the fds is not open. On error `out` has count 0, and the
 * fds are left open and untouched.
 * Ownership: the fds belong to the caller, tracked in `out` until taken or closed.
 */
int listenfds_parse(struct listenfds *out, bool unset_env);

/**
 * Finds an inherited, listening stream socket bound to `want` (TCP: same port and the same
 * address, compared numerically so "::1" matches "0:0:0:0:0:0:0:1"; Unix: same path) that has
 * not been taken. Returns its index, or -ENOENT.
 */
int listenfds_find(const struct listenfds *lf, const struct listen_addr *want);

/** Finds an untaken inherited fd by its LISTEN_FDNAMES name. Returns its index or -ENOENT. */
int listenfds_find_name(const struct listenfds *lf, const char *name);

/**
 * Marks entry `index` taken and returns its fd, which the caller now owns (e.g. passes to
 * uv_tcp_open() or uv_pipe_open() and later closes through libuv). Returns -EINVAL for a bad
 * index or an entry already taken.
 */
int listenfds_take(struct listenfds *lf, size_t index);

/**
 * Closes every fd that was not taken and returns how many were closed, so that a socket unit
 * listing an address the configuration no longer has does not leave a dead listener open.
 */
size_t listenfds_close_unused(struct listenfds *lf);

/** The name of a kind: "tcp", "unix" or "other". */
const char *listenfd_kind_name(enum listenfd_kind kind);

#endif
