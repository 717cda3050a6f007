/* Unit tests for ops/metrics.c: every family rendered with HELP and TYPE, the exposition parsed
 * back line by line (syntax, escaping, families), each update reflected in its series, the
 * histogram's cumulative buckets, bounded label sets and NULL handles. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/metrics.h"

#define NOW_MS 1700000000000ull

static const char *const families[] = {
    "build_info",
    "requests_total",
    "upstream_connections_total",
    "upstream_proxy_connects_total",
    "upstream_connections_open",
    "pool_reuse_total",
    "attestations_total",
    "attestation_duration_seconds",
    "pin_expiry_seconds",
    "policy_bundle_refused_total",
    "policy_generation",
    "reloads_total",
    "bytes_relayed_total",
    "enforcement_events_total",
    "client_connections_open",
    "tunnels_open",
    "tunnels_closed_total",
    "tunnel_bytes_total",
};
#define N_FAMILIES (sizeof(families) / sizeof(families[0]))

static char *render(const struct metrics *m)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(metrics_render(m, NOW_MS, &text, &len), 0);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

/* ---- A small exposition-format checker ------------------------------------------------------- */

static bool name_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
}

/* Parses one sample line; returns the metric name length, or 0 when malformed. */
static size_t check_sample(const char *line, size_t n)
{
    size_t i = 0;
    size_t name_len;
    char value[64];
    char *end;

    while (i < n && name_char(line[i], i == 0))
        i++;
    name_len = i;
    if (name_len == 0)
        return 0;
    if (i < n && line[i] == '{') {
        i++;
        for (;;) {
            size_t start = i;
            while (i < n && name_char(line[i], i == start))
                i++;
            if (i == start || i + 1 >= n || line[i] != '=' || line[i + 1] != '"')
                return 0;
            i += 2;
            while (i < n && line[i] != '"') {
                if (line[i] == '\\') {
                    if (i + 1 >= n ||
                        (line[i + 1] != '\\' && line[i + 1] != '"' && line[i + 1] != 'n'))
                        return 0;
                    i++;
                }
                if (line[i] == '\n')
                    return 0;
                i++;
            }
            if (i >= n)
                return 0;
            i++; /* closing quote */
            if (i < n && line[i] == ',') {
                i++;
                continue;
            }
            if (i < n && line[i] == '}') {
                i++;
                break;
            }
            return 0;
        }
    }
    if (i >= n || line[i] != ' ')
        return 0;
    i++;
    if (n - i == 0 || n - i >= sizeof(value))
        return 0;
    memcpy(value, line + i, n - i);
    value[n - i] = '\0';
    if (strcmp(value, "+Inf") != 0 && strcmp(value, "-Inf") != 0 && strcmp(value, "NaN") != 0) {
        strtod(value, &end);
        if (*end != '\0')
            return 0;
    }
    return name_len;
}

/*
 * Checks the whole exposition: every line ends in \n; each family has exactly one HELP then one
 * TYPE, before its samples; every sample belongs to the family last declared. Returns the
 * number of families.
 */
static size_t check_exposition(const char *text)
{
    char family[128] = "";
    char type[32] = "";
    size_t n_families = 0;
    const char *p = text;

    assert_true(strlen(text) > 0);
    assert_true(text[strlen(text) - 1] == '\n');
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t n;
        assert_non_null(nl);
        n = (size_t)(nl - p);
        if (strncmp(p, "# HELP ", 7) == 0) {
            const char *sp = memchr(p + 7, ' ', n - 7);
            size_t flen;
            assert_non_null(sp);
            flen = (size_t)(sp - (p + 7));
            assert_true(flen < sizeof(family));
            memcpy(family, p + 7, flen);
            family[flen] = '\0';
            type[0] = '\0';
            assert_true(strncmp(family, "attestproxy_", 12) == 0);
            /* The next line is the TYPE of the same family. */
            p = nl + 1;
            nl = strchr(p, '\n');
            assert_non_null(nl);
            n = (size_t)(nl - p);
            assert_true(strncmp(p, "# TYPE ", 7) == 0);
            assert_true(strncmp(p + 7, family, flen) == 0 && p[7 + flen] == ' ');
            assert_true(n - 8 - flen < sizeof(type));
            memcpy(type, p + 8 + flen, n - 8 - flen);
            type[n - 8 - flen] = '\0';
            assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                        strcmp(type, "histogram") == 0);
            if (strcmp(type, "counter") == 0)
                assert_true(flen > 6 && strcmp(family + flen - 6, "_total") == 0);
            n_families++;
        } else {
            size_t name_len;
            assert_true(p[0] != '#');
            name_len = check_sample(p, n);
            if (name_len == 0)
                fail_msg("malformed sample line: %.*s", (int)n, p);
            if (strcmp(type, "histogram") == 0) {
                size_t flen = strlen(family);
                assert_true(strncmp(p, family, flen) == 0);
                assert_true(strncmp(p + flen, "_bucket{", 8) == 0 ||
                            strncmp(p + flen, "_sum{", 5) == 0 ||
                            strncmp(p + flen, "_count{", 7) == 0);
            } else {
                assert_int_equal(name_len, strlen(family));
                assert_true(strncmp(p, family, name_len) == 0);
            }
        }
        p = nl + 1;
    }
    return n_families;
}

