/*
 * systemd integration without libsystemd: the sd_notify datagram protocol, spoken directly so
 * that a container image needs no libsystemd.
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
 * Socket activation (LISTEN_FDS) is base/listenfds.h: the relay adopts the sockets too.
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

#include "base/config.h"

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

#endif
