/*
 * The configuration's value parsers: durations, sizes, booleans, ports and host:port pairs,
 * listen addresses, octal modes, host lists, measurement sets, and config__set_value(), which
 * turns the text of one key into its field by the key's type and checks its range.
 */
#include "base/config_internal.h"
#include "base/file.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

int config__parse_u64(const char *s, const char **end, uint64_t *out)
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
    int rc = config__parse_u64(s, &end, &v);
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
    int rc = config__parse_u64(s, &end, &v);
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
    if (config__parse_u64(s, &end, &v) < 0 || *end != '\0' || v == 0 || v > 65535)
        return -EINVAL;
    *out = (uint16_t)v;
    return 0;
}

int config__split_host_port(const char *s, char *host, size_t cap, uint16_t *port)
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
    if (config__split_host_port(s, out->host, sizeof(out->host), &out->port) < 0)
        return -EINVAL;
    if (inet_pton(AF_INET, out->host, buf) != 1 && inet_pton(AF_INET6, out->host, buf) != 1)
        return -EINVAL;
    return 0;
}

void config_listen_describe(const struct listen_addr *a, char *out, size_t cap)
{
    if (a->is_unix)
        snprintf(out, cap, "unix:%s", a->path);
    else if (strchr(a->host, ':') != NULL)
        snprintf(out, cap, "[%s]:%u", a->host, a->port);
    else
        snprintf(out, cap, "%s:%u", a->host, a->port);
}

bool config_listen_equal(const struct listen_addr *a, const struct listen_addr *b)
{
    struct in6_addr x, y;
    if (a->is_unix != b->is_unix)
        return false;
    if (a->is_unix)
        return strcmp(a->path, b->path) == 0;
    if (a->port != b->port)
        return false;
    /* One address spelled two ways ([::1] and [0:0::1]) is the same address. */
    if (inet_pton(AF_INET6, a->host, &x) == 1 && inet_pton(AF_INET6, b->host, &y) == 1)
        return memcmp(&x, &y, sizeof(x)) == 0;
    return strcmp(a->host, b->host) == 0;
}

/* `in` with "//", "/./" and "x/.." folded away, lexically (the path need not exist). */
static void fold_path(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    const char *p = in;
    if (cap == 0)
        return;
    if (*p == '/' && n + 1 < cap)
        out[n++] = '/';
    while (*p != '\0') {
        const char *start;
        size_t len;
        while (*p == '/')
            p++;
        start = p;
        while (*p != '\0' && *p != '/')
            p++;
        len = (size_t)(p - start);
        if (len == 0 || (len == 1 && start[0] == '.'))
            continue;
        if (len == 2 && start[0] == '.' && start[1] == '.') {
            /* Drop the last component and its '/', the root staying. */
            while (n > 0 && out[n - 1] != '/')
                n--;
            if (n > 1)
                n--;
            continue;
        }
        if (n > 0 && out[n - 1] != '/' && n + 1 < cap)
            out[n++] = '/';
        for (size_t i = 0; i < len && n + 1 < cap; i++)
            out[n++] = start[i];
    }
    out[n] = '\0';
}

/* The address family of a literal (AF_INET, AF_INET6), and whether it is the wildcard. */
static int literal_family(const char *host, bool *wildcard)
{
    struct in_addr v4;
    struct in6_addr v6;
    *wildcard = false;
    if (inet_pton(AF_INET, host, &v4) == 1) {
        *wildcard = v4.s_addr == htonl(INADDR_ANY);
        return AF_INET;
    }
    if (inet_pton(AF_INET6, host, &v6) == 1) {
        *wildcard = memcmp(&v6, &in6addr_any, sizeof(v6)) == 0;
        return AF_INET6;
    }
    return 0;
}

