#include "base/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build_config.h"
#include "base/config.h"

#define CODE_SLOTS 600 /* index = status code; index 0 collects codes outside 100..599 */

/* attestation_duration_seconds bucket bounds, in nanoseconds (rendered in seconds). */
static const uint64_t duration_bounds_ns[] = {
    5000000ull,   10000000ull,   25000000ull,   50000000ull,   100000000ull,   250000000ull,
    500000000ull, 1000000000ull, 2500000000ull, 5000000000ull, 10000000000ull, 30000000000ull,
};
#define N_BOUNDS (sizeof(duration_bounds_ns) / sizeof(duration_bounds_ns[0]))

struct metrics_service {
    struct metrics *registry;
    char name[CONFIG_NAME_MAX];
    uint64_t requests[CODE_SLOTS];
    uint64_t upstream_connections[METRICS_UPSTREAM_RESULT_COUNT_];
    uint64_t proxy_connects[METRICS_PROXY_RESULT_COUNT_];
    int64_t upstream_open;
    uint64_t pool_reuse;
    uint64_t attestations[METRICS_VERDICT_COUNT_][METRICS_REASONS_MAX];
    uint64_t duration_buckets[N_BOUNDS + 1]; /* per bucket, not cumulative; last is +Inf */
    uint64_t duration_sum_ns;
    uint64_t duration_count;
    uint64_t pin_expiry_unix_ms; /* 0 = no pins */
    uint64_t bytes[METRICS_DIR_COUNT_];
    uint64_t enforcement[METRICS_ENFORCE_EVENT_COUNT_][METRICS_ENFORCE_REASON_COUNT_];
    int64_t client_open;
    uint64_t bundle_refused[METRICS_REASONS_MAX]; /* by interned reason */
    int64_t tunnels_open;
    uint64_t tunnels_closed[METRICS_TUNNEL_CLOSE_COUNT_];
    uint64_t tunnel_bytes[METRICS_DIR_COUNT_];
};

struct metrics {
    struct metrics_service *services[METRICS_SERVICES_MAX];
    size_t n_services;
    /* Interned attestation reasons; index 0 is "other". */
    char reasons[METRICS_REASONS_MAX][METRICS_REASON_NAME_MAX];
    size_t n_reasons;
    uint64_t policy_generation;
    uint64_t reloads[2]; /* [0] rejected, [1] applied */
};

/* ---- Label names ----------------------------------------------------------------------------- */

const char *metrics_upstream_result_name(enum metrics_upstream_result r)
{
    static const char *const names[] = {"ok", "resolve_error", "connect_error", "connect_timeout",
                                        "tls_error"};
    return (unsigned)r < METRICS_UPSTREAM_RESULT_COUNT_ ? names[r] : "other";
}

const char *metrics_proxy_result_name(enum metrics_proxy_result r)
{
    static const char *const names[] = {"ok",      "connect_error", "connect_timeout",
                                        "refused", "timeout",       "bad_response"};
    return (unsigned)r < METRICS_PROXY_RESULT_COUNT_ ? names[r] : "other";
}

const char *metrics_verdict_name(enum metrics_verdict v)
{
    static const char *const names[] = {"verified", "rejected", "error"};
    return (unsigned)v < METRICS_VERDICT_COUNT_ ? names[v] : "other";
}

const char *metrics_direction_name(enum metrics_direction d)
{
    static const char *const names[] = {"to_upstream", "to_client"};
    return (unsigned)d < METRICS_DIR_COUNT_ ? names[d] : "other";
}

const char *metrics_enforce_event_name(enum metrics_enforce_event e)
{
    static const char *const names[] = {"pin_dropped", "connection_closed", "exchange_aborted"};
    return (unsigned)e < METRICS_ENFORCE_EVENT_COUNT_ ? names[e] : "other";
}

const char *metrics_enforce_reason_name(enum metrics_enforce_reason r)
{
    static const char *const names[] = {"policy_changed", "reattestation_failed", "ttl_lapsed"};
    return (unsigned)r < METRICS_ENFORCE_REASON_COUNT_ ? names[r] : "other";
}

