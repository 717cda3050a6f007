/*
 * The parts of RFC 6455 the daemon itself speaks, as pure functions over parsed heads and byte
 * buffers (no I/O, no allocation): the checks of a client's opening handshake and of the
 * enclave's 101 answer (Sec-WebSocket-Accept), the Origin rule, the close frame the daemon
 * sends when it ends a tunnel, and a scanner that follows the frame boundaries of the
 * enclave's byte stream so that such a close frame is never written into the middle of one of
 * its frames. The tunnel that uses them is tunnel.c; nothing here inspects payloads.
 */
#ifndef ATTESTPROXY_PROXY_WEBSOCKET_H
#define ATTESTPROXY_PROXY_WEBSOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/http1.h"

#define WS_KEY_LEN    24 /* base64 of the 16-byte Sec-WebSocket-Key nonce */
#define WS_ACCEPT_LEN 28 /* base64 of a SHA-1 digest */
#define WS_CLOSE_REASON_MAX                                                                        \
    123 /* a control frame's payload is at most 125 bytes (RFC 6455 5.5)                           \
         */
#define WS_CLOSE_FRAME_MAX (2 + 2 + WS_CLOSE_REASON_MAX)

/* Close codes the daemon sends (RFC 6455 7.4.1). */
#define WS_CLOSE_GOING_AWAY     1001 /* idle timeout, maximum life, shutdown */
#define WS_CLOSE_POLICY         1008 /* the policy (or trust root) no longer admits the key */
#define WS_CLOSE_INTERNAL_ERROR 1011 /* attestation failed or lapsed, the enclave failed */

/* What an opening handshake is. */
enum ws_request_verdict {
    WS_REQUEST_OK = 0, /* a valid WebSocket handshake; the key is in `key` */
    WS_REQUEST_NOT_WS, /* Upgrade names no "websocket" token: not ours (relayed as today) */
    WS_REQUEST_BAD,    /* a WebSocket handshake that breaks RFC 6455 4.1 (400) */
};

/**
 * Checks a request head that carries Upgrade: it asks for WebSocket when an Upgrade field holds
 * the token "websocket"; it is then valid when it is a GET over HTTP/1.1 (`http_minor` 1), its
 * Connection fields hold the token "upgrade", it has exactly one Sec-WebSocket-Key whose value
 * is 24 base64 characters decoding to 16 bytes, and exactly one Sec-WebSocket-Version "13".
 * On WS_REQUEST_OK the key is copied into `key` (NUL-terminated); on WS_REQUEST_BAD `why` says
 * what is wrong.
 */
enum ws_request_verdict ws_check_request(const struct http1_head *h, bool is_get,
                                         unsigned http_minor, char key[WS_KEY_LEN + 1], char *why,
                                         size_t cap);

/** Sec-WebSocket-Accept for `key`: base64(SHA-1(key "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")).
 *  Returns 0, or -1 when the digest cannot be computed. `out` is NUL-terminated. */
int ws_accept_for_key(const char *key, size_t key_len, char out[WS_ACCEPT_LEN + 1]);

/**
 * Checks the enclave's 101 answer to a handshake whose key was `key`: an Upgrade field with the
 * token "websocket", a Connection field with the token "upgrade", and exactly one
 * Sec-WebSocket-Accept equal to ws_accept_for_key(key) (RFC 6455 4.1, the client's checks).
 * Returns true, or false with the reason in `why`.
 */
bool ws_check_response(const struct http1_head *h, const char *key, char *why, size_t cap);

/**
 * The Origin rule against cross-site WebSocket hijacking: true when the head has no Origin
 * field, or exactly one whose value equals (without case) one of `allowed` (n entries), or,
 * when `n` is 0, equals "http://" followed by the request's Host value (the page came through
 * this very listener). A browser always sends Origin on a WebSocket handshake and a page
 * cannot forge it; a non-browser client sends none.
 */
bool ws_origin_allowed(const struct http1_head *h, const char *const *allowed, size_t n);

/**
 * Writes an unmasked server-to-client close frame (0x88, length, code, reason) into `out` and
 * returns its length. The reason is cut to WS_CLOSE_REASON_MAX bytes and any byte outside
 * printable ASCII becomes '?', so the payload is always valid UTF-8 and at most 125 bytes.
 */
size_t ws_close_frame(uint16_t code, const char *reason, uint8_t out[WS_CLOSE_FRAME_MAX]);

/* Follows frame boundaries in one direction of a WebSocket byte stream: only the 2..14 header
 * bytes of each frame are looked at; payloads are skipped by length, never read. */
struct ws_scan {
    uint8_t hdr[14];
    uint8_t hdr_len; /* header bytes of the current frame seen so far */
    uint64_t payload_left;
    bool in_payload;
};

/** Consumes `n` bytes of the stream. */
void ws_scan_feed(struct ws_scan *s, const uint8_t *p, size_t n);

/** True when every frame fed so far is complete: a frame of the daemon's may follow. */
bool ws_scan_at_boundary(const struct ws_scan *s);

#endif
