/*
 * Configuration loading: inih drives the parse, a key table gives every key its type, range,
 * default and documentation, and a final pass validates what no single key can (required keys,
 * profile presets, listen safety, policy).
 *
 * inih is fed through our own line reader. That reader counts lines (inih's handler does not
 * receive line numbers in Debian's build), sees section headers (to detect duplicate services
 * and create empty ones), marks continuation lines (so one measurement set can span lines) and
 * refuses lines longer than inih's 200-byte buffer instead of letting inih split them silently.
 */
#include "base/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>
#include <openssl/crypto.h>

/* inih's fixed line buffer (INI_MAX_LINE in <ini.h>); a longer line is an error. */
#define LINE_MAX_BYTES 200
#define TOKEN_MIN_LEN  16

enum section_kind {
    SEC_DAEMON,
    SEC_SERVICE,
    SEC_POLICY, /* only in a policy file */
};

enum value_type {
    T_BOOL,
    T_DURATION,     /* uint64_t milliseconds */
    T_DURATION_S64, /* int64_t milliseconds */
    T_SIZE,         /* uint64_t bytes */
    T_U32,
    T_STRING, /* char[size] */
    T_LISTEN, /* repeatable listen address */
    T_ADMIN,  /* admin listen address, may be empty */
    T_HOSTS,  /* list of host names */
    T_MODE,   /* octal permission bits */
    T_LOG_LEVEL,
    T_LOG_FORMAT,
    T_PROFILE,
    T_BINDING,
    T_NONCE,
    T_UPSTREAM,    /* host:port */
    T_MEASUREMENT, /* repeatable measurement set */
    T_TOKEN_FILE,  /* reads the token from a file */
};

#define KEY_REQUIRED 0x1u
#define KEY_REPEAT   0x2u
#define KEY_SECRET   0x4u

struct key_def {
    const char *name;
    enum section_kind section;
    enum value_type type;
    size_t offset;
    size_t size;
    uint64_t min, max;
    const char *def; /* default, as text in the file's own syntax; NULL = unset */
    unsigned flags;
    const char *doc;
};

#define D(field) offsetof(struct daemon_config, field), sizeof(((struct daemon_config *)0)->field)
#define S(field) offsetof(struct service_config, field), sizeof(((struct service_config *)0)->field)

#define SEC  ((uint64_t)1000)
#define MIN  (60 * SEC)
#define HOUR (60 * MIN)
#define DAY  (24 * HOUR)
#define KIB  ((uint64_t)1024)
#define MIB  (1024 * KIB)
#define GIB  (1024 * MIB)

/* The single source of truth for keys: loading, defaults, `check-config` output and the
 * configuration reference (docs/configuration.md) all follow this table. */
