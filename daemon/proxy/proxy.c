#include "proxy/proxy.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include <openssl/crypto.h>

#include "base/audit.h"
#include "base/log.h"
#include "base/metrics.h"
#include "proxy/attest.h"
#include "proxy/bufcache.h"
#include "proxy/client.h"
#include "proxy/listener.h"
#include "proxy/pool.h"
#include "proxy/proxy_internal.h"
#include "proxy/tls.h"
#include "proxy/tunnel.h"
#include "proxy/upstream.h"
#include "proxy/warm.h"
#include "verify/policy.h"

/* ---- Small shared helpers ----------------------------------------------------------------- */

static struct proxy_service *find_service(const struct proxy *p, const char *name)
{
    for (struct proxy_service *s = p->services; s != NULL; s = s->next) {
        if (!s->removed && strcmp(s->name, name) == 0)
            return s;
    }
    return NULL;
}

/* ---- Object accounting and the end of a shutdown ------------------------------------------ */

static void free_proxy(struct proxy *p)
{
    struct proxy_service *s = p->services;
    while (s != NULL) {
        struct proxy_service *next = s->next;
        if (s->resume.session != NULL)
            SSL_SESSION_free(s->resume.session);
        OPENSSL_cleanse(&s->pins, sizeof(s->pins));
        if (s->own_cfg != NULL) {
            OPENSSL_cleanse(s->own_cfg->token, sizeof(s->own_cfg->token));
            free(s->own_cfg);
        }
        free(s);
        s = next;
    }
    SSL_CTX_free(p->ssl_ctx);
    bufcache_free(p);
    free(p->attest_once);
    free(p);
}

static void on_shutdown_timer_closed(uv_handle_t *h)
{
    struct proxy *p = h->data;
    void (*done)(void *) = p->done;
    void *ctx = p->env.ctx;
    free_proxy(p);
    log_event(LOG_LEVEL_INFO, "proxy_stopped", NULL);
    if (done != NULL)
        done(ctx);
}

/* The loop-pass handle closes first; the shutdown timer's close then frees the proxy. */
static void on_pass_closed(uv_handle_t *h)
{
    struct proxy *p = h->data;
    uv_close((uv_handle_t *)&p->shutdown_timer, on_shutdown_timer_closed);
}

static void check_stopped(struct proxy *p)
{
    if (!p->stopping || p->open_objects > 0 || !p->shutdown_timer_open)
        return;
    p->shutdown_timer_open = false;
    if (p->pass_open) {
        p->pass_open = false;
        uv_close((uv_handle_t *)&p->pass, on_pass_closed);
        return;
    }
    uv_close((uv_handle_t *)&p->shutdown_timer, on_shutdown_timer_closed);
}

/*
 * Batching under load (batch_wait_us). Runs before every poll. When the pass that just ended
 * handled two or more socket reads while many exchanges were in flight, the daemon is busy, and
 * sleeping a few microseconds before polling lets the next events gather: one poll then returns
 * several of them. Events that come while the daemon sleeps wake nobody, so the cores of the
 * clients and the enclave stop paying a cross-core wake-up (an inter-processor interrupt,
 * costly on a VM) for nearly every event (docs/benchmarks.md, "The 64-connection gap"). A lone
 * request (one read per pass) never waits, so latency at low load is untouched; under load each
 * pass may start up to batch_wait_us later (plus the 1 us of timer slack proxy_create() sets).
 * A pass of BATCH_MAX_READS reads or more never waits either: the events had gathered already,
 * because the daemon itself is the bottleneck, and a sleep would only leave its core idle.
 *
 * Nor does a pass with fewer than BATCH_MIN_IN_FLIGHT exchanges in flight (upstream connections
 * in use, every service together): with few clients the wait is not hidden behind other
 * clients' work — each of them waits, and so do the cores of the client and the enclave. At 4
 * and 16 keep-alive connections the wait cost a third and a fifth of the requests per second
 * (21 000 against 31 800, 44 200 against 53 900) and ~10-45% more CPU per request; from 32
 * connections on it is as it was (docs/benchmarks.md, "Batching: only with many exchanges in
 * flight").
 */
#define BATCH_TIMER_SLACK_NS 1000UL /* the daemon thread's timer slack (proxy_create) */
#define BATCH_MAX_READS      16
#define BATCH_MIN_IN_FLIGHT  32

bool proxy__batch_waits(unsigned pass_reads, size_t in_flight)
{
    return pass_reads >= 2 && pass_reads < BATCH_MAX_READS && in_flight >= BATCH_MIN_IN_FLIGHT;
}

/* Exchanges in flight: upstream connections in use (busy, attesting or being opened), every
 * service together, less those WebSocket tunnels hold (an idle tunnel is no load). */
static size_t exchanges_in_flight(const struct proxy *p)
{
    size_t n = 0;
    for (const struct proxy_service *s = p->services; s != NULL; s = s->next) {
        /* n_tunnels also counts handshakes admitted before their connection: never below 0. */
        size_t in_use = s->n_upstreams - s->n_upstreams_closing - s->pool.n;
        n += in_use > s->n_tunnels ? in_use - s->n_tunnels : 0;
    }
    return n;
}

