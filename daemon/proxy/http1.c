/*
 * The HTTP/1 parser: llhttp (no leniency flag) driven through shared callbacks, the bounded
 * head storage, execute/resume/finish, the look-ahead copy (http1_parser_check_ahead()) and the
 * storage hand-over between messages. Before llhttp sees a byte of a head, http1__scan_head()
 * (http1_scan.c) checks it; the rewriting of a parsed head is in http1_rewrite.c.
 *
 * The head storage holds the head's raw bytes, appended as the scanner passes them, and is
 * indexed once the head is complete (index_head(), from llhttp's on_headers_complete): each
 * header's name and value are located in place and NUL-terminated there (the ':' after a name,
 * the byte after a value's last one), and each name is classified. llhttp validates the same
 * bytes and reports only the request target or reason phrase while in a head: it calls no
 * per-header callback, which cost more than the indexing (docs/benchmarks.md, "Where a request's
 * instructions go"). Trailers switch llhttp to a second table whose header callbacks only count
 * them against the head limits; trailers are parsed and dropped.
 */
#include "proxy/http1_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* First sizes of a head's storage, grown by doubling. 1 KiB holds a typical head and is within
 * glibc's per-thread cache (requests up to 1032 bytes), which serves it without locking or
 * searching bins: the storage is taken and given back for every message. */
#define HEAD_INITIAL 1024
#define HDRS_INITIAL 16

/* ---- Bounded head storage --------------------------------------------------------------- */

static int head_reserve(struct http1_head *h, size_t extra)
{
    size_t need, cap;
    char *nb;
    if (extra > h->max || h->len > h->max - extra)
        return -E2BIG;
    need = h->len + extra;
    if (need <= h->cap)
        return 0;
    cap = h->cap ? h->cap : HEAD_INITIAL;
    while (cap < need)
        cap *= 2;
    if (cap > h->max)
        cap = h->max;
    nb = realloc(h->buf, cap);
    if (nb == NULL)
        return -ENOMEM;
    h->buf = nb;
    h->cap = cap;
    return 0;
}

static int head_append(struct http1_head *h, const char *at, size_t len)
{
    int rc = head_reserve(h, len);
    if (rc < 0)
        return rc;
    memcpy(h->buf + h->len, at, len);
    h->len += len;
    return 0;
}

static int head_new_header(struct http1_head *h)
{
    struct http1_header *nh;
    size_t cap;
    if (h->n == h->max_n)
        return -E2BIG;
    if (h->n == h->cap_n) {
        cap = h->cap_n ? h->cap_n * 2 : HDRS_INITIAL;
        if (cap > h->max_n)
            cap = h->max_n;
        nh = realloc(h->hdrs, cap * sizeof(*nh));
        if (nh == NULL)
            return -ENOMEM;
        h->hdrs = nh;
        h->cap_n = cap;
    }
    memset(&h->hdrs[h->n], 0, sizeof(h->hdrs[h->n]));
    h->n++;
    return 0;
}

static void head_reset(struct http1_head *h)
{
    h->len = 0;
    h->n = 0;
    h->target_off = 0;
    h->target_len = 0;
}

const char *http1_head_str(const struct http1_head *h, uint32_t off)
{
    return h->buf + off;
}

int http1_head_find(const struct http1_head *h, enum http1_field field, size_t from)
{
    for (size_t i = from; i < h->n; i++) {
        if (h->hdrs[i].field == field)
            return (int)i;
    }
    return -1;
}

size_t http1_head_count(const struct http1_head *h, enum http1_field field)
{
    size_t c = 0;
    for (size_t i = 0; i < h->n; i++)
        c += h->hdrs[i].field == field;
    return c;
}

/* ---- llhttp callbacks --------------------------------------------------------------------- */

static const llhttp_settings_t settings_head, settings_body; /* defined after the callbacks */

void http1_parser_fail(struct http1_parser *p, enum http1_fail fail, const char *msg)
{
    if (p->fail != HTTP1_FAIL_NONE)
        return; /* the first reason is the one reported */
    p->fail = fail;
    snprintf(p->fail_msg, sizeof(p->fail_msg), "%s", msg);
}

