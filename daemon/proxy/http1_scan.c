/*
 * The strict scanner of the HTTP/1 parser, and the header names it recognises.
 *
 * http1__scan_head() runs over a head's raw bytes before llhttp sees them and enforces what
 * llhttp 8.1 does not (or does only when built with LLHTTP_STRICT_MODE): CRLF line ends, no
 * obs-fold, no whitespace before a colon, no empty names, a printable-ASCII request line with
 * single spaces, the head size limit. http1__check_chunk_crlf() checks the two bytes after each
 * chunk's data, which llhttp 8.1 skips. Plain runs are skipped eight bytes at a time.
 *
 * The known-name table and http1__classify() recognise, once per completed name, the header
 * fields the proxy looks up or acts on; http1__mark_connection_names() marks those a
 * Connection header names.
 */
#include "proxy/http1_internal.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

/* ---- Head scanner ------------------------------------------------------------------------- */

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

int http1__scan_head(struct http1_parser *p, const char *data, size_t len, size_t *used)
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

/* ---- Chunk framing ------------------------------------------------------------------------ */

/* llhttp 8.1 skips the two bytes after a chunk's data unless built with LLHTTP_STRICT_MODE. */
int http1__check_chunk_crlf(struct http1_parser *p, const char *pos, const char *end)
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

/* ---- Known header names ------------------------------------------------------------------- */

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
    {NAME("upgrade"), HTTP1_FIELD_UPGRADE, HTTP1_HDR_HOP},
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
void http1__classify(struct http1_header *hd, const char *buf)
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
void http1__mark_connection_names(struct http1_head *h)
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
