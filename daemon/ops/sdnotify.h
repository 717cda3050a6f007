/*
 * systemd integration without libsystemd: the sd_notify datagram protocol and socket
 * activation (LISTEN_FDS), spoken directly so that a container image needs no libsystemd.
 *
 * sd_notify: systemd (or any supervisor) passes the path of a datagram socket in NOTIFY_SOCKET;
 * the service sends newline-separated VAR=value assignments to it. A path starting with '/' is a
 * filesystem socket, one starting with '@' an abstract socket. Without NOTIFY_SOCKET every send
 * is a successful no-op, so the daemon calls these functions unconditionally.
 *
 * The messages the daemon sends, in order (docs/operations.md):
 *   READY=1 [+ STATUS=]           listeners are up (or, with ready_requires_attestation, once
 *                                 every service has an attested pin)
 *   RELOADING=1 + MONOTONIC_USEC= on SIGHUP, before the new configuration is parsed (the
 *                                 systemd >= 253 Type=notify-reload convention, harmless before)
 *   READY=1 [+ STATUS=]           when the reload was applied or rejected
 *   STOPPING=1 [+ STATUS=]        on SIGTERM/SIGINT, before the drain
 *   WATCHDOG=1                    every WATCHDOG_USEC / 2 from a loop timer, when asked
 *
 * Socket activation: systemd passes listening sockets as fds 3 .. 3+LISTEN_FDS-1 when
 * LISTEN_PID is our pid, with names in LISTEN_FDNAMES (colon-separated). listenfds_parse()
 * collects them, sets FD_CLOEXEC and describes each (TCP or Unix, bound address) so that the
 * daemon can match each to a configured listen address and adopt it instead of binding.
 *
 * Everything here runs on the loop thread; there is no global state.
 */
#ifndef ATTESTPROXY_OPS_SDNOTIFY_H
#define ATTESTPROXY_OPS_SDNOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <uv.h>

#include "core/config.h"

/* Longest notification datagram we send; systemd accepts far more, but ours are short. */
#define SDNOTIFY_MESSAGE_MAX 1024
/* Longest STATUS= text; longer text is truncated. */
#define SDNOTIFY_STATUS_MAX 256

struct sdnotify;
typedef void (*sdnotify_close_cb)(struct sdnotify *sn);

/*
 * The notifier, embedded in its owner (struct daemon). Fields are private to sdnotify.c; they are
 * in the header only so that the owner can embed the structure.
 */
struct sdnotify {
    void *data; /* free for the owner */

    /* Private. */
    uv_loop_t *loop;
    int fd; /* SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, or -1 */
    struct sockaddr_un addr;
    socklen_t addr_len;
    bool enabled;           /* NOTIFY_SOCKET was set and valid */
    int config_error;       /* why NOTIFY_SOCKET / WATCHDOG_USEC were ignored, or 0 */
    uint64_t watchdog_usec; /* 0 = no watchdog requested for this process */
    uv_timer_t watchdog_timer;
    bool closing;
    sdnotify_close_cb close_cb;
};

/**
 * Initialises `sn` from the environment: NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. The
 * variables are left in place (the daemon starts no children).
 *
 * Returns 0, or a negative libuv error when the watchdog timer cannot be initialised; then
 * nothing needs closing. After 0, the owner must call sdnotify_close() exactly once before
 * closing the loop (the timer handle is initialised even when no watchdog was asked for).
 *
 * An unusable environment is not an error of this function: a NOTIFY_SOCKET that is neither an
 * absolute path nor '@abstract', or a malformed WATCHDOG_USEC, disables that feature and is
 * reported by sdnotify_config_error() so that the daemon can log it once. A WATCHDOG_PID naming
 * another process disables the watchdog silently, as sd_watchdog_enabled() does.
 */
int sdnotify_init(struct sdnotify *sn, uv_loop_t *loop);

/** 0, or the negative errno explaining why part of the environment was ignored. */
int sdnotify_config_error(const struct sdnotify *sn);

/** True when NOTIFY_SOCKET was given: notifications are actually sent somewhere. */
bool sdnotify_enabled(const struct sdnotify *sn);

/** The watchdog interval systemd asked for in microseconds, or 0 when none. */
uint64_t sdnotify_watchdog_usec(const struct sdnotify *sn);

/**
 * Sends one raw notification (`message`: newline-separated VAR=value lines, at most
 * SDNOTIFY_MESSAGE_MAX bytes, no NUL). Synchronous and non-blocking: one sendto() on the loop
 * thread. Returns 0 (also when notifications are disabled), -EINVAL for an empty or over-long
 * message, or the negative errno of sendto() (-EAGAIN when the receiver's queue is full,
 * -ECONNREFUSED/-ENOENT when nobody listens). Never fires a callback.
 */
int sdnotify_send(struct sdnotify *sn, const char *message);

/*
 * The protocol messages. `status` is optional (NULL = none): when given, "\nSTATUS=<status>" is
 * appended to the same datagram, with newlines and other control characters in `status`
 * replaced by spaces and the text cut at SDNOTIFY_STATUS_MAX bytes. Return values as for
 * sdnotify_send().
 */

/** "READY=1": start-up finished, or a reload finished (successfully or not). */
int sdnotify_ready(struct sdnotify *sn, const char *status);

/**
 * "RELOADING=1\nMONOTONIC_USEC=<CLOCK_MONOTONIC in µs>": a reload begins. systemd >= 253 uses
 * the timestamp to match this message to the reload it requested; follow with sdnotify_ready().
 */
int sdnotify_reloading(struct sdnotify *sn, const char *status);

/** "STOPPING=1": shutdown (the drain) begins. */
int sdnotify_stopping(struct sdnotify *sn, const char *status);

/** "STATUS=<status>" alone; `status` must not be NULL. */
int sdnotify_status(struct sdnotify *sn, const char *status);

/** "WATCHDOG=1": one keep-alive ping; sdnotify_watchdog_start() sends these on a timer. */
int sdnotify_watchdog(struct sdnotify *sn);

/**
 * "EXTEND_TIMEOUT_USEC=<usec>": asks systemd for `usec` more microseconds before it gives up on
 * the current start, reload or stop (useful while a long drain runs).
 */
int sdnotify_extend_timeout(struct sdnotify *sn, uint64_t usec);

/**
 * Starts the watchdog: sends WATCHDOG=1 now and then every WATCHDOG_USEC / 2 from a uv_timer
 * (unref'd, so it never keeps the loop alive by itself). Because the timer runs on the loop,
 * the pings stop when the loop is stuck, which is what lets systemd restart a hung daemon.
 * A no-op returning 0 when no watchdog was asked for or notifications are disabled.
 * Returns 0 or a negative libuv error. Send errors at each tick are ignored.
 */
int sdnotify_watchdog_start(struct sdnotify *sn);

/** Stops the watchdog timer (idempotent); sdnotify_watchdog_start() resumes it. */
void sdnotify_watchdog_stop(struct sdnotify *sn);

/**
 * Stops the watchdog, closes the notification socket and closes the timer handle. `done` (may
 * be NULL) is called exactly once, from the loop, after the handle has closed; only then may the
 * memory holding `sn` be released. Idempotent: a second call while closing does nothing (and
 * its `done` is not called). After this, the send functions return 0 without sending.
 */
void sdnotify_close(struct sdnotify *sn, sdnotify_close_cb done);

/* ---- Socket activation ---------------------------------------------------------------------- */

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
