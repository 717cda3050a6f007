#include "ops/health_cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <jansson.h>

#include "build_config.h"
#include "base/args.h"
#include "base/config.h"

#define DEFAULT_CONFIG ATTESTPROXY_SYSCONFDIR "/attestproxy/attestproxy.conf"
#define PATH_MAX_LEN   256 /* request path of --url */
#define URL_MAX_LEN    (CONFIG_HOST_MAX + PATH_MAX_LEN + 32)

static const char usage_health[] =
    "Usage: attestproxy health [-c FILE] [--live] [--timeout DURATION]\n"
    "                          [--url http://HOST:PORT[/PATH] | --admin ADDR]\n"
    "\n"
    "Asks a running daemon's admin API whether it is ready (GET /readyz) or, with --live,\n"
    "alive (GET /healthz), for container and Kubernetes probes that have neither a shell nor\n"
    "curl. By default the address is admin_listen from the configuration file. Prints one\n"
    "line: why it is not healthy (connection refused, the HTTP status and the reason from\n"
    "the /readyz body), or that it is.\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE    read admin_listen from FILE (default " DEFAULT_CONFIG ")\n"
    "  --admin ADDR         ask ADDR instead: HOST:PORT, [V6]:PORT or unix:PATH\n"
    "  --url URL            ask http://HOST:PORT/PATH instead (HOST: an IP or localhost)\n"
    "  --live               ask /healthz (the event loop runs) instead of /readyz\n"
    "  --timeout DURATION   limit for the whole exchange, e.g. 500ms or 5s (default 3s)\n"
    "  -h, --help           show this help\n"
    "\n"
    "Exit status: 0 the answer was 200, 1 anything else (not ready, no answer, refused),\n"
    "2 usage error or no admin address (admin_listen unset, configuration unreadable).\n";

enum {
    OPT_URL = 256,
    OPT_ADMIN,
    OPT_LIVE,
    OPT_TIMEOUT,
};