static int storage_error(struct http1_parser *p, int rc)
{
    if (rc == -E2BIG)
        http1_parser_fail(p, HTTP1_FAIL_TOO_LARGE, "request head too large");
    else
        http1_parser_fail(p, HTTP1_FAIL_CALLBACK, "out of memory");
    return HPE_USER;
}

static int on_message_begin(llhttp_t *ll)
{
    struct http1_parser *p = ll->data;
    /* The head storage was reset by http1_parser_execute() when the head's first byte came,
     * before llhttp saw it: it already holds the bytes llhttp is parsing. */
    p->field_open = false;
    p->skip_body = false;
    p->message_begun = true;
    p->method_seen = false;
    p->trailer_bytes = 0;
    p->trailer_fields = 0;
    p->chunk_ext_bytes = 0;
    return 0;
}

static int on_method_complete(llhttp_t *ll)
{
    struct http1_parser *p = ll->data;
    p->method_seen = true;
    return 0;
}

/* Trailers are parsed and dropped, but count against the same limits as the head. */
static int count_trailer(struct http1_parser *p, size_t len, bool new_field)
{
    p->trailer_bytes += len;
    p->trailer_fields += new_field;
    if (p->trailer_bytes > p->head_limit || p->trailer_fields > p->head.max_n) {
        http1_parser_fail(p, HTTP1_FAIL_BAD_MESSAGE,
                          "malformed message: the trailer section is too large");
        return HPE_USER;
    }
    return 0;
}

static int on_chunk_extension(llhttp_t *ll, const char *at, size_t len)
{
    struct http1_parser *p = ll->data;
    (void)at;
    p->chunk_ext_bytes += len;
    if (p->chunk_ext_bytes > HTTP1_CHUNK_EXT_MAX) {
        http1_parser_fail(p, HTTP1_FAIL_BAD_MESSAGE,
                          "malformed message: chunk extensions too long");
        return HPE_USER;
    }
    return 0;
}

/* The request target or reason phrase lies in the raw head storage: a span llhttp reports is
 * found there by its place in the bytes http1_parser_execute() appended last. */
static int on_target(llhttp_t *ll, const char *at, size_t len)
{
    struct http1_parser *p = ll->data;
    if (p->head.target_len == 0)
        p->head.target_off = (uint32_t)(p->exec_head_off + (size_t)(at - p->exec_head_base));
    p->head.target_len += (uint32_t)len;
    return 0;
}

static int on_target_complete(llhttp_t *ll)
{
    struct http1_parser *p = ll->data;
    /* NUL-terminated in place: the byte after it (the space before the version, or the CR of
     * the status line) is in the storage already, and llhttp parses its own input, not this. */
    if (p->head.target_len > 0)
        p->head.buf[p->head.target_off + p->head.target_len] = '\0';
    return 0;
}

/* Trailer fields (the table of a body, settings_body): counted against the head limits. */
static int on_trailer_field(llhttp_t *ll, const char *at, size_t len)
{
    struct http1_parser *p = ll->data;
    int rc;
    (void)at;
    rc = count_trailer(p, len, !p->field_open);
    p->field_open = true;
    return rc;
}

static int on_trailer_field_complete(llhttp_t *ll)
{
    struct http1_parser *p = ll->data;
    p->field_open = false;
    return 0;
}

static int on_trailer_value(llhttp_t *ll, const char *at, size_t len)
{
    struct http1_parser *p = ll->data;
    (void)at;
    return count_trailer(p, len, false);
}

static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/*
 * Indexes the complete raw head in the storage: every header line after the start line gets a
 * struct http1_header, its name NUL-terminated at the ':', its value stripped of leading and
 * trailing whitespace (RFC 9110 5.5) and NUL-terminated after its last byte. The scanner has
 * checked the line structure (CRLF ends, no obs-fold, a name without whitespace before ':')
 * and llhttp the bytes of each line before on_headers_complete, so every line between the
 * start line and the empty line is "name:value". An empty request target or reason phrase is
 * pointed at a NUL (the CR of the empty line ending the head).
 */