static const struct key_def keys[] = {
    /* [daemon] */
    {"log_level", SEC_DAEMON, T_LOG_LEVEL, D(log_level), 0, 0, "info", 0,
     "debug | info | warn | error"},
    {"log_format", SEC_DAEMON, T_LOG_FORMAT, D(log_format), 0, 0, "logfmt", 0,
     "logfmt | json: one line per event on stderr"},
    {"root_ca", SEC_DAEMON, T_STRING, D(root_ca), 0, 0, NULL, 0,
     "PEM file replacing the compiled-in AWS Nitro Enclaves Root-G1 (tests, other partitions); "
     "read again on every reload"},
    {"admin_listen", SEC_DAEMON, T_ADMIN, D(admin), 0, 0, NULL, 0,
     "admin API address: host:port on loopback or unix:PATH; unset = no admin listener"},
    {"shutdown_timeout", SEC_DAEMON, T_DURATION, D(shutdown_timeout_ms), 0, HOUR, "30s", 0,
     "on SIGTERM, how long in-flight exchanges may finish before connections are closed"},
    {"ready_requires_attestation", SEC_DAEMON, T_BOOL, D(ready_requires_attestation), 0, 0, "no", 0,
     "report ready (systemd, /readyz) only once every service has an attested pin"},
    {"batch_wait_us", SEC_DAEMON, T_U32, D(batch_wait_us), 0, 1000, "20", 0,
     "microseconds a busy loop pass waits before polling again, so that events gather and the "
     "peers' cores wake the daemon less often; 0 = never"},
    {"busy_poll_us", SEC_DAEMON, T_U32, D(busy_poll_us), 0, 1000, "0", 0,
     "microseconds a loop pass that handled a read keeps polling without sleeping, so that the "
     "next event finds the daemon awake: lower latency at light load for more CPU; 0 = never"},

    /* [service NAME]: client side */
    {"listen", SEC_SERVICE, T_LISTEN, S(listen), 0, 0, NULL, KEY_REQUIRED | KEY_REPEAT,
     "host:port (IP literal) or unix:PATH; may repeat; non-loopback needs allow_remote + token"},
    {"unix_mode", SEC_SERVICE, T_MODE, S(unix_mode), 0, 0777, "0660", 0,
     "permission bits of Unix listener sockets"},
    {"allow_remote", SEC_SERVICE, T_BOOL, S(allow_remote), 0, 0, "no", 0,
     "permit a non-loopback TCP listener (requires token or token_file)"},
    {"token", SEC_SERVICE, T_STRING, S(token), 0, 0, NULL, KEY_SECRET,
     "bearer token clients must send (Authorization: Bearer ...), at least 16 characters"},
    {"token_file", SEC_SERVICE, T_TOKEN_FILE, S(token_file), 0, 0, NULL, 0,
     "file holding the bearer token (first line); alternative to token"},
    {"allowed_hosts", SEC_SERVICE, T_HOSTS, S(allowed_hosts), 0, 0, NULL, 0,
     "Host header values accepted (space separated); unset = localhost 127.0.0.1 [::1] and the "
     "listen addresses"},
    {"keep_forwarded", SEC_SERVICE, T_BOOL, S(keep_forwarded), 0, 0, "no", 0,
     "pass client X-Forwarded-* and Forwarded headers upstream instead of removing them"},
    {"attestation_header", SEC_SERVICE, T_BOOL, S(attestation_header), 0, 0, "no", 0,
     "add X-Attestation (pin, PCR0, verification time) to each response"},
    {"max_connections", SEC_SERVICE, T_U32, S(max_connections), 1, 1000000, "1024", 0,
     "client connections served at once by this service"},
    {"max_header_bytes", SEC_SERVICE, T_SIZE, S(max_header_bytes), 1024, 1 * MIB, "32k", 0,
     "request head size limit (request line and headers); beyond: 431"},
    {"max_headers", SEC_SERVICE, T_U32, S(max_headers), 1, 1000, "100", 0,
     "request header count limit; beyond: 431"},
    {"max_body_size", SEC_SERVICE, T_SIZE, S(max_body_size), 0, UINT64_MAX, "0", 0,
     "request body size limit; 0 = unlimited; beyond: 413"},
    {"client_header_timeout", SEC_SERVICE, T_DURATION, S(client_header_timeout_ms), 100, HOUR,
     "10s", 0, "time allowed to receive a request head"},
    {"client_idle_timeout", SEC_SERVICE, T_DURATION, S(client_idle_timeout_ms), 100, DAY, "60s", 0,
     "idle keep-alive client connections are closed after this"},

    /* [service NAME]: upstream side */
    {"upstream", SEC_SERVICE, T_UPSTREAM, S(upstream_host), 0, 0, NULL, KEY_REQUIRED,
     "enclave TLS endpoint, host:port"},
    {"sni", SEC_SERVICE, T_STRING, S(sni), 0, 0, NULL, 0,
     "TLS server name; unset = the upstream host when it is a DNS name"},
    {"connect_timeout", SEC_SERVICE, T_DURATION, S(connect_timeout_ms), 100, 10 * MIN, "5s", 0,
     "TCP connect plus TLS handshake"},
    {"first_byte_timeout", SEC_SERVICE, T_DURATION, S(first_byte_timeout_ms), 100, DAY, "60s", 0,
     "from the end of the request to the first response byte"},
    {"stream_idle_timeout", SEC_SERVICE, T_DURATION, S(stream_idle_timeout_ms), 100, DAY, "300s", 0,
     "longest silence in either direction while a body is streaming"},
    {"pool_max_idle", SEC_SERVICE, T_U32, S(pool_max_idle), 0, 10000, "1024", 0,
     "hard cap on idle upstream connections kept for reuse (about 40 KiB each); 0 = no reuse"},
    {"pool_idle_timeout", SEC_SERVICE, T_DURATION, S(pool_idle_timeout_ms), 100, HOUR, "30s", 0,
     "an idle upstream connection is closed after this (keep it below the enclave's)"},
    {"pool_purge_interval", SEC_SERVICE, T_DURATION, S(pool_purge_interval_ms), 100, HOUR, "5s", 0,
     "every interval, half of the idle connections beyond recent demand (the most connections "
     "in use at once lately) are closed"},
    {"session_resumption", SEC_SERVICE, T_BOOL, S(session_resumption), 0, 0, "no", 0,
     "resume TLS sessions with the enclave; a resumed session proves the ticket key, not the "
     "attested key: only for enclaves that keep their ticket keys inside (docs/security.md)"},

    /* [service NAME]: attestation */
    {"profile", SEC_SERVICE, T_PROFILE, S(profile), 0, 0, "native", 0,
     "evidence profile: native | nitriding | blindai | evervault (presets the next four keys)"},
    {"evidence_path", SEC_SERVICE, T_STRING, S(evidence_path), 0, 0, NULL, 0,
     "path of the evidence request; unset = the profile's"},
    {"nonce", SEC_SERVICE, T_NONCE, S(nonce), 0, 0, NULL, 0,
     "query | none: send ?nonce=<hex> or no nonce; unset = the profile's"},
    {"nonce_bytes", SEC_SERVICE, T_U32, S(nonce_bytes), 16, 64, NULL, 0,
     "random nonce length in bytes; unset = the profile's"},
    {"binding", SEC_SERVICE, T_BINDING, S(binding), 0, 0, NULL, 0,
     "spki_sha256 | public_key_spki | spki_der | cert_sha256 | nitriding | blindai; unset = the "
     "profile's"},
    {"attestation_timeout", SEC_SERVICE, T_DURATION, S(attestation_timeout_ms), 100, 10 * MIN,
     "10s", 0, "fetching and verifying evidence over a new connection"},
    {"attestation_ttl", SEC_SERVICE, T_DURATION, S(attestation_ttl_ms), 1000, DAY, "10m", 0,
     "an attested pin is trusted this long at most (and never past its certificate)"},
    {"refresh_before", SEC_SERVICE, T_DURATION, S(refresh_before_ms), 0, DAY, "1m", 0,
     "re-attest over an idle pooled connection this long before a pin expires"},
    {"cert_margin", SEC_SERVICE, T_DURATION, S(cert_margin_ms), 0, HOUR, "1m", 0,
     "a pin expires this long before the enclave's NSM leaf certificate"},
    {"negative_cache", SEC_SERVICE, T_DURATION, S(negative_cache_ms), 0, HOUR, "5s", 0,
     "after a failed attestation, refuse the pin (503 + Retry-After) this long before retrying"},
    {"warm_attestation", SEC_SERVICE, T_BOOL, S(warm_attestation), 0, 0, "yes", 0,
     "attest at start and whenever no pin is fresh, over one pooled connection, and refresh "
     "pins without traffic (retries back off 1 s to 30 s); an idle daemon costs the enclave a "
     "connection and an attestation every attestation_ttl - refresh_before; no = attest on the "
     "first request"},
    {"max_age", SEC_SERVICE, T_DURATION_S64, S(policy.max_age_ms), 1000, DAY, "5m", 0,
     "oldest acceptable document timestamp (the only freshness proof without a nonce)"},
    {"clock_skew", SEC_SERVICE, T_DURATION_S64, S(policy.skew_ms), 0, HOUR, "60s", 0,
     "allowance for clock differences on certificates and document timestamps"},
    {"measurement", SEC_SERVICE, T_MEASUREMENT, S(policy), 0, 0, NULL, KEY_REPEAT,
     "one trusted measurement set, \"pcr0=HEX pcr1=HEX ...\" (96 hex digits each); may repeat "
     "(any one set may match) and continue on indented lines"},
    {"allow_debug", SEC_SERVICE, T_BOOL, S(policy.allow_debug), 0, 0, "no", 0,
     "accept debug-mode enclaves (PCR0..2 all zero); logs a warning at every attestation"},
    {"policy_file", SEC_SERVICE, T_STRING, S(policy_file), 0, 0, NULL, 0,
     "file with a [policy] section (measurement, allow_debug) used instead of inline keys"},
    {"watch_policy", SEC_SERVICE, T_BOOL, S(watch_policy), 0, 0, "yes", 0,
     "reload when policy_file changes on disk"},

    /* [policy] in a policy file */
    {"measurement", SEC_POLICY, T_MEASUREMENT, 0, sizeof(struct policy), 0, 0, NULL, KEY_REPEAT,
     "one trusted measurement set, as in a service"},
    {"allow_debug", SEC_POLICY, T_BOOL, offsetof(struct policy, allow_debug), sizeof(bool), 0, 0,
     NULL, 0, "accept debug-mode enclaves"},
};

#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

/* Profile presets (BRIEF §4). */
struct profile_preset {
    const char *name;
    const char *path;
    enum nonce_placement nonce;
    uint32_t nonce_bytes;
    enum binding_mode binding;
};

static const struct profile_preset profiles[] = {
    [PROFILE_NATIVE] = {"native", "/.well-known/nitro-attestation", NONCE_QUERY, 32,
                        BINDING_SPKI_SHA256},
    [PROFILE_NITRIDING] = {"nitriding", "/enclave/attestation", NONCE_QUERY, 20, BINDING_NITRIDING},
    [PROFILE_BLINDAI] = {"blindai", "/enclave/attestation", NONCE_NONE, 0, BINDING_BLINDAI},
    [PROFILE_EVERVAULT] = {"evervault", "/.well-known/attestation", NONCE_NONE, 0,
                           BINDING_SPKI_DER},
};

static const char *const binding_names[] = {
    [BINDING_SPKI_SHA256] = "spki_sha256",
    [BINDING_PUBLIC_KEY_SPKI] = "public_key_spki",
    [BINDING_SPKI_DER] = "spki_der",
    [BINDING_CERT_SHA256] = "cert_sha256",
    [BINDING_NITRIDING] = "nitriding",
    [BINDING_BLINDAI] = "blindai",
    [BINDING_NONE] = "none",
};

