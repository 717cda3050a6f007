/*
 * HTTP/1.1 message parsing and rewriting for the relay, on top of llhttp in strict mode.
 *
 * The parser wraps llhttp with no leniency flag set and adds the checks llhttp 8.1 leaves out
 * (BRIEF §6): every line of a message head must end in CRLF (a bare CR or a bare LF is an
 * error), a header line may not start with whitespace (obs-fold), the head is limited in bytes
 * and in header count. llhttp itself refuses Content-Length with Transfer-Encoding, a repeated
 * Content-Length, a Transfer-Encoding whose last coding is not chunked, bad chunk sizes and
 * NUL/CTL bytes in names. The head's raw bytes are kept in one bounded buffer and indexed in
 * place when the head is complete (request target or reason phrase, header names and values,
 * each NUL-terminated); bodies are handed on as they arrive, never stored.
 *
 * The rewrite functions are pure: they turn a parsed head into the bytes sent on (hop-by-hop
 * headers and those named in Connection removed, Host replaced by the upstream authority,
 * X-Forwarded-* and Forwarded removed unless kept, framing regenerated).
 *
 * One parser serves every HTTP/1 peer of the daemon: client requests and upstream responses in
 * the relay, and the admin API's requests (ops/admin.c). Its parts: http1.c (llhttp callbacks,
 * head storage, execute/finish/look-ahead), http1_scan.c (the strict head scanner and the
 * known-name table), http1_rewrite.c (the build functions, Host allow-list, bearer token).
 */
#ifndef ATTESTPROXY_PROXY_HTTP1_H
#define ATTESTPROXY_PROXY_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#define HTTP1_RESPONSE_HEAD_MAX    (64 * 1024) /* limits on an upstream response head */
#define HTTP1_RESPONSE_HEADERS_MAX 256
#define HTTP1_CHUNK_HEADER_MAX     24 /* "ffffffffffffffff\r\n" and a NUL */
/* Chunk extensions of one chunk-size line, in bytes: nothing is relayed of them (bodies are
 * re-framed), and without a bound an endless extension would hold the exchange open. */
#define HTTP1_CHUNK_EXT_MAX 4096

/* What a callback returns. */
enum {
    HTTP1_CB_OK = 0,
    HTTP1_CB_PAUSE = 1,     /* stop; http1_parser_execute() returns HTTP1_PAUSED */
    HTTP1_CB_SKIP_BODY = 2, /* on_head of a response to HEAD (or 204/304): no body follows */
    HTTP1_CB_ERROR = -1,    /* stop with the error set by http1_parser_fail() */
};

enum http1_status {
    HTTP1_NEED_MORE = 0, /* every byte was consumed */
    HTTP1_PAUSED,        /* a callback paused; the rest starts at the consumed offset */
    HTTP1_ERROR,         /* see parser->fail and parser->fail_msg */
};

enum http1_fail {
    HTTP1_FAIL_NONE = 0,
    HTTP1_FAIL_BAD_MESSAGE, /* malformed or ambiguous: 400 (502 for a response) */
    HTTP1_FAIL_TOO_LARGE,   /* head bytes or header count over the limit: 431 */
    HTTP1_FAIL_CALLBACK,    /* a callback refused; its own reason is in fail_msg */
};

/* The header fields the relay looks up or acts on, recognised once as each name completes
 * (names compared without case, exactly). Every other name is HTTP1_FIELD_OTHER. */
enum http1_field {
    HTTP1_FIELD_OTHER = 0,
    HTTP1_FIELD_HOST,
    HTTP1_FIELD_CONNECTION,
    HTTP1_FIELD_TRANSFER_ENCODING,
    HTTP1_FIELD_EXPECT,
    HTTP1_FIELD_AUTHORIZATION,
    HTTP1_FIELD_UPGRADE, /* hop-by-hop; forwarded only for a WebSocket handshake (tunnel.c) */
};

/* What forwarding does with a header, decided when the head is complete. */
enum {
    HTTP1_HDR_HOP = 1u << 0,       /* hop-by-hop or framing: removed in either direction */
    HTTP1_HDR_FORWARDED = 1u << 1, /* X-Forwarded-* or Forwarded, also with '_' for '-' */
    HTTP1_HDR_NAMED = 1u << 2,     /* listed in a Connection header of the same message */
    HTTP1_HDR_OURS = 1u << 3,      /* a response header the proxy sets itself (X-Attestation):
                                      removed from upstream responses, so none is spoofed */
};