static const struct option health_opts[] = {
    {"config", required_argument, NULL, 'c'},
    {"url", required_argument, NULL, OPT_URL},
    {"admin", required_argument, NULL, OPT_ADMIN},
    {"live", no_argument, NULL, OPT_LIVE},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* ---- Parsing --------------------------------------------------------------------------------- */

int health_parse_status_line(const char *buf, size_t len, int *status)
{
    size_t i;
    int code = 0;

    /* "HTTP/1.x 200 " is 13 bytes; check what is there as it arrives. */
    static const char prefix[] = "HTTP/1.";
    for (i = 0; i < len && i < 7; i++) {
        if (buf[i] != prefix[i])
            return -EINVAL;
    }
    if (len > 7 && buf[7] != '0' && buf[7] != '1')
        return -EINVAL;
    if (len > 8 && buf[8] != ' ')
        return -EINVAL;
    for (i = 9; i < len && i < 12; i++) {
        if (buf[i] < '0' || buf[i] > '9')
            return -EINVAL;
        code = code * 10 + (buf[i] - '0');
    }
    if (len > 9 && (buf[9] < '1' || buf[9] > '5'))
        return -EINVAL;
    if (len > 12 && buf[12] != ' ')
        return -EINVAL;
    for (i = 13; i < len; i++) {
        unsigned char ch = (unsigned char)buf[i];
        if (ch == '\r') {
            if (i + 1 >= len)
                break;
            if (buf[i + 1] != '\n')
                return -EINVAL;
            *status = code;
            return (int)(i + 2);
        }
        if (ch != '\t' && (ch < 0x20 || ch == 0x7f))
            return -EINVAL;
        if (i + 2 >= HEALTH_STATUS_LINE_MAX)
            return -EINVAL;
    }
    return len >= HEALTH_STATUS_LINE_MAX ? -EINVAL : 0;
}

/* Appends s[0..n) to out, which holds *used bytes of cap, with control and non-ASCII bytes
 * shown as '?' so that the reason stays one printable line. Always leaves out terminated. */
static void append_clean(char *out, size_t cap, size_t *used, const char *s, size_t n)
{
    for (size_t i = 0; i < n && *used + 1 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[(*used)++] = (ch < 0x20 || ch >= 0x7f) ? '?' : (char)ch;
    }
    out[*used] = '\0';
}

static void append_str(char *out, size_t cap, size_t *used, const char *s)
{
    append_clean(out, cap, used, s, strlen(s));
}

void health_describe_body(const char *body, size_t len, char *out, size_t cap)
{
    json_t *doc;
    size_t used = 0;
    const char *nl;

    if (cap == 0)
        return;
    out[0] = '\0';
    doc = len > 0 ? json_loadb(body, len, 0, NULL) : NULL;
    if (json_is_object(doc)) {
        const char *reason = json_string_value(json_object_get(doc, "reason"));
        json_t *services = json_object_get(doc, "services");
        const char *name;
        json_t *svc;

        if (reason != NULL)
            append_str(out, cap, &used, reason);
        json_object_foreach(services, name, svc)
        {
            const char *why;
            if (!json_is_object(svc) || json_is_true(json_object_get(svc, "ready")))
                continue;
            why = json_string_value(json_object_get(svc, "reason"));
            if (why == NULL)
                why = json_string_value(json_object_get(svc, "state"));
            append_str(out, cap, &used, used > 0 ? "; " : "");
            append_str(out, cap, &used, name);
            append_str(out, cap, &used, ": ");
            append_str(out, cap, &used, why != NULL ? why : "not ready");
        }
    }
    json_decref(doc);
    if (used > 0)
        return;
    /* Not JSON, or JSON without a reason: the body's first line. */
    nl = memchr(body, '\n', len);
    if (nl != NULL)
        len = (size_t)(nl - body);
    if (len > 0 && body[len - 1] == '\r')
        len--;
    append_clean(out, cap, &used, body, len);
}

/* Parses http://HOST:PORT[/PATH] with HOST an IPv4 literal, [IPv6] or localhost. */
static int parse_url(const char *url, struct listen_addr *addr, char *path, size_t path_cap)
{
    char hostport[CONFIG_HOST_MAX + 16];
    const char *p, *slash;
    size_t n;

    if (strncmp(url, "http://", 7) != 0)
        return -EINVAL;
    p = url + 7;
    slash = strchr(p, '/');
    n = slash != NULL ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || n >= sizeof(hostport))
        return -EINVAL;
    if (n > 10 && strncmp(p, "localhost:", 10) == 0) {
        /* The admin API listens on a literal loopback address; localhost means 127.0.0.1. */
        int w = snprintf(hostport, sizeof(hostport), "127.0.0.1:%.*s", (int)(n - 10), p + 10);
        if (w < 0 || (size_t)w >= sizeof(hostport))
            return -EINVAL;
    } else {
        memcpy(hostport, p, n);
        hostport[n] = '\0';
    }
    if (config_parse_listen(hostport, addr) < 0 || addr->is_unix || addr->port == 0)
        return -EINVAL;
    path[0] = '\0';
    if (slash != NULL) {
        size_t plen = strlen(slash);
        if (plen >= path_cap)
            return -EINVAL;
        for (size_t i = 0; i < plen; i++) {
            unsigned char ch = (unsigned char)slash[i];
            if (ch <= 0x20 || ch >= 0x7f)
                return -EINVAL;
        }
        memcpy(path, slash, plen + 1);
    }
    return 0;
}

/* ---- The exchange ---------------------------------------------------------------------------- */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits until fd is ready for `events` or the deadline passes: 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        uint64_t now = mono_ms();
        int rc;
        if (now >= deadline)
            return -ETIMEDOUT;
        rc = poll(&pfd, 1, (int)(deadline - now));
        if (rc > 0)
            return 0;
        if (rc == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

static void describe_addr(const struct listen_addr *a, char *out, size_t cap)
{
    if (a->is_unix)
        snprintf(out, cap, "unix:%s", a->path);
    else if (strchr(a->host, ':') != NULL)
        snprintf(out, cap, "[%s]:%u", a->host, (unsigned)a->port);
    else
        snprintf(out, cap, "%s:%u", a->host, (unsigned)a->port);
}

/* Opens a non-blocking socket connected to `a` within the deadline: the fd, or -errno. */
static int connect_to(const struct listen_addr *a, uint64_t deadline)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd, rc, err = 0;
    socklen_t errlen = sizeof(err);

    memset(&ss, 0, sizeof(ss));
    if (a->is_unix) {
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        size_t n = strlen(a->path);
        if (n >= sizeof(un->sun_path))
            return -ENAMETOOLONG;
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, a->path, n + 1);
        sl = (socklen_t)sizeof(*un);
    } else {
        struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET, a->host, &v4->sin_addr) == 1) {
            v4->sin_family = AF_INET;
            v4->sin_port = htons(a->port);
            sl = (socklen_t)sizeof(*v4);
        } else if (inet_pton(AF_INET6, a->host, &v6->sin6_addr) == 1) {
            v6->sin6_family = AF_INET6;
            v6->sin6_port = htons(a->port);
            sl = (socklen_t)sizeof(*v6);
        } else {
            return -EINVAL;
        }
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    rc = connect(fd, (struct sockaddr *)&ss, sl);
    if (rc == 0)
        return fd;
    if (errno != EINPROGRESS) {
        err = -errno;
        goto out_close;
    }
    err = wait_fd(fd, POLLOUT, deadline);
    if (err < 0)
        goto out_close;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0) {
        err = -errno;
        goto out_close;
    }
    if (err != 0) {
        err = -err;
        goto out_close;
    }
    return fd;