static int index_head(struct http1_parser *p)
{
    struct http1_head *h = &p->head;
    char *b = h->buf;
    size_t len = h->len, i = 0;
    const char *lf;

    h->n = 0;
    if (b == NULL || len < 2)
        goto malformed;
    while (i + 1 < len && b[i] == '\r' && b[i + 1] == '\n')
        i += 2; /* empty lines before the start line (RFC 9112 2.2) */
    lf = memchr(b + i, '\n', len - i);
    if (lf == NULL)
        goto malformed;
    i = (size_t)(lf - b) + 1;
    while (i < len) {
        char *line = b + i, *colon, *v, *end;
        struct http1_header *hd;
        lf = memchr(line, '\n', len - i);
        if (lf == NULL || lf == line)
            goto malformed;
        if (lf - line == 1)
            break;            /* the empty line: the end of the head */
        end = (char *)lf - 1; /* the CR */
        colon = memchr(line, ':', (size_t)(end - line));
        if (colon == NULL || colon == line)
            goto malformed;
        int rc = head_new_header(h);
        if (rc == -E2BIG) {
            http1_parser_fail(p, HTTP1_FAIL_TOO_LARGE, "too many header fields");
            return -1;
        }
        if (rc < 0) {
            storage_error(p, rc);
            return -1;
        }
        hd = &h->hdrs[h->n - 1];
        hd->name_off = (uint32_t)(line - b);
        hd->name_len = (uint32_t)(colon - line);
        *colon = '\0';
        v = colon + 1;
        while (v < end && is_ows(*v))
            v++;
        while (end > v && is_ows(end[-1]))
            end--;
        hd->value_off = (uint32_t)(v - b);
        hd->value_len = (uint32_t)(end - v);
        *end = '\0';
        http1__classify(hd, b);
        i = (size_t)(lf - b) + 1;
    }
    if (h->target_len == 0) {
        b[len - 2] = '\0';
        h->target_off = (uint32_t)(len - 2);
    }
    return 0;
malformed:
    /* Not reached for a head llhttp accepted; kept so that no index is ever made of one. */
    http1_parser_fail(p, HTTP1_FAIL_BAD_MESSAGE, "malformed message: invalid header line");
    return -1;
}

static int on_headers_complete(llhttp_t *ll)
{
    struct http1_parser *p = ll->data;
    int rc;
    if (index_head(p) < 0)
        return -1;
    ll->settings = (void *)&settings_body;
    http1__mark_connection_names(&p->head);
    /* Protocol upgrades are not relayed: Upgrade is removed as a hop-by-hop header and the
     * request goes on as an ordinary one, so llhttp must not stop at its end. */
    if (ll->type == HTTP_REQUEST && ll->method != HTTP_CONNECT)
        ll->upgrade = 0;
    rc = p->cb->on_head ? p->cb->on_head(p) : HTTP1_CB_OK;
    if (rc == HTTP1_CB_ERROR)
        return -1;
    if (rc == HTTP1_CB_SKIP_BODY) {
        p->skip_body = true;
        return 1;
    }
    if (rc == HTTP1_CB_PAUSE) {
        p->user_paused = true;
        return HPE_PAUSED;
    }
    return 0;
}

static int on_chunk_header(llhttp_t *ll)
{
    struct http1_parser *p = ll->data;
    p->chunk_left = ll->content_length;
    p->chunk_ext_bytes = 0;
    return 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t len)
{
    struct http1_parser *p = ll->data;
    if (ll->flags & F_CHUNKED) {
        p->chunk_left = len <= p->chunk_left ? p->chunk_left - len : 0;
        if (p->chunk_left == 0) {
            p->crlf_left = 2;
            if (http1__check_chunk_crlf(p, at + len, p->exec_end) < 0)
                return HPE_USER;
        }
    }
    if (p->cb->on_body == NULL)
        return 0;
    return p->cb->on_body(p, at, len) == HTTP1_CB_ERROR ? HPE_USER : 0;
}

static int on_message_complete(llhttp_t *ll)
{
    struct http1_parser *p = ll->data;
    int rc = p->cb->on_complete ? p->cb->on_complete(p) : HTTP1_CB_OK;
    ll->settings = (void *)&settings_head;
    p->in_head = true;
    p->head_bytes = 0;
    p->seen_start_line = false;
    p->after_cr = false;
    p->at_line_start = true;
    p->in_start_line = false;
    p->in_name = false;
    p->message_begun = false;
    if (rc == HTTP1_CB_ERROR)
        return -1;
    if (rc == HTTP1_CB_PAUSE)
        p->user_paused = true;
    /* Always pause here, so that the head scanner sees the next message from its first byte. */
    return HPE_PAUSED;
}

