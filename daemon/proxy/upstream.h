/*
 * One upstream connection: TCP to the enclave, TLS over in-memory queues (tls.h), and the gate that
 * decides whether it may carry requests.
 *
 * THE PIN CHECK. After every handshake (new or resumed) the connection's pin — SHA-256 of the
 * peer's SubjectPublicKeyInfo, or of its certificate for the bindings that hash the
 * certificate — is computed, and the connection is UNVERIFIED. Application bytes can be
 * written only in state UP_BUSY, and the only way into UP_BUSY is upstream_begin_exchange(),
 * which looks the pin up in the service's attested key set at that moment and refuses unless it
 * is present and fresh. That check runs before each exchange, so it covers new connections,
 * pooled ones and reused ones alike. Evidence requests are written in state UP_ATTESTING, which
 * only attest.c enters (attest_start()), over this same connection.
 *
 * Ownership: the service owns every upstream (its list); the object is freed only from its last
 * close callback, so a pointer stays valid until the loop iteration after upstream_close().
 * Callbacks go to one handler at a time (the connecting client, attest.c, the pool, the relay),
 * switched with upstream_set_handler(); after any callback, check upstream_is_closing().
 */
#ifndef ATTESTPROXY_PROXY_UPSTREAM_H
#define ATTESTPROXY_PROXY_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <netdb.h>
#include <uv.h>

#include "proxy/deadline.h"
#include "proxy/pinset.h"
#include "proxy/tls.h"

struct proxy_service;
struct egress;

/* Backpressure bounds of the ciphertext queued to the socket. Writers stop feeding above HIGH
 * and are told (on_drain) when the queue is back below LOW. */
#define UPSTREAM_WRITE_HIGH (256 * 1024)
#define UPSTREAM_WRITE_LOW  (64 * 1024)
#define UPSTREAM_READ_BUF   (64 * 1024)
#define UPSTREAM_STAGE      4096 /* plaintext staged per connection (outbuf) */

enum upstream_state {
    UP_CONNECTING = 0, /* resolving and TCP connect (to the upstream proxy when one is set) */
    UP_PROXYING,       /* CONNECT sent to the upstream proxy, its answer awaited (egress.h) */
    UP_HANDSHAKING,    /* TLS handshake (inside the tunnel when proxied) */
    UP_UNVERIFIED,     /* handshake done; may carry nothing until the gate passes */
    UP_ATTESTING,      /* an evidence exchange runs over this connection (attest.c) */
    UP_BUSY,           /* carrying one request/response exchange */
    UP_IDLE,           /* in the pool */
    UP_CLOSING,        /* uv_close() called; freed in the last close callback */
};

struct upstream;

struct upstream_handler {
    /* Connect + handshake finished: status 0, or < 0 with upstream_failure() describing it
     * (the connection closes right after this callback). */
    void (*on_connected)(struct upstream *up, int status, void *arg);
    /* Decrypted bytes. */
    void (*on_data)(struct upstream *up, const char *data, size_t len, void *arg);
    /* The peer closed (close_notify or TCP EOF) after all its data was delivered. */
    void (*on_eof)(struct upstream *up, void *arg);
    /* I/O or TLS failure; the connection is closing. */
    void (*on_error)(struct upstream *up, const char *msg, void *arg);
    /* The write queue fell below UPSTREAM_WRITE_LOW after being above UPSTREAM_WRITE_HIGH. */
    void (*on_drain)(struct upstream *up, void *arg);
    /* The deadline set with upstream_set_deadline() passed. */
    void (*on_timeout)(struct upstream *up, void *arg);
    /* The connection was closed by someone else (upstream_close()) while this handler was
     * set; runs from the last close callback, just before the object is freed. */
    void (*on_closed)(struct upstream *up, void *arg);
};

struct upstream {
    struct proxy_service *svc;
    enum upstream_state state;
    uint64_t id; /* for logs */

    uv_tcp_t tcp;
    struct deadline deadline; /* connect, attestation or pool idle */
    uv_connect_t connect_req;
    uv_getaddrinfo_t gai;
    bool gai_active;
    int pending_closes;
    bool counted_open; /* counted in upstream_connections_open */

    struct tls_conn tls;
    uint8_t pin[PIN_LEN];
    bool has_pin;
    bool attested_here;   /* an attestation over this very connection succeeded: with
                             nonce = session the gate requires it of every connection, the key
                             being attested elsewhere is not enough (evidence-protocol.md §12) */
    struct pin_info info; /* facts of the attestation that admitted the last exchange */
    bool has_info;
    uint64_t info_serial; /* the pin entry's serial `info` was copied from */
    bool reused;          /* was taken from the pool */
    uint64_t gen;         /* svc->upstream_gen when it was opened: see upstream_begin_exchange() */
    unsigned exchanges;   /* exchanges carried so far */

    const struct upstream_handler *h;
    void *arg;