const char *config_profile_name(enum evidence_profile p)
{
    if ((unsigned)p >= sizeof(profiles) / sizeof(profiles[0]))
        return "unknown";
    return profiles[p].name;
}

const char *config_binding_name(enum binding_mode b)
{
    if ((unsigned)b >= sizeof(binding_names) / sizeof(binding_names[0]))
        return "unknown";
    return binding_names[b];
}

int config_parse_profile(const char *s, enum evidence_profile *out)
{
    for (unsigned i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++) {
        if (strcmp(s, profiles[i].name) == 0) {
            *out = (enum evidence_profile)i;
            return 0;
        }
    }
    return -EINVAL;
}

/* "none" is not accepted here: it exists for offline verification only. */
int config_parse_binding(const char *s, enum binding_mode *out)
{
    for (unsigned i = 0; i < BINDING_NONE; i++) {
        if (strcmp(s, binding_names[i]) == 0) {
            *out = (enum binding_mode)i;
            return 0;
        }
    }
    return -EINVAL;
}

/* ---- Value parsers ---------------------------------------------------------------------- */

/* Parses a decimal unsigned integer without sign, spaces or leading '+'; strtoull alone
 * accepts all three. */
static int parse_u64(const char *s, const char **end, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return -EINVAL;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    *end = p;
    *out = v;
    return 0;
}

int config_parse_duration(const char *s, uint64_t *ms)
{
    static const struct {
        const char *suffix;
        uint64_t mult;
    } units[] = {{"ms", 1}, {"s", SEC}, {"m", MIN}, {"h", HOUR}, {"d", DAY}};
    const char *end;
    uint64_t v;
    int rc = parse_u64(s, &end, &v);
    if (rc < 0)
        return rc;
    /* A bare 0 needs no unit; any other number must say what it counts. */
    if (*end == '\0')
        return v == 0 ? (*ms = 0, 0) : -EINVAL;
    for (unsigned i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (v > UINT64_MAX / units[i].mult)
                return -ERANGE;
            *ms = v * units[i].mult;
            return 0;
        }
    }
    return -EINVAL;
}

int config_parse_size(const char *s, uint64_t *bytes)
{
    const char *end;
    uint64_t v, mult = 1;
    int rc = parse_u64(s, &end, &v);
    if (rc < 0)
        return rc;
    if (*end != '\0') {
        switch (tolower((unsigned char)*end)) {
        case 'k':
            mult = KIB;
            break;
        case 'm':
            mult = MIB;
            break;
        case 'g':
            mult = GIB;
            break;
        default:
            return -EINVAL;
        }
        if (end[1] != '\0')
            return -EINVAL;
    }
    if (v > UINT64_MAX / mult)
        return -ERANGE;
    *bytes = v * mult;
    return 0;
}

int config_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    for (unsigned i = 0; i < 4; i++) {
        if (strcmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

static int parse_port(const char *s, uint16_t *out)
{
    const char *end;
    uint64_t v;
    if (parse_u64(s, &end, &v) < 0 || *end != '\0' || v == 0 || v > 65535)
        return -EINVAL;
    *out = (uint16_t)v;
    return 0;
}

/* Splits "host:port" or "[v6]:port" into host (without brackets) and port. */
static int split_host_port(const char *s, char *host, size_t cap, uint16_t *port)
{
    const char *colon;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return -EINVAL;
        hlen = (size_t)(close - s - 1);
        if (hlen == 0 || hlen >= cap)
            return -EINVAL;
        memcpy(host, s + 1, hlen);
        host[hlen] = '\0';
        return parse_port(close + 2, port);
    }
    colon = strrchr(s, ':');
    if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
        return -EINVAL; /* no port, or an unbracketed IPv6 address */
    hlen = (size_t)(colon - s);
    if (hlen == 0 || hlen >= cap)
        return -EINVAL;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    return parse_port(colon + 1, port);
}

int config_parse_listen(const char *s, struct listen_addr *out)
{
    unsigned char buf[sizeof(struct in6_addr)];
    memset(out, 0, sizeof(*out));
    if (strncmp(s, "unix:", 5) == 0) {
        size_t n = strlen(s + 5);
        /* sun_path holds 108 bytes with the terminator on Linux. */
        if (n == 0 || n >= 108 || s[5] != '/')
            return -EINVAL;
        out->is_unix = true;
        memcpy(out->path, s + 5, n + 1);
        return 0;
    }
    if (split_host_port(s, out->host, sizeof(out->host), &out->port) < 0)
        return -EINVAL;
    if (inet_pton(AF_INET, out->host, buf) != 1 && inet_pton(AF_INET6, out->host, buf) != 1)
        return -EINVAL;
    return 0;
}

bool config_listen_is_loopback(const struct listen_addr *a)
{
    struct in_addr v4;
    struct in6_addr v6;
    if (a->is_unix)
        return true;
    if (inet_pton(AF_INET, a->host, &v4) == 1)
        return (ntohl(v4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, a->host, &v6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&v6);
    return false;
}

int config_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Adds "pcrN=HEX" items to `set`; used for a new set and for its continuation lines. */
static int measurement_add(const char *s, struct measurement_set *set, char *why, size_t cap)
{
    const char *p = s;
    while (*p) {
        const char *end;
        uint64_t idx;
        unsigned n = 0;
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        if (strncmp(p, "pcr", 3) != 0 || parse_u64(p + 3, &end, &idx) < 0 || *end != '=') {
            snprintf(why, cap, "expected pcrN=HEX");
            return -EINVAL;
        }
        if (idx >= NITRO_PCR_COUNT) {
            snprintf(why, cap, "pcr%" PRIu64 " is out of range (0..31)", idx);
            return -EINVAL;
        }
        if (set->mask & (1u << idx)) {
            snprintf(why, cap, "pcr%" PRIu64 " is named twice in one measurement set", idx);
            return -EINVAL;
        }
        p = end + 1;
        for (; config_hex_digit(p[0]) >= 0 && config_hex_digit(p[1]) >= 0 && n < NITRO_PCR_LEN;
             p += 2, n++)
            set->pcr[idx][n] = (uint8_t)(config_hex_digit(p[0]) << 4 | config_hex_digit(p[1]));
        if (n != NITRO_PCR_LEN || !(*p == '\0' || *p == ' ' || *p == '\t' || *p == ',')) {
            snprintf(why, cap, "pcr%" PRIu64 " needs exactly 96 hex digits (48 bytes)", idx);
            return -EINVAL;
        }
        set->mask |= 1u << idx;
    }
    return 0;
}

int config_parse_measurement(const char *s, struct measurement_set *out)
{
    char why[96];
    memset(out, 0, sizeof(*out));
    if (measurement_add(s, out, why, sizeof(why)) < 0 || out->mask == 0)
        return -EINVAL;
    return 0;
}

/* ---- Loading -------------------------------------------------------------------------------- */

struct section_seen {
    char name[CONFIG_NAME_MAX + 16];
};

struct load_ctx {
    const char *path;
    FILE *fp;
    int line;
    bool continuation;     /* the current line started with whitespace */
    bool policy_only;      /* parsing a policy file: only [policy] */
    struct config *cfg;    /* NULL for a policy file */
    struct policy *policy; /* policy file target */
    bool in_policy_section;
    struct service_config *cur; /* service of the current section, or NULL */
    bool in_daemon;
    bool daemon_seen;
    bool policy_seen;
    size_t cap_services;
    uint8_t *set_flags; /* per (section instance, key): set once already */
    size_t set_flags_cap;
    const struct key_def *last_key; /* for continuation lines */
    char err[CONFIG_ERROR_MAX];
    bool failed;
};

static void load_error(struct load_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void load_error(struct load_ctx *ctx, const char *fmt, ...)
{
    char msg[CONFIG_ERROR_MAX - 64];
    va_list ap;
    if (ctx->failed)
        return; /* report the first error only: later ones may be consequences */
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(ctx->err, sizeof(ctx->err), "%s:%d: %s", ctx->path, ctx->line, msg);
    ctx->failed = true;
}

static bool valid_service_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= CONFIG_NAME_MAX)
        return false;
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
            return false;
    }
    return true;
}