/* The value of the series `series` (name and labels exactly as rendered), or NULL if absent. */
static const char *series_value(const char *text, const char *series, char *buf, size_t cap)
{
    size_t n = strlen(series);
    const char *p = text;

    while (p != NULL && *p != '\0') {
        const char *nl = strchr(p, '\n');
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            size_t vlen = (size_t)(nl - (p + n + 1));
            assert_true(vlen < cap);
            memcpy(buf, p + n + 1, vlen);
            buf[vlen] = '\0';
            return buf;
        }
        p = nl != NULL ? nl + 1 : NULL;
    }
    return NULL;
}

static void expect_series(const char *text, const char *series, const char *want)
{
    char buf[64];
    const char *got = series_value(text, series, buf, sizeof(buf));
    if (got == NULL)
        fail_msg("series %s is missing", series);
    if (strcmp(got, want) != 0)
        fail_msg("series %s = %s, want %s", series, got, want);
}

static void expect_absent(const char *text, const char *series)
{
    char buf[64];
    if (series_value(text, series, buf, sizeof(buf)) != NULL)
        fail_msg("series %s should be absent", series);
}

/* ---- Tests ----------------------------------------------------------------------------------- */

/* A refused policy bundle is counted by its reason; an unseen reason has no series. */
static void test_bundle_refusals_are_counted_by_reason(void **state)
{
    struct metrics *m = metrics_new();
    struct metrics_service *ms = metrics_service(m, "demo");
    char *text;
    (void)state;
    metrics_inc_bundle_refused(ms, "rollback");
    metrics_inc_bundle_refused(ms, "rollback");
    metrics_inc_bundle_refused(ms, "bad_signature");
    metrics_inc_bundle_refused(NULL, "rollback");
    text = render(m);
    expect_series(
        text, "attestproxy_policy_bundle_refused_total{service=\"demo\",reason=\"rollback\"}", "2");
    expect_series(
        text, "attestproxy_policy_bundle_refused_total{service=\"demo\",reason=\"bad_signature\"}",
        "1");
    expect_absent(text,
                  "attestproxy_policy_bundle_refused_total{service=\"demo\",reason=\"expired\"}");
    free(text);
    metrics_free(m);
}

static void test_empty_registry_has_every_family(void **state)
{
    struct metrics *m = metrics_new();
    char *text;
    (void)state;

    assert_non_null(m);
    text = render(m);
    assert_int_equal(check_exposition(text), N_FAMILIES);
    for (size_t i = 0; i < N_FAMILIES; i++) {
        char help[128];
        snprintf(help, sizeof(help), "# HELP attestproxy_%s ", families[i]);
        assert_non_null(strstr(text, help));
    }
    assert_non_null(strstr(text, "# TYPE attestproxy_attestation_duration_seconds histogram\n"));
    assert_non_null(strstr(text, "# TYPE attestproxy_requests_total counter\n"));
    assert_non_null(strstr(text, "# TYPE attestproxy_pin_expiry_seconds gauge\n"));
    expect_series(text, "attestproxy_policy_generation", "0");
    expect_series(text, "attestproxy_reloads_total{result=\"applied\"}", "0");
    expect_series(text, "attestproxy_reloads_total{result=\"rejected\"}", "0");
    assert_non_null(strstr(text, "attestproxy_build_info{version=\""));
    free(text);
    metrics_free(m);
}