    size_t write_queued; /* ciphertext bytes handed to uv_write and not yet written */
    bool want_drain;
    bool read_paused;
    bool delivering;
    bool peer_eof; /* TCP EOF or close_notify seen; reported once buffered data is delivered */
    bool eof_told;
    /* Small writes (a head, chunk framing, a small body) are staged and leave as one record at
     * the next flush; a write larger than the stage is encrypted straight from the caller. */
    size_t out_len;
    char outbuf[UPSTREAM_STAGE];

    int fail_result; /* enum metrics_upstream_result of a failed connect */
    char fail_msg[2 * CONFIG_HOST_MAX + 256];
    /* The CONNECT tunnel through the service's upstream_proxy (egress.h), for the connection's
     * whole life; NULL for a direct connection. */
    struct egress *egress;
    int proxy_result; /* enum metrics_proxy_result of the proxy hop */

    struct upstream *prev, *next;           /* the service's list */
    struct upstream *pool_prev, *pool_next; /* the pool: linked exactly while UP_IDLE */
};

/**
 * Starts a connection to the service's upstream: resolve, TCP connect, TLS handshake, all
 * within connect_timeout. With an upstream_proxy: resolve and TCP connect to the proxy within
 * upstream_proxy_connect_timeout, CONNECT answered within upstream_proxy_timeout, then the TLS
 * handshake inside the tunnel within connect_timeout. `h->on_connected` fires exactly once, never
 * from inside this call. Returns 0, or a negative code (nothing was created, no callback fires).
 */
int upstream_connect(struct proxy_service *svc, const struct upstream_handler *h, void *arg,
                     struct upstream **out);

/** Makes `h`/`arg` the receiver of the connection's callbacks. */
void upstream_set_handler(struct upstream *up, const struct upstream_handler *h, void *arg);

/* The gate's verdict on one connection (upstream_begin_exchange()). */
enum gate_verdict {
    GATE_PASS = 0,  /* the pin is attested and fresh: the connection is UP_BUSY now */
    GATE_ATTEST,    /* the pin was never attested: attest over this connection first */
    GATE_REATTEST,  /* the pin's attestation expired: re-attest over this connection first */
    GATE_REFUSED,   /* the pin is negative-cached (`*retry_after_ms` says for how long) */
    GATE_STALE,     /* opened before a reload changed the upstream, the evidence profile or the
                     * trust root: it may lead to the old enclave (close it, use a new one) */
    GATE_BAD_STATE, /* not UP_UNVERIFIED with a pin: a caller's mistake, refused all the same */
};

/**
 * THE GATE (see above). Returns GATE_PASS and enters UP_BUSY when the pin is attested and fresh
 * now; otherwise the connection stays UP_UNVERIFIED and the verdict says why (enum
 * gate_verdict). Only from UP_UNVERIFIED (asserted; GATE_BAD_STATE when asserts are compiled
 * out). No callback fires.
 */
enum gate_verdict upstream_begin_exchange(struct upstream *up, uint64_t *retry_after_ms);

/** Ends the exchange: back to the pool when `reusable` (and the pool takes it), else closed. */
void upstream_end_exchange(struct upstream *up, bool reusable);

/** UP_UNVERIFIED -> UP_ATTESTING and back; for attest.c only. */
int upstream_begin_attestation(struct upstream *up);
void upstream_end_attestation(struct upstream *up);

/**
 * Queues plaintext for the peer (UP_BUSY or UP_ATTESTING only; -EPERM otherwise). Small writes
 * are gathered into TLS records; call upstream_flush() at the end of a batch.
 */
int upstream_write(struct upstream *up, const char *data, size_t len);
void upstream_flush(struct upstream *up);

/** True when writers should stop; on_drain is then called once the queue is below LOW. */
bool upstream_write_blocked(struct upstream *up);

/** Stops or resumes delivering data. Resuming delivers what is buffered from inside the call. */
void upstream_pause_reading(struct upstream *up, bool paused);

/** Arms (ms > 0) or stops (ms == 0) the connection's one deadline timer. */
void upstream_set_deadline(struct upstream *up, uint64_t ms);

/** Closes the connection and reports `msg` to the handler's on_error (or on_connected while
 *  connecting): used to cut an exchange from outside. */
void upstream_abort(struct upstream *up, const char *msg);

/** Closes the connection (idempotent). `why` is logged at debug level. */
void upstream_close(struct upstream *up, const char *why);

/**
 * True when the socket holds bytes (or the peer's FIN) that were not read yet, or cannot be
 * asked: a connection handed to a request right after an exchange the enclave had no reason to
 * extend must not have anything waiting. One recv(MSG_PEEK) system call; no callback fires.
 */
bool upstream_input_pending(struct upstream *up);

bool upstream_is_closing(const struct upstream *up);
const char *upstream_state_name(enum upstream_state s);

/** The message of a failed connect. */
const char *upstream_failure(const struct upstream *up);

/** The status of a failed connect's upstream proxy when it refused the CONNECT (not 2xx),
 *  else 0: the exchange answers 502 upstream_proxy_refused instead of upstream_unreachable. */
unsigned upstream_proxy_refusal(const struct upstream *up);

/* For pool.c only: moves a connection into UP_IDLE (true) or out of it to UP_UNVERIFIED. */
void upstream__set_idle(struct upstream *up, bool idle);

#endif
