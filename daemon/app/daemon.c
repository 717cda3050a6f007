#include "app/daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "app/bundles.h"
#include "base/audit.h"
#include "base/clock.h"
#include "base/hex.h"
#include "build_config.h"
#include "app/cli.h"
#include "base/log.h"
#include "app/status.h"
#include "base/watch.h"
#include "ops/admin.h"
#include "base/metrics.h"
#include "proxy/proxy.h"
#include "verify/verifier.h"

static void log_warning(void *arg, const char *service, const char *msg)
{
    (void)arg;
    log_event(LOG_LEVEL_WARN, "config_warning", "service", service, "warning", msg, NULL);
}

/* Logging as the configuration says, then what in it is valid but weak. */
static void apply_logging(const struct config *cfg)
{
    log_configure(cfg->daemon.log_level, cfg->daemon.log_format, NULL);
    config_warnings(cfg, log_warning, NULL);
}

/* One line of systemd STATUS= text summarising what the daemon does right now; while it waits
 * for attestation, which services it waits for and why. */
static void status_line(struct daemon *d, char *out, size_t cap)
{
    if (!d->stopping && !status_ready(d)) {
        status_waiting_text(d, out, cap);
        return;
    }
    snprintf(out, cap, "%s: %zu service(s), policy generation %llu",
             d->stopping ? "stopping" : "ready", d->cfg->n_services,
             (unsigned long long)d->generation);
}

/* READY=1 is sent once, when the daemon first becomes ready: at start-up, or — with
 * ready_requires_attestation — when the last service gets its first attested pin. Before that,
 * each change of the reason it waits for is sent as a STATUS= line of its own (systemctl
 * status shows it), so that a start that hangs says why. */
void daemon_check_ready(struct daemon *d)
{
    char status[SDNOTIFY_STATUS_MAX];
    if (d->ready_sent || d->stopping || !d->listening)
        return;
    status_line(d, status, sizeof(status));
    if (!status_ready(d)) {
        if (strcmp(status, d->last_status) != 0) {
            snprintf(d->last_status, sizeof(d->last_status), "%s", status);
            sdnotify_status(&d->sn, status);
            log_event(LOG_LEVEL_INFO, "not_ready", "status", status, NULL);
        }
        return;
    }
    d->ready_sent = true;
    sdnotify_ready(&d->sn, status);
    log_event(LOG_LEVEL_INFO, "ready", NULL);
}

static void on_signal_closed(uv_handle_t *h)
{
    (void)h;
}

static void close_signals(struct daemon *d)
{
    uv_signal_t *sigs[] = {&d->sig_term, &d->sig_int, &d->sig_hup};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        /* Initialised handles have their type set; the zeroed ones were never initialised. */
        if (sigs[i]->type == UV_SIGNAL && !uv_is_closing((uv_handle_t *)sigs[i]))
            uv_close((uv_handle_t *)sigs[i], on_signal_closed);
    }
}

static void on_policy_file_changed(void *arg);

/* (Re)starts the policy file watcher for the live configuration. A failure to watch is logged
 * and leaves SIGHUP as the way to apply policy changes; it does not stop the daemon. */
static void restart_watch(struct daemon *d)
{
    watch_close(d->watch);
    d->watch = NULL;
    if (watch_start(&d->loop, d->cfg, on_policy_file_changed, d, &d->watch) < 0)
        d->watch = NULL;
}

/* The last step of a stop: every connection is closed, so the remaining handles go. */
static void on_drained(void *ctx)
{
    struct daemon *d = ctx;
    d->proxy = NULL; /* freed by the proxy before this callback */
    log_event(LOG_LEVEL_INFO, "stopped", NULL);
    sdnotify_close(&d->sn, NULL);
}

