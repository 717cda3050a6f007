/*
 * What the files of the HTTP/1 module share, and nothing outside proxy/http1*.c includes: the
 * strict scanner and the header classification (http1_scan.c), which the parser (http1.c)
 * calls from its llhttp callbacks and before llhttp sees a head. The public API is
 * proxy/http1.h.
 */
#ifndef ATTESTPROXY_PROXY_HTTP1_INTERNAL_H
#define ATTESTPROXY_PROXY_HTTP1_INTERNAL_H

#include <stddef.h>

#include "proxy/http1.h"

/**
 * Scans raw head bytes before llhttp sees them, enforcing what llhttp 8.1 leaves out (or
 * enforces only when built with LLHTTP_STRICT_MODE): CRLF line ends, no obs-fold, no
 * whitespace or emptiness in a field name, a plain-ASCII request line, the head size limit.
 * Returns 0 when all `len` bytes belong to the head (more needed), 1 when the head ends after
 * `*used` bytes, -1 on an error (set in p, `*used` at the offending byte).
 */
int http1__scan_head(struct http1_parser *p, const char *data, size_t len, size_t *used);

/**
 * Checks the CRLF that must follow a chunk's data (p->crlf_left bytes of it are still to come),
 * as far as the bytes in [pos, end) go. Returns 0, or -1 with the error set in p.
 */
int http1__check_chunk_crlf(struct http1_parser *p, const char *pos, const char *end);

/** Recognises a completed header name once: sets hd->field and hd->flags (HTTP1_HDR_HOP, ...). */
void http1__classify(struct http1_header *hd, const char *buf);

/** Marks with HTTP1_HDR_NAMED the headers that the head's Connection headers name. */
void http1__mark_connection_names(struct http1_head *h);

#endif