/*
 * Busy polling (busy_poll_us, off by default). After a pass that handled a read and did not
 * sleep for batching, the daemon keeps asking whether an event is ready, without blocking, for
 * up to busy_poll_us before it lets libuv block in epoll_wait. At light load the next event of
 * an exchange (the enclave's response, the client's next request) usually comes within tens of
 * microseconds, and finding the daemon awake spares it the wake-up of an idle core: on a VM,
 * the largest part of a lone request's time through a proxy (docs/benchmarks.md, "Busy
 * polling"). The price is CPU: the core stays busy for up to busy_poll_us after every such
 * pass. It is bounded: a pass that handled no read (a timer, an idle daemon) never spins, so
 * an idle daemon sleeps as before. The epoll descriptor itself is polled, which reports
 * readiness without taking the events libuv is about to collect.
 */
static void busy_poll(uv_loop_t *loop, uint32_t us)
{
    struct pollfd pfd = {.fd = uv_backend_fd(loop), .events = POLLIN};
    uint64_t end = uv_hrtime() + (uint64_t)us * 1000u;
    while (poll(&pfd, 1, 0) == 0 && uv_hrtime() < end)
        ;
}

static void on_loop_pass(uv_prepare_t *h)
{
    struct proxy *p = h->data;
    const struct daemon_config *ds = &proxy__cfg(p)->daemon;
    if (!p->stopping && p->pass_reads > 0) {
        /* The services are counted only for a pass that could wait. */
        if (ds->batch_wait_us > 0 && proxy__batch_waits(p->pass_reads, SIZE_MAX) &&
            proxy__batch_waits(p->pass_reads, exchanges_in_flight(p))) {
            struct timespec ts = {0, (long)ds->batch_wait_us * 1000};
            nanosleep(&ts, NULL);
        } else if (ds->busy_poll_us > 0) {
            busy_poll(h->loop, ds->busy_poll_us);
        }
    }
    p->pass_reads = 0;
}

void proxy__object_opened(struct proxy *p)
{
    p->open_objects++;
}

void proxy__object_closed(struct proxy *p)
{
    p->open_objects--;
    check_stopped(p);
}

/* ---- Attested key set upkeep: refresh before expiry, TTL lapse ---------------------------- */

/* A refresh that obtained no evidence is retried this long after it failed (at least 1 s),
 * while the pin is still fresh. */
static uint64_t refresh_retry_ms(const struct service_config *cfg)
{
    return cfg->negative_cache_ms > 1000 ? cfg->negative_cache_ms : 1000;
}

static void refresh_done(struct upstream *up, const struct attest_outcome *o, void *arg)
{
    struct proxy_service *svc = arg;
    struct pin_entry *e = pinset_entry(&svc->pins, up->pin);

    /* Accepted: pinset_add() renewed the entry. Rejected: the entry is gone and the key's
     * connections were cut (attest.c). No evidence: the pin keeps its verified life and the
     * refresh is retried later; if none succeeds, the pin lapses at its expiry. An accepted
     * refresh that leaves the pin inside its window (its expiry bound by the NSM certificate's
     * end, which a document with the same certificate does not move) waits the retry interval
     * too: retried at once it would find the same again, at every connection that goes idle.
     * A discarded one (o->retry: the settings changed) says nothing about this entry. */
    if (e != NULL && !o->retry) {
        uint64_t now = uv_now(svc->proxy->env.loop);
        e->refreshing = false;
        if (!o->accepted || e->expires_mono_ms <= now + svc->cfg->refresh_before_ms)
            e->refresh_not_before_mono_ms = now + refresh_retry_ms(svc->cfg);
    }
    if (!upstream_is_closing(up) && (!o->accepted || !o->reusable || !pool_put(svc, up)))
        upstream_close(up, "refresh attestation ended");
    proxy__schedule_refresh(svc);
}

bool proxy__refresh_due(const struct pin_entry *e, const struct service_config *cfg, uint64_t now)
{
    return e->expires_mono_ms <= now + cfg->refresh_before_ms && now < e->expires_mono_ms &&
           !e->refreshing && now >= e->refresh_not_before_mono_ms;
}

/* Re-attests pin `e` over its idle connection `up`, which the refresh owns from now on. */
static void start_refresh(struct proxy_service *svc, struct pin_entry *e, struct upstream *up,
                          uint64_t now)
{
    e->refreshing = true;
    if (attest_start(up, refresh_done, svc) < 0) {
        e->refreshing = false;
        e->refresh_not_before_mono_ms = now + refresh_retry_ms(svc->cfg);
        upstream_close(up, "refresh attestation could not start");
    }
}

