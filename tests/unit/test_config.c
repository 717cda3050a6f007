/* Unit tests for core/config.c: value parsers, every class of configuration error (each with
 * file:line), profile presets, policy files and the check-config round trip. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/config.h"

#define PCR_A                                                                                      \
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d" \
    "2e2f"
#define PCR_B                                                                                      \
    "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100ffeeddccbbaa9988776655443322" \
    "1100"

static char tmpdir[] = "/tmp/test_config.XXXXXX";

static int setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    FILE *fp;
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    return path;
}

#define MINIMAL_SERVICE                                                                            \
    "[service whisper]\n"                                                                          \
    "listen = 127.0.0.1:8080\n"                                                                    \
    "upstream = enclave.example:443\n"                                                             \
    "measurement = pcr0=" PCR_A "\n"

static struct config *load_ok(const char *text)
{
    struct config *cfg = NULL;
    char err[CONFIG_ERROR_MAX] = "";
    const char *path = write_file("ok.conf", text);
    int rc = config_load(path, &cfg, err, sizeof(err));
    if (rc != 0)
        fail_msg("unexpected error: %s", err);
    assert_non_null(cfg);
    return cfg;
}

/* Loads `text` expecting failure at `line` with a message containing `needle`. */
static void expect_error(const char *text, int line, const char *needle)
{
    struct config *cfg = (struct config *)1;
    char err[CONFIG_ERROR_MAX] = "";
    char prefix[300];
    const char *path = write_file("bad.conf", text);
    int rc = config_load(path, &cfg, err, sizeof(err));
    assert_int_not_equal(rc, 0);
    assert_null(cfg);
    snprintf(prefix, sizeof(prefix), "%s:%d: ", path, line);
    if (strncmp(err, prefix, strlen(prefix)) != 0 || strstr(err, needle) == NULL)
        fail_msg("expected '%s...%s', got '%s'", prefix, needle, err);
}