static void apply_defaults(struct load_ctx *ctx, enum section_kind sec, void *base);

/* Called by the reader on every section header line. */
static void begin_section(struct load_ctx *ctx, const char *name)
{
    ctx->cur = NULL;
    ctx->in_daemon = false;
    ctx->in_policy_section = false;
    ctx->last_key = NULL;
    if (ctx->policy_only) {
        if (strcmp(name, "policy") != 0) {
            load_error(ctx, "unknown section [%s] (a policy file has one [policy] section)", name);
            return;
        }
        if (ctx->policy_seen) {
            load_error(ctx, "duplicate section [policy]");
            return;
        }
        ctx->policy_seen = true;
        ctx->in_policy_section = true;
        return;
    }
    if (strcmp(name, "daemon") == 0) {
        if (ctx->daemon_seen) {
            load_error(ctx, "duplicate section [daemon]");
            return;
        }
        ctx->daemon_seen = true;
        ctx->in_daemon = true;
        return;
    }
    if (strncmp(name, "service ", 8) == 0) {
        const char *sname = name + 8;
        struct config *cfg = ctx->cfg;
        struct service_config *svc;
        while (*sname == ' ')
            sname++;
        if (!valid_service_name(sname)) {
            load_error(ctx, "invalid service name '%s' (1-63 of A-Z a-z 0-9 - _ .)", sname);
            return;
        }
        if (config_find_service(cfg, sname) != NULL) {
            load_error(ctx, "duplicate service '%s'", sname);
            return;
        }
        if (cfg->n_services == CONFIG_MAX_SERVICES) {
            load_error(ctx, "too many services (at most %d)", CONFIG_MAX_SERVICES);
            return;
        }
        if (cfg->n_services == ctx->cap_services) {
            size_t ncap = ctx->cap_services ? ctx->cap_services * 2 : 4;
            struct service_config *n = realloc(cfg->services, ncap * sizeof(*n));
            if (n == NULL) {
                load_error(ctx, "out of memory");
                return;
            }
            cfg->services = n;
            ctx->cap_services = ncap;
        }
        svc = &cfg->services[cfg->n_services++];
        memset(svc, 0, sizeof(*svc));
        snprintf(svc->name, sizeof(svc->name), "%s", sname);
        svc->line = ctx->line;
        apply_defaults(ctx, SEC_SERVICE, svc);
        ctx->cur = svc;
        return;
    }
    load_error(ctx, "unknown section [%s] (expected [daemon] or [service NAME])", name);
}

/* The reader inih calls for each line: fgets with line counting, over-long line detection and
 * section tracking. Returning NULL ends the parse. */
static char *reader(char *str, int num, void *stream)
{
    struct load_ctx *ctx = stream;
    char *p;
    size_t n;
    if (ctx->failed)
        return NULL;
    if (fgets(str, num, ctx->fp) == NULL)
        return NULL;
    ctx->line++;
    n = strlen(str);
    if (n == (size_t)num - 1 && str[n - 1] != '\n') {
        int c = fgetc(ctx->fp);
        if (c != EOF) {
            load_error(ctx,
                       "line longer than %d characters (continue a measurement on an indented "
                       "line)",
                       LINE_MAX_BYTES - 2);
            return NULL;
        }
    }
    /* Control characters have no business in a configuration file; a CR is allowed only as
     * part of a CRLF line ending. */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)str[i];
        bool crlf = c == '\r' && i + 2 == n && str[i + 1] == '\n';
        if (c < 0x20 && c != '\t' && c != '\n' && !crlf) {
            load_error(ctx, "control character 0x%02x in line", c);
            return NULL;
        }
    }
    ctx->continuation = (str[0] == ' ' || str[0] == '\t');
    for (p = str; *p == ' ' || *p == '\t'; p++)
        ;
    if (*p == '[') {
        char name[LINE_MAX_BYTES];
        char *close = strchr(p, ']');
        size_t len;
        if (close == NULL) {
            load_error(ctx, "section header without ']'");
            return NULL;
        }
        len = (size_t)(close - p - 1);
        memcpy(name, p + 1, len);
        name[len] = '\0';
        begin_section(ctx, name);
        if (ctx->failed)
            return NULL;
    }
    return str;
}

static const struct key_def *find_key(enum section_kind sec, const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        if (keys[i].section == sec && strcmp(keys[i].name, name) == 0)
            return &keys[i];
    }
    return NULL;
}

/* One flag byte per key per section instance: index = instance * N_KEYS + key. Instance 0 is
 * [daemon] (or [policy]); service i is instance i + 1. */
static bool mark_set(struct load_ctx *ctx, const struct key_def *k)
{
    size_t inst = ctx->cur ? (size_t)(ctx->cur - ctx->cfg->services) + 1 : 0;
    size_t idx = inst * N_KEYS + (size_t)(k - keys);
    if (idx >= ctx->set_flags_cap) {
        size_t ncap = (CONFIG_MAX_SERVICES + 1) * N_KEYS;
        if (ctx->set_flags == NULL) {
            ctx->set_flags = calloc(ncap, 1);
            ctx->set_flags_cap = ctx->set_flags ? ncap : 0;
        }
        if (idx >= ctx->set_flags_cap)
            return false;
    }
    if (ctx->set_flags[idx])
        return false;
    ctx->set_flags[idx] = 1;
    return true;
}

static bool was_set(const struct load_ctx *ctx, const struct service_config *svc, const char *name)
{
    const struct key_def *k = find_key(SEC_SERVICE, name);
    size_t inst = (size_t)(svc - ctx->cfg->services) + 1;
    size_t idx = inst * N_KEYS + (size_t)(k - keys);
    return ctx->set_flags != NULL && idx < ctx->set_flags_cap && ctx->set_flags[idx];
}

static int read_token_file(const char *path, char *out, size_t cap, char *why, size_t whycap)
{
    FILE *fp = fopen(path, "re");
    size_t n;
    int rc = 0;
    if (fp == NULL) {
        snprintf(why, whycap, "cannot read token file %s: %s", path, strerror(errno));
        return -errno;
    }
    if (fgets(out, (int)cap, fp) == NULL) {
        snprintf(why, whycap, "token file %s is empty", path);
        rc = -EINVAL;
        goto out_close;
    }
    n = strlen(out);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' '))
        out[--n] = '\0';