static void on_refresh_timer(uv_timer_t *t)
{
    struct proxy_service *svc = t->data;
    const struct service_config *cfg = svc->cfg;
    uint64_t now = uv_now(t->loop);
    uint8_t due[PINSET_MAX][PIN_LEN];
    size_t dropped, n_due = 0;

    if (svc->proxy->stopping || svc->removed)
        return;
    dropped = pinset_expire(&svc->pins, now);
    for (size_t i = 0; i < dropped; i++)
        metrics_inc_enforcement(svc->metrics, METRICS_ENFORCE_PIN_DROPPED,
                                METRICS_ENFORCE_TTL_LAPSED);
    if (dropped > 0) {
        char n[24];
        snprintf(n, sizeof(n), "%zu", dropped);
        /* In-flight exchanges finish; the gate lets no new request use these pins. */
        log_event(LOG_LEVEL_WARN, "pin_expired", "service", svc->name, "pins", n, "reason",
                  "ttl_lapsed", "action", "re-attested on the next connection", NULL);
        audit_pin(svc->proxy->env.audit, svc->name, "pin_expired", "ttl_lapsed", NULL, dropped);
    }
    /* Every pin inside its refresh window is re-attested over one of its idle pooled
     * connections, so that traffic never waits for it. A pin whose connections are all busy
     * is refreshed over the next one that goes idle (proxy__refresh_on_idle, from pool_put);
     * a pin with no connection at all is attested on demand once it expires. The due pins are
     * collected first: starting an attestation may change the set. */
    for (size_t i = 0; i < svc->pins.n; i++) {
        if (proxy__refresh_due(&svc->pins.entries[i], cfg, now))
            memcpy(due[n_due++], svc->pins.entries[i].pin, PIN_LEN);
    }
    svc->refresh_waiting = false;
    for (size_t i = 0; i < n_due; i++) {
        struct pin_entry *e = pinset_entry(&svc->pins, due[i]);
        struct upstream *up;
        if (e == NULL || !proxy__refresh_due(e, cfg, now))
            continue;
        up = pool_take_pin(svc, e->pin);
        if (up == NULL)
            svc->refresh_waiting = true;
        else
            start_refresh(svc, e, up, now);
    }
    proxy__schedule_refresh(svc);
}

bool proxy__refresh_on_idle(struct proxy_service *svc, struct upstream *up)
{
    uint64_t now = uv_now(svc->proxy->env.loop);
    struct pin_entry *e;

    if (!up->has_pin)
        return false;
    e = pinset_entry(&svc->pins, up->pin);
    if (e == NULL || !proxy__refresh_due(e, svc->cfg, now))
        return false;
    start_refresh(svc, e, up, now);
    return true;
}

void proxy__schedule_refresh(struct proxy_service *svc)
{
    uint64_t now, due = 0;
    const struct service_config *cfg = svc->cfg;
    bool any = false;

    if (svc->proxy->stopping || svc->removed)
        return;
    now = uv_now(svc->proxy->env.loop);
    /* The next moment something is due for any pin: entering its refresh window (now, for a
     * pin attested inside it), the end of a refresh back-off, or its expiry. A pin being
     * refreshed, or waiting for an idle connection, is next due at its expiry (the refresh's
     * end or an idle connection re-arm the timer sooner). */
    for (size_t i = 0; i < svc->pins.n; i++) {
        const struct pin_entry *e = &svc->pins.entries[i];
        uint64_t window = e->expires_mono_ms > cfg->refresh_before_ms
                              ? e->expires_mono_ms - cfg->refresh_before_ms
                              : 0;
        uint64_t at = e->expires_mono_ms;
        if (window > now)
            at = window;
        else if (!e->refreshing && e->refresh_not_before_mono_ms > now &&
                 e->refresh_not_before_mono_ms < at)
            at = e->refresh_not_before_mono_ms;
        else if (!e->refreshing && e->refresh_not_before_mono_ms <= now && !svc->refresh_waiting)
            at = now; /* due now: attested already inside its window */
        if (!any || at < due)
            due = at;
        any = true;
    }
    if (!any) {
        uv_timer_stop(&svc->refresh_timer);
        metrics_set_pin_expiry(svc->metrics, 0);
    } else {
        const struct pin_entry *next = pinset_next_expiry(&svc->pins, now);
        metrics_set_pin_expiry(svc->metrics, next != NULL ? (uint64_t)next->info.expires_at_ms : 0);
        uv_timer_start(&svc->refresh_timer, on_refresh_timer, due > now ? due - now : 1, 0);
    }
    /* Without traffic, nothing else would attest a service that has no fresh pin, nor open the
     * connection a due refresh waits for. */
    warm_check(svc);
}

void proxy__status_changed(struct proxy *p)
{
    if (p->env.status_changed != NULL)
        p->env.status_changed(p->env.ctx);
}