const char *metrics_tunnel_close_name(enum metrics_tunnel_close r)
{
    static const char *const names[] = {"client_closed",      "upstream_closed", "upstream_error",
                                        "idle_timeout",       "max_life",        "policy_changed",
                                        "attestation_failed", "ttl_lapsed",      "shutdown"};
    return (unsigned)r < METRICS_TUNNEL_CLOSE_COUNT_ ? names[r] : "other";
}

/* ---- Registry -------------------------------------------------------------------------------- */

struct metrics *metrics_new(void)
{
    struct metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    memcpy(m->reasons[0], "other", sizeof("other"));
    m->n_reasons = 1;
    return m;
}

void metrics_free(struct metrics *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n_services; i++)
        free(m->services[i]);
    free(m);
}

struct metrics_service *metrics_service(struct metrics *m, const char *name)
{
    struct metrics_service *ms;
    size_t n;

    if (m == NULL || name == NULL)
        return NULL;
    n = strnlen(name, CONFIG_NAME_MAX);
    if (n == 0 || n >= CONFIG_NAME_MAX)
        return NULL;
    for (size_t i = 0; i < m->n_services; i++) {
        if (strcmp(m->services[i]->name, name) == 0)
            return m->services[i];
    }
    if (m->n_services >= METRICS_SERVICES_MAX)
        return NULL;
    ms = calloc(1, sizeof(*ms));
    if (ms == NULL)
        return NULL;
    ms->registry = m;
    memcpy(ms->name, name, n + 1);
    m->services[m->n_services++] = ms;
    return ms;
}

/* ---- Updates --------------------------------------------------------------------------------- */

void metrics_inc_requests(struct metrics_service *ms, unsigned code)
{
    if (ms == NULL)
        return;
    ms->requests[code >= 100 && code < CODE_SLOTS ? code : 0]++;
}

void metrics_inc_upstream_connection(struct metrics_service *ms, enum metrics_upstream_result r)
{
    if (ms == NULL || (unsigned)r >= METRICS_UPSTREAM_RESULT_COUNT_)
        return;
    ms->upstream_connections[r]++;
}

void metrics_inc_upstream_proxy_connect(struct metrics_service *ms, enum metrics_proxy_result r)
{
    if (ms == NULL || (unsigned)r >= METRICS_PROXY_RESULT_COUNT_)
        return;
    ms->proxy_connects[r]++;
}

void metrics_add_upstream_open(struct metrics_service *ms, int delta)
{
    if (ms != NULL)
        ms->upstream_open += delta;
}

void metrics_inc_pool_reuse(struct metrics_service *ms)
{
    if (ms != NULL)
        ms->pool_reuse++;
}