out_close:
    fclose(fp);
    return rc;
}

/* Stores `value` for key `k` into `base` (a daemon_config, service_config or policy). */
static int set_value(struct load_ctx *ctx, const struct key_def *k, void *base, const char *value,
                     char *why, size_t whycap)
{
    void *field = (char *)base + k->offset;
    uint64_t u = 0;
    int rc = 0;

    switch (k->type) {
    case T_BOOL:
        if (config_parse_bool(value, field) < 0) {
            snprintf(why, whycap, "expected yes or no");
            return -EINVAL;
        }
        return 0;
    case T_DURATION:
    case T_DURATION_S64:
        rc = config_parse_duration(value, &u);
        if (rc < 0) {
            snprintf(why, whycap, "expected a duration with a unit (250ms, 30s, 5m, 1h, 2d)");
            return rc;
        }
        break;
    case T_SIZE:
        rc = config_parse_size(value, &u);
        if (rc < 0) {
            snprintf(why, whycap, "expected a size (512, 64k, 1m, 2g)");
            return rc;
        }
        break;
    case T_U32: {
        const char *end;
        if (parse_u64(value, &end, &u) < 0 || *end != '\0') {
            snprintf(why, whycap, "expected a whole number");
            return -EINVAL;
        }
        break;
    }
    case T_STRING:
        if (strlen(value) >= k->size) {
            snprintf(why, whycap, "value too long (at most %zu characters)", k->size - 1);
            return -EINVAL;
        }
        if (value[0] == '\0') {
            snprintf(why, whycap, "empty value (leave the key out instead)");
            return -EINVAL;
        }
        memcpy(field, value, strlen(value) + 1);
        return 0;
    case T_TOKEN_FILE: {
        struct service_config *svc = base;
        if (strlen(value) >= k->size) {
            snprintf(why, whycap, "path too long");
            return -EINVAL;
        }
        memcpy(field, value, strlen(value) + 1);
        return read_token_file(value, svc->token, sizeof(svc->token), why, whycap);
    }
    case T_LISTEN: {
        struct service_config *svc = base;
        if (svc->n_listen == CONFIG_MAX_LISTEN) {
            snprintf(why, whycap, "at most %d listen addresses", CONFIG_MAX_LISTEN);
            return -EINVAL;
        }
        if (config_parse_listen(value, &svc->listen[svc->n_listen]) < 0) {
            snprintf(why, whycap,
                     "expected IP:PORT, [IPv6]:PORT or unix:/absolute/path (under 108 bytes)");
            return -EINVAL;
        }
        svc->n_listen++;
        return 0;
    }
    case T_ADMIN: {
        struct daemon_config *d = base;
        if (config_parse_listen(value, &d->admin) < 0) {
            snprintf(why, whycap, "expected IP:PORT, [IPv6]:PORT or unix:/absolute/path");
            return -EINVAL;
        }
        if (!config_listen_is_loopback(&d->admin)) {
            snprintf(why, whycap, "the admin listener must be on loopback or a Unix socket");
            return -EINVAL;
        }
        d->admin_enabled = true;
        return 0;
    }
    case T_HOSTS: {
        struct service_config *svc = base;
        const char *p = value;
        svc->n_allowed_hosts = 0;
        while (*p) {
            size_t n;
            while (*p == ' ' || *p == ',')
                p++;
            if (*p == '\0')
                break;
            n = strcspn(p, " ,");
            if (svc->n_allowed_hosts == CONFIG_MAX_HOSTS || n >= CONFIG_HOST_MAX) {
                snprintf(why, whycap, "at most %d hosts of %d characters", CONFIG_MAX_HOSTS,
                         CONFIG_HOST_MAX - 1);
                return -EINVAL;
            }
            for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)p[i];
                if (!(isalnum(c) || c == '-' || c == '.' || c == ':' || c == '[' || c == ']')) {
                    snprintf(why, whycap, "invalid character in host name");
                    return -EINVAL;
                }
            }
            memcpy(svc->allowed_hosts[svc->n_allowed_hosts], p, n);
            svc->allowed_hosts[svc->n_allowed_hosts][n] = '\0';
            svc->n_allowed_hosts++;
            p += n;
        }
        if (svc->n_allowed_hosts == 0) {
            snprintf(why, whycap, "empty host list");
            return -EINVAL;
        }
        return 0;
    }
    case T_MODE: {
        uint64_t m = 0;
        const char *p = value;
        if (*p == '\0' || strlen(p) > 4) {
            snprintf(why, whycap, "expected octal permission bits such as 0660");
            return -EINVAL;
        }
        for (; *p; p++) {
            if (*p < '0' || *p > '7') {
                snprintf(why, whycap, "expected octal permission bits such as 0660");
                return -EINVAL;
            }
            m = m * 8 + (uint64_t)(*p - '0');
        }
        if (m > 0777) {
            snprintf(why, whycap, "permission bits above 0777");
            return -EINVAL;
        }
        *(unsigned *)field = (unsigned)m;
        return 0;
    }
    case T_LOG_LEVEL:
        if (log_parse_level(value, field) < 0) {
            snprintf(why, whycap, "expected debug, info, warn or error");
            return -EINVAL;
        }
        return 0;
    case T_LOG_FORMAT:
        if (log_parse_format(value, field) < 0) {
            snprintf(why, whycap, "expected logfmt or json");
            return -EINVAL;
        }
        return 0;
    case T_PROFILE:
        if (config_parse_profile(value, field) < 0) {
            snprintf(why, whycap, "expected native, nitriding, blindai or evervault");
            return -EINVAL;
        }
        return 0;
    case T_BINDING:
        if (config_parse_binding(value, field) < 0) {
            snprintf(why, whycap,
                     "expected spki_sha256, public_key_spki, spki_der, cert_sha256, "
                     "nitriding or blindai");
            return -EINVAL;
        }
        return 0;
    case T_NONCE:
        if (strcmp(value, "query") == 0)
            *(enum nonce_placement *)field = NONCE_QUERY;
        else if (strcmp(value, "none") == 0)
            *(enum nonce_placement *)field = NONCE_NONE;
        else {
            snprintf(why, whycap, "expected query or none");
            return -EINVAL;
        }
        return 0;
    case T_UPSTREAM: {
        struct service_config *svc = base;
        if (split_host_port(value, svc->upstream_host, sizeof(svc->upstream_host),
                            &svc->upstream_port) < 0) {
            snprintf(why, whycap, "expected HOST:PORT or [IPv6]:PORT");
            return -EINVAL;
        }
        for (const char *p = svc->upstream_host; *p; p++) {
            unsigned char c = (unsigned char)*p;
            if (!(isalnum(c) || c == '-' || c == '.' || c == ':' || c == '_')) {
                snprintf(why, whycap, "invalid character in upstream host");
                return -EINVAL;
            }
        }
        return 0;
    }
    case T_MEASUREMENT: {
        struct policy *pol = field;
        if (pol->n_sets == POLICY_MAX_SETS) {
            snprintf(why, whycap, "at most %d measurement sets", POLICY_MAX_SETS);
            return -EINVAL;
        }
        memset(&pol->sets[pol->n_sets], 0, sizeof(pol->sets[0]));
        rc = measurement_add(value, &pol->sets[pol->n_sets], why, whycap);
        if (rc < 0)
            return rc;
        if (pol->sets[pol->n_sets].mask == 0) {
            snprintf(why, whycap, "empty measurement set");
            return -EINVAL;
        }
        pol->n_sets++;
        return 0;
    }
    }

    /* Numeric types land here for the range check. */
    if (u < k->min || u > k->max) {
        snprintf(why, whycap, "out of range (%" PRIu64 "..%" PRIu64 ")", k->min, k->max);
        return -ERANGE;
    }
    if (k->size == sizeof(uint32_t)) {
        if (u > UINT32_MAX) {
            snprintf(why, whycap, "out of range");
            return -ERANGE;
        }
        *(uint32_t *)field = (uint32_t)u;
    } else if (k->type == T_DURATION_S64)
        *(int64_t *)field = (int64_t)u;
    else
        *(uint64_t *)field = u;
    return 0;
}

