#include "core/daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "build_config.h"
#include "core/cli.h"
#include "core/log.h"
#include "core/watch.h"
#include "verify/verifier.h"

static void apply_logging(const struct config *cfg)
{
    log_configure(cfg->daemon.log_level, cfg->daemon.log_format, NULL);
}

static void on_signal_closed(uv_handle_t *h)
{
    (void)h;
}

static void close_signals(struct daemon *d)
{
    uv_signal_t *sigs[] = {&d->sig_term, &d->sig_int, &d->sig_hup};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        if (!uv_is_closing((uv_handle_t *)sigs[i]))
            uv_close((uv_handle_t *)sigs[i], on_signal_closed);
    }
}

static void on_stopped(struct daemon *d)
{
    log_event(LOG_LEVEL_INFO, "stopped", NULL);
    (void)d;
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

static void on_policy_file_changed(void *arg)
{
    struct daemon *d = arg;
    if (d->stopping)
        return;
    log_event(LOG_LEVEL_INFO, "policy_file_changed", "action", "reloading the configuration", NULL);
    daemon_reload(d);
}

static void begin_stop(struct daemon *d, const char *signame)
{
    if (d->stopping)
        return;
    d->stopping = true;
    log_event(LOG_LEVEL_INFO, "stopping", "signal", signame, NULL);
    /* Closing the signal handles restores the default dispositions, so a second SIGTERM or
     * SIGINT during the drain ends the process at once: the operator's escape hatch. */
    close_signals(d);
    watch_close(d->watch);
    d->watch = NULL;
    /* PROXY-HOOK: proxy_shutdown(d, on_stopped) drains and closes every connection. */
    on_stopped(d);
}

static void on_sigterm(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    begin_stop(d, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static void on_sighup(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    (void)signum;
    if (!d->stopping)
        daemon_reload(d);
}

int daemon_reload(struct daemon *d)
{
    char err[CONFIG_ERROR_MAX];
    char gen[24];
    struct config *fresh = NULL;
    struct config *old;
    int rc;

    log_event(LOG_LEVEL_INFO, "reload_begin", "config", d->cfg->path, NULL);
    rc = config_load(d->cfg->path, &fresh, err, sizeof(err));
    if (rc < 0) {
        log_event(LOG_LEVEL_ERROR, "reload_rejected", "config", d->cfg->path, "error", err,
                  "action", "keeping the running configuration", NULL);
        return rc;
    }
    /* A changed trust anchor needs a new verifier, built before anything is swapped so that a
     * bad root_ca leaves the daemon exactly as it was. */
    if (strcmp(fresh->daemon.root_ca, d->cfg->daemon.root_ca) != 0) {
        struct verifier *v =
            verifier_new(fresh->daemon.root_ca[0] ? fresh->daemon.root_ca : NULL, err, sizeof(err));
        if (v == NULL) {
            log_event(LOG_LEVEL_ERROR, "reload_rejected", "config", d->cfg->path, "error", err,
                      "action", "keeping the running configuration", NULL);
            config_free(fresh);
            return -EINVAL;
        }
        verifier_free(d->verifier);
        d->verifier = v;
        log_event(LOG_LEVEL_WARN, "trust_root_changed", "root_ca",
                  fresh->daemon.root_ca[0] ? fresh->daemon.root_ca : "compiled-in AWS Root-G1",
                  NULL);
    }
    old = d->cfg;
    d->cfg = fresh;
    d->generation++;
    apply_logging(fresh);
    restart_watch(d);
    /* PROXY-HOOK: proxy_reload(d, old) applies the new configuration and takes ownership of
     * `old`, freeing it once no exchange refers into it. */
    config_free(old);
    snprintf(gen, sizeof(gen), "%llu", (unsigned long long)d->generation);
    log_event(LOG_LEVEL_INFO, "reload_applied", "config", d->cfg->path, "generation", gen, NULL);
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

int daemon_run(const char *config_path)
{
    struct daemon d;
    char err[CONFIG_ERROR_MAX];
    struct sigaction sa;
    char nsvc[16];
    int rc;

    memset(&d, 0, sizeof(d));
    d.exit_code = EXIT_OK;

    rc = config_load(config_path, &d.cfg, err, sizeof(err));
    if (rc < 0) {
        log_event(LOG_LEVEL_ERROR, "config_invalid", "error", err, NULL);
        return EXIT_USAGE;
    }
    apply_logging(d.cfg);

    /* A peer that closes while we write must surface as EPIPE on that connection, not kill
     * the daemon. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    /* The trust anchor must load, or nothing can ever be attested: exit rather than run a
     * proxy that can only refuse. */
    d.verifier =
        verifier_new(d.cfg->daemon.root_ca[0] ? d.cfg->daemon.root_ca : NULL, err, sizeof(err));
    if (d.verifier == NULL) {
        log_event(LOG_LEVEL_ERROR, "trust_root_failed", "error", err, NULL);
        d.exit_code = EXIT_RUNTIME;
        goto out_free_config;
    }
    log_event(LOG_LEVEL_INFO, "trust_root", "root_ca",
              d.cfg->daemon.root_ca[0] ? d.cfg->daemon.root_ca : "compiled-in AWS Root-G1", NULL);

    rc = uv_loop_init(&d.loop);
    if (rc < 0) {
        log_event(LOG_LEVEL_ERROR, "start_failed", "error", uv_strerror(rc), NULL);
        d.exit_code = EXIT_RUNTIME;
        goto out_free_config;
    }

    rc = start_signals(&d);
    if (rc < 0) {
        log_event(LOG_LEVEL_ERROR, "start_failed", "error", uv_strerror(rc), NULL);
        d.exit_code = EXIT_RUNTIME;
        close_signals(&d);
        goto out_run_loop;
    }

    restart_watch(&d);

    /* PROXY-HOOK: proxy_start(&d) binds the listeners; on failure close_signals and exit 1. */

    snprintf(nsvc, sizeof(nsvc), "%zu", d.cfg->n_services);
    log_event(LOG_LEVEL_INFO, "started", "version", ATTESTPROXY_VERSION, "config", config_path,
              "services", nsvc, NULL);

out_run_loop:
    uv_run(&d.loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&d.loop);
    if (rc < 0) {
        /* A handle still open here is a bug; name it so it can be found. */
        uv_walk(&d.loop, on_walk_report, NULL);
        log_event(LOG_LEVEL_ERROR, "loop_close_failed", "error", uv_strerror(rc), NULL);
        d.exit_code = EXIT_RUNTIME;
    }
out_free_config:
    verifier_free(d.verifier);
    config_free(d.cfg);
    return d.exit_code;
}