static bool valid_reason(const char *s)
{
    size_t n = strnlen(s, METRICS_REASON_NAME_MAX);
    if (n == 0 || n >= METRICS_REASON_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

/* Returns the index of `reason`, adding it while there is room; 0 ("other") otherwise. */
static size_t intern_reason(struct metrics *m, const char *reason)
{
    size_t n;

    if (!valid_reason(reason))
        return 0;
    for (size_t i = 0; i < m->n_reasons; i++) {
        if (strcmp(m->reasons[i], reason) == 0)
            return i;
    }
    if (m->n_reasons >= METRICS_REASONS_MAX)
        return 0;
    n = strlen(reason);
    memcpy(m->reasons[m->n_reasons], reason, n + 1);
    return m->n_reasons++;
}

void metrics_inc_bundle_refused(struct metrics_service *ms, const char *reason)
{
    if (ms != NULL)
        ms->bundle_refused[intern_reason(ms->registry, reason != NULL ? reason : "unknown")]++;
}

void metrics_observe_attestation(struct metrics_service *ms, enum metrics_verdict verdict,
                                 const char *reason, uint64_t duration_ns)
{
    size_t b;

    if (ms == NULL || (unsigned)verdict >= METRICS_VERDICT_COUNT_)
        return;
    if (reason == NULL)
        reason = verdict == METRICS_VERDICT_VERIFIED ? "ok" : "unknown";
    ms->attestations[verdict][intern_reason(ms->registry, reason)]++;
    for (b = 0; b < N_BOUNDS; b++) {
        if (duration_ns <= duration_bounds_ns[b])
            break;
    }
    ms->duration_buckets[b]++;
    ms->duration_sum_ns += duration_ns;
    ms->duration_count++;
}

void metrics_set_pin_expiry(struct metrics_service *ms, uint64_t earliest_expiry_unix_ms)
{
    if (ms != NULL)
        ms->pin_expiry_unix_ms = earliest_expiry_unix_ms;
}

void metrics_set_policy_generation(struct metrics *m, uint64_t generation)
{
    if (m != NULL)
        m->policy_generation = generation;
}

void metrics_inc_reload(struct metrics *m, bool applied)
{
    if (m != NULL)
        m->reloads[applied ? 1 : 0]++;
}

void metrics_add_bytes(struct metrics_service *ms, enum metrics_direction d, uint64_t n)
{
    if (ms == NULL || (unsigned)d >= METRICS_DIR_COUNT_)
        return;
    ms->bytes[d] += n;
}

void metrics_inc_enforcement(struct metrics_service *ms, enum metrics_enforce_event e,
                             enum metrics_enforce_reason r)
{
    if (ms == NULL || (unsigned)e >= METRICS_ENFORCE_EVENT_COUNT_ ||
        (unsigned)r >= METRICS_ENFORCE_REASON_COUNT_)
        return;
    ms->enforcement[e][r]++;
}

void metrics_add_client_open(struct metrics_service *ms, int delta)
{
    if (ms != NULL)
        ms->client_open += delta;
}

void metrics_add_tunnel_open(struct metrics_service *ms, int delta)
{
    if (ms != NULL)
        ms->tunnels_open += delta;
}

void metrics_inc_tunnel_closed(struct metrics_service *ms, enum metrics_tunnel_close why)
{
    if (ms != NULL && (unsigned)why < METRICS_TUNNEL_CLOSE_COUNT_)
        ms->tunnels_closed[why]++;
}

void metrics_add_tunnel_bytes(struct metrics_service *ms, enum metrics_direction d, uint64_t n)
{
    if (ms != NULL && (unsigned)d < METRICS_DIR_COUNT_)
        ms->tunnel_bytes[d] += n;
}

/* ---- Rendering ------------------------------------------------------------------------------- */

/* An output buffer with a hard maximum; the first failure sticks and is reported at the end. */
struct out {
    char *p;
    size_t len;
    size_t cap;
    int err;
};

static void out_reserve(struct out *o, size_t more)
{
    size_t want;
    size_t cap;
    char *p;

    if (o->err != 0)
        return;
    if (more > METRICS_RENDER_MAX || o->len + more + 1 > METRICS_RENDER_MAX) {
        o->err = -E2BIG;
        return;
    }
    want = o->len + more + 1;
    if (want <= o->cap)
        return;
    cap = o->cap ? o->cap : 16384;
    while (cap < want)
        cap *= 2;
    if (cap > METRICS_RENDER_MAX)
        cap = METRICS_RENDER_MAX;
    p = realloc(o->p, cap);
    if (p == NULL) {
        o->err = -ENOMEM;
        return;
    }
    o->p = p;
    o->cap = cap;
}

static void out_bytes(struct out *o, const char *s, size_t n)
{
    out_reserve(o, n);
    if (o->err != 0)
        return;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void out_str(struct out *o, const char *s)
{
    out_bytes(o, s, strlen(s));
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
out_fmt(struct out *o, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf)) {
        if (o->err == 0)
            o->err = -E2BIG; /* only short, fixed fragments go through here */
        return;
    }
    out_bytes(o, buf, (size_t)n);
}

/* Writes a label value with the exposition format's escapes: \\, \" and \n. */
static void out_label_value(struct out *o, const char *v)
{
    out_str(o, "\"");
    for (; *v != '\0'; v++) {
        if (*v == '\\')
            out_str(o, "\\\\");
        else if (*v == '"')
            out_str(o, "\\\"");
        else if (*v == '\n')
            out_str(o, "\\n");
        else
            out_bytes(o, v, 1);
    }
    out_str(o, "\"");
}

static void out_family(struct out *o, const char *name, const char *type, const char *help)
{
    /* HELP texts are constants without backslashes or newlines, so they need no escaping. */
    out_fmt(o, "# HELP attestproxy_%s %s\n", name, help);
    out_fmt(o, "# TYPE attestproxy_%s %s\n", name, type);
}

/* Starts a sample line: attestproxy_NAME{service="..." */
static void out_sample_start(struct out *o, const char *name, const struct metrics_service *ms)
{
    out_fmt(o, "attestproxy_%s{service=", name);
    out_label_value(o, ms->name);
}

static void out_label(struct out *o, const char *key, const char *value)
{
    out_fmt(o, ",%s=", key);
    out_label_value(o, value);
}

static void out_value_u64(struct out *o, uint64_t v)
{
    out_fmt(o, "} %llu\n", (unsigned long long)v);
}

static void out_value_i64(struct out *o, int64_t v)
{
    out_fmt(o, "} %lld\n", (long long)v);
}

/* Seconds with nanosecond precision from an unsigned nanosecond count, e.g. "0.250000000". */
static void out_seconds_ns(struct out *o, uint64_t ns)
{
    out_fmt(o, "%llu.%09llu", (unsigned long long)(ns / 1000000000ull),
            (unsigned long long)(ns % 1000000000ull));
}

static void render_requests(struct out *o, const struct metrics *m)
{
    out_family(o, "requests_total", "counter",
               "Responses sent to local clients, by service and HTTP status code.");
    for (size_t s = 0; s < m->n_services; s++) {
        const struct metrics_service *ms = m->services[s];
        for (unsigned c = 100; c < CODE_SLOTS; c++) {
            char code[8];
            if (ms->requests[c] == 0)
                continue;
            snprintf(code, sizeof(code), "%u", c);
            out_sample_start(o, "requests_total", ms);
            out_label(o, "code", code);
            out_value_u64(o, ms->requests[c]);
        }
        if (ms->requests[0] != 0) {
            out_sample_start(o, "requests_total", ms);
            out_label(o, "code", "other");
            out_value_u64(o, ms->requests[0]);
        }
    }
}

static void render_upstream(struct out *o, const struct metrics *m)
{
    out_family(o, "upstream_connections_total", "counter",
               "Upstream connection attempts (TCP and TLS), by result.");
    for (size_t s = 0; s < m->n_services; s++) {
        for (unsigned r = 0; r < METRICS_UPSTREAM_RESULT_COUNT_; r++) {
            out_sample_start(o, "upstream_connections_total", m->services[s]);
            out_label(o, "result", metrics_upstream_result_name(r));
            out_value_u64(o, m->services[s]->upstream_connections[r]);
        }
    }
    out_family(o, "upstream_proxy_connects_total", "counter",
               "CONNECT tunnels through the service's upstream proxy, by result.");
    for (size_t s = 0; s < m->n_services; s++) {
        const struct metrics_service *ms = m->services[s];
        bool any = false;
        /* Only services that went through a proxy: the others would show zeros forever. */
        for (unsigned r = 0; r < METRICS_PROXY_RESULT_COUNT_; r++)
            any = any || ms->proxy_connects[r] != 0;
        for (unsigned r = 0; any && r < METRICS_PROXY_RESULT_COUNT_; r++) {
            out_sample_start(o, "upstream_proxy_connects_total", ms);
            out_label(o, "result", metrics_proxy_result_name(r));
            out_value_u64(o, ms->proxy_connects[r]);
        }
    }
    out_family(o, "upstream_connections_open", "gauge",
               "Upstream TLS connections open now, busy or idle in the pool.");
    for (size_t s = 0; s < m->n_services; s++) {
        out_sample_start(o, "upstream_connections_open", m->services[s]);
        out_value_i64(o, m->services[s]->upstream_open);
    }
    out_family(o, "pool_reuse_total", "counter",
               "Requests sent on a reused (pooled) upstream connection.");
    for (size_t s = 0; s < m->n_services; s++) {
        out_sample_start(o, "pool_reuse_total", m->services[s]);
        out_value_u64(o, m->services[s]->pool_reuse);
    }
}

static void render_attestations(struct out *o, const struct metrics *m)
{
    out_family(o, "attestations_total", "counter",
               "Attestations of upstream TLS keys, by verdict and reason.");
    for (size_t s = 0; s < m->n_services; s++) {
        const struct metrics_service *ms = m->services[s];
        for (unsigned v = 0; v < METRICS_VERDICT_COUNT_; v++) {
            for (size_t r = 0; r < m->n_reasons; r++) {
                if (ms->attestations[v][r] == 0)
                    continue;
                out_sample_start(o, "attestations_total", ms);
                out_label(o, "verdict", metrics_verdict_name(v));
                out_label(o, "reason", m->reasons[r]);
                out_value_u64(o, ms->attestations[v][r]);
            }
        }
    }
    out_family(o, "attestation_duration_seconds", "histogram",
               "Time from sending the evidence request to the verdict.");
    for (size_t s = 0; s < m->n_services; s++) {
        const struct metrics_service *ms = m->services[s];
        uint64_t cumulative = 0;
        for (size_t b = 0; b <= N_BOUNDS; b++) {
            cumulative += ms->duration_buckets[b];
            out_sample_start(o, "attestation_duration_seconds_bucket", ms);
            out_str(o, ",le=\"");
            if (b < N_BOUNDS)
                out_fmt(o, "%g", (double)duration_bounds_ns[b] / 1e9);
            else
                out_str(o, "+Inf");
            out_str(o, "\"");
            out_value_u64(o, cumulative);
        }
        out_sample_start(o, "attestation_duration_seconds_sum", ms);
        out_str(o, "} ");
        out_seconds_ns(o, ms->duration_sum_ns);
        out_str(o, "\n");
        out_sample_start(o, "attestation_duration_seconds_count", ms);
        out_value_u64(o, ms->duration_count);
    }
}

static void render_pins(struct out *o, const struct metrics *m, uint64_t now_ms)
{
    out_family(o, "pin_expiry_seconds", "gauge",
               "Seconds until the earliest attested pin of the service expires (absent: no pins).");
    for (size_t s = 0; s < m->n_services; s++) {
        const struct metrics_service *ms = m->services[s];
        uint64_t at = ms->pin_expiry_unix_ms;
        uint64_t d;
        if (at == 0)
            continue;
        out_sample_start(o, "pin_expiry_seconds", ms);
        d = at >= now_ms ? at - now_ms : now_ms - at;
        out_fmt(o, "} %s%llu.%03llu\n", at >= now_ms ? "" : "-", (unsigned long long)(d / 1000u),
                (unsigned long long)(d % 1000u));
    }
    out_family(o, "policy_bundle_refused_total", "counter",
               "Policy bundles refused (left the policy in force unchanged), by reason.");
    for (size_t s = 0; s < m->n_services; s++) {
        for (size_t r = 0; r < m->n_reasons; r++) {
            if (m->services[s]->bundle_refused[r] == 0)
                continue;
            out_sample_start(o, "policy_bundle_refused_total", m->services[s]);
            out_label(o, "reason", m->reasons[r]);
            out_value_u64(o, m->services[s]->bundle_refused[r]);
        }
    }
    out_family(o, "policy_generation", "gauge",
               "Generation of what is trusted: changes when a reload changes a policy or its "
               "bundle, a policy_key, an evidence profile, an upstream, session_resumption, the "
               "services or the trust root.");
    out_fmt(o, "attestproxy_policy_generation %llu\n", (unsigned long long)m->policy_generation);
    out_family(o, "reloads_total", "counter", "Configuration reloads, applied or rejected.");
    out_fmt(o, "attestproxy_reloads_total{result=\"applied\"} %llu\n",
            (unsigned long long)m->reloads[1]);
    out_fmt(o, "attestproxy_reloads_total{result=\"rejected\"} %llu\n",
            (unsigned long long)m->reloads[0]);
}

static void render_traffic(struct out *o, const struct metrics *m)
{
    out_family(o, "bytes_relayed_total", "counter",
               "Bytes relayed, by direction (to_upstream: requests; to_client: responses).");
    for (size_t s = 0; s < m->n_services; s++) {
        for (unsigned d = 0; d < METRICS_DIR_COUNT_; d++) {
            out_sample_start(o, "bytes_relayed_total", m->services[s]);
            out_label(o, "direction", metrics_direction_name(d));
            out_value_u64(o, m->services[s]->bytes[d]);
        }
    }
    out_family(o, "enforcement_events_total", "counter",
               "Live enforcement actions (pins dropped, connections closed, exchanges aborted).");
    for (size_t s = 0; s < m->n_services; s++) {
        for (unsigned e = 0; e < METRICS_ENFORCE_EVENT_COUNT_; e++) {
            for (unsigned r = 0; r < METRICS_ENFORCE_REASON_COUNT_; r++) {
                out_sample_start(o, "enforcement_events_total", m->services[s]);
                out_label(o, "event", metrics_enforce_event_name(e));
                out_label(o, "reason", metrics_enforce_reason_name(r));
                out_value_u64(o, m->services[s]->enforcement[e][r]);
            }
        }
    }
    out_family(o, "client_connections_open", "gauge", "Local client connections open now.");
    for (size_t s = 0; s < m->n_services; s++) {
        out_sample_start(o, "client_connections_open", m->services[s]);
        out_value_i64(o, m->services[s]->client_open);
    }
}

static void render_tunnels(struct out *o, const struct metrics *m)
{
    out_family(o, "tunnels_open", "gauge", "WebSocket tunnels open now.");
    for (size_t s = 0; s < m->n_services; s++) {
        out_sample_start(o, "tunnels_open", m->services[s]);
        out_value_i64(o, m->services[s]->tunnels_open);
    }
    out_family(o, "tunnels_closed_total", "counter", "WebSocket tunnels ended, by reason.");
    for (size_t s = 0; s < m->n_services; s++) {
        for (unsigned r = 0; r < METRICS_TUNNEL_CLOSE_COUNT_; r++) {
            out_sample_start(o, "tunnels_closed_total", m->services[s]);
            out_label(o, "reason", metrics_tunnel_close_name(r));
            out_value_u64(o, m->services[s]->tunnels_closed[r]);
        }
    }
    out_family(o, "tunnel_bytes_total", "counter",
               "Bytes relayed through WebSocket tunnels, by direction (also in "
               "bytes_relayed_total).");
    for (size_t s = 0; s < m->n_services; s++) {
        for (unsigned d = 0; d < METRICS_DIR_COUNT_; d++) {
            out_sample_start(o, "tunnel_bytes_total", m->services[s]);
            out_label(o, "direction", metrics_direction_name(d));
            out_value_u64(o, m->services[s]->tunnel_bytes[d]);
        }
    }
}

int metrics_render(const struct metrics *m, uint64_t now_unix_ms, char **out, size_t *len)
{
    struct out o = {NULL, 0, 0, 0};

    *out = NULL;
    *len = 0;
    out_family(&o, "build_info", "gauge", "Always 1; the version label names the running build.");
    out_str(&o, "attestproxy_build_info{version=");
    out_label_value(&o, ATTESTPROXY_VERSION);
    out_str(&o, "} 1\n");
    render_requests(&o, m);
    render_upstream(&o, m);
    render_attestations(&o, m);
    render_pins(&o, m, now_unix_ms);
    render_traffic(&o, m);
    render_tunnels(&o, m);
    out_reserve(&o, 0);
    if (o.err != 0) {
        free(o.p);
        return o.err;
    }
    *out = o.p;
    *len = o.len;
    return 0;
}