static void apply_defaults(struct load_ctx *ctx, enum section_kind sec, void *base)
{
    char why[160];
    for (size_t i = 0; i < N_KEYS; i++) {
        if (keys[i].section != sec || keys[i].def == NULL)
            continue;
        /* Defaults are compiled in and covered by the unit tests; a failure is a bug. */
        if (set_value(ctx, &keys[i], base, keys[i].def, why, sizeof(why)) < 0)
            load_error(ctx, "internal error: default of %s: %s", keys[i].name, why);
    }
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    struct load_ctx *ctx = user;
    const struct key_def *k;
    enum section_kind sec;
    void *base;
    char why[200];

    if (ctx->failed)
        return 0;
    if (ctx->policy_only) {
        if (!ctx->in_policy_section) {
            load_error(ctx, "key '%s' outside the [policy] section", name);
            return 0;
        }
        sec = SEC_POLICY;
        base = ctx->policy;
    } else if (ctx->in_daemon) {
        sec = SEC_DAEMON;
        base = &ctx->cfg->daemon;
    } else if (ctx->cur != NULL) {
        sec = SEC_SERVICE;
        base = ctx->cur;
    } else {
        load_error(ctx, "key '%s' outside a section", name);
        return 0;
    }
    (void)section;

    /* An indented line continues the previous key. Only a measurement set may continue; for
     * any other key it is an error rather than a silently merged value. */
    if (ctx->continuation && ctx->last_key != NULL && strcmp(ctx->last_key->name, name) == 0) {
        if (ctx->last_key->type == T_MEASUREMENT) {
            struct policy *pol = (struct policy *)((char *)base + ctx->last_key->offset);
            if (measurement_add(value, &pol->sets[pol->n_sets - 1], why, sizeof(why)) < 0) {
                load_error(ctx, "%s: %s", name, why);
                return 0;
            }
            return 1;
        }
        load_error(ctx, "%s: only measurement values may continue on an indented line", name);
        return 0;
    }

    k = find_key(sec, name);
    if (k == NULL) {
        load_error(ctx, "unknown key '%s' in [%s]", name, section);
        return 0;
    }
    if (!mark_set(ctx, k) && !(k->flags & KEY_REPEAT)) {
        load_error(ctx, "duplicate key '%s'", name);
        return 0;
    }
    if (set_value(ctx, k, base, value, why, sizeof(why)) < 0) {
        load_error(ctx, "%s: %s", name, why);
        return 0;
    }
    ctx->last_key = k;
    return 1;
}

static int parse_file(struct load_ctx *ctx)
{
    int rc;
    ctx->fp = fopen(ctx->path, "re");
    if (ctx->fp == NULL) {
        int e = errno;
        snprintf(ctx->err, sizeof(ctx->err), "%s: %s", ctx->path, strerror(e));
        ctx->failed = true;
        return -e;
    }
    rc = ini_parse_stream(reader, ctx, handler, ctx);
    if (!ctx->failed && ferror(ctx->fp)) {
        snprintf(ctx->err, sizeof(ctx->err), "%s: read error", ctx->path);
        ctx->failed = true;
    }
    if (!ctx->failed && rc > 0) {
        /* inih found a line that is neither a section, a key = value pair nor a comment. */
        snprintf(ctx->err, sizeof(ctx->err), "%s:%d: syntax error (expected key = value)",
                 ctx->path, rc);
        ctx->failed = true;
    }
    fclose(ctx->fp);
    ctx->fp = NULL;
    return ctx->failed ? -EINVAL : 0;
}

/* Cross-key validation of one service; `ctx->line` points at its header for messages. */
static void finish_service(struct load_ctx *ctx, struct service_config *svc)
{
    char why[CONFIG_ERROR_MAX];
    unsigned char addr[sizeof(struct in6_addr)];
    const struct profile_preset *pr = &profiles[svc->profile];

    ctx->line = svc->line;
    if (svc->n_listen == 0) {
        load_error(ctx, "service '%s': missing required key 'listen'", svc->name);
        return;
    }
    if (svc->upstream_host[0] == '\0') {
        load_error(ctx, "service '%s': missing required key 'upstream'", svc->name);
        return;
    }
    {
        bool v6 = strchr(svc->upstream_host, ':') != NULL;
        if (svc->upstream_port == 443)
            snprintf(svc->upstream_authority, sizeof(svc->upstream_authority),
                     v6 ? "[%s]" : "%s", svc->upstream_host);
        else
            snprintf(svc->upstream_authority, sizeof(svc->upstream_authority),
                     v6 ? "[%s]:%u" : "%s:%u", svc->upstream_host, svc->upstream_port);
    }

    /* Profile presets fill what the service did not set explicitly. */
    if (!was_set(ctx, svc, "evidence_path"))
        snprintf(svc->evidence_path, sizeof(svc->evidence_path), "%s", pr->path);
    if (!was_set(ctx, svc, "nonce"))
        svc->nonce = pr->nonce;
    if (!was_set(ctx, svc, "nonce_bytes"))
        svc->nonce_bytes = svc->nonce == NONCE_QUERY ? (pr->nonce_bytes ? pr->nonce_bytes : 32) : 0;
    if (!was_set(ctx, svc, "binding"))
        svc->binding = pr->binding;
    if (svc->nonce == NONCE_NONE && was_set(ctx, svc, "nonce_bytes")) {
        load_error(ctx, "service '%s': nonce_bytes is set but nonce = none", svc->name);
        return;
    }
    if (svc->evidence_path[0] != '/' || strpbrk(svc->evidence_path, " \t\r\n?#") != NULL) {
        load_error(ctx,
                   "service '%s': evidence_path must start with '/' and hold no spaces, "
                   "'?' or '#'",
                   svc->name);
        return;
    }

    if (svc->sni[0] == '\0' && inet_pton(AF_INET, svc->upstream_host, addr) != 1 &&
        inet_pton(AF_INET6, svc->upstream_host, addr) != 1)
        snprintf(svc->sni, sizeof(svc->sni), "%s", svc->upstream_host);

    /* Token rules: one source, long enough to resist guessing. */
    if (was_set(ctx, svc, "token") && was_set(ctx, svc, "token_file")) {
        load_error(ctx, "service '%s': set token or token_file, not both", svc->name);
        return;
    }
    if (svc->token[0] != '\0' && strlen(svc->token) < TOKEN_MIN_LEN) {
        load_error(ctx, "service '%s': token must be at least %d characters", svc->name,
                   TOKEN_MIN_LEN);
        return;
    }
    for (size_t i = 0; i < svc->n_listen; i++) {
        if (config_listen_is_loopback(&svc->listen[i]))
            continue;
        if (!svc->allow_remote) {
            load_error(ctx,
                       "service '%s': listen %s is not loopback; set allow_remote = yes and a "
                       "token to expose it",
                       svc->name, svc->listen[i].host);
            return;
        }
        if (svc->token[0] == '\0') {
            load_error(ctx, "service '%s': a non-loopback listener requires token or token_file",
                       svc->name);
            return;
        }
    }

    /* Policy: inline or from a file, never both, never empty. */
    if (svc->policy_file[0] != '\0') {
        if (svc->policy.n_sets > 0 || was_set(ctx, svc, "allow_debug")) {
            load_error(ctx,
                       "service '%s': policy_file replaces inline measurement and allow_debug; "
                       "set one or the other",
                       svc->name);
            return;
        }
        if (config_load_policy_file(svc->policy_file, &svc->policy, why, sizeof(why)) < 0) {
            /* The policy file's own file:line message is the useful one. */
            snprintf(ctx->err, sizeof(ctx->err), "%s", why);
            ctx->failed = true;
            return;
        }
    } else if (svc->policy.n_sets == 0) {
        load_error(ctx,
                   "service '%s': empty policy: add at least one 'measurement' (or policy_file)",
                   svc->name);
        return;
    }
    if (svc->refresh_before_ms >= svc->attestation_ttl_ms) {
        load_error(ctx, "service '%s': refresh_before must be shorter than attestation_ttl",
                   svc->name);
        return;
    }
}

