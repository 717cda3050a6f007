/*
 * Configuration loading: inih drives the parse, the key table (config_keys.c) gives every key its
 * type, range, default and documentation, config_values.c turns each value into its field, and a
 * final pass here validates what no single key can (required keys, profile presets, listen
 * safety, policy). Printing is in config_print.c.
 *
 * inih is fed through our own line reader. That reader counts lines (inih's handler does not
 * receive line numbers in Debian's build), sees section headers (to detect duplicate services
 * and create empty ones), marks continuation lines (so one measurement set can span lines) and
 * refuses lines longer than inih's 200-byte buffer instead of letting inih split them silently.
 */
#include "base/config_internal.h"
#include "base/file.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>
#include <openssl/crypto.h>

/* inih's fixed line buffer (INI_MAX_LINE in <ini.h>); a longer line is an error. */
#define LINE_MAX_BYTES 200
#define TOKEN_MIN_LEN  16

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
/* One flag byte per key per section instance: index = instance * config__n_keys + key. Instance 0
 * is [daemon] (or [policy]); service i is instance i + 1. */
static bool mark_set(struct load_ctx *ctx, const struct key_def *k)
{
    size_t inst = ctx->cur ? (size_t)(ctx->cur - ctx->cfg->services) + 1 : 0;
    size_t idx = inst * config__n_keys + (size_t)(k - config__keys);
    if (idx >= ctx->set_flags_cap) {
        size_t ncap = (CONFIG_MAX_SERVICES + 1) * config__n_keys;
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
    const struct key_def *k = config__find_key(SEC_SERVICE, name);
    size_t inst = (size_t)(svc - ctx->cfg->services) + 1;
    size_t idx = inst * config__n_keys + (size_t)(k - config__keys);
    return ctx->set_flags != NULL && idx < ctx->set_flags_cap && ctx->set_flags[idx];
}
static void apply_defaults(struct load_ctx *ctx, enum section_kind sec, void *base)
{
    char why[160];
    for (size_t i = 0; i < config__n_keys; i++) {
        if (config__keys[i].section != sec || config__keys[i].def == NULL)
            continue;
        /* Defaults are compiled in and covered by the unit tests; a failure is a bug. */
        if (config__set_value(&config__keys[i], base, config__keys[i].def, why, sizeof(why)) < 0)
            load_error(ctx, "internal error: default of %s: %s", config__keys[i].name, why);
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
            if (config__measurement_add(value, &pol->sets[pol->n_sets - 1], why, sizeof(why)) < 0) {
                load_error(ctx, "%s: %s", name, why);
                return 0;
            }
            return 1;
        }
        load_error(ctx, "%s: only measurement values may continue on an indented line", name);
        return 0;
    }

    k = config__find_key(sec, name);
    if (k == NULL) {
        load_error(ctx, "unknown key '%s' in [%s]", name, section);
        return 0;
    }
    if (!mark_set(ctx, k) && !(k->flags & KEY_REPEAT)) {
        load_error(ctx, "duplicate key '%s'", name);
        return 0;
    }
    if (config__set_value(k, base, value, why, sizeof(why)) < 0) {
        load_error(ctx, "%s: %s", name, why);
        return 0;
    }
    ctx->last_key = k;
    return 1;
}