bool config_listen_clash(const struct listen_addr *a, const struct listen_addr *b)
{
    bool wa, wb;
    int fa, fb;
    if (a->is_unix != b->is_unix)
        return false;
    if (a->is_unix) {
        char x[CONFIG_PATH_MAX], y[CONFIG_PATH_MAX];
        fold_path(a->path, x, sizeof(x));
        fold_path(b->path, y, sizeof(y));
        return strcmp(x, y) == 0;
    }
    if (a->port != b->port)
        return false;
    if (config_listen_equal(a, b))
        return true;
    fa = literal_family(a->host, &wa);
    fb = literal_family(b->host, &wb);
    return fa != 0 && fa == fb && (wa || wb);
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

int config__measurement_add(const char *s, struct measurement_set *set, char *why, size_t cap)
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
        if (strncmp(p, "pcr", 3) != 0 || config__parse_u64(p + 3, &end, &idx) < 0 || *end != '=') {
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
    if (config__measurement_add(s, out, why, sizeof(why)) < 0 || out->mask == 0)
        return -EINVAL;
    return 0;
}

/* ---- Storing one key ------------------------------------------------------------------------ */

/* A list of names separated by spaces or commas (allowed_hosts, allowed_origins): at most
 * CONFIG_MAX_HOSTS of fewer than CONFIG_HOST_MAX bytes, each of letters, digits, "-.:[]" and
 * the bytes of `extra`; `what` names an item in the messages ("host", "origin"). */
static int parse_name_list(const char *value, char (*list)[CONFIG_HOST_MAX], size_t *count,
                           const char *extra, const char *what, char *why, size_t whycap)
{
    const char *p = value;
    *count = 0;
    while (*p) {
        size_t n;
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        n = strcspn(p, " ,");
        if (*count == CONFIG_MAX_HOSTS || n >= CONFIG_HOST_MAX) {
            snprintf(why, whycap, "at most %d %ss of %d characters", CONFIG_MAX_HOSTS, what,
                     CONFIG_HOST_MAX - 1);
            return -EINVAL;
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)p[i];
            if (!(isalnum(c) || strchr("-.:[]", c) != NULL || (c && strchr(extra, c) != NULL))) {
                snprintf(why, whycap, "invalid character in %s %s", what[0] == 'o' ? "an" : "a",
                         what);
                return -EINVAL;
            }
        }
        memcpy(list[*count], p, n);
        list[*count][n] = '\0';
        (*count)++;
        p += n;
    }
    if (*count == 0) {
        snprintf(why, whycap, "empty %s list", what);
        return -EINVAL;
    }
    return 0;
}

/* allowed_origins: serialized origins (RFC 6454), "scheme://host[:port]" with scheme http or
 * https, or "null"; compared without case against the Origin a browser sends. */
static int parse_origins(struct service_config *svc, const char *value, char *why, size_t whycap)
{
    int rc = parse_name_list(value, svc->allowed_origins, &svc->n_allowed_origins, "/", "origin",
                             why, whycap);
    for (size_t k = 0; rc == 0 && k < svc->n_allowed_origins; k++) {
        const char *o = svc->allowed_origins[k];
        size_t scheme = strncmp(o, "http://", 7) == 0 ? 7 : strncmp(o, "https://", 8) == 0 ? 8 : 0;
        if (strcmp(o, "null") == 0)
            continue;
        if (scheme == 0 || o[scheme] == '\0') {
            snprintf(why, whycap, "an origin is scheme://host[:port] (http or https) or null");
            rc = -EINVAL;
        } else if (strchr(o + scheme, '/') != NULL) {
            snprintf(why, whycap, "an origin has no path (scheme://host[:port])");
            rc = -EINVAL;
        }
    }
    if (rc < 0)
        svc->n_allowed_origins = 0;
    return rc;
}