int config_load(const char *path, struct config **out, char *err, size_t cap)
{
    struct load_ctx ctx;
    struct config *cfg;
    int rc = 0;

    *out = NULL;
    memset(&ctx, 0, sizeof(ctx));
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        snprintf(err, cap, "out of memory");
        return -ENOMEM;
    }
    snprintf(cfg->path, sizeof(cfg->path), "%s", path);
    ctx.path = path;
    ctx.cfg = cfg;
    apply_defaults(&ctx, SEC_DAEMON, &cfg->daemon);

    rc = parse_file(&ctx);
    if (rc < 0)
        goto out_fail;
    if (cfg->n_services == 0) {
        ctx.line = ctx.line > 0 ? ctx.line : 1;
        load_error(&ctx, "no [service NAME] section: nothing to proxy");
        rc = -EINVAL;
        goto out_fail;
    }
    for (size_t i = 0; i < cfg->n_services && !ctx.failed; i++)
        finish_service(&ctx, &cfg->services[i]);
    if (ctx.failed) {
        rc = -EINVAL;
        goto out_fail;
    }
    free(ctx.set_flags);
    *out = cfg;
    return 0;

out_fail:
    snprintf(err, cap, "%s", ctx.err);
    free(ctx.set_flags);
    config_free(cfg);
    return rc;
}

int config_load_policy_file(const char *path, struct policy *policy, char *err, size_t cap)
{
    struct load_ctx ctx;
    struct policy fresh;
    int rc;

    memset(&ctx, 0, sizeof(ctx));
    memset(&fresh, 0, sizeof(fresh));
    fresh.max_age_ms = policy->max_age_ms;
    fresh.skew_ms = policy->skew_ms;
    ctx.path = path;
    ctx.policy_only = true;
    ctx.policy = &fresh;
    rc = parse_file(&ctx);
    if (rc == 0 && !ctx.policy_seen) {
        ctx.line = 1;
        load_error(&ctx, "no [policy] section");
        rc = -EINVAL;
    }
    if (rc == 0 && fresh.n_sets == 0) {
        load_error(&ctx, "empty policy: add at least one 'measurement'");
        rc = -EINVAL;
    }
    free(ctx.set_flags);
    if (rc < 0) {
        snprintf(err, cap, "%s", ctx.err);
        return rc;
    }
    *policy = fresh;
    return 0;
}

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->n_services; i++)
        OPENSSL_cleanse(cfg->services[i].token, sizeof(cfg->services[i].token));
    free(cfg->services);
    free(cfg);
}

const struct service_config *config_find_service(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_services; i++) {
        if (strcmp(cfg->services[i].name, name) == 0)
            return &cfg->services[i];
    }
    return NULL;
}

/* ---- Printing ------------------------------------------------------------------------------- */

static void print_duration(FILE *out, uint64_t ms)
{
    static const struct {
        const char *suffix;
        uint64_t mult;
    } units[] = {{"d", DAY}, {"h", HOUR}, {"m", MIN}, {"s", SEC}, {"ms", 1}};
    if (ms == 0) {
        fputs("0", out);
        return;
    }
    for (unsigned i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms % units[i].mult == 0) {
            fprintf(out, "%" PRIu64 "%s", ms / units[i].mult, units[i].suffix);
            return;
        }
    }
}

static void print_size(FILE *out, uint64_t b)
{
    if (b != 0 && b % GIB == 0)
        fprintf(out, "%" PRIu64 "g", b / GIB);
    else if (b != 0 && b % MIB == 0)
        fprintf(out, "%" PRIu64 "m", b / MIB);
    else if (b != 0 && b % KIB == 0)
        fprintf(out, "%" PRIu64 "k", b / KIB);
    else
        fprintf(out, "%" PRIu64, b);
}

static void print_listen(FILE *out, const struct listen_addr *a)
{
    if (a->is_unix)
        fprintf(out, "unix:%s", a->path);
    else if (strchr(a->host, ':') != NULL)
        fprintf(out, "[%s]:%u", a->host, a->port);
    else
        fprintf(out, "%s:%u", a->host, a->port);
}

static void print_measurement(FILE *out, const struct measurement_set *set)
{
    bool first = true;
    for (unsigned i = 0; i < NITRO_PCR_COUNT; i++) {
        if (!(set->mask & (1u << i)))
            continue;
        /* Each PCR on its own line keeps every line within inih's limit, so the output can be
         * loaded back as it is. */
        fprintf(out, first ? "pcr%u=" : "\n    pcr%u=", i);
        for (unsigned j = 0; j < NITRO_PCR_LEN; j++)
            fprintf(out, "%02x", set->pcr[i][j]);
        first = false;
    }
}