/* Two tables of llhttp callbacks serve every parser (llhttp keeps a pointer to the one in
 * use), instead of a copy in each: a few hundred bytes per connection, which idle connections
 * would pay too. settings_head is in use from a message's start to the end of its head (no
 * per-header callback: index_head() finds the headers), settings_body from there to its end
 * (trailer fields counted). Members left out are NULL, as llhttp_settings_init() leaves them. */
#define HTTP1_COMMON_CALLBACKS                                                                     \
    .on_message_begin = on_message_begin, .on_method_complete = on_method_complete,                \
    .on_url = on_target, .on_url_complete = on_target_complete, .on_status = on_target,            \
    .on_status_complete = on_target_complete, .on_headers_complete = on_headers_complete,          \
    .on_body = on_body, .on_chunk_header = on_chunk_header,                                        \
    .on_chunk_extension_name = on_chunk_extension, .on_chunk_extension_value = on_chunk_extension, \
    .on_message_complete = on_message_complete

static const llhttp_settings_t settings_head = {HTTP1_COMMON_CALLBACKS};

static const llhttp_settings_t settings_body = {
    HTTP1_COMMON_CALLBACKS,
    .on_header_field = on_trailer_field,
    .on_header_field_complete = on_trailer_field_complete,
    .on_header_value = on_trailer_value,
};

int http1_parser_init(struct http1_parser *p, llhttp_type_t type, size_t head_limit,
                      size_t max_headers, const struct http1_callbacks *cb, void *data)
{
    memset(p, 0, sizeof(*p));
    llhttp_init(&p->ll, type, &settings_head);
    /* Strict parsing: no leniency flag is ever set (they all default to off). */
    p->ll.data = p;
    p->cb = cb;
    p->data = data;
    p->head_limit = head_limit;
    p->head.max = head_limit;
    p->head.max_n = max_headers;
    p->in_head = true;
    p->at_line_start = true;
    return 0;
}

bool http1_parser_release(struct http1_parser *p, struct http1_storage *s)
{
    struct http1_head *h = &p->head;
    /* Only between messages: waiting for a head of which no byte has come yet. */
    if (!p->in_head || p->message_begun || p->head_bytes > 0 || (h->buf == NULL && h->hdrs == NULL))
        return false;
    head_reset(h);
    if (h->cap != HEAD_INITIAL || h->cap_n != HDRS_INITIAL) {
        http1_parser_free(p);
        return false;
    }
    s->buf = h->buf;
    s->hdrs = h->hdrs;
    h->buf = NULL;
    h->hdrs = NULL;
    h->cap = h->cap_n = 0;
    return true;
}

void http1_parser_adopt(struct http1_parser *p, const struct http1_storage *s)
{
    struct http1_head *h = &p->head;
    http1_parser_free(p); /* none, by contract; never leaked if there was */
    h->buf = s->buf;
    h->cap = HEAD_INITIAL;
    h->hdrs = s->hdrs;
    h->cap_n = HDRS_INITIAL;
}

void http1_storage_free(struct http1_storage *s)
{
    free(s->buf);
    free(s->hdrs);
    s->buf = NULL;
    s->hdrs = NULL;
}

void http1_parser_free(struct http1_parser *p)
{
    free(p->head.buf);
    free(p->head.hdrs);
    p->head.buf = NULL;
    p->head.hdrs = NULL;
    p->head.cap = p->head.cap_n = 0;
}

/* ---- Execution ---------------------------------------------------------------------------- */

static enum http1_status llhttp_failure(struct http1_parser *p, llhttp_errno_t err)
{
    if (p->fail == HTTP1_FAIL_NONE) {
        const char *why = llhttp_get_error_reason(&p->ll);
        char msg[sizeof(p->fail_msg)];
        snprintf(msg, sizeof(msg), "malformed message: %s",
                 why != NULL ? why : llhttp_errno_name(err));
        http1_parser_fail(p, HTTP1_FAIL_BAD_MESSAGE, msg);
    }
    return HTTP1_ERROR;
}