static int parse_file(struct load_ctx *ctx)
{
    int rc;
    ctx->fp = file_fopen_regular(ctx->path);
    if (ctx->fp == NULL) {
        int e = errno;
        snprintf(ctx->err, sizeof(ctx->err), "%s: %s", ctx->path, file_strerror(e));
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
    const struct profile_preset *pr = &config__profiles[svc->profile];

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
            snprintf(svc->upstream_authority, sizeof(svc->upstream_authority), v6 ? "[%s]" : "%s",
                     svc->upstream_host);
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
        svc->nonce_bytes = svc->nonce != NONCE_NONE ? (pr->nonce_bytes ? pr->nonce_bytes : 32) : 0;
    if (!was_set(ctx, svc, "binding"))
        svc->binding = pr->binding;
    if (svc->nonce == NONCE_NONE && was_set(ctx, svc, "nonce_bytes")) {
        load_error(ctx, "service '%s': nonce_bytes is set but nonce = none", svc->name);
        return;
    }
    if (svc->nonce == NONCE_SESSION && svc->binding != BINDING_SPKI_SHA256) {
        load_error(ctx,
                   "service '%s': nonce = session binds the TLS session into user_data with the "
                   "key's SHA-256: binding must be spki_sha256",
                   svc->name);
        return;
    }
    if (svc->nonce == NONCE_SESSION && svc->nonce_bytes != 32) {
        load_error(ctx,
                   "service '%s': nonce = session sends a 32-byte session_nonce "
                   "(docs/evidence-protocol.md §12): nonce_bytes must be 32",
                   svc->name);
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

    /* Policy: inline, from a file or from a signed bundle, only one, never empty. A bundle is
     * read, verified and applied by the daemon (app/bundles.c): this floor has no verifier. */
    if (svc->policy_bundle[0] != '\0') {
        if (svc->policy_file[0] != '\0' || svc->policy.n_sets > 0 ||
            was_set(ctx, svc, "allow_debug")) {
            load_error(ctx,
                       "service '%s': policy_bundle replaces policy_file, inline measurement and "
                       "allow_debug; set one or the other",
                       svc->name);
            return;
        }
        /* No policy_key at all is allowed here: it is how the last key is revoked on a running
         * daemon (app/bundles.c). At start, or in check-config, the bundle is then refused
         * (unknown_key) and the service does not start. */
    } else if (svc->policy_file[0] != '\0') {
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
    if (svc->upstream_proxy_credentials[0] != '\0' && svc->upstream_proxy_host[0] == '\0') {
        load_error(ctx, "service '%s': upstream_proxy_credentials is set but upstream_proxy is not",
                   svc->name);
        return;
    }
    if (svc->refresh_before_ms >= svc->attestation_ttl_ms) {
        load_error(ctx, "service '%s': refresh_before must be shorter than attestation_ttl",
                   svc->name);
        return;
    }
}

/* One address, one listener: two services (or a service and the admin API) on addresses that
 * clash (the same one, a wildcard and an address of its port, a Unix path written two ways)
 * could not both bind at start, and on a reload the second would take over the first's. */
static void check_addresses_distinct(struct load_ctx *ctx)
{
    const struct config *cfg = ctx->cfg;
    char desc[CONFIG_PATH_MAX + 16];
    for (size_t i = 0; i < cfg->n_services; i++) {
        const struct service_config *a = &cfg->services[i];
        for (size_t j = 0; j < a->n_listen; j++) {
            config_listen_describe(&a->listen[j], desc, sizeof(desc));
            ctx->line = a->line;
            if (cfg->daemon.admin_enabled &&
                config_listen_clash(&a->listen[j], &cfg->daemon.admin)) {
                load_error(ctx, "service '%s': listen %s is also admin_listen", a->name, desc);
                return;
            }
            for (size_t k = i; k < cfg->n_services; k++) {
                const struct service_config *b = &cfg->services[k];
                for (size_t m = k == i ? j + 1 : 0; m < b->n_listen; m++) {
                    if (!config_listen_clash(&a->listen[j], &b->listen[m]))
                        continue;
                    ctx->line = b->line;
                    load_error(ctx,
                               "service '%s': listen %s is also a listen address of service '%s'",
                               b->name, desc, a->name);
                    return;
                }
            }
        }
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
    if (!ctx.failed)
        check_addresses_distinct(&ctx);
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
    for (size_t i = 0; i < cfg->n_services; i++) {
        OPENSSL_cleanse(cfg->services[i].token, sizeof(cfg->services[i].token));
        OPENSSL_cleanse(cfg->services[i].upstream_proxy_auth,
                        sizeof(cfg->services[i].upstream_proxy_auth));
    }
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