static void print_key(FILE *out, const struct key_def *k, const void *base)
{
    const void *field = (const char *)base + k->offset;
    switch (k->type) {
    case T_BOOL:
        fprintf(out, "%s = %s\n", k->name, *(const bool *)field ? "yes" : "no");
        break;
    case T_DURATION:
        fprintf(out, "%s = ", k->name);
        print_duration(out, *(const uint64_t *)field);
        fputc('\n', out);
        break;
    case T_DURATION_S64:
        fprintf(out, "%s = ", k->name);
        print_duration(out, (uint64_t) * (const int64_t *)field);
        fputc('\n', out);
        break;
    case T_SIZE:
        fprintf(out, "%s = ", k->name);
        print_size(out, k->size == sizeof(uint32_t) ? *(const uint32_t *)field
                                                    : *(const uint64_t *)field);
        fputc('\n', out);
        break;
    case T_U32:
        fprintf(out, "%s = %" PRIu32 "\n", k->name, *(const uint32_t *)field);
        break;
    case T_STRING:
        if (((const char *)field)[0] == '\0')
            fprintf(out, "# %s is not set\n", k->name);
        else if (k->flags & KEY_SECRET)
            fprintf(out, "%s = <redacted>\n", k->name);
        else
            fprintf(out, "%s = %s\n", k->name, (const char *)field);
        break;
    case T_TOKEN_FILE:
        if (((const char *)field)[0] != '\0')
            fprintf(out, "%s = %s\n", k->name, (const char *)field);
        break;
    case T_LISTEN: {
        const struct service_config *svc = base;
        for (size_t i = 0; i < svc->n_listen; i++) {
            fprintf(out, "%s = ", k->name);
            print_listen(out, &svc->listen[i]);
            fputc('\n', out);
        }
        break;
    }
    case T_ADMIN: {
        const struct daemon_config *d = base;
        if (!d->admin_enabled) {
            fprintf(out, "# %s is not set: no admin listener\n", k->name);
            break;
        }
        fprintf(out, "%s = ", k->name);
        print_listen(out, &d->admin);
        fputc('\n', out);
        break;
    }
    case T_HOSTS: {
        const struct service_config *svc = base;
        if (svc->n_allowed_hosts == 0) {
            fprintf(out, "# %s is not set: localhost 127.0.0.1 [::1] and the listen addresses\n",
                    k->name);
            break;
        }
        fprintf(out, "%s =", k->name);
        for (size_t i = 0; i < svc->n_allowed_hosts; i++)
            fprintf(out, " %s", svc->allowed_hosts[i]);
        fputc('\n', out);
        break;
    }
    case T_MODE:
        fprintf(out, "%s = %04o\n", k->name, *(const unsigned *)field);
        break;
    case T_LOG_LEVEL:
        fprintf(out, "%s = %s\n", k->name, log_level_name(*(const enum log_level *)field));
        break;
    case T_LOG_FORMAT:
        fprintf(out, "%s = %s\n", k->name, log_format_name(*(const enum log_format *)field));
        break;
    case T_PROFILE:
        fprintf(out, "%s = %s\n", k->name,
                config_profile_name(*(const enum evidence_profile *)field));
        break;
    case T_BINDING:
        fprintf(out, "%s = %s\n", k->name, config_binding_name(*(const enum binding_mode *)field));
        break;
    case T_NONCE:
        fprintf(out, "%s = %s\n", k->name,
                *(const enum nonce_placement *)field == NONCE_QUERY ? "query" : "none");
        break;
    case T_UPSTREAM: {
        const struct service_config *svc = base;
        if (strchr(svc->upstream_host, ':') != NULL)
            fprintf(out, "%s = [%s]:%u\n", k->name, svc->upstream_host, svc->upstream_port);
        else
            fprintf(out, "%s = %s:%u\n", k->name, svc->upstream_host, svc->upstream_port);
        break;
    }
    case T_MEASUREMENT: {
        const struct service_config *svc = base;
        if (svc->policy_file[0] != '\0') {
            fprintf(out, "# %zu measurement set(s) from policy_file\n", svc->policy.n_sets);
            break;
        }
        for (size_t i = 0; i < svc->policy.n_sets; i++) {
            fprintf(out, "%s = ", k->name);
            print_measurement(out, &svc->policy.sets[i]);
            fputc('\n', out);
        }
        break;
    }
    }
}

size_t config_warnings(const struct config *cfg,
                       void (*emit)(void *arg, const char *service, const char *msg), void *arg)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_services; i++) {
        const struct policy *pol = &cfg->services[i].policy;
        for (size_t k = 0; k < pol->n_sets; k++) {
            char msg[160];
            if (pol->sets[k].mask & 1u)
                continue;
            snprintf(msg, sizeof(msg),
                     "measurement set %zu names no pcr0: any enclave image whose other PCRs "
                     "match is admitted",
                     k + 1);
            emit(arg, cfg->services[i].name, msg);
            n++;
        }
        if (cfg->daemon.ready_requires_attestation && !cfg->services[i].warm_attestation) {
            emit(arg, cfg->services[i].name,
                 "ready_requires_attestation = yes with warm_attestation = no: the daemon "
                 "becomes ready only after a request to this service was attested");
            n++;
        }
    }
    return n;
}

void config_print(const struct config *cfg, FILE *out)
{
    fprintf(out, "# effective configuration of %s\n[daemon]\n", cfg->path);
    for (size_t i = 0; i < N_KEYS; i++) {
        if (keys[i].section == SEC_DAEMON)
            print_key(out, &keys[i], &cfg->daemon);
    }
    for (size_t s = 0; s < cfg->n_services; s++) {
        const struct service_config *svc = &cfg->services[s];
        fprintf(out, "\n[service %s]\n", svc->name);
        for (size_t i = 0; i < N_KEYS; i++) {
            if (keys[i].section != SEC_SERVICE)
                continue;
            /* allow_debug and measurement come from policy_file when one is set. */
            if (svc->policy_file[0] != '\0' && strcmp(keys[i].name, "allow_debug") == 0) {
                fprintf(out, "# allow_debug = %s (from policy_file)\n",
                        svc->policy.allow_debug ? "yes" : "no");
                continue;
            }
            if (keys[i].type == T_U32 && strcmp(keys[i].name, "nonce_bytes") == 0 &&
                svc->nonce == NONCE_NONE) {
                fprintf(out, "# nonce_bytes: no nonce is sent\n");
                continue;
            }
            print_key(out, &keys[i], svc);
        }
    }
}

/* Writes the key table as Markdown; docs/configuration.md embeds this output
 * (scripts/gen-config-doc) and a unit test checks that the document and the table agree. */
void config_print_reference(FILE *out)
{
    static const char *const sec_names[] = {"[daemon]", "[service NAME]",
                                            "[policy] (in a policy_file)"};
    int last = -1;
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key_def *k = &keys[i];
        const char *def = k->def ? k->def : ((k->flags & KEY_REQUIRED) ? "required" : "unset");
        if ((int)k->section != last) {
            fprintf(out, "%s### %s\n\n| key | default | range | meaning |\n|---|---|---|---|\n",
                    last < 0 ? "" : "\n", sec_names[k->section]);
            last = (int)k->section;
        }
        fprintf(out, "| `%s` | %s%s%s | ", k->name, k->def ? "`" : "", def, k->def ? "`" : "");
        switch (k->type) {
        case T_DURATION:
        case T_DURATION_S64:
            print_duration(out, k->min);
            fputs(" .. ", out);
            print_duration(out, k->max);
            break;
        case T_SIZE:
            print_size(out, k->min);
            fputs(" .. ", out);
            if (k->max == UINT64_MAX)
                fputs("unlimited", out);
            else
                print_size(out, k->max);
            break;
        case T_U32:
            fprintf(out, "%" PRIu64 " .. %" PRIu64, k->min, k->max);
            break;
        default:
            fputs("", out);
            break;
        }
        fputs(" | ", out);
        /* A '|' inside a cell would end it. */
        for (const char *p = k->doc; *p; p++) {
            if (*p == '|')
                fputc('\\', out);
            fputc(*p, out);
        }
        fprintf(out, "%s |\n", (k->flags & KEY_REPEAT) ? " (repeatable)" : "");
    }
}