out_close:
    close(fd);
    return err;
}

static int send_all(int fd, const char *buf, size_t len, uint64_t deadline)
{
    size_t off = 0;
    while (off < len) {
        ssize_t w = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(fd, POLLOUT, deadline);
            if (rc < 0)
                return rc;
            continue;
        }
        return w < 0 ? -errno : -EPIPE;
    }
    return 0;
}

/* Reads the response into buf (cap bytes) until the peer closes, the buffer is full, or a 200
 * status line is in (its body does not matter). Returns 0 with *got bytes, or -errno; a timeout
 * after a complete status line is not an error (the reason may be cut short). */
static int read_response(int fd, char *buf, size_t cap, size_t *got, uint64_t deadline)
{
    *got = 0;
    while (*got < cap) {
        int status = 0;
        ssize_t r;
        int rc = wait_fd(fd, POLLIN, deadline);
        if (rc == -ETIMEDOUT && health_parse_status_line(buf, *got, &status) > 0)
            return 0;
        if (rc < 0)
            return rc;
        r = recv(fd, buf + *got, cap - *got, 0);
        if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (r < 0)
            return *got > 0 ? 0 : -errno;
        if (r == 0)
            return 0;
        *got += (size_t)r;
        if (health_parse_status_line(buf, *got, &status) > 0 && status == 200)
            return 0;
    }
    return 0;
}

/* Asks `path` at `a`, prints the one-line verdict and returns the exit code. */
static int ask(const struct listen_addr *a, const char *path, uint64_t timeout_ms)
{
    static char resp[HEALTH_RESPONSE_MAX];
    char where[CONFIG_PATH_MAX + 16], req[PATH_MAX_LEN + 128], reason[HEALTH_REASON_MAX];
    char phrase[HEALTH_STATUS_LINE_MAX];
    uint64_t deadline = mono_ms() + timeout_ms;
    size_t got = 0, used = 0;
    const char *head_end;
    int fd, rc, line, status = 0, code = HEALTH_CMD_UNHEALTHY;

    describe_addr(a, where, sizeof(where));
    rc = snprintf(req, sizeof(req),
                  "GET %s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: attestproxy-health\r\n"
                  "Connection: close\r\n\r\n",
                  path);
    if (rc < 0 || (size_t)rc >= sizeof(req)) {
        fprintf(stderr, "attestproxy health: the path is too long\n");
        return HEALTH_CMD_USAGE;
    }
    fd = connect_to(a, deadline);
    if (fd < 0) {
        if (fd == -ETIMEDOUT)
            fprintf(stderr, "attestproxy health: unhealthy: %s: no connection within %llu ms\n",
                    where, (unsigned long long)timeout_ms);
        else
            fprintf(stderr, "attestproxy health: unhealthy: cannot connect to %s: %s\n", where,
                    strerror(-fd));
        return HEALTH_CMD_UNHEALTHY;
    }
    rc = send_all(fd, req, (size_t)rc, deadline);
    if (rc == 0)
        rc = read_response(fd, resp, sizeof(resp), &got, deadline);
    if (rc < 0 && got == 0) {
        if (rc == -ETIMEDOUT)
            fprintf(stderr,
                    "attestproxy health: unhealthy: GET %s on %s: no answer within %llu ms\n", path,
                    where, (unsigned long long)timeout_ms);
        else
            fprintf(stderr, "attestproxy health: unhealthy: GET %s on %s: %s\n", path, where,
                    strerror(-rc));
        goto out_close;
    }
    line = health_parse_status_line(resp, got, &status);
    if (line <= 0) {
        fprintf(stderr, "attestproxy health: unhealthy: GET %s on %s: %s\n", path, where,
                got == 0 ? "the connection closed without an answer"
                         : "malformed or incomplete HTTP status line");
        goto out_close;
    }
    /* The reason phrase, cleaned: between "HTTP/1.1 200 " and CRLF. */
    append_clean(phrase, sizeof(phrase), &used, resp + 13, (size_t)line - 15);
    if (status == 200) {
        printf("attestproxy health: healthy: GET %s on %s: 200 %s\n", path, where, phrase);
        code = HEALTH_CMD_HEALTHY;
        goto out_close;
    }
    reason[0] = '\0';
    head_end = memmem(resp, got, "\r\n\r\n", 4);
    if (head_end != NULL) {
        size_t off = (size_t)(head_end + 4 - resp);
        health_describe_body(resp + off, got - off, reason, sizeof(reason));
    }
    fprintf(stderr, "attestproxy health: %s: GET %s on %s: %d %s%s%s\n",
            status == 503 ? "not ready" : "unhealthy", path, where, status, phrase,
            reason[0] != '\0' ? ": " : "", reason);
out_close:
    close(fd);
    return code;
}