static void begin_stop(struct daemon *d, const char *signame)
{
    char status[SDNOTIFY_STATUS_MAX];
    if (d->stopping)
        return;
    d->stopping = true;
    status_line(d, status, sizeof(status));
    sdnotify_stopping(&d->sn, status);
    log_event(LOG_LEVEL_INFO, "stopping", "signal", signame, NULL);
    /* Closing the signal handles restores the default dispositions, so a second SIGTERM or
     * SIGINT during the drain ends the process at once: the operator's escape hatch. */
    close_signals(d);
    watch_close(d->watch);
    d->watch = NULL;
    admin_close(d->admin, NULL, NULL);
    d->admin = NULL;
    /* The proxy drains in-flight exchanges (up to shutdown_timeout), then calls on_drained. */
    if (d->proxy != NULL)
        proxy_shutdown(d->proxy, on_drained);
    else
        on_drained(d);
}

static void on_sigterm(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    begin_stop(d, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static void reload_with_notify(struct daemon *d)
{
    char status[SDNOTIFY_STATUS_MAX];
    if (!d->ready_sent) {
        /* Still starting (ready_requires_attestation, no attested pin yet): RELOADING=1 and
         * READY=1 would tell systemd the start is over. Reload, and let the readiness check
         * send READY=1 when the daemon really is ready. */
        daemon_reload(d);
        daemon_check_ready(d);
        return;
    }
    sdnotify_reloading(&d->sn, "reloading configuration");
    daemon_reload(d);
    /* systemd waits for READY=1 after RELOADING=1 whether or not the reload succeeded. */
    status_line(d, status, sizeof(status));
    sdnotify_ready(&d->sn, status);
}

static void on_sighup(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    (void)signum;
    if (!d->stopping)
        reload_with_notify(d);
}

static bool source_ready(void *ctx)
{
    return status_ready(ctx);
}

static json_t *source_readiness(void *ctx)
{
    return status_readiness_json(ctx);
}

static json_t *source_attestation(void *ctx)
{
    return status_attestation_json(ctx);
}

static uint64_t source_now_ms(void *ctx)
{
    (void)ctx;
    return (uint64_t)clock_wall_ms();
}

/* The admin listener, on an inherited socket when systemd passed one for its address. */
/* Opens the admin listener `cfg` names into `*out` (NULL when admin_listen is unset): adopted
 * from socket activation when systemd passed that address, else bound. */
static int open_admin(struct daemon *d, const struct config *cfg, struct admin **out)
{
    struct admin_options opt;
    struct admin_source src = {
        .ctx = d,
        .ready = source_ready,
        .readiness = source_readiness,
        .attestation = source_attestation,
        .metrics = d->metrics,
        .now_ms = source_now_ms,
    };
    int idx;
    *out = NULL;
    if (!cfg->daemon.admin_enabled)
        return 0;
    admin_options_init(&opt, &cfg->daemon.admin);
    idx = listenfds_find(&d->lfds, &cfg->daemon.admin);
    if (idx >= 0)
        opt.fd = listenfds_take(&d->lfds, (size_t)idx);
    return admin_start(&d->loop, &opt, &src, out);
}

static int start_admin(struct daemon *d)
{
    return open_admin(d, d->cfg, &d->admin);
}

/* Whether a reload to `fresh` adds, removes or moves the admin listener. */
static bool admin_moves(const struct config *old, const struct config *fresh)
{
    if (old->daemon.admin_enabled != fresh->daemon.admin_enabled)
        return true;
    return fresh->daemon.admin_enabled &&
           !config_listen_equal(&old->daemon.admin, &fresh->daemon.admin);
}

static void describe_admin(const struct config *cfg, char *out, size_t cap)
{
    if (cfg->daemon.admin_enabled)
        config_listen_describe(&cfg->daemon.admin, out, cap);
    else
        snprintf(out, cap, "none");
}

/* Whether a reload from `old` to `fresh` changes what is trusted (the trust root aside): the
 * keys trusted to sign policy bundles, a service added or removed, or one whose policy,
 * evidence profile, upstream or session_resumption (BRIEF §2.7: what a resumed session proves)
 * differs, or whose policy comes from another bundle (a new version, signer or expiry, even
 * with the same measurement sets). */
static bool trust_changed(const struct config *old, const struct config *fresh)
{
    const struct daemon_config *a = &old->daemon, *b = &fresh->daemon;
    if (a->n_policy_keys != b->n_policy_keys ||
        memcmp(a->policy_keys, b->policy_keys, a->n_policy_keys * sizeof(a->policy_keys[0])) != 0)
        return true;
    if (old->n_services != fresh->n_services)
        return true;
    for (size_t i = 0; i < fresh->n_services; i++) {
        const struct service_config *now = &fresh->services[i];
        const struct service_config *was = config_find_service(old, now->name);
        if (was == NULL || proxy_attestation_change(was, now) != NULL ||
            was->session_resumption != now->session_resumption)
            return true;
        if (was->bundle.in_force != now->bundle.in_force ||
            memcmp(was->bundle.digest, now->bundle.digest, sizeof(now->bundle.digest)) != 0 ||
            was->policy.not_after_ms != now->policy.not_after_ms)
            return true;
    }
    return false;
}

/* One "reload" record in the audit log. */
static void audit_reload(struct daemon *d, const char *result, const char *error)
{
    json_t *f = json_pack("{s:s,s:s,s:I}", "result", result, "config", d->cfg->path, "generation",
                          (json_int_t)d->generation);
    if (error != NULL)
        json_object_set_new(f, "error", json_string(error));
    audit_append(d->audit, "reload", f);
    json_decref(f);
}

static void on_policy_file_changed(void *arg)
{
    struct daemon *d = arg;
    if (d->stopping)
        return;
    log_event(LOG_LEVEL_INFO, "policy_file_changed", "action", "reloading the configuration", NULL);
    reload_with_notify(d);
}

int daemon_reload(struct daemon *d)
{
    char err[CONFIG_ERROR_MAX];
    char gen[24];
    struct config *fresh = NULL;
    struct config *old;
    struct verifier *v;
    struct admin *admin = NULL;
    char from[CONFIG_PATH_MAX + 16];
    char to[CONFIG_PATH_MAX + 16];
    bool root_changed = false;
    bool moves;
    int rc;

    log_event(LOG_LEVEL_INFO, "reload_begin", "config", d->cfg->path, NULL);
    rc = config_load(d->cfg->path, &fresh, err, sizeof(err));
    /* Signed policy bundles: a refused one keeps the bundle in force (bundles.h). */
    if (rc == 0)
        rc = bundles_apply(fresh, d->cfg, d->metrics, d->audit, clock_wall_ms(), 0, err,
                           sizeof(err));
    if (rc < 0) {
        log_event(LOG_LEVEL_ERROR, "reload_rejected", "config", d->cfg->path, "error", err,
                  "action", "keeping the running configuration", NULL);
        audit_reload(d, "rejected", err);
        metrics_inc_reload(d->metrics, false);
        config_free(fresh);
        return rc;
    }
    /* The trust anchor is read afresh on every reload, so that replacing the file behind an
     * unchanged root_ca path takes effect too; a new verifier is built, and the listeners the
     * new file adds are bound, before anything is swapped, so that a bad root or an address
     * that cannot bind leaves the daemon exactly as it was. */
    v = verifier_new(fresh->daemon.root_ca[0] ? fresh->daemon.root_ca : NULL, err, sizeof(err));
    moves = admin_moves(d->cfg, fresh);
    if (v == NULL) {
        rc = -EINVAL;
    } else if (moves && (rc = open_admin(d, fresh, &admin)) < 0) {
        describe_admin(fresh, from, sizeof(from));
        snprintf(err, sizeof(err), "cannot listen on admin_listen %.300s: %s", from,
                 rc == -EINVAL ? "not a loopback address" : uv_strerror(rc));
    } else {
        rc = proxy_prepare_reload(d->proxy, fresh, err, sizeof(err));
    }
    if (rc < 0) {
        log_event(LOG_LEVEL_ERROR, "reload_rejected", "config", d->cfg->path, "error", err,
                  "action", "keeping the running configuration", NULL);
        audit_reload(d, "rejected", err);
        metrics_inc_reload(d->metrics, false);
        admin_close(admin, NULL, NULL);
        verifier_free(v);
        config_free(fresh);
        return rc;
    }
    if (verifier_same_root(v, d->verifier)) {
        verifier_free(v); /* the running one keeps its warm intermediates */
    } else {
        verifier_free(d->verifier);
        d->verifier = v;
        root_changed = true;
        log_event(LOG_LEVEL_WARN, "trust_root_changed", "root_ca",
                  fresh->daemon.root_ca[0] ? fresh->daemon.root_ca : "compiled-in AWS Root-G1",
                  "action", "every pin dropped; keys are attested again under the new root", NULL);
    }
    if (moves) {
        /* The new address is already listening; the old one closes (its requests in progress
         * are cut: each is one short read of daemon state). */
        describe_admin(d->cfg, from, sizeof(from));
        describe_admin(fresh, to, sizeof(to));
        admin_close(d->admin, NULL, NULL);
        d->admin = admin;
        log_event(LOG_LEVEL_INFO, "admin_listen_changed", "from", from, "to", to, NULL);
    }
    old = d->cfg;
    d->cfg = fresh;
    if (root_changed || trust_changed(old, fresh))
        d->generation++;
    metrics_set_policy_generation(d->metrics, d->generation);
    metrics_inc_reload(d->metrics, true);
    bundles_announce(fresh, old, d->audit); /* before proxy_reload(), which may free `old` */
    apply_logging(fresh);
    restart_watch(d);
    /* The proxy applies the new configuration and takes ownership of `old`, freeing it once no
     * exchange refers into it. */
    if (d->proxy != NULL)
        proxy_reload(d->proxy, old, root_changed);
    else
        config_free(old);
    snprintf(gen, sizeof(gen), "%llu", (unsigned long long)d->generation);
    log_event(LOG_LEVEL_INFO, "reload_applied", "config", d->cfg->path, "generation", gen, NULL);
    audit_reload(d, "applied", NULL);
    return 0;
}

static void on_walk_report(uv_handle_t *h, void *arg)
{
    (void)arg;
    log_event(LOG_LEVEL_ERROR, "handle_leak", "type", uv_handle_type_name(uv_handle_get_type(h)),
              "closing", uv_is_closing(h) ? "yes" : "no", NULL);
}

static int start_signals(struct daemon *d)
{
    struct {
        uv_signal_t *h;
        uv_signal_cb cb;
        int signum;
    } sigs[] = {
        {&d->sig_term, on_sigterm, SIGTERM},
        {&d->sig_int, on_sigterm, SIGINT},
        {&d->sig_hup, on_sighup, SIGHUP},
    };
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        int rc = uv_signal_init(&d->loop, sigs[i].h);
        if (rc < 0)
            return rc;
        sigs[i].h->data = d;
        rc = uv_signal_start(sigs[i].h, sigs[i].cb, sigs[i].signum);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Everything systemd passed and nothing adopted is closed, so that a socket unit listing an
 * address the configuration no longer has does not leave a dead listener open. */
static void close_unused_fds(struct daemon *d)
{
    size_t n = listenfds_close_unused(&d->lfds);
    if (n > 0) {
        char num[24];
        snprintf(num, sizeof(num), "%zu", n);
        log_event(LOG_LEVEL_WARN, "socket_activation_unused", "closed", num, "why",
                  "no listen address in the configuration matches these inherited sockets", NULL);
    }
}

/* Descriptors beyond the connections themselves: listeners, admin, signals, logs, timers'
 * event fds, policy watches. */
#define FD_RESERVE 64

/*
 * Every client connection costs a descriptor, and one more while it has an upstream connection,
 * so the usual soft RLIMIT_NOFILE of 1024 would cap a service far below max_connections. The
 * soft limit is raised to the hard limit (an unprivileged process may), and a limit still
 * below what the configuration can use is reported. Under the systemd unit, LimitNOFILE sets
 * both limits alike, so nothing is raised there (its system-call filter refuses setrlimit).
 */
static void raise_fd_limit(const struct config *cfg)
{
    struct rlimit rl;
    char soft[24], hard[24], was[24], need[24];
    uint64_t want = FD_RESERVE;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        log_event(LOG_LEVEL_WARN, "fd_limit_unknown", "error", strerror(errno), NULL);
        return;
    }
    snprintf(was, sizeof(was), "%llu", (unsigned long long)rl.rlim_cur);
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit raised = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl.rlim_cur = rl.rlim_max;
        else
            log_event(LOG_LEVEL_WARN, "fd_limit_not_raised", "soft", was, "error", strerror(errno),
                      NULL);
    }
    for (size_t i = 0; i < cfg->n_services; i++)
        want += 2 * (uint64_t)cfg->services[i].max_connections;
    snprintf(soft, sizeof(soft), "%llu", (unsigned long long)rl.rlim_cur);
    snprintf(hard, sizeof(hard), "%llu", (unsigned long long)rl.rlim_max);
    snprintf(need, sizeof(need), "%llu", (unsigned long long)want);
    log_event(LOG_LEVEL_INFO, "fd_limit", "soft", soft, "hard", hard, "was", was, "wanted", need,
              NULL);
    if (rl.rlim_cur != RLIM_INFINITY && want > rl.rlim_cur)
        log_event(LOG_LEVEL_WARN, "fd_limit_low", "soft", soft, "wanted", need, "why",
                  "max_connections of all services (each with an upstream connection) exceed the "
                  "descriptor limit; connections beyond it are refused at accept",
                  NULL);
}

/* What `run` and `attest` share: configuration, logging, the trust root, metrics, the policy
 * bundles and the loop. `run` (`serving`) also opens the audit log and records a newer accepted
 * bundle in state_dir; the one-shot `attest` writes nothing: it may run as another user than the
 * service, and a file it left in state_dir would belong to that user. Returns 0, or the exit
 * code after undoing what was done. */
static int daemon_open(struct daemon *d, const char *config_path, bool serving)
{
    char err[CONFIG_ERROR_MAX];
    struct sigaction sa;
    int rc;

    memset(d, 0, sizeof(*d));
    d->exit_code = EXIT_OK;
    rc = config_load(config_path, &d->cfg, err, sizeof(err));
    if (rc < 0) {
        log_event(LOG_LEVEL_ERROR, "config_invalid", "error", err, NULL);
        return EXIT_USAGE;
    }
    apply_logging(d->cfg);

    /* A peer that closes while we write must surface as EPIPE on that connection, not kill
     * the daemon. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    /* The trust anchor must load, or nothing can ever be attested: exit rather than run a
     * proxy that can only refuse. A root_ca that cannot be read is a configuration error (exit
     * 2: the unit's RestartPreventExitStatus keeps systemd from restarting into it again). */
    d->verifier =
        verifier_new(d->cfg->daemon.root_ca[0] ? d->cfg->daemon.root_ca : NULL, err, sizeof(err));
    if (d->verifier == NULL) {
        log_event(LOG_LEVEL_ERROR, "trust_root_failed", "error", err, NULL);
        config_free(d->cfg);
        return EXIT_USAGE;
    }
    log_event(LOG_LEVEL_INFO, "trust_root", "root_ca",
              d->cfg->daemon.root_ca[0] ? d->cfg->daemon.root_ca : "compiled-in AWS Root-G1", NULL);

    d->metrics = metrics_new();
    if (d->metrics == NULL) {
        log_event(LOG_LEVEL_ERROR, "start_failed", "error", "out of memory", NULL);
        goto out_free_verifier;
    }
    if (serving && d->cfg->daemon.audit_log[0] != '\0') {
        struct audit_options ao = {
            .path = d->cfg->daemon.audit_log,
            .max_bytes = d->cfg->daemon.audit_max_bytes,
            .fsync = d->cfg->daemon.audit_fsync,
            .archive_dir = d->cfg->daemon.audit_archive,
            .archive_max_bytes = d->cfg->daemon.audit_archive_max_bytes,
        };
        if (audit_open(&ao, &d->audit, err, sizeof(err)) < 0) {
            log_event(LOG_LEVEL_ERROR, "audit_log_failed", "error", err, NULL);
            goto out_free_metrics;
        }
    }
    /* A bundle that is refused at start, with no valid one in force, stops the start like an
     * invalid configuration: exit 2, the file and the reason in the log. */
    if (bundles_apply(d->cfg, NULL, d->metrics, d->audit, clock_wall_ms(),
                      serving ? 0 : BUNDLES_DRY_RUN, err, sizeof(err)) < 0) {
        log_event(LOG_LEVEL_ERROR, "config_invalid", "error", err, NULL);
        audit_close(d->audit);
        metrics_free(d->metrics);
        verifier_free(d->verifier);
        config_free(d->cfg);
        return EXIT_USAGE;
    }
    rc = uv_loop_init(&d->loop);
    if (rc < 0) {
        log_event(LOG_LEVEL_ERROR, "start_failed", "error", uv_strerror(rc), NULL);
        goto out_free_audit;
    }
    return 0;

out_free_audit:
    audit_close(d->audit);
out_free_metrics:
    metrics_free(d->metrics);
out_free_verifier:
    verifier_free(d->verifier);
    config_free(d->cfg);
    return EXIT_RUNTIME;
}

/* Runs the loop until every handle closed, then releases everything daemon_open() made.
 * Returns the exit code. */
static int daemon_close(struct daemon *d)
{
    int rc;
    uv_run(&d->loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&d->loop);
    if (rc < 0) {
        /* A handle still open here is a bug; name it so it can be found. */
        uv_walk(&d->loop, on_walk_report, NULL);
        log_event(LOG_LEVEL_ERROR, "loop_close_failed", "error", uv_strerror(rc), NULL);
        d->exit_code = EXIT_RUNTIME;
    }
    audit_close(d->audit);
    metrics_free(d->metrics);
    verifier_free(d->verifier);
    config_free(d->cfg);
    return d->exit_code;
}

/* What the proxy uses of the daemon: the loop, the live configuration and verifier (read at
 * each use, so a reload's swap is seen), the metrics, the inherited sockets and readiness. */
static void on_status_changed(void *ctx)
{
    daemon_check_ready(ctx);
}

static void proxy_env_init(struct daemon *d, struct proxy_env *env)
{
    memset(env, 0, sizeof(*env));
    env->loop = &d->loop;
    env->cfg = &d->cfg;
    env->verifier = &d->verifier;
    env->metrics = d->metrics;
    env->lfds = &d->lfds;
    env->ctx = d;
    env->status_changed = on_status_changed;
    env->audit = d->audit;
}

static void on_proxy_closed(void *ctx)
{
    struct daemon *d = ctx;
    d->proxy = NULL;
}

int daemon_run(const char *config_path)
{
    struct proxy_env env;
    struct daemon d;
    char nsvc[16];
    int rc = daemon_open(&d, config_path, true);

    if (rc != 0)
        return rc;

    raise_fd_limit(d.cfg);

    rc = listenfds_parse(&d.lfds, true);
    if (rc < 0) {
        /* A broken LISTEN_FDS is systemd's or the operator's mistake; binding ourselves would
         * silently diverge from the socket unit, so refuse to start. */
        log_event(LOG_LEVEL_ERROR, "socket_activation_invalid", "error", strerror(-rc), NULL);
        d.exit_code = EXIT_RUNTIME;
        return daemon_close(&d);
    }

    rc = sdnotify_init(&d.sn, &d.loop);
    if (rc < 0) {
        log_event(LOG_LEVEL_ERROR, "start_failed", "error", uv_strerror(rc), NULL);
        d.exit_code = EXIT_RUNTIME;
        return daemon_close(&d);
    }
    if (sdnotify_config_error(&d.sn) < 0)
        log_event(LOG_LEVEL_WARN, "sdnotify_environment_ignored", "error",
                  strerror(-sdnotify_config_error(&d.sn)), NULL);

    rc = start_signals(&d);
    if (rc < 0) {
        log_event(LOG_LEVEL_ERROR, "start_failed", "error", uv_strerror(rc), NULL);
        goto out_abort_start;
    }

    rc = start_admin(&d);
    if (rc < 0) {
        char where[CONFIG_PATH_MAX + 16];
        config_listen_describe(&d.cfg->daemon.admin, where, sizeof(where));
        log_event(LOG_LEVEL_ERROR, "admin_listen_failed", "listen", where, "error", uv_strerror(rc),
                  NULL);
        goto out_abort_start;
    }

    /* Bind (or adopt from socket activation) every service's listeners. */
    proxy_env_init(&d, &env);
    rc = proxy_start(&env, &d.proxy);
    if (rc < 0) {
        /* proxy_start() logged which listener failed; what it opened is closed here. */
        if (d.proxy != NULL)
            proxy_shutdown(d.proxy, on_proxy_closed);
        goto out_abort_start;
    }
    close_unused_fds(&d);
    d.listening = true;
    restart_watch(&d);
    metrics_set_policy_generation(d.metrics, d.generation);

    snprintf(nsvc, sizeof(nsvc), "%zu", d.cfg->n_services);
    log_event(LOG_LEVEL_INFO, "started", "version", ATTESTPROXY_VERSION, "config", config_path,
              "services", nsvc, NULL);
    sdnotify_watchdog_start(&d.sn);
    daemon_check_ready(&d);
    return daemon_close(&d);

out_abort_start:
    /* Nothing was served yet: close what was opened and leave with a runtime failure. */
    d.exit_code = EXIT_RUNTIME;
    d.stopping = true;
    close_signals(&d);
    admin_close(d.admin, NULL, NULL);
    d.admin = NULL;
    listenfds_close_unused(&d.lfds);
    sdnotify_close(&d.sn, NULL);
    return daemon_close(&d);
}

/* ---- attestproxy attest --------------------------------------------------------------------- */

/* Prints the verified summary (or the refusal) and shuts the one-connection proxy down. */
static void on_attest_done(void *ctx, const struct proxy_attest_result *r)
{
    struct daemon *d = ctx;
    const char *attest_service = d->attest_service;
    json_t *out = json_object(), *svc = status_attestation_json(d);
    json_t *service =
        svc ? json_object_get(json_object_get(svc, "services"), attest_service) : NULL;
    char pin[8 + 2 * 32] = "";

    if (r->has_pin) {
        memcpy(pin, "sha256:", 7);
        hex_encode(r->pin, sizeof(r->pin), pin + 7);
    }
    json_object_set_new(out, "service", json_string(attest_service));
    json_object_set_new(out, "accepted", json_boolean(r->accepted));
    json_object_set_new(out, "message", json_string(r->message));
    json_object_set_new(out, "pin", r->has_pin ? json_string(pin) : json_null());
    if (service != NULL) {
        const char *keys[] = {"upstream", "profile", "binding", "nonce", "policy_digest"};
        json_t *pins = json_object_get(service, "pins");
        size_t i;
        json_t *p;
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
            json_object_set(out, keys[k], json_object_get(service, keys[k]));
        /* The attested pin's facts: module_id, PCRs, document time, expiry. */
        json_array_foreach(pins, i, p)
        {
            const char *pv = json_string_value(json_object_get(p, "pin"));
            if (r->has_pin && pv != NULL && strcmp(pv, pin) == 0)
                json_object_set(out, "attestation", p);
        }
    }
    json_dumpf(out, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
    fflush(stdout);
    if (!r->accepted)
        fprintf(stderr, "rejected: %s\n", r->message);
    json_decref(out);
    json_decref(svc);
    d->exit_code = r->accepted ? EXIT_OK : EXIT_RUNTIME;
    d->stopping = true;
    proxy_shutdown(d->proxy, on_proxy_closed);
}

int daemon_attest(const char *config_path, const char *service)
{
    struct proxy_env env;
    struct daemon d;
    int rc = daemon_open(&d, config_path, false);

    if (rc != 0)
        return rc;
    if (config_find_service(d.cfg, service) == NULL) {
        fprintf(stderr, "attestproxy: no service '%s' in %s\n", service, config_path);
        d.exit_code = EXIT_USAGE;
        return daemon_close(&d);
    }
    d.attest_service = service;
    proxy_env_init(&d, &env);
    rc = proxy_attest_once(&env, service, on_attest_done, &d.proxy);
    if (rc < 0) {
        fprintf(stderr, "rejected: cannot connect: %s\n", uv_strerror(rc));
        d.exit_code = EXIT_RUNTIME;
        if (d.proxy != NULL)
            proxy_shutdown(d.proxy, on_proxy_closed);
    }
    return daemon_close(&d);
}