/* Tunnels: the gauge goes up and down, each end is counted by its reason, bytes by direction. */
static void test_tunnel_series(void **state)
{
    struct metrics *m = metrics_new();
    struct metrics_service *ws = metrics_service(m, "realtime");
    char *text;
    (void)state;

    metrics_add_tunnel_open(ws, 1);
    metrics_add_tunnel_open(ws, 1);
    metrics_add_tunnel_open(ws, -1);
    metrics_inc_tunnel_closed(ws, METRICS_TUNNEL_POLICY_CHANGED);
    metrics_inc_tunnel_closed(ws, METRICS_TUNNEL_CLOSE_COUNT_); /* out of range: ignored */
    metrics_add_tunnel_bytes(ws, METRICS_DIR_TO_UPSTREAM, 17);
    metrics_add_tunnel_bytes(ws, METRICS_DIR_TO_CLIENT, 4000000000ull);
    text = render(m);
    expect_series(text, "attestproxy_tunnels_open{service=\"realtime\"}", "1");
    expect_series(
        text, "attestproxy_tunnels_closed_total{service=\"realtime\",reason=\"policy_changed\"}",
        "1");
    expect_series(
        text, "attestproxy_tunnels_closed_total{service=\"realtime\",reason=\"ttl_lapsed\"}", "0");
    expect_series(text,
                  "attestproxy_tunnel_bytes_total{service=\"realtime\",direction=\"to_upstream\"}",
                  "17");
    expect_series(text,
                  "attestproxy_tunnel_bytes_total{service=\"realtime\",direction=\"to_client\"}",
                  "4000000000");
    free(text);
    metrics_free(m);
}

static void test_service_series(void **state)
{
    struct metrics *m = metrics_new();
    struct metrics_service *w = metrics_service(m, "whisper");
    struct metrics_service *c = metrics_service(m, "chat");
    char *text;
    (void)state;

    assert_non_null(w);
    assert_non_null(c);
    assert_ptr_equal(metrics_service(m, "whisper"), w); /* the same handle every time */

    metrics_inc_requests(w, 200);
    metrics_inc_requests(w, 200);
    metrics_inc_requests(w, 503);
    metrics_inc_requests(w, 99);  /* out of range */
    metrics_inc_requests(w, 600); /* out of range */
    metrics_inc_requests(c, 502);
    metrics_inc_upstream_connection(w, METRICS_UPSTREAM_OK);
    metrics_inc_upstream_connection(w, METRICS_UPSTREAM_OK);
    metrics_inc_upstream_connection(w, METRICS_UPSTREAM_CONNECT_TIMEOUT);
    metrics_inc_upstream_connection(w, METRICS_UPSTREAM_RESULT_COUNT_); /* ignored */
    metrics_add_upstream_open(w, 1);
    metrics_add_upstream_open(w, 1);
    metrics_add_upstream_open(w, -1);
    metrics_inc_pool_reuse(w);
    metrics_inc_pool_reuse(w);
    metrics_inc_pool_reuse(w);
    metrics_add_bytes(w, METRICS_DIR_TO_UPSTREAM, 1000);
    metrics_add_bytes(w, METRICS_DIR_TO_CLIENT, 5000000000ull);
    metrics_add_bytes(w, METRICS_DIR_TO_CLIENT, 1);
    metrics_inc_enforcement(w, METRICS_ENFORCE_PIN_DROPPED, METRICS_ENFORCE_POLICY_CHANGED);
    metrics_inc_enforcement(w, METRICS_ENFORCE_EXCHANGE_ABORTED,
                            METRICS_ENFORCE_REATTESTATION_FAILED);
    metrics_inc_enforcement(w, METRICS_ENFORCE_EXCHANGE_ABORTED,
                            METRICS_ENFORCE_REATTESTATION_FAILED);
    metrics_add_client_open(w, 3);
    metrics_add_client_open(c, 1);
    metrics_add_client_open(c, -1);
    metrics_set_policy_generation(m, 7);

    text = render(m);
    check_exposition(text);
    expect_series(text, "attestproxy_requests_total{service=\"whisper\",code=\"200\"}", "2");
    expect_series(text, "attestproxy_requests_total{service=\"whisper\",code=\"503\"}", "1");
    expect_series(text, "attestproxy_requests_total{service=\"whisper\",code=\"other\"}", "2");
    expect_series(text, "attestproxy_requests_total{service=\"chat\",code=\"502\"}", "1");
    expect_absent(text, "attestproxy_requests_total{service=\"whisper\",code=\"404\"}");
    expect_series(text, "attestproxy_upstream_connections_total{service=\"whisper\",result=\"ok\"}",
                  "2");
    expect_series(
        text,
        "attestproxy_upstream_connections_total{service=\"whisper\",result=\"connect_timeout\"}",
        "1");
    expect_series(
        text, "attestproxy_upstream_connections_total{service=\"whisper\",result=\"tls_error\"}",
        "0");
    expect_series(
        text, "attestproxy_upstream_connections_total{service=\"chat\",result=\"resolve_error\"}",
        "0");
    expect_series(text, "attestproxy_upstream_connections_open{service=\"whisper\"}", "1");
    expect_series(text, "attestproxy_pool_reuse_total{service=\"whisper\"}", "3");
    expect_series(text, "attestproxy_pool_reuse_total{service=\"chat\"}", "0");
    expect_series(text,
                  "attestproxy_bytes_relayed_total{service=\"whisper\",direction=\"to_upstream\"}",
                  "1000");
    expect_series(text,
                  "attestproxy_bytes_relayed_total{service=\"whisper\",direction=\"to_client\"}",
                  "5000000001");
    expect_series(text,
                  "attestproxy_enforcement_events_total{service=\"whisper\",event=\"pin_dropped\","
                  "reason=\"policy_changed\"}",
                  "1");
    expect_series(text,
                  "attestproxy_enforcement_events_total{service=\"whisper\","
                  "event=\"exchange_aborted\",reason=\"reattestation_failed\"}",
                  "2");
    expect_series(text,
                  "attestproxy_enforcement_events_total{service=\"chat\","
                  "event=\"connection_closed\",reason=\"ttl_lapsed\"}",
                  "0");
    expect_series(text, "attestproxy_client_connections_open{service=\"whisper\"}", "3");
    expect_series(text, "attestproxy_client_connections_open{service=\"chat\"}", "0");
    expect_series(text, "attestproxy_policy_generation", "7");
    free(text);
    metrics_free(m);
}