static int read_token_file(const char *path, char *out, size_t cap, char *why, size_t whycap)
{
    FILE *fp = file_fopen_regular(path);
    size_t n;
    int rc = 0;
    if (fp == NULL) {
        int e = errno;
        snprintf(why, whycap, "cannot read token file %s: %s", path, file_strerror(e));
        return -e;
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

static const char *const fsync_names[] = {
    [AUDIT_FSYNC_RECORD] = "record",
    [AUDIT_FSYNC_INTERVAL] = "interval",
    [AUDIT_FSYNC_NONE] = "none",
};

const char *config_audit_fsync_name(enum audit_fsync_mode m)
{
    if ((unsigned)m >= sizeof(fsync_names) / sizeof(fsync_names[0]))
        return "unknown";
    return fsync_names[m];
}

/* A key name as signed notes allow it, minus ':' (it ends the name here). */
static bool key_name_ok(const char *s, size_t n)
{
    if (n == 0 || n >= POLICY_KEY_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '+' || c == ':')
            return false;
    }
    return true;
}

/* The raw Ed25519 public key of a PEM file. */
static int read_pem_key(const char *path, uint8_t pub[POLICY_KEY_LEN], char *why, size_t cap)
{
    FILE *fp = file_fopen_regular(path);
    EVP_PKEY *pk = NULL;
    size_t len = POLICY_KEY_LEN;
    int rc = -EINVAL;
    if (fp == NULL) {
        snprintf(why, cap, "%s: %s", path, file_strerror(errno));
        return -EINVAL;
    }
    pk = PEM_read_PUBKEY(fp, NULL, NULL, NULL);
    fclose(fp);
    if (pk == NULL || EVP_PKEY_get_id(pk) != EVP_PKEY_ED25519 ||
        EVP_PKEY_get_raw_public_key(pk, pub, &len) != 1 || len != POLICY_KEY_LEN)
        snprintf(why, cap, "%s: not a PEM Ed25519 public key", path);
    else
        rc = 0;
    EVP_PKEY_free(pk);
    return rc;
}

int config_parse_policy_key(const char *s, struct policy_key *out, char *why, size_t cap)
{
    const char *colon = strchr(s, ':');
    const char *key;
    size_t klen;
    memset(out, 0, sizeof(*out));
    if (colon == NULL || !key_name_ok(s, (size_t)(colon - s))) {
        snprintf(why, cap,
                 "expected NAME:KEY (NAME: 1-63 printable characters without space, "
                 "'+' or ':')");
        return -EINVAL;
    }
    memcpy(out->name, s, (size_t)(colon - s));
    key = colon + 1;
    klen = strlen(key);
    /* 44 characters of base64 ending in one '=' are 32 bytes: a key, not a path. */
    if (klen == 44 && key[43] == '=' && key[42] != '=') {
        uint8_t buf[33];
        bool ok = true;
        for (size_t i = 0; i < 43; i++) {
            char c = key[i];
            ok = ok && (isalnum((unsigned char)c) || c == '+' || c == '/');
        }
        if (ok && EVP_DecodeBlock(buf, (const unsigned char *)key, 44) == 33) {
            memcpy(out->pub, buf, POLICY_KEY_LEN);
            return 0;
        }
    }
    if (key[0] != '/') {
        snprintf(why, cap,
                 "KEY must be the base64 of a 32-byte Ed25519 public key or an "
                 "absolute path to a PEM public key");
        return -EINVAL;
    }
    return read_pem_key(key, out->pub, why, cap);
}

/* "http://HOST:PORT" (a trailing '/' allowed). https:// is refused: TLS to the proxy would put
 * a second TLS layer under the enclave's in every read and write of the relay, for a hop that
 * carries only ciphertext and the CONNECT line (docs/security.md, "Upstream proxy"). */
static int parse_proxy_url(const char *value, struct service_config *svc, char *why, size_t whycap)
{
    char hostport[CONFIG_HOST_MAX + 8];
    size_t n;
    if (strncmp(value, "https://", 8) == 0) {
        snprintf(why, whycap,
                 "https:// (TLS to the proxy) is not supported: use http://; the enclave's "
                 "TLS runs end to end inside the tunnel either way");
        return -EINVAL;
    }
    if (strncmp(value, "http://", 7) != 0) {
        snprintf(why, whycap, "expected http://HOST:PORT");
        return -EINVAL;
    }
    n = strlen(value + 7);
    if (n > 0 && value[7 + n - 1] == '/')
        n--;
    if (n == 0 || n >= sizeof(hostport)) {
        snprintf(why, whycap, "expected http://HOST:PORT");
        return -EINVAL;
    }
    memcpy(hostport, value + 7, n);
    hostport[n] = '\0';
    if (strpbrk(hostport, "@/?#") != NULL) {
        snprintf(why, whycap,
                 "expected http://HOST:PORT without user, path or query (credentials go in "
                 "upstream_proxy_credentials)");
        return -EINVAL;
    }
    if (config__split_host_port(hostport, svc->upstream_proxy_host,
                                sizeof(svc->upstream_proxy_host), &svc->upstream_proxy_port) < 0) {
        snprintf(why, whycap, "expected http://HOST:PORT or http://[IPv6]:PORT");
        return -EINVAL;
    }
    for (const char *p = svc->upstream_proxy_host; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (!(isalnum(c) || c == '-' || c == '.' || c == ':' || c == '_')) {
            svc->upstream_proxy_host[0] = '\0';
            snprintf(why, whycap, "invalid character in the proxy host");
            return -EINVAL;
        }
    }
    return 0;
}

/* Reads "user:password" (the first line of `path`) and stores its base64 for
 * Proxy-Authorization: Basic (RFC 7617). The plain text is wiped before returning. */
static int read_proxy_credentials(const char *path, struct service_config *svc, char *why,
                                  size_t whycap)
{
    char line[256 + 2];
    FILE *fp = file_fopen_regular(path);
    size_t n;
    int rc = 0;

    if (fp == NULL) {
        rc = -errno;
        snprintf(why, whycap, "cannot read proxy credentials file %s: %s", path,
                 file_strerror(-rc));
        return rc;
    }
    if (fgets(line, (int)sizeof(line), fp) == NULL) {
        snprintf(why, whycap, "proxy credentials file %s is empty", path);
        rc = -EINVAL;
        goto out;
    }
    n = strlen(line);
    if (n > 0 && line[n - 1] == '\n')
        line[--n] = '\0';
    if (n > 0 && line[n - 1] == '\r')
        line[--n] = '\0';
    if (n > 255) {
        snprintf(why, whycap, "proxy credentials file %s: user:password over 255 bytes", path);
        rc = -EINVAL;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 || c == 0x7f) {
            /* A CR or LF would end the header line and start another one. */
            snprintf(why, whycap, "proxy credentials file %s: control character in the first line",
                     path);
            rc = -EINVAL;
            goto out;
        }
    }
    if (n == 0 || line[0] == ':' || strchr(line, ':') == NULL) {
        snprintf(why, whycap, "proxy credentials file %s: expected user:password on the first line",
                 path);
        rc = -EINVAL;
        goto out;
    }
    /* 4 * ceil(255 / 3) + 1 = 341 bytes at most. */
    EVP_EncodeBlock((unsigned char *)svc->upstream_proxy_auth, (const unsigned char *)line, (int)n);
out:
    OPENSSL_cleanse(line, sizeof(line));
    fclose(fp);
    return rc;
}