/* ---- The command ----------------------------------------------------------------------------- */

int health_cmd_main(int argc, char **argv)
{
    char bad[8];
    const char *config_path = DEFAULT_CONFIG, *url = NULL, *admin = NULL;
    char path[PATH_MAX_LEN] = "";
    struct listen_addr addr;
    uint64_t timeout_ms = HEALTH_DEFAULT_TIMEOUT;
    bool live = false;
    int c;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+c:h", health_opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case OPT_URL:
            url = optarg;
            break;
        case OPT_ADMIN:
            admin = optarg;
            break;
        case OPT_LIVE:
            live = true;
            break;
        case OPT_TIMEOUT:
            if (config_parse_duration(optarg, &timeout_ms) < 0 || timeout_ms == 0 ||
                timeout_ms > HEALTH_MAX_TIMEOUT) {
                fprintf(stderr,
                        "attestproxy health: --timeout '%s': want a duration from 1ms to "
                        "60s, such as 500ms or 5s\n",
                        optarg);
                return HEALTH_CMD_USAGE;
            }
            break;
        case 'h':
            fputs(usage_health, stdout);
            return HEALTH_CMD_HEALTHY;
        default:
            fprintf(stderr, "attestproxy health: unknown option or missing value: %s\n",
                    args_refused(argc, argv, bad, sizeof(bad)));
            fputs(usage_health, stderr);
            return HEALTH_CMD_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "attestproxy health: unexpected argument '%s'\n", argv[optind]);
        fputs(usage_health, stderr);
        return HEALTH_CMD_USAGE;
    }
    if (url != NULL && admin != NULL) {
        fprintf(stderr, "attestproxy health: give --url or --admin, not both\n");
        return HEALTH_CMD_USAGE;
    }
    if (url != NULL) {
        if (strlen(url) >= URL_MAX_LEN || parse_url(url, &addr, path, sizeof(path)) < 0) {
            fprintf(stderr,
                    "attestproxy health: --url '%s': want http://HOST:PORT/PATH with HOST an IP "
                    "address or localhost\n",
                    url);
            return HEALTH_CMD_USAGE;
        }
        if (path[0] != '\0' && live) {
            fprintf(stderr, "attestproxy health: --live with a --url that names a path\n");
            return HEALTH_CMD_USAGE;
        }
    } else if (admin != NULL) {
        if (config_parse_listen(admin, &addr) < 0 || (!addr.is_unix && addr.port == 0)) {
            fprintf(stderr,
                    "attestproxy health: --admin '%s': want HOST:PORT, [V6]:PORT or unix:PATH\n",
                    admin);
            return HEALTH_CMD_USAGE;
        }
    } else {
        char err[CONFIG_ERROR_MAX];
        struct config *cfg;
        bool enabled;
        if (config_load(config_path, &cfg, err, sizeof(err)) < 0) {
            fprintf(stderr, "attestproxy health: %s\n", err);
            return HEALTH_CMD_USAGE;
        }
        addr = cfg->daemon.admin;
        enabled = cfg->daemon.admin_enabled;
        config_free(cfg);
        if (!enabled) {
            fprintf(stderr,
                    "attestproxy health: %s sets no admin_listen: there is no admin API to ask\n",
                    config_path);
            return HEALTH_CMD_USAGE;
        }
    }
    if (path[0] == '\0')
        snprintf(path, sizeof(path), "%s", live ? "/healthz" : "/readyz");
    return ask(&addr, path, timeout_ms);
}