static void test_attestations_and_histogram(void **state)
{
    struct metrics *m = metrics_new();
    struct metrics_service *w = metrics_service(m, "whisper");
    char *text;
    (void)state;

    metrics_observe_attestation(w, METRICS_VERDICT_VERIFIED, "ok", 3000000);   /* 3 ms */
    metrics_observe_attestation(w, METRICS_VERDICT_VERIFIED, NULL, 5000000);   /* = bound */
    metrics_observe_attestation(w, METRICS_VERDICT_VERIFIED, "ok", 120000000); /* 120 ms */
    metrics_observe_attestation(w, METRICS_VERDICT_REJECTED, "policy_pcr_mismatch", 40000000);
    metrics_observe_attestation(w, METRICS_VERDICT_REJECTED, "policy_pcr_mismatch", 40000000);
    metrics_observe_attestation(w, METRICS_VERDICT_ERROR, "timeout", 10000000001ull);
    metrics_observe_attestation(w, METRICS_VERDICT_ERROR, "timeout", 60000000000ull); /* > 30 s */
    metrics_observe_attestation(w, METRICS_VERDICT_ERROR, NULL, 1);
    /* Not a table name: counted as "other", never as a new label value. */
    metrics_observe_attestation(w, METRICS_VERDICT_REJECTED, "Bad Reason\"}", 1);
    metrics_observe_attestation(w, METRICS_VERDICT_COUNT_, "ok", 1); /* ignored */

    text = render(m);
    check_exposition(text);
    expect_series(
        text,
        "attestproxy_attestations_total{service=\"whisper\",verdict=\"verified\",reason=\"ok\"}",
        "3");
    expect_series(text,
                  "attestproxy_attestations_total{service=\"whisper\",verdict=\"rejected\","
                  "reason=\"policy_pcr_mismatch\"}",
                  "2");
    expect_series(text,
                  "attestproxy_attestations_total{service=\"whisper\",verdict=\"error\","
                  "reason=\"timeout\"}",
                  "2");
    expect_series(text,
                  "attestproxy_attestations_total{service=\"whisper\",verdict=\"error\","
                  "reason=\"unknown\"}",
                  "1");
    expect_series(text,
                  "attestproxy_attestations_total{service=\"whisper\",verdict=\"rejected\","
                  "reason=\"other\"}",
                  "1");
    assert_null(strstr(text, "Bad Reason"));

    /* Buckets are cumulative; le bounds print as plain decimals. */
#define BUCKET(le)                                                                                 \
    "attestproxy_attestation_duration_seconds_bucket{service=\"whisper\",le=\"" le "\"}"
    expect_series(text, BUCKET("0.005"), "4"); /* 3 ms, 5 ms, and two 1 ns */
    expect_series(text, BUCKET("0.01"), "4");
    expect_series(text, BUCKET("0.05"), "6");
    expect_series(text, BUCKET("0.25"), "7");
    expect_series(text, BUCKET("10"), "7");
    expect_series(text, BUCKET("30"), "8");
    expect_series(text, BUCKET("+Inf"), "9");
#undef BUCKET
    expect_series(text, "attestproxy_attestation_duration_seconds_count{service=\"whisper\"}", "9");
    /* 3+5+120+40+40 ms + 10.000000001 s + 60 s + 2 ns */
    expect_series(text, "attestproxy_attestation_duration_seconds_sum{service=\"whisper\"}",
                  "70.208000003");
    free(text);
    metrics_free(m);
}

