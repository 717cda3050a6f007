#include "enclave/enclave_config.h"

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <string.h>

#include "base/num.h"

struct load {
    struct enclave_config *cfg;
    char msg[CONFIG_ERROR_MAX];
    int line;
    bool seen_section, seen_app;
};

int enclave_parse_curve(const char *s, enum enclave_curve *out)
{
    if (strcmp(s, "P-384") == 0)
        *out = ENCLAVE_CURVE_P384;
    else if (strcmp(s, "P-256") == 0)
        *out = ENCLAVE_CURVE_P256;
    else
        return -EINVAL;
    return 0;
}

/* "N=HEX" with N in 0..15 and 96 hex digits. */
static int parse_test_pcr(const char *s, struct enclave_config *cfg)
{
    const char *eq = strchr(s, '=');
    uint64_t idx;
    char num[8];

    if (eq == NULL || eq == s || (size_t)(eq - s) >= sizeof(num) || strlen(eq + 1) != 96)
        return -EINVAL;
    memcpy(num, s, (size_t)(eq - s));
    num[eq - s] = '\0';
    if (num_parse_u64(num, &idx) < 0 || idx >= ENCLAVE_PCRS)
        return -EINVAL;
    for (size_t i = 0; i < ENCLAVE_PCR_LEN; i++) {
        int hi = config_hex_digit(eq[1 + 2 * i]), lo = config_hex_digit(eq[2 + 2 * i]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        cfg->test_pcrs[idx][i] = (uint8_t)(hi << 4 | lo);
    }
    cfg->test_pcr_mask |= 1u << idx;
    return 0;
}

static int set_duration(const char *v, uint64_t *out)
{
    uint64_t ms;
    if (config_parse_duration(v, &ms) < 0 || ms == 0 || ms > 24ull * 3600 * 1000)
        return -EINVAL;
    *out = ms;
    return 0;
}

static int set_value(struct load *l, const char *name, const char *v)
{
    struct enclave_config *c = l->cfg;
    uint64_t n;

    if (strcmp(name, "log_level") == 0)
        return log_parse_level(v, &c->log_level);
    if (strcmp(name, "log_format") == 0)
        return log_parse_format(v, &c->log_format);
    if (strcmp(name, "vsock_port") == 0) {
        if (num_parse_u64(v, &n) < 0 || n == 0 || n > UINT32_MAX - 1)
            return -EINVAL;
        c->vsock_port = (uint32_t)n;
        c->listen_vsock = true;
        return 0;
    }
    if (strcmp(name, "listen") == 0) {
        if (config_parse_listen(v, &c->listen) < 0 || c->listen.is_unix)
            return -EINVAL;
        c->listen_tcp = true;
        return 0;
    }
    if (strcmp(name, "app") == 0) {
        l->seen_app = true;
        return config_parse_listen(v, &c->app) < 0 || c->app.is_unix || c->app.port == 0 ? -EINVAL
                                                                                         : 0;
    }
    if (strcmp(name, "nsm") == 0) {
        if (v[0] == '\0' || strlen(v) >= sizeof(c->nsm) ||
            (v[0] != '/' && strncmp(v, "test:", 5) != 0) || strcmp(v, "test:") == 0)
            return -EINVAL;
        memcpy(c->nsm, v, strlen(v) + 1);
        return 0;
    }
    if (strcmp(name, "key_curve") == 0)
        return enclave_parse_curve(v, &c->curve);
    if (strcmp(name, "max_header_bytes") == 0) {
        if (config_parse_size(v, &n) < 0 || n < 1024 || n > 1024 * 1024)
            return -EINVAL;
        c->max_header_bytes = n;
        return 0;
    }
    if (strcmp(name, "max_headers") == 0) {
        if (num_parse_u64(v, &n) < 0 || n < 1 || n > 1000)
            return -EINVAL;
        c->max_headers = (uint32_t)n;
        return 0;
    }
    if (strcmp(name, "max_body_size") == 0)
        return config_parse_size(v, &c->max_body_size);
    if (strcmp(name, "max_connections") == 0) {
        if (num_parse_u64(v, &n) < 0 || n < 1 || n > 65536)
            return -EINVAL;
        c->max_connections = (uint32_t)n;
        return 0;
    }
    if (strcmp(name, "header_timeout") == 0)
        return set_duration(v, &c->header_timeout_ms);
    if (strcmp(name, "idle_timeout") == 0)
        return set_duration(v, &c->idle_timeout_ms);
    if (strcmp(name, "connect_timeout") == 0)
        return set_duration(v, &c->connect_timeout_ms);
    if (strcmp(name, "response_timeout") == 0)
        return set_duration(v, &c->response_timeout_ms);
    if (strcmp(name, "stream_idle_timeout") == 0)
        return set_duration(v, &c->stream_idle_timeout_ms);
    if (strcmp(name, "test_pcr") == 0)
        return parse_test_pcr(v, c);
    return -ENOENT;
}

static int handler(void *arg, const char *section, const char *name, const char *value)
{
    struct load *l = arg;
    int rc;

    if (name == NULL) { /* a section header */
        if (strcmp(section, "enclave") != 0) {
            snprintf(l->msg, sizeof(l->msg), "unknown section [%s] (only [enclave])", section);
            return 0;
        }
        l->seen_section = true;
        return 1;
    }
    if (strcmp(section, "enclave") != 0) {
        snprintf(l->msg, sizeof(l->msg), "%s: keys belong to the [enclave] section", name);
        return 0;
    }
    rc = set_value(l, name, value);
    if (rc == -ENOENT)
        snprintf(l->msg, sizeof(l->msg), "unknown key %s", name);
    else if (rc < 0)
        snprintf(l->msg, sizeof(l->msg), "%s: invalid value \"%s\"", name, value);
    return rc == 0;
}

static void defaults(struct enclave_config *c)
{
    memset(c, 0, sizeof(*c));
    c->log_level = LOG_LEVEL_INFO;
    c->log_format = LOG_FORMAT_LOGFMT;
    memcpy(c->nsm, "/dev/nsm", sizeof("/dev/nsm"));
    c->curve = ENCLAVE_CURVE_P384;
    c->max_header_bytes = 64 * 1024;
    c->max_headers = 100;
    c->max_body_size = 100ull * 1024 * 1024;
    c->header_timeout_ms = 10 * 1000;
    c->idle_timeout_ms = 60 * 1000;
    c->connect_timeout_ms = 5 * 1000;
    c->response_timeout_ms = 60 * 1000;
    c->stream_idle_timeout_ms = 60 * 1000;
    c->max_connections = 1024;
}

int enclave_config_load(const char *path, struct enclave_config *out, char *err, size_t cap)
{
    struct load l = {.cfg = out};
    FILE *f;
    int rc;

    defaults(out);
    if (strlen(path) >= sizeof(out->path)) {
        snprintf(err, cap, "%s: path too long", path);
        return -EINVAL;
    }
    memcpy(out->path, path, strlen(path) + 1);
    f = fopen(path, "r");
    if (f == NULL) {
        rc = -errno;
        snprintf(err, cap, "%s: %s", path, strerror(errno));
        return rc;
    }
    rc = ini_parse_file(f, handler, &l);
    fclose(f);
    if (rc != 0) {
        snprintf(err, cap, "%s:%d: %s", path, rc,
                 l.msg[0] ? l.msg : "syntax error (want key = value under [enclave])");
        return -EINVAL;
    }
    if (!l.seen_app) {
        snprintf(err, cap, "%s: app is required (the application's host:port)", path);
        return -EINVAL;
    }
    if (!out->listen_vsock && !out->listen_tcp) {
        snprintf(err, cap, "%s: nothing to listen on (set vsock_port, listen or both)", path);
        return -EINVAL;
    }
    if (out->test_pcr_mask != 0 && strncmp(out->nsm, "test:", 5) != 0) {
        snprintf(err, cap, "%s: test_pcr applies to the test backend only (nsm = test:DIR)", path);
        return -EINVAL;
    }
    return 0;
}