int config__set_value(const struct key_def *k, void *base, const char *value, char *why,
                      size_t whycap)
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
        if (config__parse_u64(value, &end, &u) < 0 || *end != '\0') {
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
    case T_PROXY_URL:
        return parse_proxy_url(value, base, why, whycap);
    case T_PROXY_CREDENTIALS:
        if (strlen(value) >= k->size || value[0] == '\0') {
            snprintf(why, whycap, "expected a file path");
            return -EINVAL;
        }
        memcpy(field, value, strlen(value) + 1);
        return read_proxy_credentials(value, base, why, whycap);
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
        return parse_name_list(value, svc->allowed_hosts, &svc->n_allowed_hosts, "", "host", why,
                               whycap);
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
    case T_UPGRADE:
        if (strcmp(value, "websocket") == 0)
            *(bool *)field = true;
        else if (strcmp(value, "none") == 0)
            *(bool *)field = false;
        else {
            snprintf(why, whycap, "expected websocket or none (no other upgrade is relayed)");
            return -EINVAL;
        }
        return 0;
    case T_ORIGINS:
        return parse_origins(base, value, why, whycap);
    case T_NONCE:
        if (strcmp(value, "query") == 0)
            *(enum nonce_placement *)field = NONCE_QUERY;
        else if (strcmp(value, "session") == 0)
            *(enum nonce_placement *)field = NONCE_SESSION;
        else if (strcmp(value, "none") == 0)
            *(enum nonce_placement *)field = NONCE_NONE;
        else {
            snprintf(why, whycap, "expected query, session or none");
            return -EINVAL;
        }
        return 0;
    case T_UPSTREAM: {
        struct service_config *svc = base;
        if (config__split_host_port(value, svc->upstream_host, sizeof(svc->upstream_host),
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
    case T_POLICY_KEY: {
        struct daemon_config *d = base;
        if (d->n_policy_keys == POLICY_MAX_KEYS) {
            snprintf(why, whycap, "at most %d policy keys", POLICY_MAX_KEYS);
            return -EINVAL;
        }
        rc = config_parse_policy_key(value, &d->policy_keys[d->n_policy_keys], why, whycap);
        if (rc < 0)
            return rc;
        for (size_t i = 0; i < d->n_policy_keys; i++) {
            if (strcmp(d->policy_keys[i].name, d->policy_keys[d->n_policy_keys].name) == 0) {
                snprintf(why, whycap, "key name '%s' given twice", d->policy_keys[i].name);
                return -EINVAL;
            }
        }
        d->n_policy_keys++;
        return 0;
    }
    case T_AUDIT_FSYNC:
        for (unsigned i = 0; i < sizeof(fsync_names) / sizeof(fsync_names[0]); i++) {
            if (strcmp(value, fsync_names[i]) == 0) {
                *(enum audit_fsync_mode *)field = (enum audit_fsync_mode)i;
                return 0;
            }
        }
        snprintf(why, whycap, "expected record, interval or none");
        return -EINVAL;
    case T_MEASUREMENT: {
        struct policy *pol = field;
        if (pol->n_sets == POLICY_MAX_SETS) {
            snprintf(why, whycap, "at most %d measurement sets", POLICY_MAX_SETS);
            return -EINVAL;
        }
        memset(&pol->sets[pol->n_sets], 0, sizeof(pol->sets[0]));
        rc = config__measurement_add(value, &pol->sets[pol->n_sets], why, whycap);
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