static void test_pin_expiry_relative_to_render_time(void **state)
{
    struct metrics *m = metrics_new();
    struct metrics_service *a = metrics_service(m, "a");
    struct metrics_service *b = metrics_service(m, "b");
    struct metrics_service *c = metrics_service(m, "c");
    char *text;
    (void)state;

    metrics_set_pin_expiry(a, NOW_MS + 90500);
    metrics_set_pin_expiry(b, NOW_MS - 1250);
    metrics_set_pin_expiry(c, NOW_MS + 5);
    metrics_set_pin_expiry(c, 0); /* pins dropped: the series disappears */
    text = render(m);
    check_exposition(text);
    expect_series(text, "attestproxy_pin_expiry_seconds{service=\"a\"}", "90.500");
    expect_series(text, "attestproxy_pin_expiry_seconds{service=\"b\"}", "-1.250");
    expect_absent(text, "attestproxy_pin_expiry_seconds{service=\"c\"}");
    free(text);
    metrics_free(m);
}

static void test_label_values_are_escaped(void **state)
{
    struct metrics *m = metrics_new();
    struct metrics_service *s = metrics_service(m, "we\"ird\\na\nme");
    char *text;
    (void)state;

    metrics_inc_pool_reuse(s);
    text = render(m);
    check_exposition(text);
    expect_series(text, "attestproxy_pool_reuse_total{service=\"we\\\"ird\\\\na\\nme\"}", "1");
    free(text);
    metrics_free(m);
}

static void test_bounds_and_null_handles(void **state)
{
    struct metrics *m = metrics_new();
    struct metrics_service *w;
    char name[80];
    char *text;
    (void)state;

    /* NULL handles and registries are accepted everywhere and change nothing. */
    metrics_inc_requests(NULL, 200);
    metrics_inc_upstream_connection(NULL, METRICS_UPSTREAM_OK);
    metrics_add_upstream_open(NULL, 1);
    metrics_inc_pool_reuse(NULL);
    metrics_observe_attestation(NULL, METRICS_VERDICT_VERIFIED, "ok", 1);
    metrics_set_pin_expiry(NULL, 1);
    metrics_set_policy_generation(NULL, 1);
    metrics_add_bytes(NULL, METRICS_DIR_TO_CLIENT, 1);
    metrics_inc_enforcement(NULL, METRICS_ENFORCE_PIN_DROPPED, METRICS_ENFORCE_TTL_LAPSED);
    metrics_add_client_open(NULL, 1);
    metrics_free(NULL);
    assert_null(metrics_service(NULL, "x"));
    assert_null(metrics_service(m, NULL));
    assert_null(metrics_service(m, ""));
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    assert_null(metrics_service(m, name)); /* longer than a configured name can be */

    /* At most METRICS_SERVICES_MAX services. */
    for (int i = 0; i < METRICS_SERVICES_MAX; i++) {
        snprintf(name, sizeof(name), "svc%d", i);
        assert_non_null(metrics_service(m, name));
    }
    assert_null(metrics_service(m, "one-too-many"));
    assert_non_null(metrics_service(m, "svc0")); /* existing ones are still found */

    /* At most METRICS_REASONS_MAX distinct reasons; the rest count as "other". */
    w = metrics_service(m, "svc1");
    for (int i = 0; i < METRICS_REASONS_MAX + 10; i++) {
        snprintf(name, sizeof(name), "reason_%d", i);
        metrics_observe_attestation(w, METRICS_VERDICT_REJECTED, name, 1);
    }
    text = render(m);
    check_exposition(text);
    expect_series(text,
                  "attestproxy_attestations_total{service=\"svc1\",verdict=\"rejected\","
                  "reason=\"reason_0\"}",
                  "1");
    /* "other" occupies one slot: reasons 0..126 are named, 127..137 are "other". */
    expect_series(text,
                  "attestproxy_attestations_total{service=\"svc1\",verdict=\"rejected\","
                  "reason=\"reason_126\"}",
                  "1");
    expect_absent(text, "attestproxy_attestations_total{service=\"svc1\",verdict=\"rejected\","
                        "reason=\"reason_127\"}");
    expect_series(text,
                  "attestproxy_attestations_total{service=\"svc1\",verdict=\"rejected\","
                  "reason=\"other\"}",
                  "11");
    free(text);
    metrics_free(m);
}

