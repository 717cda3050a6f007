/*
 * The daemon context: the one structure that owns the event loop, the live configuration, the
 * verifier and every subsystem. There is no other global state (the logger's settings aside).
 *
 * Lifecycle: daemon_run() loads the configuration, creates the verifier, starts the subsystems,
 * runs the loop until SIGTERM/SIGINT, then closes every handle and checks that the loop closes.
 * SIGHUP reloads the configuration: a new structure is parsed and validated first, and the live
 * one is replaced only on success; a failed reload is logged and changes nothing.
 */
#ifndef ATTESTPROXY_APP_DAEMON_H
#define ATTESTPROXY_APP_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "base/config.h"
#include "base/listenfds.h"
#include "ops/sdnotify.h"

struct verifier;
struct proxy;
struct watch;
struct metrics;
struct admin;
struct audit;

struct daemon {
    uv_loop_t loop;
    struct config *cfg;        /* live configuration; replaced only by a successful reload */
    struct verifier *verifier; /* trusts exactly one root (compiled-in or root_ca) */
    struct proxy *proxy;       /* listeners, connections, pools, attested key sets */
    struct watch *watch;       /* policy files watched for changes */
    uint64_t generation;       /* bumped by a reload that changes what is trusted */
    uv_signal_t sig_term;
    uv_signal_t sig_int;
    uv_signal_t sig_hup;
    struct metrics *metrics; /* counters for /metrics, updated by every layer */
    struct admin *admin;     /* admin API listener, or NULL when admin_listen is unset */
    struct audit *audit;     /* the audit log, or NULL when audit_log is unset */
    struct sdnotify sn;      /* systemd notifications and watchdog */
    struct listenfds lfds;   /* sockets passed by systemd socket activation */
    bool listening;          /* every listener is up */
    bool ready_sent;         /* READY=1 went to systemd */
    char last_status[SDNOTIFY_STATUS_MAX]; /* the last STATUS= sent while not ready */
    bool stopping;
    int exit_code;
    const char *attest_service; /* `attestproxy attest SERVICE` only */
};

/**
 * Runs the daemon with the configuration at `config_path` until it is told to stop.
 * Returns the process exit code: 0 after a clean stop, 1 on a runtime failure (a listener
 * cannot bind, the root cannot load), 2 when the configuration is invalid.
 */
int daemon_run(const char *config_path);

/**
 * Reloads the configuration from its file. Returns 0 when the new configuration was applied
 * (or equals the live one), a negative code when it was rejected; the live one then stays.
 */
int daemon_reload(struct daemon *d);

/**
 * `attestproxy attest`: loads the configuration, connects once to `service`'s enclave, attests
 * it over that connection exactly as the relay would, prints the verified summary as JSON on
 * stdout, and closes. Returns 0 when accepted, 1 when refused or unreachable (the reason on
 * stderr), 2 for an invalid configuration or an unknown service.
 */
int daemon_attest(const char *config_path, const char *service);

/**
 * Sends READY=1 to systemd the first time the daemon is ready (core/status.c status_ready()).
 * Called at start-up and, with ready_requires_attestation, by the proxy after each successful
 * attestation; cheap and idempotent.
 */
void daemon_check_ready(struct daemon *d);

/*
 * Contract with the proxy (daemon/proxy/proxy.h), called from daemon.c:
 *   proxy_start(d)           after the configuration and verifier are ready; binds listeners.
 *   proxy_reload(d, old, root_changed)
 *                            after a successful reload swapped d->cfg to the new configuration
 *                            (and d->verifier, when root_changed).
 *                            The proxy TAKES OWNERSHIP of `old` and config_free()s it once no
 *                            connection or pool entry refers into it any more, so in-flight
 *                            exchanges may keep pointers into the configuration they started with.
 *   proxy_shutdown(d, done)  on SIGTERM/SIGINT: drain up to shutdown_timeout, close every handle,
 *                            then call done(d) once all close callbacks have run.
 */

#endif
