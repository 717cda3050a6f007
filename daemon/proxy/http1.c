#include "proxy/http1.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

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
    h->hdrs[h->n].name_off = (uint32_t)h->len;
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

static void classify(struct http1_header *hd, const char *buf);
static void mark_connection_names(struct http1_head *h);

/* ---- llhttp callbacks --------------------------------------------------------------------- */

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
    head_reset(&p->head);
    p->in_trailers = false;
    p->field_open = false;
    p->value_open = false;
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

static int on_target(llhttp_t *ll, const char *at, size_t len)
{
    struct http1_parser *p = ll->data;
    int rc;
    if (p->head.target_len == 0)
        p->head.target_off = (uint32_t)p->head.len;
    rc = head_append(&p->head, at, len);
    if (rc < 0)
        return storage_error(p, rc);
    p->head.target_len += (uint32_t)len;
    return 0;
}

static int on_target_complete(llhttp_t *ll)
{
    struct http1_parser *p = ll->data;
    int rc = head_append(&p->head, "", 1); /* NUL-terminate for the rewrite */
    if (rc < 0)
        return storage_error(p, rc);
    return 0;
}

static int on_header_field(llhttp_t *ll, const char *at, size_t len)
{
    struct http1_parser *p = ll->data;
    int rc;
    if (p->in_trailers) { /* trailers are not forwarded (docs/architecture.md) */
        rc = count_trailer(p, len, !p->field_open);
        p->field_open = true;
        return rc;
    }
    if (!p->field_open) {
        rc = head_new_header(&p->head);
        if (rc == -E2BIG) {
            http1_parser_fail(p, HTTP1_FAIL_TOO_LARGE, "too many header fields");
            return HPE_USER;
        }
        if (rc < 0)
            return storage_error(p, rc);
        p->field_open = true;
    }
    rc = head_append(&p->head, at, len);
    if (rc < 0)
        return storage_error(p, rc);
    p->head.hdrs[p->head.n - 1].name_len += (uint32_t)len;
    return 0;
}

static int on_header_field_complete(llhttp_t *ll)
{
    struct http1_parser *p = ll->data;
    int rc;
    p->field_open = false;
    if (p->in_trailers)
        return 0;
    rc = head_append(&p->head, "", 1);
    if (rc < 0)
        return storage_error(p, rc);
    classify(&p->head.hdrs[p->head.n - 1], p->head.buf);
    p->head.hdrs[p->head.n - 1].value_off = (uint32_t)p->head.len;
    p->value_open = true;
    return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t len)
{
    struct http1_parser *p = ll->data;
    int rc;
    if (p->in_trailers)
        return count_trailer(p, len, false);
    if (!p->value_open)
        return 0;
    rc = head_append(&p->head, at, len);
    if (rc < 0)
        return storage_error(p, rc);
    p->head.hdrs[p->head.n - 1].value_len += (uint32_t)len;
    return 0;
}

static int on_header_value_complete(llhttp_t *ll)
{
    struct http1_parser *p = ll->data;
    struct http1_header *hd;
    int rc;
    if (p->in_trailers || !p->value_open)
        return 0;
    p->value_open = false;
    rc = head_append(&p->head, "", 1);
    if (rc < 0)
        return storage_error(p, rc);
    /* llhttp keeps trailing whitespace of a value; it is not part of the value (RFC 9110 5.5). */
    hd = &p->head.hdrs[p->head.n - 1];
    while (hd->value_len > 0 && (p->head.buf[hd->value_off + hd->value_len - 1] == ' ' ||
                                 p->head.buf[hd->value_off + hd->value_len - 1] == '\t')) {
        hd->value_len--;
        p->head.buf[hd->value_off + hd->value_len] = '\0';
    }
    return 0;
}

