/*
 * The proxy hop (egress.h): the CONNECT request, the proxy's answer through the strict HTTP/1
 * parser, and the hint that names a TLS-inspecting proxy when the binding check fails.
 */
#include "proxy/egress.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

/* Bytes a host name or a base64 credential may hold: nothing that could end a header line or
 * the request line (the configuration allows less already; this is the builder's own check). */
static bool header_safe(const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c >= 0x7f)
            return false;
    }
    return true;
}

int egress_authority(const char *host, uint16_t port, char *out, size_t cap)
{
    int n =
        snprintf(out, cap, strchr(host, ':') != NULL ? "[%s]:%u" : "%s:%u", host, (unsigned)port);
    if (n < 0 || (size_t)n >= cap)
        return -ENOSPC;
    return n;
}

int egress_build_connect(const char *host, uint16_t port, const char *basic, char *out, size_t cap)
{
    char authority[EGRESS_NAME_MAX];
    int n;

    if (host[0] == '\0' || !header_safe(host) || port == 0)
        return -EINVAL;
    if (basic != NULL && basic[0] != '\0' && !header_safe(basic))
        return -EINVAL;
    if (egress_authority(host, port, authority, sizeof(authority)) < 0)
        return -ENOSPC;
    /* RFC 9110 9.3.6: the request target of CONNECT is the authority, host and port, and
     * Host repeats it. */
    if (basic != NULL && basic[0] != '\0')
        n = snprintf(out, cap,
                     "CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n",
                     authority, authority, basic);
    else
        n = snprintf(out, cap, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", authority, authority);
    if (n < 0 || (size_t)n >= cap) {
        if (cap > 0)
            OPENSSL_cleanse(out, cap); /* a cut request may hold part of the credentials */
        return -ENOSPC;
    }
    return n;
}

/* ---- The proxy's answer -------------------------------------------------------------------- */

static int on_head(struct http1_parser *p)
{
    /* Stop at the end of the head: whatever follows is the tunnel's (2xx) or of no interest
     * (the body of a refusal). */
    (void)p;
    return HTTP1_CB_PAUSE;
}

static const struct http1_callbacks answer_cbs = {.on_head = on_head};

struct egress *egress_new(const struct service_config *cfg)
{
    struct egress *t = calloc(1, sizeof(*t));
    int n;

    if (t == NULL)
        return NULL;
    if (egress_authority(cfg->upstream_proxy_host, cfg->upstream_proxy_port, t->proxy,
                         sizeof(t->proxy)) < 0 ||
        egress_authority(cfg->upstream_host, cfg->upstream_port, t->target, sizeof(t->target)) < 0)
        goto out_free;
    n = egress_build_connect(cfg->upstream_host, cfg->upstream_port, cfg->upstream_proxy_auth,
                             t->request, sizeof(t->request));
    if (n < 0)
        goto out_free;
    t->request_len = (size_t)n;
    if (http1_parser_init(&t->parser, HTTP_RESPONSE, EGRESS_HEAD_MAX, EGRESS_HEADERS_MAX,
                          &answer_cbs, t) < 0)
        goto out_free;
    t->parser_ready = true;
    return t;

out_free:
    egress_free(t);
    return NULL;
}

void egress_wipe_request(struct egress *t)
{
    OPENSSL_cleanse(t->request, sizeof(t->request));
    t->request_len = 0;
}

void egress_free(struct egress *t)
{
    if (t == NULL)
        return;
    if (t->parser_ready)
        http1_parser_free(&t->parser);
    egress_wipe_request(t);
    free(t);
}

/* Keeps printable ASCII of the reason phrase: it is quoted in logs and in the JSON error. */
static void keep_reason(struct egress *t)
{
    const struct http1_head *h = &t->parser.head;
    const char *r = h->target_len > 0 ? http1_head_str(h, h->target_off) : "";
    size_t n = 0;

    for (size_t i = 0; i < h->target_len && n + 1 < sizeof(t->reason); i++) {
        unsigned char c = (unsigned char)r[i];
        t->reason[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    t->reason[n] = '\0';
}

static void done_parsing(struct egress *t)
{
    if (t->parser_ready) {
        http1_parser_free(&t->parser);
        t->parser_ready = false;
    }
}

enum egress_result egress_feed(struct egress *t, const char *data, size_t len, size_t *consumed)
{
    enum http1_status st;

    *consumed = 0;
    if (!t->parser_ready) {
        snprintf(t->why, sizeof(t->why), "the proxy's answer was already read");
        return EGRESS_BAD_RESPONSE;
    }
    st = http1_parser_execute(&t->parser, data, len, consumed);
    if (st == HTTP1_NEED_MORE)
        return EGRESS_NEED_MORE;
    if (st == HTTP1_ERROR) {
        if (t->parser.fail == HTTP1_FAIL_TOO_LARGE)
            snprintf(t->why, sizeof(t->why), "its answer to CONNECT has a head over %u bytes",
                     (unsigned)EGRESS_HEAD_MAX);
        else
            snprintf(t->why, sizeof(t->why), "its answer to CONNECT is not valid HTTP/1: %s",
                     t->parser.fail_msg);
        done_parsing(t);
        return EGRESS_BAD_RESPONSE;
    }
    /* HTTP1_PAUSED: on_head stopped at the end of the head, *consumed bytes in. */
    t->status = t->parser.ll.status_code;
    keep_reason(t);
    done_parsing(t);
    return t->status >= 200 && t->status <= 299 ? EGRESS_ESTABLISHED : EGRESS_REFUSED;
}

const char *egress_binding_hint(const struct service_config *cfg, enum verify_reason reason)
{
    if (cfg->upstream_proxy_host[0] == '\0')
        return NULL;
    switch (reason) {
    case VERIFY_R_BINDING_SPKI_SHA256:
    case VERIFY_R_BINDING_PUBLIC_KEY_SPKI:
    case VERIFY_R_BINDING_SPKI_DER:
    case VERIFY_R_BINDING_CERT_SHA256:
    case VERIFY_R_BINDING_NITRIDING:
    case VERIFY_R_BINDING_BLINDAI:
        return "the key the enclave attested is not the key of this TLS connection: a "
               "TLS-inspecting proxy between here and the enclave?";
    default:
        return NULL;
    }
}
