/*
 * The proxy's caches of client input buffers and parser head storage (one cache of each per
 * proxy, arrays in struct proxy). A connection holds an input buffer and head storage only
 * while it has unparsed input or a request in progress; between requests both go back here
 * and the next request on any connection takes them again, so that keep-alive traffic
 * allocates nothing per request and idle connections hold neither (docs/benchmarks.md).
 */
#ifndef ATTESTPROXY_PROXY_BUFCACHE_H
#define ATTESTPROXY_PROXY_BUFCACHE_H

struct proxy;
struct http1_parser;

/** A CLIENT_INPUT_MAX-byte input buffer, from the cache or malloc(); NULL without memory. */
char *bufcache_input_get(struct proxy *p);

/** Gives an input buffer back: kept for reuse (up to CLIENT_INPUT_CACHE), else freed. */
void bufcache_input_put(struct proxy *p, char *buf);

/** The head storage of `parser`, between messages, goes back to the cache (or is freed). */
void bufcache_head_put(struct proxy *p, struct http1_parser *parser);

/** A parser without head storage gets cached storage, when there is some. */
void bufcache_head_take(struct proxy *p, struct http1_parser *parser);

/** Frees everything cached (when the proxy is freed). */
void bufcache_free(struct proxy *p);

#endif