static int on_headers_complete(llhttp_t *ll)
{
    struct http1_parser *p = ll->data;
    int rc;
    p->in_trailers = true;
    mark_connection_names(&p->head);
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

/* Checks the CRLF that must follow a chunk's data, as far as the bytes in [pos, end) go. */
static int check_chunk_crlf(struct http1_parser *p, const char *pos, const char *end)
{
    while (p->crlf_left > 0 && pos < end) {
        char want = p->crlf_left == 2 ? '\r' : '\n';
        if (*pos != want) {
            http1_parser_fail(p, HTTP1_FAIL_BAD_MESSAGE,
                              "malformed message: expected CRLF after chunk data");
            return -1;
        }
        p->crlf_left--;
        pos++;
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
            if (check_chunk_crlf(p, at + len, p->exec_end) < 0)
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

/* One set of llhttp callbacks serves every parser (llhttp keeps a pointer to it), instead of
 * a copy in each: it is a few hundred bytes per connection, which idle connections pay too.
 * Members left out are NULL, as llhttp_settings_init() would leave them. */
static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_method_complete = on_method_complete,
    .on_url = on_target,
    .on_url_complete = on_target_complete,
    .on_status = on_target,
    .on_status_complete = on_target_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_chunk_extension_name = on_chunk_extension,
    .on_chunk_extension_value = on_chunk_extension,
    .on_message_complete = on_message_complete,
};

int http1_parser_init(struct http1_parser *p, llhttp_type_t type, size_t head_limit,
                      size_t max_headers, const struct http1_callbacks *cb, void *data)
{
    memset(p, 0, sizeof(*p));
    llhttp_init(&p->ll, type, &settings);
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
    if (!p->in_head || p->message_begun || (h->buf == NULL && h->hdrs == NULL))
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

/* Word-at-a-time tests (eight bytes at once). below(w, n) marks, with its high bit, each byte
 * of `w` below `n` (n <= 128; bytes of 128 and above never count) and equal(w, c) each byte
 * equal to `c`. A mark can be wrong only above a byte rightly marked (a borrow carries up from
 * it), so the lowest mark is always exact: first_marked() turns it into a byte index. */
#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static inline uint64_t below(uint64_t w, unsigned n)
{
    return (w - ONES * n) & ~w & HIGHS;
}

static inline uint64_t equal(uint64_t w, unsigned c)
{
    return below(w ^ (ONES * c), 1);
}

static inline uint64_t load8(const unsigned char *d)
{
    uint64_t w;
    memcpy(&w, d, sizeof(w));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w); /* the first byte in memory is the lowest, as below assumes */
#endif
    return w;
}

/* The index (0-7) of the first byte marked in `m` (not 0). */
static inline size_t first_marked(uint64_t m)
{
    return (size_t)__builtin_ctzll(m) / 8;
}

/* The end of a run of name bytes from `from` (before `stop`): no control byte, space or ':'. */
static size_t name_run(const unsigned char *d, size_t from, size_t stop)
{
    size_t j = from;
    while (stop - j >= 8) {
        uint64_t w = load8(d + j);
        uint64_t m = below(w, 0x21) | equal(w, ':');
        if (m != 0)
            return j + first_marked(m);
        j += 8;
    }
    while (j < stop && d[j] > ' ' && d[j] != ':')
        j++;
    return j;
}

/* The end of a run of value (or status line) bytes from `from` (before `stop`): no control
 * byte, which CR, LF, NUL and HTAB all are. */
static size_t value_run(const unsigned char *d, size_t from, size_t stop)
{
    size_t j = from;
    while (stop - j >= 8) {
        uint64_t m = below(load8(d + j), 0x20);
        if (m != 0)
            return j + first_marked(m);
        j += 8;
    }
    while (j < stop && d[j] >= 0x20)
        j++;
    return j;
}

/*
 * The end of the run of bytes from `from` (before `stop`) that need no look in the current
 * part of a line: the byte-by-byte checks of scan_head() then start at the first byte that may
 * matter. Each loop stops at a superset of the bytes that matter there (any control byte for a
 * value or status line, which CR, LF and NUL are; control bytes, space and ':' in a name;
 * anything outside printable ASCII in a request line), so a stop is never missed.
 */
static size_t plain_run(const struct http1_parser *p, const char *data, size_t from, size_t stop)
{
    const unsigned char *d = (const unsigned char *)data;
    size_t j = from;
    if (p->in_name)
        return name_run(d, from, stop);
    if (p->in_start_line && p->ll.type == HTTP_REQUEST) {
        /* Spaces are looked at one by one: exactly one separates the parts. */
        while (j < stop && d[j] > 0x20 && d[j] < 0x7f)
            j++;
        return j;
    }
    return value_run(d, from, stop);
}

/*
 * The length of the header line starting at `from` when it is plain: a name of one or more
 * bytes that are neither control bytes, space nor ':', then ':', a value without any control
 * byte (a tab sends the line to the byte-by-byte checks), CR and LF, all within `len`. Such a
 * line passes every check of scan_head() and leaves its state as it found it (at the start of
 * a line), so it is skipped whole; 0 means the byte-by-byte checks must look at the line.
 */
static size_t plain_header_line(const char *data, size_t from, size_t len)
{
    const unsigned char *d = (const unsigned char *)data;
    size_t j = name_run(d, from, len), k;
    if (j == from || j >= len || d[j] != ':')
        return 0;
    k = value_run(d, j + 1, len);
    if (len - k < 2 || d[k] != '\r' || d[k + 1] != '\n')
        return 0;
    return k + 2 - from;
}

/*
 * Scans raw head bytes before llhttp sees them, enforcing what llhttp 8.1 leaves out (or
 * enforces only when built with LLHTTP_STRICT_MODE): CRLF line ends, no obs-fold, no
 * whitespace or emptiness in a field name, a plain-ASCII request line, the head size limit.
 * Returns 0 when all `len` bytes belong to the head (more needed), 1 when the head ends after
 * `*used` bytes, -1 on an error (set in p).
 */
static int scan_head(struct http1_parser *p, const char *data, size_t len, size_t *used)
{
    const char *why = NULL;
    size_t i;
    for (i = 0; i < len; i++) {
        unsigned char c;
        if (p->at_line_start && p->seen_start_line && !p->after_cr) {
            size_t n = plain_header_line(data, i, len);
            if (n > 0 && n <= p->head_limit - p->head_bytes) {
                p->head_bytes += n;
                i += n - 1;
                continue;
            }
        }
        if (!p->after_cr && !p->at_line_start) {
            /* Inside a line: skip what needs no look, up to the size limit (which the byte
             * after the run then trips; head_bytes never passes the limit). */
            size_t room = p->head_limit - p->head_bytes;
            size_t j = plain_run(p, data, i, len - i < room ? len : i + room);
            p->head_bytes += j - i;
            if (j > i)
                p->after_sp = false;
            i = j;
            if (i == len)
                break;
        }
        c = (unsigned char)data[i];
        if (++p->head_bytes > p->head_limit) {
            http1_parser_fail(p, HTTP1_FAIL_TOO_LARGE, "request head too large");
            *used = i;
            return -1;
        }
        if (p->after_cr) {
            p->after_cr = false;
            if (c != '\n') {
                why = "bare CR in message head";
                break;
            }
            if (p->at_line_start) {
                /* An empty line: before the start line it is ignored (RFC 9112 2.2), after it
                 * the head ends. */
                if (p->seen_start_line) {
                    *used = i + 1;
                    return 1;
                }
                continue;
            }
            p->at_line_start = true;
            p->in_start_line = false;
            p->in_name = false;
            continue;
        }
        if (c == '\r') {
            p->after_cr = true;
            continue;
        }
        if (c == '\n') {
            why = "bare LF in message head";
            break;
        }
        if (c == '\0') {
            why = "NUL byte in message head";
            break;
        }
        if (p->at_line_start) {
            p->at_line_start = false;
            if (!p->seen_start_line) {
                p->seen_start_line = true;
                p->in_start_line = true;
                p->after_sp = false;
            } else if (c == ' ' || c == '\t') {
                why = "obsolete line folding (obs-fold) in message head";
                break;
            } else if (c == ':') {
                why = "empty header field name";
                break;
            } else {
                p->in_name = true;
            }
        }
        if (p->in_start_line && p->ll.type == HTTP_REQUEST) {
            if (c < 0x20 || c >= 0x7f) {
                why = "invalid character in request line";
                break;
            }
            /* RFC 9112 3: method SP request-target SP HTTP-version, one SP each; llhttp 8.1
             * lets "GET  /path" through. */
            if (c == ' ' && p->after_sp) {
                why = "more than one space between the parts of the request line";
                break;
            }
            p->after_sp = c == ' ';
        }
        if (p->in_name) {
            if (c == ':')
                p->in_name = false;
            else if (c == ' ' || c == '\t') {
                why = "whitespace in or after a header field name";
                break;
            }
        }
    }
    if (why != NULL) {
        http1_parser_fail(p, HTTP1_FAIL_BAD_MESSAGE, why);
        *used = i;
        return -1;
    }
    *used = len;
    return 0;
}

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
            int r = scan_head(p, data + off, len - off, &used);
            if (r < 0) {
                *consumed = off + used;
                return HTTP1_ERROR;
            }
            end = off + used;
            if (r == 1)
                p->in_head = false;
        }
        if (!p->in_head && p->crlf_left > 0 && check_chunk_crlf(p, data + off, data + end) < 0) {
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

/* ---- Rewriting ---------------------------------------------------------------------------- */

/*
 * The header names the proxy acts on, in one table ordered by length (names of one length
 * together), so that recognising a name looks only at the entries of its length: a name of a
 * length none has (most, like Accept-Encoding or Cookie) costs one lookup in by_len[].
 *
 * Names are compared without case and with '_' equal to '-': a CGI-style gateway behind the
 * enclave would read "Transfer_Encoding" as Transfer-Encoding (and "X_Forwarded_For" as
 * X-Forwarded-For), so such variants are removed like the names they stand for. The field
 * (what lookups find) is only given to an exact spelling: "Transfer_Encoding" is removed, but it
 * never frames a body.
 */
#define NAME(s) s, sizeof(s) - 1

static const struct known_name {
    const char *name; /* lower case, '-' for separators */
    uint8_t len;
    uint8_t field; /* enum http1_field */
    uint8_t flags; /* HTTP1_HDR_* */
} known[] = {
    {NAME("te"), HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
    {NAME("host"), HTTP1_FIELD_HOST, 0},
    {NAME("expect"), HTTP1_FIELD_EXPECT, 0},
    {NAME("trailer"), HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
    {NAME("upgrade"), HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
    {NAME("forwarded"), HTTP1_FIELD_OTHER, HTTP1_HDR_FORWARDED},
    {NAME("connection"), HTTP1_FIELD_CONNECTION, HTTP1_HDR_HOP},
    {NAME("keep-alive"), HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
    {NAME("authorization"), HTTP1_FIELD_AUTHORIZATION, 0},
    {NAME("x-attestation"), HTTP1_FIELD_OTHER, HTTP1_HDR_OURS},
    {NAME("content-length"), HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
    {NAME("proxy-connection"), HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
    {NAME("transfer-encoding"), HTTP1_FIELD_TRANSFER_ENCODING, HTTP1_HDR_HOP},
    {NAME("proxy-authorization"), HTTP1_FIELD_OTHER, HTTP1_HDR_HOP},
};

#define KNOWN_COUNT  (sizeof(known) / sizeof(known[0]))
#define KNOWN_MAXLEN 19 /* the longest name above */

/* by_len[n]: one past the index in known[] of the first name of length n, 0 for none; the
 * names of that length follow it (test_known_names_are_indexed_by_length checks every one). */
static const uint8_t by_len[KNOWN_MAXLEN + 1] = {
    [2] = 1,  [4] = 2,   [6] = 3,   [7] = 4,   [9] = 6,   [10] = 7,
    [13] = 9, [14] = 11, [16] = 12, [17] = 13, [19] = 14,
};

/* One byte of a header name against one of a name in known[] (a lower-case letter or '-'):
 * equal, or the same letter in upper case, or '_' for '-' (which clears *exact). */
static inline bool byte_folded(unsigned char c, unsigned char want, bool *exact)
{
    if (c == want)
        return true;
    if (want >= 'a')
        return (c | 0x20) == want; /* want is a letter: only its upper case gives it */
    if (want == '-' && c == '_') {
        *exact = false;
        return true;
    }
    return false;
}

/* Compares the first `n` bytes of a header name with `lower` by byte_folded(). */
static bool name_prefix_folded(const char *name, const char *lower, size_t n, bool *exact)
{
    for (size_t i = 0; i < n; i++) {
        if (!byte_folded((unsigned char)name[i], (unsigned char)lower[i], exact))
            return false;
    }
    return true;
}

/* The entry of known[] that `name` is (by byte_folded()), or NULL; *exact as above. */
static const struct known_name *known_lookup(const char *name, size_t len, bool *exact)
{
    *exact = true;
    if (len > KNOWN_MAXLEN || by_len[len] == 0)
        return NULL;
    for (size_t i = by_len[len] - 1u; i < KNOWN_COUNT && known[i].len == len; i++) {
        if (name_prefix_folded(name, known[i].name, len, exact))
            return &known[i];
        *exact = true;
    }
    return NULL;
}

/* Recognises a completed header name once, so that lookups and forwarding decisions compare
 * numbers instead of strings (and copying a head is linear in its headers). */
static void classify(struct http1_header *hd, const char *buf)
{
    const char *name = buf + hd->name_off;
    size_t len = hd->name_len;
    bool exact;
    const struct known_name *k = known_lookup(name, len, &exact);
    hd->field = HTTP1_FIELD_OTHER;
    hd->flags = 0;
    if (k != NULL) {
        hd->flags = k->flags;
        if (exact)
            hd->field = k->field;
    } else if (len >= 12 && name_prefix_folded(name, "x-forwarded-", 12, &exact)) {
        hd->flags = HTTP1_HDR_FORWARDED; /* X-Forwarded-*, also spelled with '_' */
    }
}

/* Marks the headers that the message's Connection headers name: they are removed on
 * forwarding, like the hop-by-hop ones (RFC 9110 7.6.1). */
static void mark_connection_names(struct http1_head *h)
{
    for (int i = http1_head_find(h, HTTP1_FIELD_CONNECTION, 0); i >= 0;
         i = http1_head_find(h, HTTP1_FIELD_CONNECTION, (size_t)i + 1)) {
        const char *v = h->buf + h->hdrs[i].value_off;
        const char *end = v + h->hdrs[i].value_len;
        while (v < end) {
            const char *tok;
            size_t len;
            while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
                v++;
            tok = v;
            while (v < end && *v != ',' && *v != ' ' && *v != '\t')
                v++;
            len = (size_t)(v - tok);
            for (size_t k = 0; len > 0 && k < h->n; k++) {
                if (h->hdrs[k].name_len == len &&
                    strncasecmp(h->buf + h->hdrs[k].name_off, tok, len) == 0)
                    h->hdrs[k].flags |= HTTP1_HDR_NAMED;
            }
        }
    }
}

struct out {
    char *buf;
    size_t len, cap;
    bool overflow;
};

static void out_put(struct out *o, const char *s, size_t n)
{
    if (n == 0)
        return;
    if (o->overflow || n > o->cap - o->len) {
        o->overflow = true;
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void out_str(struct out *o, const char *s)
{
    out_put(o, s, strlen(s));
}

static void out_u64(struct out *o, uint64_t v)
{
    char num[20];
    size_t n = sizeof(num);
    do {
        num[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    out_put(o, num + n, sizeof(num) - n);
}

/* True when request header `i` is left out for what it is: Host (replaced), our own bearer
 * token, "Expect: 100-continue" (answered by the proxy once the upstream is attested). */
static bool dropped_request_field(const struct http1_head *h, size_t i,
                                  const struct http1_request_opts *o)
{
    const char *v = h->buf + h->hdrs[i].value_off;
    switch ((enum http1_field)h->hdrs[i].field) {
    case HTTP1_FIELD_HOST:
        return true;
    case HTTP1_FIELD_EXPECT:
        return h->hdrs[i].value_len == 12 && strncasecmp(v, "100-continue", 12) == 0;
    case HTTP1_FIELD_AUTHORIZATION:
        return o->strip_authorization;
    default:
        return false;
    }
}

/* Copies the end-to-end headers of `h`: not hop-by-hop, not named by Connection, and for a
 * request (`req` set) not X-Forwarded-* unless kept, nor a field dropped_request_field() drops. */
static void copy_headers(struct out *o, const struct http1_head *h,
                         const struct http1_request_opts *req)
{
    unsigned skip = HTTP1_HDR_HOP | HTTP1_HDR_NAMED;
    if (req != NULL && !req->keep_forwarded)
        skip |= HTTP1_HDR_FORWARDED;
    if (req == NULL)
        skip |= HTTP1_HDR_OURS; /* a response: the proxy's own headers come from the proxy */
    for (size_t i = 0; i < h->n; i++) {
        const struct http1_header *hd = &h->hdrs[i];
        if ((hd->flags & skip) != 0 ||
            (req != NULL && hd->field != HTTP1_FIELD_OTHER && dropped_request_field(h, i, req)))
            continue;
        out_put(o, h->buf + hd->name_off, hd->name_len);
        out_put(o, ": ", 2);
        out_put(o, h->buf + hd->value_off, hd->value_len);
        out_put(o, "\r\n", 2);
    }
}

static void out_framing(struct out *o, enum http1_framing framing, uint64_t content_length)
{
    if (framing == HTTP1_FRAMING_LENGTH) {
        out_str(o, "Content-Length: ");
        out_u64(o, content_length);
        out_str(o, "\r\n");
    } else if (framing == HTTP1_FRAMING_CHUNKED) {
        out_str(o, "Transfer-Encoding: chunked\r\n");
    }
}

int http1_build_request(const struct http1_parser *p, const struct http1_request_opts *o, char *buf,
                        size_t cap)
{
    struct out out = {buf, 0, cap, false};
    const struct http1_head *h = &p->head;

    out_str(&out, llhttp_method_name((llhttp_method_t)p->ll.method));
    out_put(&out, " ", 1);
    out_put(&out, h->buf + h->target_off, h->target_len);
    out_str(&out, " HTTP/1.1\r\nHost: ");
    out_str(&out, o->authority);
    out_str(&out, "\r\n");
    copy_headers(&out, h, o);
    out_framing(&out, o->framing, o->content_length);
    out_str(&out, "\r\n");
    return out.overflow ? -ENOSPC : (int)out.len;
}

int http1_build_response(const struct http1_parser *p, const struct http1_response_opts *o,
                         char *buf, size_t cap)
{
    struct out out = {buf, 0, cap, false};
    const struct http1_head *h = &p->head;
    unsigned code = (unsigned)p->ll.status_code % 1000; /* llhttp allows three digits only */
    char status[4] = {(char)('0' + code / 100), (char)('0' + code / 10 % 10),
                      (char)('0' + code % 10), ' '};

    out_str(&out, "HTTP/1.1 ");
    out_put(&out, status, sizeof(status));
    out_put(&out, h->buf + h->target_off, h->target_len);
    out_str(&out, "\r\n");
    copy_headers(&out, h, NULL);
    out_framing(&out, o->framing, o->content_length);
    if (o->extra_headers != NULL)
        out_str(&out, o->extra_headers);
    if (o->close)
        out_str(&out, "Connection: close\r\n");
    out_str(&out, "\r\n");
    return out.overflow ? -ENOSPC : (int)out.len;
}

/* ---- Host allow-list and bearer token ----------------------------------------------------- */

static bool valid_port(const char *s, size_t n)
{
    unsigned long v = 0;
    if (n == 0 || n > 5)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    return v >= 1 && v <= 65535;
}

bool http1_host_allowed(const char *host, size_t len, const char *const *allowed, size_t n)
{
    size_t name_len = len;
    const char *colon;

    if (len == 0)
        return false;
    /* Split off a port: after the closing bracket for IPv6, after the last colon otherwise
     * (a bare IPv6 address without brackets is not a valid Host and matches nothing). */
    if (host[0] == '[') {
        const char *rb = memchr(host, ']', len);
        if (rb == NULL)
            return false;
        name_len = (size_t)(rb - host) + 1;
        if (name_len < len) {
            if (host[name_len] != ':' || !valid_port(host + name_len + 1, len - name_len - 1))
                return false;
        }
    } else {
        colon = memchr(host, ':', len);
        if (colon != NULL) {
            name_len = (size_t)(colon - host);
            if (!valid_port(colon + 1, len - name_len - 1))
                return false;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const char *a = allowed[i];
        size_t alen = strlen(a);
        bool a_has_port = a[0] == '[' ? strstr(a, "]:") != NULL : strchr(a, ':') != NULL;
        if (a_has_port) {
            if (alen == len && strncasecmp(a, host, len) == 0)
                return true;
        } else if (alen == name_len && strncasecmp(a, host, name_len) == 0) {
            return true;
        }
    }
    return false;
}

bool http1_bearer_matches(const char *value, size_t len, const char *token)
{
    uint8_t a[32], b[32];
    unsigned alen = 0, blen = 0;
    size_t i = 6;
    bool ok;

    if (len < 7 || strncasecmp(value, "bearer", 6) != 0 || (value[6] != ' ' && value[6] != '\t'))
        return false;
    while (i < len && (value[i] == ' ' || value[i] == '\t'))
        i++;
    /* Digests of equal length are compared, so neither the token's length nor its content
     * shows in the time taken. */
    if (EVP_Digest(value + i, len - i, a, &alen, EVP_sha256(), NULL) != 1 ||
        EVP_Digest(token, strlen(token), b, &blen, EVP_sha256(), NULL) != 1)
        return false;
    ok = alen == 32 && blen == 32 && CRYPTO_memcmp(a, b, 32) == 0;
    OPENSSL_cleanse(a, sizeof(a));
    OPENSSL_cleanse(b, sizeof(b));
    return ok && token[0] != '\0';
}

size_t http1_chunk_header(uint64_t n, char out[HTTP1_CHUNK_HEADER_MAX])
{
    int len = snprintf(out, HTTP1_CHUNK_HEADER_MAX, "%llx\r\n", (unsigned long long)n);
    return (size_t)len;
}