void proxy__abort_pin(struct proxy_service *svc, const uint8_t pin[PIN_LEN], struct upstream *keep,
                      const char *reason, bool was_pinned)
{
    struct upstream *up = svc->upstreams;
    char msg[160], n_cut[24];
    size_t cut = 0;

    snprintf(msg, sizeof(msg), "the enclave's attested key was dropped (%s)", reason);
    if (was_pinned)
        metrics_inc_enforcement(svc->metrics, METRICS_ENFORCE_PIN_DROPPED,
                                METRICS_ENFORCE_REATTESTATION_FAILED);
    while (up != NULL) {
        struct upstream *next = up->next;
        if (up != keep && up->has_pin && !upstream_is_closing(up) &&
            (up->state == UP_BUSY || up->state == UP_IDLE) &&
            CRYPTO_memcmp(up->pin, pin, PIN_LEN) == 0) {
            bool busy = up->state == UP_BUSY;
            metrics_inc_enforcement(svc->metrics,
                                    busy ? METRICS_ENFORCE_EXCHANGE_ABORTED
                                         : METRICS_ENFORCE_CONNECTION_CLOSED,
                                    METRICS_ENFORCE_REATTESTATION_FAILED);
            /* A tunnel on the key gets a close frame (1011) before its connection closes. */
            if (busy && !tunnel_abort(up, false, "attestation_failed"))
                upstream_abort(up, msg);
            else
                upstream_close(up, msg);
            cut++;
        }
        up = next;
    }
    if (!was_pinned && cut == 0)
        return;
    snprintf(n_cut, sizeof(n_cut), "%zu", cut);
    log_event(LOG_LEVEL_WARN, "pin_dropped", "service", svc->name, "reason", reason, "action",
              "connections using the key were closed", "connections_cut", n_cut, NULL);
    audit_pin(svc->proxy->env.audit, svc->name, "pin_dropped", reason, pin, cut);
}

/* ---- Services ----------------------------------------------------------------------------- */

static void on_refresh_closed(uv_handle_t *h)
{
    struct proxy_service *svc = h->data;
    proxy__object_closed(svc->proxy);
}

static struct proxy_service *service_new(struct proxy *p, const struct service_config *cfg)
{
    struct proxy_service *svc = calloc(1, sizeof(*svc));
    if (svc == NULL)
        return NULL;
    svc->proxy = p;
    svc->cfg = cfg;
    snprintf(svc->name, sizeof(svc->name), "%s", cfg->name);
    svc->metrics = metrics_service(p->env.metrics, cfg->name);
    pinset_init(&svc->pins);
    pool_init(svc, p->env.loop);
    uv_timer_init(p->env.loop, &svc->refresh_timer);
    svc->refresh_timer.data = svc;
    proxy__object_opened(p);
    warm_init(svc);
    svc->next = p->services;
    p->services = svc;
    return svc;
}