struct http1_header {
    uint32_t name_off, name_len;
    uint32_t value_off, value_len;
    uint8_t field; /* enum http1_field */
    uint8_t flags; /* HTTP1_HDR_* */
};

/* The collected head: its raw bytes in `buf` (bounded by the head limit), every string of it
 * NUL-terminated in place once the head is complete. */
struct http1_head {
    char *buf;
    size_t len, cap, max;
    struct http1_header *hdrs;
    size_t n, cap_n, max_n;
    uint32_t target_off, target_len; /* request target (requests) or reason phrase (responses) */
};

struct http1_parser;

struct http1_callbacks {
    /* The head is complete (p->head, llhttp fields such as method, version, content_length). */
    int (*on_head)(struct http1_parser *p);
    /* A piece of the decoded body (chunk framing removed). */
    int (*on_body)(struct http1_parser *p, const char *at, size_t len);
    /* The message is complete. HTTP1_CB_OK goes on with the next message in the same data. */
    int (*on_complete)(struct http1_parser *p);
};

struct http1_parser {
    llhttp_t ll;
    const struct http1_callbacks *cb;
    void *data; /* the owner's */
    struct http1_head head;
    size_t head_limit; /* raw bytes of one head, request/status line included */

    /* Head scanner (runs over the raw bytes before llhttp sees them). */
    bool in_head;
    size_t head_bytes;
    bool seen_start_line; /* a non-empty first line was seen */
    bool after_cr;
    bool at_line_start;
    bool in_start_line;
    bool after_sp; /* the last byte of the request line was a space */
    bool in_name;

    /* Chunk framing check: the CRLF after each chunk's data (llhttp 8.1 skips two bytes there
     * unless built with LLHTTP_STRICT_MODE). */
    uint64_t chunk_left;
    unsigned crlf_left; /* bytes of the CRLF after a chunk still to check */
    const char *exec_end;
    /* The head bytes given to llhttp last: where they start in the caller's data, and where
     * their copy starts in head.buf (on_target() maps llhttp's spans with these). */
    const char *exec_head_base;
    size_t exec_head_off;

    /* Header collection. Trailers are not collected, only counted against the head limits. */
    bool field_open; /* a trailer field name is being counted */
    size_t trailer_bytes, trailer_fields;
    size_t chunk_ext_bytes; /* of the chunk-size line being parsed */
    bool method_seen;       /* a request's method is known (llhttp's method 0 is DELETE) */

    bool user_paused;
    bool skip_body;
    bool message_begun; /* bytes of a message were seen (for EOF handling) */
    enum http1_fail fail;
    char fail_msg[128];
};

/* A head's storage of the first sizes, passed from a parser between messages to the next
 * parser that needs one, through a cache of the caller's. */
struct http1_storage {
    char *buf;
    struct http1_header *hdrs;
};

/**
 * Between messages, takes the head storage out of the parser, so that an idle keep-alive
 * connection holds none: returns true and fills *s when it is of the first sizes (the caller
 * keeps it for another parser, or frees it with http1_storage_free()); storage that grew is
 * freed and false returned. Inside a message, or with no storage, nothing changes (false).
 */
bool http1_parser_release(struct http1_parser *p, struct http1_storage *s);

/** Gives a parser that holds no head storage `s` (from http1_parser_release()) for its next
 *  head, which then allocates nothing. */
void http1_parser_adopt(struct http1_parser *p, const struct http1_storage *s);

void http1_storage_free(struct http1_storage *s);

/**
 * Initialises `p` for requests (HTTP_REQUEST) or responses (HTTP_RESPONSE) with the given
 * limits. Returns 0 or -ENOMEM. The head buffer grows on demand up to `head_limit`; free it
 * with http1_parser_free().
 */
int http1_parser_init(struct http1_parser *p, llhttp_type_t type, size_t head_limit,
                      size_t max_headers, const struct http1_callbacks *cb, void *data);
void http1_parser_free(struct http1_parser *p);

/**
 * Parses `len` bytes. `*consumed` receives how many were used: all of them for
 * HTTP1_NEED_MORE, up to the pause point for HTTP1_PAUSED (call again with the rest after
 * http1_parser_resume()), up to the error for HTTP1_ERROR. Callbacks run inside this call and
 * may free nothing that the parser uses.
 */
enum http1_status http1_parser_execute(struct http1_parser *p, const char *data, size_t len,
                                       size_t *consumed);

/** Clears a pause so that the next execute goes on where the last one stopped. */
void http1_parser_resume(struct http1_parser *p);

