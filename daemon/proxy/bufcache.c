/*
 * The caches of client input buffers and head storage (bufcache.h).
 *
 * Input buffers. A connection holds one only while it has unparsed input or a request in
 * progress: an idle keep-alive connection holds neither it nor head storage, so that thousands
 * of idle clients cost a few KiB each (docs/benchmarks.md). Returned buffers are kept for reuse,
 * up to CLIENT_INPUT_CACHE of them, so that a busy daemon does not allocate one per request.
 */
#include "proxy/bufcache.h"

#include <assert.h>
#include <stdlib.h>

#include "proxy/client.h"
#include "proxy/http1.h"
#include "proxy/proxy_internal.h"

char *bufcache_input_get(struct proxy *p)
{
    if (p->n_input_cache > 0)
        return p->input_cache[--p->n_input_cache];
    return malloc(CLIENT_INPUT_MAX);
}

void bufcache_input_put(struct proxy *p, char *buf)
{
    assert(buf != NULL && p->n_input_cache <= CLIENT_INPUT_CACHE);
    if (p->n_input_cache < CLIENT_INPUT_CACHE)
        p->input_cache[p->n_input_cache++] = buf;
    else
        free(buf);
}

void bufcache_free(struct proxy *p)
{
    while (p->n_input_cache > 0)
        free(p->input_cache[--p->n_input_cache]);
    while (p->n_head_cache > 0)
        http1_storage_free(&p->head_cache[--p->n_head_cache]);
}

/* Head storage of a parser between messages goes back to the proxy's cache (or is freed when
 * the cache is full, or when it grew past its first sizes); bufcache_head_take() gives it to
 * the next parser that has none. Request parsers and response parsers share it. */
void bufcache_head_put(struct proxy *p, struct http1_parser *parser)
{
    struct http1_storage st;
    assert(p->n_head_cache <= CLIENT_INPUT_CACHE);
    if (!http1_parser_release(parser, &st))
        return;
    if (p->n_head_cache < CLIENT_INPUT_CACHE)
        p->head_cache[p->n_head_cache++] = st;
    else
        http1_storage_free(&st);
}

void bufcache_head_take(struct proxy *p, struct http1_parser *parser)
{
    if (parser->head.buf == NULL && parser->head.hdrs == NULL && p->n_head_cache > 0)
        http1_parser_adopt(parser, &p->head_cache[--p->n_head_cache]);
}
