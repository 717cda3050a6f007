#include "proxy/errors.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

static const struct {
    const char *code;
    unsigned status;
    const char *reason;
} table[PROXY_ERR_COUNT_] = {
    [PROXY_ERR_ATTESTATION_FAILED] = {"attestation_failed", 502, "Bad Gateway"},
    [PROXY_ERR_ATTESTATION_UNAVAILABLE] = {"attestation_unavailable", 503, "Service Unavailable"},
    [PROXY_ERR_UPSTREAM_UNREACHABLE] = {"upstream_unreachable", 502, "Bad Gateway"},
    [PROXY_ERR_UPSTREAM_TIMEOUT] = {"upstream_timeout", 504, "Gateway Timeout"},
    [PROXY_ERR_BAD_REQUEST] = {"bad_request", 400, "Bad Request"},
    [PROXY_ERR_HEADER_TOO_LARGE] = {"header_too_large", 431, "Request Header Fields Too Large"},
    [PROXY_ERR_PAYLOAD_TOO_LARGE] = {"payload_too_large", 413, "Content Too Large"},
    [PROXY_ERR_HOST_NOT_ALLOWED] = {"host_not_allowed", 421, "Misdirected Request"},
    [PROXY_ERR_UNAUTHORIZED] = {"unauthorized", 401, "Unauthorized"},
    [PROXY_ERR_TOO_MANY_CONNECTIONS] = {"too_many_connections", 503, "Service Unavailable"},
    [PROXY_ERR_POLICY_EXPIRED] = {"policy_expired", 503, "Service Unavailable"},
    [PROXY_ERR_ORIGIN_NOT_ALLOWED] = {"origin_not_allowed", 403, "Forbidden"},
    [PROXY_ERR_TOO_MANY_TUNNELS] = {"too_many_tunnels", 503, "Service Unavailable"},
    [PROXY_ERR_UPSTREAM_PROXY_REFUSED] = {"upstream_proxy_refused", 502, "Bad Gateway"},
};

const char *errors_code_name(enum proxy_error e)
{
    if ((unsigned)e >= PROXY_ERR_COUNT_)
        return "internal";
    return table[e].code;
}

unsigned errors_status(enum proxy_error e)
{
    if ((unsigned)e >= PROXY_ERR_COUNT_)
        return 500;
    return table[e].status;
}

/* Copies `in` keeping printable ASCII only: messages are ours, but may quote peer-chosen
 * fragments (a Host value), and the JSON library refuses invalid UTF-8. */
static void sanitize(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    for (; in != NULL && *in != '\0' && n + 1 < cap; in++) {
        unsigned char c = (unsigned char)*in;
        out[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[n] = '\0';
}

int errors_render(enum proxy_error e, const char *service, const char *message,
                  unsigned retry_after_s, bool close, bool head, char *out, size_t cap)
{
    char msg[ERRORS_MESSAGE_MAX + 1], svc[128], body[2048], extra[128];
    json_t *root = NULL;
    size_t body_len;
    int n, rc = -ENOSPC;

    if ((unsigned)e >= PROXY_ERR_COUNT_)
        e = PROXY_ERR_UPSTREAM_UNREACHABLE;
    sanitize(message, msg, sizeof(msg));
    sanitize(service, svc, sizeof(svc));
    root = json_pack("{s:{s:s,s:s,s:s}}", "error", "code", table[e].code, "message", msg, "service",
                     svc);
    if (root == NULL)
        goto out;
    body_len = json_dumpb(root, body, sizeof(body) - 1, JSON_COMPACT);
    if (body_len == 0 || body_len >= sizeof(body) - 1)
        goto out;
    body[body_len++] = '\n';

    extra[0] = '\0';
    if ((e == PROXY_ERR_ATTESTATION_UNAVAILABLE || e == PROXY_ERR_TOO_MANY_CONNECTIONS ||
         e == PROXY_ERR_TOO_MANY_TUNNELS) &&
        retry_after_s == 0)
        retry_after_s = 1;
    if (retry_after_s > 0)
        snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", retry_after_s);
    else if (e == PROXY_ERR_UNAUTHORIZED)
        snprintf(extra, sizeof(extra), "WWW-Authenticate: Bearer realm=\"attestproxy\"\r\n");

    n = snprintf(out, cap,
                 "HTTP/1.1 %u %s\r\n"
                 "Content-Type: application/json\r\n"
                 "Content-Length: %zu\r\n"
                 "Cache-Control: no-store\r\n"
                 "%s"
                 "Connection: %s\r\n"
                 "\r\n",
                 table[e].status, table[e].reason, body_len, extra, close ? "close" : "keep-alive");
    if (n < 0 || (size_t)n >= cap)
        goto out;
    if (!head) {
        if ((size_t)n + body_len >= cap)
            goto out;
        memcpy(out + n, body, body_len);
        n += (int)body_len;
    }
    rc = n;
out:
    json_decref(root);
    return rc;
}