enum http1_status http1_parser_execute(struct http1_parser *p, const char *data, size_t len,
                                       size_t *consumed)
{
    size_t off = 0;

    *consumed = 0;
    if (p->fail != HTTP1_FAIL_NONE)
        return HTTP1_ERROR;
    /* One pass per message part: head bytes are scanned first, then given to llhttp. A zero
     * length call still runs llhttp once, to complete a message paused after its head. */
    do {
        size_t end = len, used = 0;
        llhttp_errno_t err;
        if (p->in_head && off < len) {
            int r, rc;
            if (p->head_bytes == 0)
                head_reset(&p->head); /* a new head: its first bytes */
            r = http1__scan_head(p, data + off, len - off, &used);
            if (r < 0) {
                *consumed = off + used;
                return HTTP1_ERROR;
            }
            /* The scanned bytes go to the storage as they are; llhttp parses them next, and
             * on_target() finds its spans there by their place in data + off. */
            p->exec_head_base = data + off;
            p->exec_head_off = p->head.len;
            rc = head_append(&p->head, data + off, used);
            if (rc < 0) {
                storage_error(p, rc);
                *consumed = off;
                return HTTP1_ERROR;
            }
            end = off + used;
            if (r == 1)
                p->in_head = false;
        }
        if (!p->in_head && p->crlf_left > 0 &&
            http1__check_chunk_crlf(p, data + off, data + end) < 0) {
            *consumed = off;
            return HTTP1_ERROR;
        }
        p->exec_end = data + end;
        err = llhttp_execute(&p->ll, data + off, end - off);
        if (err == HPE_OK) {
            off = end;
            continue;
        }
        if (err == HPE_PAUSED) {
            const char *pos = llhttp_get_error_pos(&p->ll);
            off = pos != NULL ? (size_t)(pos - data) : end;
            llhttp_resume(&p->ll);
            if (p->user_paused) {
                p->user_paused = false;
                *consumed = off;
                return HTTP1_PAUSED;
            }
            continue;
        }
        if (err == HPE_PAUSED_UPGRADE) {
            /* CONNECT: refused by the caller's on_head; nothing follows in HTTP. */
            http1_parser_fail(p, HTTP1_FAIL_BAD_MESSAGE, "CONNECT is not supported");
            *consumed = off;
            return HTTP1_ERROR;
        }
        *consumed = off;
        return llhttp_failure(p, err);
    } while (off < len);
    *consumed = len;
    return HTTP1_NEED_MORE;
}

void http1_parser_resume(struct http1_parser *p)
{
    p->user_paused = false;
}

enum http1_status http1_parser_finish(struct http1_parser *p)
{
    llhttp_errno_t err;
    if (p->fail != HTTP1_FAIL_NONE)
        return HTTP1_ERROR;
    err = llhttp_finish(&p->ll);
    if (err == HPE_OK)
        return HTTP1_NEED_MORE;
    if (err == HPE_PAUSED) {
        llhttp_resume(&p->ll);
        if (p->user_paused) {
            p->user_paused = false;
            return HTTP1_PAUSED;
        }
        return HTTP1_NEED_MORE;
    }
    return llhttp_failure(p, err);
}

static int ahead_complete(struct http1_parser *p)
{
    (void)p;
    return HTTP1_CB_PAUSE; /* the next message is not looked at */
}

/* A look-ahead copy delivers nothing. Only the body of the message in progress is parsed (the
 * copy stops at its end), and a body writes nothing into the head storage it shares with the
 * original: trailers are only counted. */
static const struct http1_callbacks ahead_cbs = {NULL, NULL, ahead_complete};

enum http1_status http1_parser_check_ahead(const struct http1_parser *p, const char *data,
                                           size_t len, char *why, size_t cap)
{
    struct http1_parser copy;
    enum http1_status st;
    size_t used = 0;

    assert(!p->in_head && p->fail == HTTP1_FAIL_NONE);
    /* llhttp's state is plain data: a span left open restarts at the next execute's data. */
    memcpy(&copy, p, sizeof(copy));
    copy.ll.data = &copy;
    copy.cb = &ahead_cbs;
    copy.user_paused = false;
    st = http1_parser_execute(&copy, data, len, &used);
    if (st == HTTP1_ERROR)
        snprintf(why, cap, "%s", copy.fail_msg);
    return st;
}

bool http1_parser_in_body(const struct http1_parser *p)
{
    return !p->in_head;
}

bool http1_version_supported(const struct http1_parser *p)
{
    return p->ll.http_major == 1 && p->ll.http_minor <= 1;
}