static void test_durations(void **state)
{
    uint64_t ms;
    (void)state;
    assert_int_equal(config_parse_duration("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(config_parse_duration("30s", &ms), 0);
    assert_int_equal(ms, 30000);
    assert_int_equal(config_parse_duration("5m", &ms), 0);
    assert_int_equal(ms, 300000);
    assert_int_equal(config_parse_duration("1h", &ms), 0);
    assert_int_equal(ms, 3600000);
    assert_int_equal(config_parse_duration("2d", &ms), 0);
    assert_int_equal(ms, 172800000);
    assert_int_equal(config_parse_duration("0", &ms), 0);
    assert_int_equal(ms, 0);
    const char *bad[] = {"30",  "",    "s",    "5x", "-1s", "+1s",
                         " 1s", "1s ", "1.5s", "1S", "5mm", "99999999999999999999s"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (config_parse_duration(bad[i], &ms) == 0)
            fail_msg("accepted bad duration '%s'", bad[i]);
    }
    assert_int_equal(config_parse_duration("18446744073709551615d", &ms), -ERANGE);
}

static void test_sizes(void **state)
{
    uint64_t b;
    (void)state;
    assert_int_equal(config_parse_size("512", &b), 0);
    assert_int_equal(b, 512);
    assert_int_equal(config_parse_size("64k", &b), 0);
    assert_int_equal(b, 65536);
    assert_int_equal(config_parse_size("1m", &b), 0);
    assert_int_equal(b, 1048576);
    assert_int_equal(config_parse_size("2G", &b), 0);
    assert_int_equal(b, 2147483648ull);
    const char *bad[] = {"", "k", "1kb", "1 k", "-1", "1.5m", "1t", "0x10"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (config_parse_size(bad[i], &b) == 0)
            fail_msg("accepted bad size '%s'", bad[i]);
    }
    assert_int_equal(config_parse_size("18446744073709551615g", &b), -ERANGE);
}

static void test_listen_and_bool(void **state)
{
    struct listen_addr a;
    bool v;
    (void)state;
    assert_int_equal(config_parse_listen("127.0.0.1:8080", &a), 0);
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 8080);
    assert_int_equal(config_parse_listen("[::1]:9", &a), 0);
    assert_string_equal(a.host, "::1");
    assert_int_equal(config_parse_listen("unix:/run/a.sock", &a), 0);
    assert_true(a.is_unix);
    assert_int_not_equal(config_parse_listen("localhost:80", &a), 0);
    assert_int_not_equal(config_parse_listen("::1:80", &a), 0);
    assert_int_not_equal(config_parse_listen("127.0.0.1:0", &a), 0);
    assert_int_not_equal(config_parse_listen("127.0.0.1:65536", &a), 0);
    assert_int_not_equal(config_parse_listen("unix:relative", &a), 0);
    assert_int_equal(config_parse_bool("yes", &v), 0);
    assert_true(v);
    assert_int_equal(config_parse_bool("off", &v), 0);
    assert_false(v);
    assert_int_not_equal(config_parse_bool("maybe", &v), 0);
}

static void test_measurement_parse(void **state)
{
    struct measurement_set s;
    (void)state;
    assert_int_equal(config_parse_measurement("pcr0=" PCR_A " pcr8=" PCR_B, &s), 0);
    assert_int_equal(s.mask, (1u << 0) | (1u << 8));
    assert_int_equal(s.pcr[0][1], 0x01);
    assert_int_equal(s.pcr[8][0], 0xff);
    assert_int_not_equal(config_parse_measurement("pcr32=" PCR_A, &s), 0);
    assert_int_not_equal(config_parse_measurement("pcr0=abcd", &s), 0);
    assert_int_not_equal(config_parse_measurement("pcr0=" PCR_A "00", &s), 0);
    assert_int_not_equal(config_parse_measurement("pcr0=" PCR_A " pcr0=" PCR_B, &s), 0);
    assert_int_not_equal(config_parse_measurement("", &s), 0);
}

static void test_minimal_defaults_and_presets(void **state)
{
    struct config *cfg = load_ok(MINIMAL_SERVICE);
    const struct service_config *s;
    (void)state;
    assert_int_equal(cfg->n_services, 1);
    assert_int_equal(cfg->daemon.log_level, LOG_LEVEL_INFO);
    assert_false(cfg->daemon.admin_enabled);
    assert_int_equal(cfg->daemon.shutdown_timeout_ms, 30000);
    assert_int_equal(cfg->daemon.batch_wait_us, 20);
    assert_int_equal(cfg->daemon.busy_poll_us, 0);
    s = config_find_service(cfg, "whisper");
    assert_non_null(s);
    assert_string_equal(s->upstream_host, "enclave.example");
    assert_int_equal(s->upstream_port, 443);
    assert_string_equal(s->sni, "enclave.example");
    assert_int_equal(s->profile, PROFILE_NATIVE);
    assert_string_equal(s->evidence_path, "/.well-known/nitro-attestation");
    assert_int_equal(s->nonce, NONCE_QUERY);
    assert_int_equal(s->nonce_bytes, 32);
    assert_int_equal(s->binding, BINDING_SPKI_SHA256);
    assert_int_equal(s->policy.n_sets, 1);
    assert_int_equal(s->policy.max_age_ms, 300000);
    assert_int_equal(s->policy.skew_ms, 60000);
    assert_false(s->policy.allow_debug);
    assert_int_equal(s->max_header_bytes, 32768);
    assert_int_equal(s->max_body_size, 0);
    assert_int_equal(s->unix_mode, 0660);
    config_free(cfg);
}

/* The Host value sent upstream is derived once at load: the port left out when it is 443, an
 * IPv6 address in brackets. */
static void test_upstream_authority(void **state)
{
    static const struct {
        const char *upstream, *authority;
    } cases[] = {
        {"enclave.example:443", "enclave.example"},
        {"enclave.example:65535", "enclave.example:65535"},
        {"10.0.0.7:1", "10.0.0.7:1"},
        {"[::1]:443", "[::1]"},
        {"[::1]:8443", "[::1]:8443"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[256];
        struct config *cfg;
        snprintf(text, sizeof(text),
                 "[service a]\nlisten = 127.0.0.1:1\nupstream = %s\nmeasurement = pcr0=" PCR_A "\n",
                 cases[i].upstream);
        cfg = load_ok(text);
        assert_string_equal(cfg->services[0].upstream_authority, cases[i].authority);
        config_free(cfg);
    }
}

static void test_profiles_and_overrides(void **state)
{
    struct config *cfg = load_ok("[service a]\nlisten = 127.0.0.1:1\nupstream = 10.0.0.1:443\n"
                                 "profile = nitriding\nmeasurement = pcr0=" PCR_A "\n"
                                 "[service b]\nlisten = 127.0.0.1:2\nupstream = h:1\n"
                                 "binding = cert_sha256\nprofile = blindai\n"
                                 "measurement = pcr0=" PCR_A "\n"
                                 "[service c]\nlisten = unix:/tmp/c.sock\nupstream = h:1\n"
                                 "profile = evervault\nnonce = query\nnonce_bytes = 16\n"
                                 "evidence_path = /att\nmeasurement = pcr0=" PCR_A "\n"
                                 "[service d]\nlisten = 127.0.0.1:4\nupstream = h:1\n"
                                 "profile = native-session\nmeasurement = pcr0=" PCR_A "\n"
                                 "[service e]\nlisten = 127.0.0.1:5\nupstream = h:1\n"
                                 "nonce = session\nmeasurement = pcr0=" PCR_A "\n");
    const struct service_config *a = config_find_service(cfg, "a");
    const struct service_config *d = config_find_service(cfg, "d");
    const struct service_config *e = config_find_service(cfg, "e");
    const struct service_config *b = config_find_service(cfg, "b");
    const struct service_config *c = config_find_service(cfg, "c");
    (void)state;
    assert_string_equal(a->evidence_path, "/enclave/attestation");
    assert_int_equal(a->nonce_bytes, 20);
    assert_int_equal(a->binding, BINDING_NITRIDING);
    assert_string_equal(a->sni, ""); /* an IP literal gets no SNI */
    assert_int_equal(b->nonce, NONCE_NONE);
    assert_int_equal(b->binding, BINDING_CERT_SHA256); /* explicit key beats the preset */
    assert_int_equal(c->binding, BINDING_SPKI_DER);
    assert_int_equal(c->nonce, NONCE_QUERY);
    assert_int_equal(c->nonce_bytes, 16);
    assert_string_equal(c->evidence_path, "/att");
    assert_int_equal(d->nonce, NONCE_SESSION); /* native-session: native, session-bound */
    assert_int_equal(d->nonce_bytes, 32);
    assert_int_equal(d->binding, BINDING_SPKI_SHA256);
    assert_string_equal(d->evidence_path, "/.well-known/nitro-attestation");
    assert_int_equal(e->profile, PROFILE_NATIVE);
    assert_int_equal(e->nonce, NONCE_SESSION);
    assert_int_equal(e->nonce_bytes, 32);
    assert_string_equal(config_nonce_name(e->nonce), "session");
    config_free(cfg);
}

static void test_measurement_continuation_and_repeat(void **state)
{
    struct config *cfg = load_ok("[service s]\nlisten = 127.0.0.1:1\nupstream = h:1\n"
                                 "measurement = pcr0=" PCR_A "\n"
                                 "    pcr1=" PCR_B "\n"
                                 "measurement = pcr0=" PCR_B "\n");
    const struct service_config *s = &cfg->services[0];
    (void)state;
    assert_int_equal(s->policy.n_sets, 2);
    assert_int_equal(s->policy.sets[0].mask, 3);
    assert_int_equal(s->policy.sets[1].mask, 1);
    assert_int_equal(s->policy.sets[0].pcr[1][0], 0xff);
    config_free(cfg);
}

/* allowed_origins and allowed_hosts share one list parser; an origin is a scheme, a host that
 * is not empty and no path, or "null". */
static void test_origin_and_host_lists(void **state)
{
    struct config *cfg;
    (void)state;
    cfg = load_ok(MINIMAL_SERVICE "allowed_origins = https://a.example:8443, null http://b\n"
                                  "allowed_hosts = a.example,[::1]:8080\n");
    assert_int_equal(cfg->services[0].n_allowed_origins, 3);
    assert_string_equal(cfg->services[0].allowed_origins[0], "https://a.example:8443");
    assert_string_equal(cfg->services[0].allowed_origins[1], "null");
    assert_int_equal(cfg->services[0].n_allowed_hosts, 2);
    assert_string_equal(cfg->services[0].allowed_hosts[1], "[::1]:8080");
    config_free(cfg);
    expect_error(MINIMAL_SERVICE "allowed_origins = http:///x\n", 5, "scheme://host");
    expect_error(MINIMAL_SERVICE "allowed_origins = https://\n", 5, "scheme://host");
    expect_error(MINIMAL_SERVICE "allowed_origins = https://a/b\n", 5, "no path");
    expect_error(MINIMAL_SERVICE "allowed_origins = ftp://a\n", 5, "scheme://host");
    expect_error(MINIMAL_SERVICE "allowed_origins = ,\n", 5, "empty origin list");
    expect_error(MINIMAL_SERVICE "allowed_hosts = a/b\n", 5, "invalid character in a host");
    expect_error(MINIMAL_SERVICE "allowed_hosts = \n", 5, "");
}

/* config_listen_clash(): what cannot be bound twice, and what can. */
static void test_listen_clash(void **state)
{
    static const struct {
        const char *a, *b;
        bool clash;
    } cases[] = {
        {"127.0.0.1:80", "127.0.0.1:80", true},
        {"127.0.0.1:80", "127.0.0.1:81", false},
        {"127.0.0.1:80", "127.0.0.2:80", false},
        {"0.0.0.0:80", "127.0.0.1:80", true},
        {"[::]:80", "[::1]:80", true},
        {"[::]:80", "127.0.0.1:80", false}, /* IPv6 listeners are v6-only */
        {"[::1]:80", "[0:0::1]:80", true},
        {"unix:/a/b.sock", "unix:/a//b.sock", true},
        {"unix:/a/b.sock", "unix:/a/./c/../b.sock", true},
        {"unix:/a/b.sock", "unix:/a/c.sock", false},
        {"unix:/a/b.sock", "unix:/../a/b.sock", true},
        {"unix:/a/b.sock", "127.0.0.1:80", false},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct listen_addr a, b;
        assert_int_equal(config_parse_listen(cases[i].a, &a), 0);
        assert_int_equal(config_parse_listen(cases[i].b, &b), 0);
        if (config_listen_clash(&a, &b) != cases[i].clash ||
            config_listen_clash(&b, &a) != cases[i].clash)
            fail_msg("%s / %s: want clash=%d", cases[i].a, cases[i].b, cases[i].clash);
    }
}

static void test_error_classes(void **state)
{
    (void)state;
    expect_error("[daemon]\nlog_level = info\nbogus = 1\n" MINIMAL_SERVICE, 3,
                 "unknown key 'bogus'");
    expect_error("[daemon]\nlog_level = loud\n" MINIMAL_SERVICE, 2, "log_level: expected");
    expect_error("[deamon]\n" MINIMAL_SERVICE, 1, "unknown section [deamon]");
    expect_error("log_level = info\n" MINIMAL_SERVICE, 1, "outside a section");
    expect_error(MINIMAL_SERVICE "listen = 127.0.0.1:8081\nupstream = h:2\n", 6,
                 "duplicate key 'upstream'");
    expect_error(MINIMAL_SERVICE MINIMAL_SERVICE, 5, "duplicate service 'whisper'");
    expect_error("[daemon]\n[daemon]\n" MINIMAL_SERVICE, 2, "duplicate section [daemon]");
    expect_error("[service a]\nupstream = h:1\nmeasurement = pcr0=" PCR_A "\n", 1,
                 "missing required key 'listen'");
    expect_error("[daemon]\n\n[service a]\nlisten = 127.0.0.1:1\nmeasurement = pcr0=" PCR_A "\n", 3,
                 "missing required key 'upstream'");
    expect_error("[daemon]\nshutdown_timeout = 30\n" MINIMAL_SERVICE, 2, "with a unit");
    expect_error("[daemon]\nshutdown_timeout = 2h\n" MINIMAL_SERVICE, 2, "out of range");
    expect_error("[daemon]\nbatch_wait_us = 1001\n" MINIMAL_SERVICE, 2, "out of range");
    expect_error("[daemon]\nbatch_wait_us = 20us\n" MINIMAL_SERVICE, 2, "whole number");
    expect_error("[daemon]\nbusy_poll_us = 1001\n" MINIMAL_SERVICE, 2, "out of range");
    expect_error("[daemon]\nbusy_poll_us = -5\n" MINIMAL_SERVICE, 2, "whole number");
    expect_error(MINIMAL_SERVICE "max_headers = 0\n", 5, "max_headers: out of range");
    expect_error(MINIMAL_SERVICE "max_connections = 12x\n", 5, "whole number");
    expect_error(MINIMAL_SERVICE "this line has no equals sign\n", 5, "syntax error");
    expect_error("[daemon]\n", 1, "no [service NAME] section");
    expect_error("[service a]\nlisten = 127.0.0.1:1\nupstream = h:1\nprofile = native-session\n"
                 "nonce_bytes = 16\nmeasurement = pcr0=" PCR_A "\n",
                 1, "nonce_bytes must be 32");
    expect_error("[service a]\nlisten = 127.0.0.1:1\nupstream = h:1\nprofile = native-session\n"
                 "binding = cert_sha256\nmeasurement = pcr0=" PCR_A "\n",
                 1, "binding must be spki_sha256");
    /* One address, one listener: across services, within one, and against admin_listen; an
     * IPv6 address spelled two ways is one address. */
    expect_error(MINIMAL_SERVICE "[service b]\nlisten = 127.0.0.1:8080\nupstream = h:1\n"
                                 "measurement = pcr0=" PCR_A "\n",
                 5, "listen 127.0.0.1:8080 is also a listen address of service 'whisper'");
    expect_error(MINIMAL_SERVICE "listen = 127.0.0.1:8080\n", 1, "is also a listen address");
    expect_error("[daemon]\nadmin_listen = unix:/run/a.sock\n[service a]\n"
                 "listen = unix:/run/a.sock\nupstream = h:1\nmeasurement = pcr0=" PCR_A "\n",
                 3, "listen unix:/run/a.sock is also admin_listen");
    expect_error("[daemon]\nadmin_listen = [::1]:9000\n[service a]\nlisten = [0:0::1]:9000\n"
                 "upstream = h:1\nmeasurement = pcr0=" PCR_A "\n",
                 3, "is also admin_listen");
    /* Addresses that cannot both be bound: one Unix path written two ways, a wildcard and an
     * address of its family on one port. */
    expect_error("[daemon]\nadmin_listen = unix:/run/x/a.sock\n[service a]\n"
                 "listen = unix:/run//x/./y/../a.sock\nupstream = h:1\nmeasurement = pcr0=" PCR_A
                 "\n",
                 3, "is also admin_listen");
    expect_error("[service a]\nlisten = 127.0.0.1:7000\nupstream = h:1\nmeasurement = pcr0=" PCR_A
                 "\n[service b]\nlisten = 0.0.0.0:7000\nallow_remote = yes\n"
                 "token = 0123456789abcdef0123\nupstream = h:1\nmeasurement = pcr0=" PCR_A "\n",
                 5, "is also a listen address of service 'a'");
    expect_error("[service bad name!]\n", 1, "invalid service name");
    expect_error("[service a]\nlisten = 127.0.0.1:1\nupstream = h:1\n", 1, "empty policy");
    expect_error(MINIMAL_SERVICE "measurement = pcr0=abcd\n", 5, "96 hex digits");
    expect_error(MINIMAL_SERVICE "measurement = pcr40=" PCR_A "\n", 5, "out of range (0..31)");
    expect_error(MINIMAL_SERVICE "profile = tinfoil\n", 5, "expected native");
    expect_error(MINIMAL_SERVICE "binding = none\n", 5, "expected spki_sha256");
    expect_error(MINIMAL_SERVICE "listen = 0.0.0.0:9\n", 1, "not loopback");
    expect_error(MINIMAL_SERVICE "listen = 0.0.0.0:9\nallow_remote = yes\n", 1, "requires token");
    expect_error(MINIMAL_SERVICE "token = short\n", 1, "at least 16 characters");
    expect_error(MINIMAL_SERVICE "nonce = none\nnonce_bytes = 20\n", 1, "nonce = none");
    expect_error(MINIMAL_SERVICE "attestation_ttl = 1m\nrefresh_before = 1m\n", 1,
                 "refresh_before");
    expect_error(MINIMAL_SERVICE "policy_file = /nonexistent\n", 1, "replaces inline");
    expect_error("[daemon]\nadmin_listen = 10.1.2.3:9\n" MINIMAL_SERVICE, 2, "loopback");
    expect_error(MINIMAL_SERVICE "evidence_path = no-slash\n", 1, "evidence_path");
    expect_error(MINIMAL_SERVICE "sni = \n", 5, "empty value");
    expect_error(MINIMAL_SERVICE "upstream_typo = h:1\n", 5, "unknown key");
    expect_error(MINIMAL_SERVICE "connect_timeout = 5s\n  continued\n", 6, "only measurement");
    expect_error(MINIMAL_SERVICE "sni = a\x01b\n", 5, "control character");
}

static void test_overlong_line(void **state)
{
    char text[1024];
    (void)state;
    snprintf(text, sizeof(text),
             "[service s]\nlisten = 127.0.0.1:1\nupstream = h:1\nmeasurement = pcr0=" PCR_A
             " pcr1=" PCR_B "\n");
    expect_error(text, 4, "line longer than");
}

static void test_missing_file(void **state)
{
    struct config *cfg;
    char err[CONFIG_ERROR_MAX];
    (void)state;
    assert_int_equal(config_load("/nonexistent/attestproxy.conf", &cfg, err, sizeof(err)), -ENOENT);
    assert_null(cfg);
    assert_non_null(strstr(err, "/nonexistent/attestproxy.conf: No such file"));
}

static void test_policy_file(void **state)
{
    char text[512];
    const char *pf;
    struct config *cfg;
    struct policy p = {.max_age_ms = 1, .skew_ms = 2};
    char err[CONFIG_ERROR_MAX];
    (void)state;
    pf = write_file("policy.conf", "[policy]\nallow_debug = yes\nmeasurement = pcr0=" PCR_A
                                   "\nmeasurement = pcr0=" PCR_B "\n    pcr2=" PCR_A "\n");
    char pfpath[256];
    snprintf(pfpath, sizeof(pfpath), "%s", pf);
    snprintf(text, sizeof(text),
             "[service s]\nlisten = 127.0.0.1:1\nupstream = h:1\npolicy_file = %s\n", pfpath);
    cfg = load_ok(text);
    assert_int_equal(cfg->services[0].policy.n_sets, 2);
    assert_true(cfg->services[0].policy.allow_debug);
    assert_int_equal(cfg->services[0].policy.sets[1].mask, 5);
    assert_int_equal(cfg->services[0].policy.max_age_ms, 300000);
    config_free(cfg);

    /* Errors in the policy file name the policy file and its line. */
    pf = write_file("badpolicy.conf", "[policy]\nmeasurement = pcr0=" PCR_A "\nlisten = x\n");
    snprintf(pfpath, sizeof(pfpath), "%s", pf);
    assert_int_not_equal(config_load_policy_file(pfpath, &p, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "badpolicy.conf:3: unknown key 'listen'"));
    assert_int_equal(p.max_age_ms, 1); /* untouched on failure */

    pf = write_file("emptypolicy.conf", "[policy]\nallow_debug = no\n");
    snprintf(pfpath, sizeof(pfpath), "%s", pf);
    assert_int_not_equal(config_load_policy_file(pfpath, &p, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "empty policy"));

    pf = write_file("goodpolicy.conf", "[policy]\nmeasurement = pcr0=" PCR_B "\n");
    snprintf(pfpath, sizeof(pfpath), "%s", pf);
    assert_int_equal(config_load_policy_file(pfpath, &p, err, sizeof(err)), 0);
    assert_int_equal(p.n_sets, 1);
    assert_int_equal(p.max_age_ms, 1); /* freshness stays the service's */
}

static char *print_to_string(const struct config *cfg)
{
    /* Static so the stream's view of them outlives this frame (open_memstream updates them). */
    static char *buf;
    static size_t len;
    FILE *fp;
    buf = NULL;
    len = 0;
    fp = open_memstream(&buf, &len);
    config_print(cfg, fp);
    fclose(fp);
    return buf;
}

static void test_print_round_trip(void **state)
{
    struct config *cfg = load_ok("[daemon]\nlog_format = json\nadmin_listen = [::1]:9100\n"
                                 "[service s]\nlisten = 127.0.0.1:1\nlisten = unix:/tmp/s.sock\n"
                                 "upstream = [fd00::1]:443\ntoken = 0123456789abcdef-secret\n"
                                 "allowed_hosts = api.local localhost:1\nmax_body_size = 1g\n"
                                 "client_header_timeout = 1500ms\n"
                                 "measurement = pcr0=" PCR_A "\n    pcr8=" PCR_B "\n");
    char *first = print_to_string(cfg), *second;
    const char *path;
    struct config *again;
    (void)state;
    assert_null(strstr(first, "0123456789abcdef-secret")); /* secrets never printed */
    assert_non_null(strstr(first, "token = <redacted>"));
    assert_non_null(strstr(first, "client_header_timeout = 1500ms\n"));
    assert_non_null(strstr(first, "max_body_size = 1g\n"));
    assert_non_null(strstr(first, "upstream = [fd00::1]:443\n"));
    config_free(cfg);

    /* The printed configuration loads back to the same configuration once the redacted token
     * is put back. */
    {
        char err[CONFIG_ERROR_MAX];
        size_t cap = strlen(first) + 64;
        char *fixed = malloc(cap);
        const char *t = strstr(first, "<redacted>");
        assert_non_null(fixed);
        assert_non_null(t);
        snprintf(fixed, cap, "%.*s0123456789abcdef-secret%s", (int)(t - first), first,
                 t + strlen("<redacted>"));
        path = write_file("printed.conf", fixed);
        free(fixed);
        assert_int_equal(config_load(path, &again, err, sizeof(err)), 0);
    }
    second = print_to_string(again);
    /* Only the first line (the file path) differs. */
    assert_string_equal(strchr(first, '\n'), strchr(second, '\n'));
    config_free(again);
    free(first);
    free(second);
}

/* A credentials file holding `content` is refused with `needle` in the message. */
static void expect_credentials_error(const char *content, const char *needle)
{
    char path[256], conf[512];
    snprintf(path, sizeof(path), "%s", write_file("bad.cred", content));
    snprintf(conf, sizeof(conf),
             MINIMAL_SERVICE "upstream_proxy = http://p:1\nupstream_proxy_credentials = %s\n",
             path);
    expect_error(conf, 6, needle);
}

/* upstream_proxy (issue #24): http:// only, credentials from a file, encoded for Basic and
 * never printed; https:// and the credentials without a proxy are refused. */
static void test_upstream_proxy(void **state)
{
    char cred_line[256], conf[768];
    const char *cred;
    struct config *cfg;
    char *printed;
    (void)state;

    cfg = load_ok(MINIMAL_SERVICE);
    assert_string_equal(cfg->services[0].upstream_proxy_host, "");
    assert_int_equal(cfg->services[0].upstream_proxy_connect_timeout_ms, 5000);
    assert_int_equal(cfg->services[0].upstream_proxy_timeout_ms, 10000);
    printed = print_to_string(cfg);
    assert_non_null(strstr(printed, "# upstream_proxy is not set: direct connections\n"));
    free(printed);
    config_free(cfg);

    cred = write_file("proxy.cred", "alice:s3cret pass\n");
    snprintf(cred_line, sizeof(cred_line), "%s", cred);
    snprintf(conf, sizeof(conf),
             MINIMAL_SERVICE "upstream_proxy = http://proxy.corp:3128/\n"
                             "upstream_proxy_credentials = %s\nupstream_proxy_timeout = 2s\n",
             cred_line);
    cfg = load_ok(conf);
    assert_string_equal(cfg->services[0].upstream_proxy_host, "proxy.corp");
    assert_int_equal(cfg->services[0].upstream_proxy_port, 3128);
    assert_int_equal(cfg->services[0].upstream_proxy_timeout_ms, 2000);
    /* base64("alice:s3cret pass") */
    assert_string_equal(cfg->services[0].upstream_proxy_auth, "YWxpY2U6czNjcmV0IHBhc3M=");
    printed = print_to_string(cfg);
    assert_non_null(strstr(printed, "upstream_proxy = http://proxy.corp:3128\n"));
    assert_non_null(strstr(printed, cred_line));
    assert_null(strstr(printed, "s3cret"));
    assert_null(strstr(printed, "YWxpY2U6czNjcmV0IHBhc3M="));
    free(printed);
    config_free(cfg);

    cfg = load_ok(MINIMAL_SERVICE "upstream_proxy = http://[fd00::3]:8080\n");
    assert_string_equal(cfg->services[0].upstream_proxy_host, "fd00::3");
    printed = print_to_string(cfg);
    assert_non_null(strstr(printed, "upstream_proxy = http://[fd00::3]:8080\n"));
    free(printed);
    config_free(cfg);

    expect_error(MINIMAL_SERVICE "upstream_proxy = https://proxy.corp:3128\n", 5,
                 "https:// (TLS to the proxy) is not supported");
    expect_error(MINIMAL_SERVICE "upstream_proxy = proxy.corp:3128\n", 5, "expected http://");
    expect_error(MINIMAL_SERVICE "upstream_proxy = http://proxy.corp\n", 5, "HOST:PORT");
    expect_error(MINIMAL_SERVICE "upstream_proxy = http://u:p@proxy.corp:3128\n", 5,
                 "upstream_proxy_credentials");
    expect_error(MINIMAL_SERVICE "upstream_proxy = http://proxy.corp:3128/x\n", 5,
                 "without user, path");
    snprintf(conf, sizeof(conf), MINIMAL_SERVICE "upstream_proxy_credentials = %s\n", cred_line);
    expect_error(conf, 1, "upstream_proxy_credentials is set but upstream_proxy is not");
    expect_credentials_error("no-colon-here\n", "expected user:password");
    expect_credentials_error(":no-user\n", "expected user:password");
    expect_credentials_error("\n", "expected user:password");
    expect_credentials_error("user:pa\x01ss\n", "control character");
    snprintf(conf, sizeof(conf),
             MINIMAL_SERVICE
             "upstream_proxy = http://p:1\nupstream_proxy_credentials = %s/missing.cred\n",
             tmpdir);
    expect_error(conf, 6, "cannot read proxy credentials file");
}

static void test_reference_lists_every_key(void **state)
{
    static char *buf;
    static size_t len;
    FILE *fp = open_memstream(&buf, &len);
    (void)state;
    config_print_reference(fp);
    fclose(fp);
    assert_non_null(strstr(buf, "| `max_age` | `5m` | 1s .. 1d |"));
    assert_non_null(strstr(buf, "| `listen` | required |"));
    assert_non_null(strstr(buf, "### [policy] (in a policy_file)"));
    free(buf);
}

struct warnings {
    size_t n;
    char last[200];
};

static void collect_warning(void *arg, const char *service, const char *msg)
{
    struct warnings *w = arg;
    w->n++;
    snprintf(w->last, sizeof(w->last), "%s: %s", service, msg);
}

/* A measurement set without PCR0 (the enclave image) is valid but admits any image whose
 * other PCRs match: it is reported, the others are not. */
static void test_warnings_for_a_set_without_pcr0(void **state)
{
    struct warnings w;
    struct config *cfg;
    (void)state;
    memset(&w, 0, sizeof(w));
    cfg = load_ok(MINIMAL_SERVICE);
    assert_int_equal(config_warnings(cfg, collect_warning, &w), 0);
    config_free(cfg);
    cfg = load_ok(MINIMAL_SERVICE "measurement = pcr3=" PCR_A "\n    pcr4=" PCR_A "\n");
    assert_int_equal(config_warnings(cfg, collect_warning, &w), 1);
    assert_string_equal(w.last, "whisper: measurement set 2 names no pcr0: any enclave image "
                                "whose other PCRs match is admitted");
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_warnings_for_a_set_without_pcr0),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_listen_and_bool),
        cmocka_unit_test(test_measurement_parse),
        cmocka_unit_test(test_minimal_defaults_and_presets),
        cmocka_unit_test(test_profiles_and_overrides),
        cmocka_unit_test(test_upstream_authority),
        cmocka_unit_test(test_measurement_continuation_and_repeat),
        cmocka_unit_test(test_origin_and_host_lists),
        cmocka_unit_test(test_error_classes),
        cmocka_unit_test(test_listen_clash),
        cmocka_unit_test(test_overlong_line),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_policy_file),
        cmocka_unit_test(test_print_round_trip),
        cmocka_unit_test(test_upstream_proxy),
        cmocka_unit_test(test_reference_lists_every_key),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
