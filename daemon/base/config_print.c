/*
 * The configuration printed back: `check-config` writes the effective configuration in the
 * file's own INI syntax (config_print(), defaults filled in, secrets redacted), and
 * `check-config --reference` the key table as Markdown (config_print_reference(), embedded in
 * docs/configuration.md by scripts/gen-config-doc). Both walk config__keys in its order.
 */
#include "base/config_internal.h"

#include <inttypes.h>
#include <string.h>

#include <openssl/evp.h>

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
    case T_PROXY_URL: {
        const struct service_config *svc = base;
        if (svc->upstream_proxy_host[0] == '\0')
            fprintf(out, "# %s is not set: direct connections\n", k->name);
        else if (strchr(svc->upstream_proxy_host, ':') != NULL)
            fprintf(out, "%s = http://[%s]:%u\n", k->name, svc->upstream_proxy_host,
                    svc->upstream_proxy_port);
        else
            fprintf(out, "%s = http://%s:%u\n", k->name, svc->upstream_proxy_host,
                    svc->upstream_proxy_port);
        break;
    }
    case T_PROXY_CREDENTIALS:
        /* The file's name only: its content is a secret. */
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
    case T_UPGRADE:
        fprintf(out, "%s = %s\n", k->name, *(const bool *)field ? "websocket" : "none");
        break;
    case T_ORIGINS: {
        const struct service_config *svc = base;
        if (svc->n_allowed_origins == 0) {
            fprintf(out, "# %s is not set: only http://<Host of the request>\n", k->name);
            break;
        }
        fprintf(out, "%s =", k->name);
        for (size_t i = 0; i < svc->n_allowed_origins; i++)
            fprintf(out, " %s", svc->allowed_origins[i]);
        fputc('\n', out);
        break;
    }
    case T_NONCE:
        fprintf(out, "%s = %s\n", k->name, config_nonce_name(*(const enum nonce_placement *)field));
        break;
    case T_UPSTREAM: {
        const struct service_config *svc = base;
        if (strchr(svc->upstream_host, ':') != NULL)
            fprintf(out, "%s = [%s]:%u\n", k->name, svc->upstream_host, svc->upstream_port);
        else
            fprintf(out, "%s = %s:%u\n", k->name, svc->upstream_host, svc->upstream_port);
        break;
    }
    case T_POLICY_KEY: {
        const struct daemon_config *d = base;
        if (d->n_policy_keys == 0)
            fprintf(out, "# %s is not set\n", k->name);
        for (size_t i = 0; i < d->n_policy_keys; i++) {
            char b64[48];
            EVP_EncodeBlock((unsigned char *)b64, d->policy_keys[i].pub, POLICY_KEY_LEN);
            fprintf(out, "%s = %s:%s\n", k->name, d->policy_keys[i].name, b64);
        }
        break;
    }
    case T_AUDIT_FSYNC:
        fprintf(out, "%s = %s\n", k->name,
                config_audit_fsync_name(*(const enum audit_fsync_mode *)field));
        break;
    case T_MEASUREMENT: {
        const struct service_config *svc = base;
        if (svc->policy_bundle[0] != '\0') {
            fprintf(out, "# measurement sets from policy_bundle\n");
            break;
        }
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

void config_print(const struct config *cfg, FILE *out)
{
    fprintf(out, "# effective configuration of %s\n[daemon]\n", cfg->path);
    for (size_t i = 0; i < config__n_keys; i++) {
        if (config__keys[i].section == SEC_DAEMON)
            print_key(out, &config__keys[i], &cfg->daemon);
    }
    for (size_t s = 0; s < cfg->n_services; s++) {
        const struct service_config *svc = &cfg->services[s];
        fprintf(out, "\n[service %s]\n", svc->name);
        for (size_t i = 0; i < config__n_keys; i++) {
            if (config__keys[i].section != SEC_SERVICE)
                continue;
            /* allow_debug and measurement come from policy_file when one is set. */
            if (svc->policy_bundle[0] != '\0' && strcmp(config__keys[i].name, "allow_debug") == 0) {
                fprintf(out, "# allow_debug from policy_bundle\n");
                continue;
            }
            if (svc->policy_file[0] != '\0' && strcmp(config__keys[i].name, "allow_debug") == 0) {
                fprintf(out, "# allow_debug = %s (from policy_file)\n",
                        svc->policy.allow_debug ? "yes" : "no");
                continue;
            }
            if (config__keys[i].type == T_U32 && strcmp(config__keys[i].name, "nonce_bytes") == 0 &&
                svc->nonce == NONCE_NONE) {
                fprintf(out, "# nonce_bytes: no nonce is sent\n");
                continue;
            }
            print_key(out, &config__keys[i], svc);
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
    for (size_t i = 0; i < config__n_keys; i++) {
        const struct key_def *k = &config__keys[i];
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