static int service_listen(struct proxy_service *svc)
{
    for (size_t i = 0; i < svc->cfg->n_listen; i++) {
        int rc = listener_start(svc, &svc->cfg->listen[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Stops accepting, closes idle upstream connections, and asks clients to finish. */
/* Stops a service: its listeners, warm attestation, pool and refresh. Its clients drain — at a
 * shutdown an idle keep-alive connection still gets a moment to bring one more request
 * (client_drain()); when a reload removed the service (`removed`) a request not admitted yet is
 * closed at once instead, since it would otherwise be judged by the removed configuration. */
static void service_stop(struct proxy_service *svc, const char *why, bool removed)
{
    struct listener *l = svc->listeners;
    svc->listeners = NULL;
    while (l != NULL) {
        struct listener *next = l->next;
        listener_close(l);
        l = next;
    }
    warm_stop(svc);
    pool_close_all(svc, why);
    uv_timer_stop(&svc->refresh_timer);
    if (removed)
        client_drain_listener(svc, CLIENT_ANY_LISTENER, why);
    else
        client_drain_all(svc);
}

/* The proxy without services: the shutdown timer and the TLS client context. On failure *out
 * may still be set; proxy_shutdown() then closes what was opened. */
static int proxy_create(const struct proxy_env *env, struct proxy **out)
{
    struct proxy *p = calloc(1, sizeof(*p));
    char err[256];

    *out = p;
    if (p == NULL) {
        log_event(LOG_LEVEL_ERROR, "proxy_start_failed", "error", "out of memory", NULL);
        return -ENOMEM;
    }
    assert(env->loop != NULL && env->cfg != NULL && env->verifier != NULL);
    p->env = *env;
    uv_timer_init(p->env.loop, &p->shutdown_timer);
    p->shutdown_timer.data = p;
    p->shutdown_timer_open = true;
    uv_prepare_init(p->env.loop, &p->pass);
    p->pass.data = p;
    p->pass_open = true;
    uv_prepare_start(&p->pass, on_loop_pass);
    uv_unref((uv_handle_t *)&p->pass); /* it never keeps the loop alive */
    /* The batching sleep is a few microseconds: with the kernel's default 50 us of timer
     * slack it would last up to three times as long, and the clients' and the enclave's core
     * would idle waiting for it (docs/benchmarks.md, "Batching and timer slack"). The loop's
     * only other sleep, the poll, waits for timers of milliseconds, which 1 us of slack does
     * not change. A failure leaves the default slack: slower under load, never wrong. */
    if (prctl(PR_SET_TIMERSLACK, BATCH_TIMER_SLACK_NS, 0, 0, 0) != 0)
        log_event(LOG_LEVEL_WARN, "timer_slack_unchanged", "error", strerror(errno), NULL);
    p->ssl_ctx = tls_client_ctx_new(err, sizeof(err));
    if (p->ssl_ctx == NULL) {
        log_event(LOG_LEVEL_ERROR, "proxy_start_failed", "error", err, NULL);
        return -EIO;
    }
    return 0;
}

int proxy_start(const struct proxy_env *env, struct proxy **out)
{
    const struct config *cfg = *env->cfg;
    struct proxy *p;
    int rc = proxy_create(env, out);

    if (rc < 0)
        return rc;
    p = *out;
    for (size_t i = 0; i < cfg->n_services; i++) {
        struct proxy_service *svc = service_new(p, &cfg->services[i]);
        if (svc == NULL) {
            log_event(LOG_LEVEL_ERROR, "proxy_start_failed", "error", "out of memory", NULL);
            return -ENOMEM;
        }
        rc = service_listen(svc);
        if (rc < 0)
            return rc;
    }
    /* Only once every listener is up: a failed start attests nothing. */
    for (struct proxy_service *svc = p->services; svc != NULL; svc = svc->next)
        warm_enable(svc);
    return 0;
}

/* ---- Reload ------------------------------------------------------------------------------- */

/* ---- Listeners on reload ------------------------------------------------------------------
 *
 * BRIEF §2.8: what is bound after a reload is exactly what the new file says. Addresses the
 * new configuration adds are bound before anything changes (proxy_prepare_reload), so that one
 * that cannot bind rejects the reload whole; addresses it drops are closed, and their clients
 * drained; a Unix socket whose unix_mode changed is chmod'ed in place. An added address that
 * is busy only because a listener this reload drops still holds it (0.0.0.0:P becoming
 * 127.0.0.1:P) is bound right after that listener closed. */

static bool config_has_listen(const struct service_config *sc, const struct listen_addr *a)
{
    struct listener probe;
    if (sc == NULL)
        return false;
    for (size_t i = 0; i < sc->n_listen; i++) {
        probe.addr = sc->listen[i];
        if (listener_is(&probe, a))
            return true;
    }
    return false;
}

static struct listener *service_listener(const struct proxy_service *svc,
                                         const struct listen_addr *a)
{
    for (struct listener *l = svc->listeners; l != NULL; l = l->next) {
        if (listener_is(l, a))
            return l;
    }
    return NULL;
}

/* Whether `a` may be busy because of one of our listeners that `fresh` drops: the same path,
 * or a TCP listener on the same port (a wildcard and a specific address of one port clash). */
static bool released_by_reload(const struct proxy *p, const struct config *fresh,
                               const struct listen_addr *a)
{
    for (const struct proxy_service *svc = p->services; svc != NULL; svc = svc->next) {
        if (svc->removed)
            continue;
        for (const struct listener *l = svc->listeners; l != NULL; l = l->next) {
            bool clash = a->is_unix ? l->is_unix && strcmp(l->addr.path, a->path) == 0
                                    : !l->is_unix && l->addr.port == a->port;
            if (clash && !config_has_listen(config_find_service(fresh, svc->name), &l->addr))
                return true;
        }
    }
    return false;
}

static void unstage_all(struct proxy *p)
{
    while (p->staged != NULL) {
        struct staged_listener *s = p->staged;
        p->staged = s->next;
        if (s->l != NULL)
            listener_close(s->l);
        free(s);
    }
}

static int stage_listener(struct proxy *p, const struct service_config *sc,
                          const struct listen_addr *a, const struct config *fresh, char *err,
                          size_t cap)
{
    char desc[CONFIG_PATH_MAX + 16];
    struct staged_listener *s;
    struct listener *l;
    int rc = listener_open(p, sc, a, &l);

    if (rc == UV_EADDRINUSE && released_by_reload(p, fresh, a))
        return 0; /* bound once the listener holding it closed (attach_listeners) */
    if (rc < 0) {
        config_listen_describe(a, desc, sizeof(desc));
        snprintf(err, cap, "service %s: cannot listen on %s: %s", sc->name, desc,
                 rc == -EPERM ? "a non-loopback listener needs allow_remote = yes and a token"
                              : uv_strerror(rc));
        return rc;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        listener_close(l);
        snprintf(err, cap, "out of memory");
        return -ENOMEM;
    }
    s->l = l;
    snprintf(s->service, sizeof(s->service), "%s", sc->name);
    s->next = p->staged;
    p->staged = s;
    return 0;
}

int proxy_prepare_reload(struct proxy *p, const struct config *fresh, char *err, size_t cap)
{
    if (p == NULL || p->stopping)
        return 0;
    assert(p->staged == NULL);
    for (size_t i = 0; i < fresh->n_services; i++) {
        const struct service_config *sc = &fresh->services[i];
        struct proxy_service *svc = find_service(p, sc->name);
        for (size_t j = 0; j < sc->n_listen; j++) {
            int rc;
            if (svc != NULL && !svc->removed && service_listener(svc, &sc->listen[j]) != NULL)
                continue;
            rc = stage_listener(p, sc, &sc->listen[j], fresh, err, cap);
            if (rc < 0) {
                unstage_all(p);
                return rc;
            }
        }
    }
    return 0;
}

static struct listener *take_staged(struct proxy *p, const char *service,
                                    const struct listen_addr *a)
{
    for (struct staged_listener **sp = &p->staged; *sp != NULL; sp = &(*sp)->next) {
        struct staged_listener *s = *sp;
        if (strcmp(s->service, service) == 0 && listener_is(s->l, a)) {
            struct listener *l = s->l;
            *sp = s->next;
            free(s);
            return l;
        }
    }
    return NULL;
}

/* Closes the listeners of `svc` that svc->cfg (already the new configuration) no longer has
 * and applies a changed unix_mode to the others. */
static void drop_listeners(struct proxy_service *svc)
{
    char desc[CONFIG_PATH_MAX + 16];
    struct listener **lp = &svc->listeners;

    while (*lp != NULL) {
        struct listener *l = *lp;
        config_listen_describe(&l->addr, desc, sizeof(desc));
        if (!config_has_listen(svc->cfg, &l->addr)) {
            *lp = l->next;
            log_event(LOG_LEVEL_WARN, "listener_closed", "service", svc->name, "listen", desc,
                      "why", "no longer in the configuration", NULL);
            client_drain_listener(svc, l->id, "listener removed by a reload");
            listener_close(l);
            continue;
        }
        if (l->is_unix && l->mode != svc->cfg->unix_mode) {
            unsigned was = l->mode;
            char mode[8];
            int rc = listener_set_mode(l, svc->cfg->unix_mode);
            snprintf(mode, sizeof(mode), "%04o", svc->cfg->unix_mode);
            if (rc < 0) {
                /* The file keeps permissions the configuration no longer allows: the socket
                 * goes rather than stay open wider than configured. */
                *lp = l->next;
                log_event(LOG_LEVEL_ERROR, "listener_closed", "service", svc->name, "listen", desc,
                          "why", "cannot apply unix_mode", "error", strerror(-rc), NULL);
                client_drain_listener(svc, l->id, "listener closed by a reload");
                listener_close(l);
                continue;
            }
            log_event(LOG_LEVEL_INFO, "listener_mode_changed", "service", svc->name, "listen", desc,
                      "unix_mode", mode, NULL);
            /* Clients that connected while the socket was wider are held to the new mode. */
            if ((was & ~svc->cfg->unix_mode & 0777) != 0)
                client_drain_listener(svc, l->id, "unix_mode narrowed by a reload");
        }
        lp = &l->next;
    }
}

/* Gives `svc` every listener of its (new) configuration it lacks: the one staged for it, or,
 * when the address was held by a listener just closed, a fresh bind. */
static void attach_listeners(struct proxy_service *svc)
{
    char desc[CONFIG_PATH_MAX + 16];
    for (size_t i = 0; i < svc->cfg->n_listen; i++) {
        const struct listen_addr *a = &svc->cfg->listen[i];
        struct listener *l;
        if (service_listener(svc, a) != NULL)
            continue;
        l = take_staged(svc->proxy, svc->name, a);
        if (l == NULL) {
            /* Failure is logged; the service then listens on less than configured, never more. */
            (void)listener_start(svc, a);
            continue;
        }
        listener_attach(l, svc);
        config_listen_describe(a, desc, sizeof(desc));
        log_event(LOG_LEVEL_INFO, "listening", "service", svc->name, "listen", desc, "socket",
                  l->adopted ? "adopted" : "bound", NULL);
    }
}

const char *proxy_attestation_change(const struct service_config *a, const struct service_config *b)
{
    char da[POLICY_DIGEST_LEN], db[POLICY_DIGEST_LEN];
    /* The strongest change first: a new upstream or evidence profile cuts every exchange
     * (enforce_change), a policy change only those the new policy does not admit — so a
     * reload that changes the policy too must still be seen as moving the upstream. */
    if (strcmp(a->upstream_host, b->upstream_host) != 0 || a->upstream_port != b->upstream_port ||
        strcmp(a->sni, b->sni) != 0)
        return "upstream_changed";
    if (a->binding != b->binding || a->profile != b->profile || a->nonce != b->nonce ||
        a->nonce_bytes != b->nonce_bytes || strcmp(a->evidence_path, b->evidence_path) != 0)
        return "evidence_profile_changed";
    policy_digest(&a->policy, da);
    policy_digest(&b->policy, db);
    if (strcmp(da, db) != 0)
        return "policy_changed";
    return NULL;
}

/*
 * BRIEF §5, policy change: every pin is dropped, idle connections close, and exchanges in
 * flight continue only when the measurements their connection was admitted with satisfy the
 * new policy (and neither the upstream, the evidence profile nor the trust root changed: then
 * none continues). Attestations in flight were started under the old settings: their results
 * are discarded and their clients start again (attest_invalidate). New requests attest afresh.
 */
static void enforce_change(struct proxy_service *svc, const char *why)
{
    size_t pins = svc->pins.n, idle, aborted = 0;
    char n_pins[24], n_idle[24], n_aborted[24];
    bool abort_all = strcmp(why, "policy_changed") != 0;

    if (abort_all)
        svc->upstream_gen++;

    pinset_clear(&svc->pins);
    for (size_t i = 0; i < pins; i++)
        metrics_inc_enforcement(svc->metrics, METRICS_ENFORCE_PIN_DROPPED,
                                METRICS_ENFORCE_POLICY_CHANGED);
    if (svc->resume.session != NULL) {
        SSL_SESSION_free(svc->resume.session);
        svc->resume.session = NULL;
    }
    idle = pool_close_all(svc, why);
    for (size_t i = 0; i < idle; i++)
        metrics_inc_enforcement(svc->metrics, METRICS_ENFORCE_CONNECTION_CLOSED,
                                METRICS_ENFORCE_POLICY_CHANGED);
    for (struct upstream *up = svc->upstreams; up != NULL;) {
        struct upstream *next = up->next;
        if (up->state == UP_BUSY &&
            (abort_all || !up->has_info || !pinset_info_satisfies(&up->info, &svc->cfg->policy))) {
            aborted++;
            metrics_inc_enforcement(svc->metrics, METRICS_ENFORCE_EXCHANGE_ABORTED,
                                    METRICS_ENFORCE_POLICY_CHANGED);
            if (!tunnel_abort(up, true, why)) /* a tunnel: close frame 1008 */
                upstream_abort(up, "the policy changed and the enclave no longer satisfies it");
        } else if (up->state == UP_ATTESTING) {
            attest_invalidate(up);
        }
        up = next;
    }
    proxy__schedule_refresh(svc);
    snprintf(n_pins, sizeof(n_pins), "%zu", pins);
    snprintf(n_idle, sizeof(n_idle), "%zu", idle);
    snprintf(n_aborted, sizeof(n_aborted), "%zu", aborted);
    log_event(LOG_LEVEL_WARN, "policy_enforced", "service", svc->name, "reason", why,
              "pins_dropped", n_pins, "idle_closed", n_idle, "exchanges_aborted", n_aborted, NULL);
    audit_pin(svc->proxy->env.audit, svc->name, "policy_enforced", why, NULL, pins);
}

/* A shorter attestation_ttl (or a longer cert_margin) applies to the pins already attested:
 * an operator who shortens the TTL means it for what is trusted now. */
static void limit_pins(struct proxy_service *svc)
{
    char n[24];
    size_t shortened =
        pinset_limit(&svc->pins, svc->cfg->attestation_ttl_ms, svc->cfg->cert_margin_ms);
    if (shortened == 0)
        return;
    snprintf(n, sizeof(n), "%zu", shortened);
    log_event(LOG_LEVEL_INFO, "pins_shortened", "service", svc->name, "pins", n, "why",
              "attestation_ttl or cert_margin changed", NULL);
    proxy__schedule_refresh(svc);
}

void proxy_reload(struct proxy *p, const struct config *old_cfg, bool root_changed)
{
    /* The daemon hands over ownership of the old configuration (core/daemon.h). */
    struct config *old = (struct config *)old_cfg;
    bool keep_old = false;

    if (p == NULL || p->stopping) {
        config_free(old);
        return;
    }
    for (struct proxy_service *svc = p->services; svc != NULL; svc = svc->next) {
        const struct service_config *fresh;
        const char *change;
        if (svc->removed)
            continue;
        fresh = config_find_service(proxy__cfg(p), svc->name);
        if (fresh == NULL) {
            /* Removed: stop listening and let exchanges in flight finish with the settings
             * they started with. The service configuration holds no pointers, so a copy of it
             * lets the old configuration go now. */
            svc->own_cfg = malloc(sizeof(*svc->own_cfg));
            if (svc->own_cfg != NULL) {
                memcpy(svc->own_cfg, svc->cfg, sizeof(*svc->own_cfg));
                svc->cfg = svc->own_cfg;
            } else {
                /* Out of memory: the old configuration is kept (never freed) rather than
                 * freed under live references. */
                keep_old = true;
            }
            svc->removed = true;
            log_event(LOG_LEVEL_WARN, "service_removed", "service", svc->name, "action",
                      "listeners closed; exchanges in flight finish", NULL);
            service_stop(svc, "service removed by a reload", true);
            continue;
        }
        change = root_changed ? "trust_root_changed" : proxy_attestation_change(svc->cfg, fresh);
        svc->cfg = fresh;
        if (!fresh->session_resumption && svc->resume.session != NULL) {
            SSL_SESSION_free(svc->resume.session);
            svc->resume.session = NULL;
        }
        drop_listeners(svc);
        if (change != NULL)
            enforce_change(svc, change);
        else
            limit_pins(svc);
    }
    for (size_t i = 0; i < proxy__cfg(p)->n_services; i++) {
        const struct service_config *sc = &proxy__cfg(p)->services[i];
        struct proxy_service *svc;
        if (find_service(p, sc->name) != NULL)
            continue;
        svc = service_new(p, sc);
        if (svc == NULL) {
            log_event(LOG_LEVEL_ERROR, "service_add_failed", "service", sc->name, "error",
                      "out of memory", NULL);
            continue;
        }
        log_event(LOG_LEVEL_INFO, "service_added", "service", sc->name, NULL);
        warm_enable(svc);
    }
    /* Listeners are attached once every dropped one has closed, so that an address changing
     * hands from one listener to another binds. */
    for (struct proxy_service *svc = p->services; svc != NULL; svc = svc->next) {
        if (!svc->removed)
            attach_listeners(svc);
    }
    unstage_all(p); /* none is left unless a service vanished for lack of memory */
    if (!keep_old)
        config_free(old);
}

/* ---- Shutdown ----------------------------------------------------------------------------- */

static void on_shutdown_timeout(uv_timer_t *t)
{
    struct proxy *p = t->data;
    char n[24];
    size_t open = 0;
    for (struct proxy_service *svc = p->services; svc != NULL; svc = svc->next)
        open += svc->n_clients;
    snprintf(n, sizeof(n), "%zu", open);
    log_event(LOG_LEVEL_WARN, "shutdown_timeout", "clients", n, "action",
              "closing connections still open", NULL);
    p->draining_forced = true;
    for (struct proxy_service *svc = p->services; svc != NULL; svc = svc->next) {
        client_close_all(svc, "shutdown_timeout");
        for (struct upstream *up = svc->upstreams; up != NULL;) {
            struct upstream *next = up->next;
            upstream_close(up, "shutdown_timeout");
            up = next;
        }
    }
}

void proxy_shutdown(struct proxy *p, void (*done)(void *ctx))
{
    const struct daemon_config *ds = &proxy__cfg(p)->daemon;
    if (p->stopping)
        return;
    p->stopping = true;
    p->done = done;
    for (struct proxy_service *svc = p->services; svc != NULL; svc = svc->next) {
        service_stop(svc, "shutting down", false);
        uv_close((uv_handle_t *)&svc->refresh_timer, on_refresh_closed);
        warm_close(svc);
        pool_close(svc);
    }
    if (ds->shutdown_timeout_ms == 0)
        on_shutdown_timeout(&p->shutdown_timer);
    else if (p->open_objects > 0)
        uv_timer_start(&p->shutdown_timer, on_shutdown_timeout, ds->shutdown_timeout_ms, 0);
    check_stopped(p);
}

/* ---- Status ------------------------------------------------------------------------------- */

bool proxy_service_attested(const struct proxy *p, const char *name)
{
    const struct proxy_service *svc = find_service(p, name);
    return svc != NULL && pinset_any_fresh(&svc->pins, uv_now(p->env.loop));
}

bool proxy_service_view(const struct proxy *p, const char *name, struct proxy_service_view *out)
{
    const struct proxy_service *svc = find_service(p, name);
    if (svc == NULL)
        return false;
    out->pins = &svc->pins;
    out->now_mono_ms = uv_now(p->env.loop);
    out->ready = pinset_any_fresh(&svc->pins, out->now_mono_ms);
    return true;
}

size_t proxy_pin_connections(const struct proxy *p, const char *name, const uint8_t pin[PIN_LEN])
{
    const struct proxy_service *svc = find_service(p, name);
    size_t n = 0;
    for (const struct upstream *up = svc != NULL ? svc->upstreams : NULL; up != NULL;
         up = up->next) {
        if (up->has_pin && !upstream_is_closing(up) && CRYPTO_memcmp(up->pin, pin, PIN_LEN) == 0)
            n++;
    }
    return n;
}

json_t *proxy_service_readiness(const struct proxy *p, const char *name)
{
    struct proxy_service *svc = find_service(p, name);
    json_t *o = json_object();
    char why[sizeof(svc->warm.last_error) + 64];
    const char *state = "starting";

    if (o == NULL)
        return NULL;
    if (svc != NULL && pinset_any_fresh(&svc->pins, uv_now(p->env.loop))) {
        json_object_set_new(o, "ready", json_true());
        return o;
    }
    if (svc != NULL)
        warm_reason(svc, &state, why, sizeof(why));
    else
        snprintf(why, sizeof(why), "the service is not running");
    json_object_set_new(o, "ready", json_false());
    json_object_set_new(o, "state", json_string(state));
    json_object_set_new(o, "reason", json_string(why));
    if (svc != NULL)
        json_object_set_new(o, "failed_attempts", json_integer((json_int_t)svc->warm.failures));
    return o;
}

struct proxy_service *proxy__start_unlistened(const struct proxy_env *env, const char *service,
                                              struct proxy **out)
{
    const struct service_config *cfg = config_find_service(*env->cfg, service);
    *out = NULL;
    if (cfg == NULL || proxy_create(env, out) < 0)
        return NULL;
    return service_new(*out, cfg);
}