/**
 * Signals the end of input: completes a response whose body runs to EOF (on_complete fires).
 * Returns HTTP1_NEED_MORE when nothing was pending, HTTP1_PAUSED/HTTP1_NEED_MORE after a
 * completion, HTTP1_ERROR when a message was cut short.
 */
enum http1_status http1_parser_finish(struct http1_parser *p);

/** Sets the failure reported by HTTP1_ERROR; for callbacks, which then return HTTP1_CB_ERROR. */
void http1_parser_fail(struct http1_parser *p, enum http1_fail fail, const char *msg);

/**
 * Looks ahead without consuming: parses `data` (the bytes that follow what `p` consumed) on a
 * copy of `p` whose callbacks see nothing, up to the end of the message in progress. Returns
 * HTTP1_PAUSED when the message ends within `data` and is valid to its end, HTTP1_NEED_MORE
 * when every byte is valid but the message goes on, HTTP1_ERROR with the reason in `why`
 * otherwise. `p` and `data` are not changed. For a parser paused after a head (its body
 * follows); the relay uses it to refuse a request whose framing is broken before any byte of
 * it goes upstream (docs/security.md, "Buffered validation").
 */
enum http1_status http1_parser_check_ahead(const struct http1_parser *p, const char *data,
                                           size_t len, char *why, size_t cap);

/** True when the message in progress (after on_head) has a head but not yet completed. */
bool http1_parser_in_body(const struct http1_parser *p);

/** After on_head: true for HTTP/1.0 and HTTP/1.1, the versions every server here speaks
 *  (llhttp also parses an HTTP/0.9 request line, "GET /x", without a version). */
bool http1_version_supported(const struct http1_parser *p);

/* Accessors over the collected head. */
const char *http1_head_str(const struct http1_head *h, uint32_t off);
/** Index of the next header that is `field` at or after `from`, or -1. */
int http1_head_find(const struct http1_head *h, enum http1_field field, size_t from);
/** How many headers are `field`. */
size_t http1_head_count(const struct http1_head *h, enum http1_field field);

/* Framing of a body as it is sent on. */
enum http1_framing {
    HTTP1_FRAMING_NONE = 0, /* no body */
    HTTP1_FRAMING_LENGTH,   /* Content-Length */
    HTTP1_FRAMING_CHUNKED,  /* Transfer-Encoding: chunked */
    HTTP1_FRAMING_EOF,      /* until the connection closes (responses to HTTP/1.0 clients) */
};

struct http1_request_opts {
    const char *authority;    /* the upstream's Host value */
    bool keep_forwarded;      /* keep X-Forwarded-* and Forwarded */
    bool strip_authorization; /* Authorization carried our own token */
    enum http1_framing framing;
    uint64_t content_length;
    /* A WebSocket handshake (tunnel.h): "Upgrade: <upgrade>" and "Connection: Upgrade" are
     * sent, the only hop-by-hop headers ever forwarded; NULL for every other request. */
    const char *upgrade;
};

/**
 * Writes the request head to send upstream: "METHOD target HTTP/1.1", Host, the client's
 * end-to-end headers, framing. Returns the length or -ENOSPC. A head never grows by more than
 * HTTP1_REWRITE_SLACK + the authority's length.
 */
#define HTTP1_REWRITE_SLACK 512
int http1_build_request(const struct http1_parser *p, const struct http1_request_opts *o, char *out,
                        size_t cap);

struct http1_response_opts {
    enum http1_framing framing;
    uint64_t content_length;
    bool close;                /* "Connection: close" */
    const char *extra_headers; /* complete "Name: value\r\n" lines, or NULL */
};

/** Writes the response head to send to the client. Returns the length or -ENOSPC. */
int http1_build_response(const struct http1_parser *p, const struct http1_response_opts *o,
                         char *out, size_t cap);

/**
 * The Host allow-list (DNS rebinding defence): `host` (a Host header value) is allowed when
 * its name, compared without case, equals one of `allowed` and any port is a decimal number in
 * 1..65535; an allowed entry that carries a port must match in full. IPv6 names are written in
 * brackets ("[::1]").
 */
bool http1_host_allowed(const char *host, size_t len, const char *const *allowed, size_t n);

/** True when `value` is "Bearer <token>" (scheme without case); compared in constant time. */
bool http1_bearer_matches(const char *value, size_t len, const char *token);

/** Writes the chunk-size line for `n` bytes ("1a2b\r\n"); returns its length. */
size_t http1_chunk_header(uint64_t n, char out[HTTP1_CHUNK_HEADER_MAX]);

#endif