/* The proxy hop's counter is shown for the services that went through a proxy, every result of
 * them, and for no other service (which would show zeros forever). */
static void test_upstream_proxy_connects(void **state)
{
    struct metrics *m = metrics_new();
    struct metrics_service *direct = metrics_service(m, "direct");
    struct metrics_service *tunnelled = metrics_service(m, "tunnelled");
    char *text;
    (void)state;

    metrics_inc_upstream_proxy_connect(tunnelled, METRICS_PROXY_OK);
    metrics_inc_upstream_proxy_connect(tunnelled, METRICS_PROXY_OK);
    metrics_inc_upstream_proxy_connect(tunnelled, METRICS_PROXY_REFUSED);
    metrics_inc_upstream_proxy_connect(tunnelled, METRICS_PROXY_RESULT_COUNT_); /* ignored */
    metrics_inc_upstream_proxy_connect(NULL, METRICS_PROXY_OK);
    (void)direct;
    text = render(m);
    assert_int_equal(check_exposition(text), N_FAMILIES);
    expect_series(text,
                  "attestproxy_upstream_proxy_connects_total{service=\"tunnelled\",result=\"ok\"}",
                  "2");
    expect_series(
        text, "attestproxy_upstream_proxy_connects_total{service=\"tunnelled\",result=\"refused\"}",
        "1");
    expect_series(
        text, "attestproxy_upstream_proxy_connects_total{service=\"tunnelled\",result=\"timeout\"}",
        "0");
    assert_null(strstr(text, "attestproxy_upstream_proxy_connects_total{service=\"direct\""));
    free(text);
    metrics_free(m);
}

static void test_label_names(void **state)
{
    (void)state;
    assert_string_equal(metrics_upstream_result_name(METRICS_UPSTREAM_TLS_ERROR), "tls_error");
    assert_string_equal(metrics_verdict_name(METRICS_VERDICT_REJECTED), "rejected");
    assert_string_equal(metrics_direction_name(METRICS_DIR_TO_UPSTREAM), "to_upstream");
    assert_string_equal(metrics_enforce_event_name(METRICS_ENFORCE_CONNECTION_CLOSED),
                        "connection_closed");
    assert_string_equal(metrics_enforce_reason_name(METRICS_ENFORCE_TTL_LAPSED), "ttl_lapsed");
    assert_string_equal(metrics_verdict_name(METRICS_VERDICT_COUNT_), "other");
    assert_string_equal(metrics_proxy_result_name(METRICS_PROXY_BAD_RESPONSE), "bad_response");
    assert_string_equal(metrics_proxy_result_name(METRICS_PROXY_CONNECT_TIMEOUT),
                        "connect_timeout");
    assert_string_equal(metrics_proxy_result_name(METRICS_PROXY_RESULT_COUNT_), "other");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_registry_has_every_family),
        cmocka_unit_test(test_bundle_refusals_are_counted_by_reason),
        cmocka_unit_test(test_service_series),
        cmocka_unit_test(test_tunnel_series),
        cmocka_unit_test(test_attestations_and_histogram),
        cmocka_unit_test(test_pin_expiry_relative_to_render_time),
        cmocka_unit_test(test_label_values_are_escaped),
        cmocka_unit_test(test_bounds_and_null_handles),
        cmocka_unit_test(test_upstream_proxy_connects),
        cmocka_unit_test(test_label_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
