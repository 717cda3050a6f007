/*
 * The connection-test harness (harness_relay.h): the proxy on a real loop between client
 * sockets and a scripted in-process TLS enclave, all driven from one thread.
 */
#include "harness_relay.h"

#include "verify_helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>
#include <openssl/ecdsa.h>
#include <openssl/sha.h>

#include "base/log.h"
#include "base/metrics.h"
#include "verify/verifier.h"

#define SETTLE_MS 30 /* how long "nothing more arrives" is watched */

/* ---- Shared with test_upstream.c ---------------------------------------------------------- */

X509 *hr_self_signed(EVP_PKEY *key)
{
    X509 *x = X509_new();
    X509_NAME *name;
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 1), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -60));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    assert_int_equal(X509_set_pubkey(x, key), 1);
    name = X509_get_subject_name(x);
    assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                                (const unsigned char *)"enclave.test", -1, -1, 0),
                     1);
    assert_int_equal(X509_set_issuer_name(x, name), 1);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    return x;
}

static struct sockaddr_in loopback(uint16_t port)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons(port);
    return sin;
}

/* A listening socket on 127.0.0.1 and an ephemeral port. */
static int listen_any(uint16_t *port)
{
    struct sockaddr_in sin = loopback(0);
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

void hr_tcp_pair(int *client, int *server)
{
    uint16_t port;
    struct sockaddr_in sin;
    int lfd = listen_any(&port);
    sin = loopback(port);
    *client = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(*client >= 0);
    assert_int_equal(connect(*client, (struct sockaddr *)&sin, sizeof(sin)), 0);
    *server = accept(lfd, NULL, NULL);
    assert_true(*server >= 0);
    close(lfd);
}

SSL_CTX *hr_server_ctx(EVP_PKEY **key, X509 **cert)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(ctx);
    *key = EVP_EC_gen("P-256");
    assert_non_null(*key);
    *cert = hr_self_signed(*key);
    assert_int_equal(SSL_CTX_use_certificate(ctx, *cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, *key), 1);
    return ctx;
}

/* ---- A small CBOR encoder (definite lengths, shortest heads: what the NSM emits) ---------- */

struct cbor_out {
    uint8_t *p;
    size_t len, cap;
};

static void cb_put(struct cbor_out *o, const void *data, size_t n)
{
    if (n == 0)
        return; /* an empty byte string (external_aad): memcpy must not see its NULL */
    if (o->len + n > o->cap) {
        o->cap = (o->len + n) * 2;
        o->p = realloc(o->p, o->cap);
        assert_non_null(o->p);
    }
    memcpy(o->p + o->len, data, n);
    o->len += n;
}

static void cb_head(struct cbor_out *o, unsigned major, uint64_t n)
{
    uint8_t b[9];
    size_t len;
    if (n < 24) {
        b[0] = (uint8_t)(major << 5 | n);
        len = 1;
    } else {
        unsigned bytes = n <= 0xff ? 1 : n <= 0xffff ? 2 : n <= 0xffffffffu ? 4 : 8;
        b[0] = (uint8_t)(major << 5 | (bytes == 1   ? 24u
                                       : bytes == 2 ? 25u
                                       : bytes == 4 ? 26u
                                                    : 27u));
        for (unsigned i = 0; i < bytes; i++)
            b[1 + i] = (uint8_t)(n >> (8 * (bytes - 1 - i)));
        len = 1 + bytes;
    }
    cb_put(o, b, len);
}

static void cb_bytes(struct cbor_out *o, const uint8_t *p, size_t n)
{
    cb_head(o, 2, n);
    cb_put(o, p, n);
}

static void cb_text(struct cbor_out *o, const char *s)
{
    cb_head(o, 3, strlen(s));
    cb_put(o, s, strlen(s));
}

static void cb_bytes_or_null(struct cbor_out *o, const uint8_t *p, size_t n)
{
    if (p == NULL)
        cb_put(o, "\xf6", 1);
    else
        cb_bytes(o, p, n);
}

/* ---- The PKI ------------------------------------------------------------------------------ */

enum { PKI_ROOT = 0, PKI_REGIONAL, PKI_ZONAL, PKI_INSTANCE, PKI_LEAF, PKI_N };

struct hr_pki {
    EVP_PKEY *key[PKI_N];
    X509 *cert[PKI_N];
};

struct hr_pki *hr_pki_new(void)
{
    static const char *names[PKI_N] = {"test.nitro-enclaves", "regional.test", "zonal.test",
                                       "i-0123.test", "i-0123-enc0456.test"};
    static const int pathlen[PKI_N] = {-1, 2, 1, 0, -1};
    struct hr_pki *p = calloc(1, sizeof(*p));
    time_t now = time(NULL);
    assert_non_null(p);
    for (int i = 0; i < PKI_N; i++) {
        struct th_cert_opts o = i == PKI_LEAF ? th_leaf_opts(now) : th_ca_opts(now, pathlen[i]);
        p->key[i] = th_key("P-384");
        p->cert[i] = th_cert(names[i], p->key[i], i == 0 ? NULL : p->cert[i - 1],
                             i == 0 ? p->key[0] : p->key[i - 1], &o);
    }
    return p;
}

void hr_pki_free(struct hr_pki *p)
{
    if (p == NULL)
        return;
    for (int i = 0; i < PKI_N; i++) {
        X509_free(p->cert[i]);
        EVP_PKEY_free(p->key[i]);
    }
    free(p);
}

void hr_pki_write_root(const struct hr_pki *p, const char *path)
{
    th_write_pem(p->cert[PKI_ROOT], path);
}

static void cb_cert(struct cbor_out *o, X509 *x)
{
    size_t n;
    uint8_t *der = th_der(x, &n);
    cb_bytes(o, der, n);
    OPENSSL_free(der);
}

/* ES384 over `data` with the leaf key, as COSE's 96-byte r||s. */
static void sign_raw(EVP_PKEY *key, const uint8_t *data, size_t len, uint8_t out[96])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char der[160];
    const unsigned char *q = der;
    size_t der_len = sizeof(der);
    ECDSA_SIG *sig;
    const BIGNUM *r, *s;
    assert_non_null(md);
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha384(), NULL, key), 1);
    assert_int_equal(EVP_DigestSign(md, der, &der_len, data, len), 1);
    EVP_MD_CTX_free(md);
    sig = d2i_ECDSA_SIG(NULL, &q, (long)der_len);
    assert_non_null(sig);
    ECDSA_SIG_get0(sig, &r, &s);
    assert_int_equal(BN_bn2binpad(r, out, 48), 48);
    assert_int_equal(BN_bn2binpad(s, out + 48, 48), 48);
    ECDSA_SIG_free(sig);
}

uint8_t *hr_pki_sign(const struct hr_pki *pki, const uint8_t *pcr0, const uint8_t *ud,
                     size_t ud_len, const uint8_t *nonce, size_t nonce_len, size_t *len)
{
    static const uint8_t protected_es384[] = {0xa1, 0x01, 0x38, 0x22}; /* {1: -35} */
    static const uint8_t zero[48];
    struct cbor_out pl = {0}, ss = {0}, doc = {0};
    struct timespec ts;
    uint8_t sig[96];

    clock_gettime(CLOCK_REALTIME, &ts);
    /* The payload: the NSM's nine keys in its order. */
    cb_head(&pl, 5, 9);
    cb_text(&pl, "module_id");
    cb_text(&pl, "i-0123456789abcdef0-enc0123456789abcdef");
    cb_text(&pl, "digest");
    cb_text(&pl, "SHA384");
    cb_text(&pl, "timestamp");
    cb_head(&pl, 0, (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
    cb_text(&pl, "pcrs");
    cb_head(&pl, 5, 16);
    for (uint64_t i = 0; i < 16; i++) {
        cb_head(&pl, 0, i);
        cb_bytes(&pl, i == 0 ? pcr0 : zero, 48);
    }
    cb_text(&pl, "certificate");
    cb_cert(&pl, pki->cert[PKI_LEAF]);
    cb_text(&pl, "cabundle");
    cb_head(&pl, 4, PKI_LEAF);
    for (int i = 0; i < PKI_LEAF; i++)
        cb_cert(&pl, pki->cert[i]);
    cb_text(&pl, "public_key");
    cb_put(&pl, "\xf6", 1);
    cb_text(&pl, "user_data");
    cb_bytes_or_null(&pl, ud, ud_len);
    cb_text(&pl, "nonce");
    cb_bytes_or_null(&pl, nonce, nonce_len);

    /* Sig_structure = ["Signature1", protected, external_aad = h'', payload]. */
    cb_head(&ss, 4, 4);
    cb_text(&ss, "Signature1");
    cb_bytes(&ss, protected_es384, sizeof(protected_es384));
    cb_bytes(&ss, NULL, 0);
    cb_bytes(&ss, pl.p, pl.len);
    sign_raw(pki->key[PKI_LEAF], ss.p, ss.len, sig);

    cb_head(&doc, 4, 4);
    cb_bytes(&doc, protected_es384, sizeof(protected_es384));
    cb_head(&doc, 5, 0);
    cb_bytes(&doc, pl.p, pl.len);
    cb_bytes(&doc, sig, sizeof(sig));
    free(pl.p);
    free(ss.p);
    *len = doc.len;
    return doc.p;
}

/* ---- Time and expansion ------------------------------------------------------------------- */

static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000u;
}

const char *hr_expand(const struct hr *h, const char *s)
{
    static char out[1 << 16];
    size_t n = 0;
    const char *key = "{authority}";
    while (*s != '\0') {
        if (strncmp(s, key, strlen(key)) == 0) {
            size_t a = strlen(h->authority);
            assert_true(n + a < sizeof(out));
            memcpy(out + n, h->authority, a);
            n += a;
            s += strlen(key);
        } else {
            assert_true(n + 1 < sizeof(out));
            out[n++] = *s++;
        }
    }
    out[n] = '\0';
    return out;
}

/* Bytes shown readably in a failure message. */
static void show(const char *what, const char *p, size_t n)
{
    fprintf(stderr, "%s (%zu bytes): \"", what, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '\r')
            fputs("\\r", stderr);
        else if (ch == '\n')
            fputs("\\n\"\n  \"", stderr);
        else if (ch < 0x20 || ch > 0x7e)
            fprintf(stderr, "\\x%02x", ch);
        else
            fputc(ch, stderr);
    }
    fputs("\"\n", stderr);
}

static void append(char **buf, size_t *len, size_t *cap, const char *data, size_t n)
{
    if (n == 0)
        return; /* *buf may still be NULL: memcpy must not see it */
    if (*len + n > *cap) {
        *cap = (*len + n) * 2 + 1024;
        *buf = realloc(*buf, *cap);
        assert_non_null(*buf);
    }
    memcpy(*buf + *len, data, n);
    *len += n;
}

/* ---- The enclave -------------------------------------------------------------------------- */

static void set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    assert_true(fl >= 0);
    assert_int_equal(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

static void conn_close(struct hr_conn *k)
{
    if (k->fd >= 0) {
        close(k->fd);
        k->fd = -1;
    }
}

/* Writes all of `data` (the proxy's receive buffer takes it: loopback holds megabytes). */
static void conn_write(struct hr_conn *k, const char *data, size_t len)
{
    size_t off = 0;
    for (int rounds = 0; off < len && rounds < 1000; rounds++) {
        size_t n = 0;
        if (SSL_write_ex(k->ssl, data + off, len - off, &n) == 1) {
            off += n;
            continue;
        }
        int e = SSL_get_error(k->ssl, 0);
        struct pollfd pfd = {.fd = k->fd, .events = POLLOUT};
        if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ)
            break; /* the proxy closed it: the test sees what it did */
        (void)poll(&pfd, 1, 10);
    }
}

static void hex_decode(const char *hex, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n / 2; i++) {
        char b[3] = {hex[2 * i], hex[2 * i + 1], 0};
        out[i] = (uint8_t)strtoul(b, NULL, 16);
    }
}

/* Answers the evidence request head rx[off, off + len). */
static void answer_evidence(struct hr *h, struct hr_conn *k, enum hr_evidence ev, size_t off,
                            size_t len)
{
    uint8_t pcr0[48], nonce[64], other_ud[32];
    const uint8_t *ud = h->user_data;
    const char *q = memmem(k->rx + off, len, "nonce=", 6);
    size_t nonce_len = 0, doc_len = 0;
    uint8_t *doc;
    char head[256];
    int hl;

    if (q != NULL) {
        const char *end = q + 6;
        while (end < k->rx + off + len &&
               ((*end >= '0' && *end <= '9') || (*end >= 'a' && *end <= 'f')))
            end++;
        nonce_len = (size_t)(end - q - 6) / 2;
        assert_true(nonce_len <= sizeof(nonce));
        hex_decode(q + 6, 2 * nonce_len, nonce);
    }
    th_unhex(ev == HR_EV_WRONG_PCR ? HR_OTHER_PCR0_HEX : HR_PCR0_HEX, pcr0, sizeof(pcr0));
    if (ev == HR_EV_WRONG_BINDING) {
        memcpy(other_ud, h->user_data, sizeof(other_ud));
        other_ud[0] ^= 0xff;
        ud = other_ud;
    }
    if (ev == HR_EV_TOO_LARGE) {
        size_t big = VERIFY_MAX_ENVELOPE + 1;
        char *body = calloc(1, big);
        assert_non_null(body);
        hl = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", big);
        conn_write(k, head, (size_t)hl);
        conn_write(k, body, big);
        free(body);
        return;
    }
    doc = hr_pki_sign(h->pki, pcr0, ud, 32, q != NULL ? nonce : NULL, nonce_len, &doc_len);
    hl =
        snprintf(head, sizeof(head),
                 "HTTP/1.1 200 OK\r\nContent-Type: application/cbor\r\nContent-Length: %zu\r\n\r\n",
                 doc_len);
    {
        static const char trailing[] = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL";
        char *all = NULL;
        size_t all_len = 0, all_cap = 0;
        append(&all, &all_len, &all_cap, head, (size_t)hl);
        append(&all, &all_len, &all_cap, (const char *)doc, doc_len);
        if (ev == HR_EV_TRAILING)
            append(&all, &all_len, &all_cap, trailing, sizeof(trailing) - 1);
        conn_write(k, all, all_len);
        free(all);
    }
    free(doc);
}

/* Runs the steps of connection `k` as far as they can go now. */
static void conn_steps(struct hr *h, struct hr_conn *k)
{
    while (k->step < HR_MAX_STEPS) {
        const struct hr_step *s = &k->script->steps[k->step];
        if (s->kind == HR_END)
            return;
        switch (s->kind) {
        case HR_EVIDENCE: {
            const char *end = memmem(k->rx + k->cursor, k->rx_len - k->cursor, "\r\n\r\n", 4);
            size_t len;
            if (end == NULL)
                return;
            len = (size_t)(end + 4 - (k->rx + k->cursor));
            assert_true(k->n_evidence < HR_MAX_EVIDENCE);
            k->ev_off[k->n_evidence] = k->cursor;
            k->ev_len[k->n_evidence] = len;
            k->n_evidence++;
            answer_evidence(h, k, s->ev, k->cursor, len);
            k->cursor += len;
            break;
        }
        case HR_EXPECT: {
            size_t want = strlen(hr_expand(h, s->data));
            if (k->rx_len - k->cursor < want)
                return;
            k->cursor += want;
            break;
        }
        case HR_SEND: {
            const char *d = hr_expand(h, s->data);
            if (k->fd >= 0)
                conn_write(k, d, strlen(d));
            break;
        }
        case HR_WAIT:
            if (!h->go[s->flag])
                return;
            break;
        case HR_CLOSE:
            conn_close(k);
            break;
        case HR_END:
            return;
        }
        k->step++;
    }
}

static void conn_progress(struct hr *h, struct hr_conn *k)
{
    if (k->fd < 0)
        return;
    if (!k->handshake_done) {
        int r = SSL_do_handshake(k->ssl);
        if (r != 1) {
            int e = SSL_get_error(k->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                k->peer_closed = true;
            return;
        }
        k->handshake_done = true;
    }
    while (!k->peer_closed) {
        char buf[16384];
        size_t n = 0;
        if (SSL_read_ex(k->ssl, buf, sizeof(buf), &n) == 1) {
            append(&k->rx, &k->rx_len, &k->rx_cap, buf, n);
            continue;
        }
        if (SSL_get_error(k->ssl, 0) != SSL_ERROR_WANT_READ)
            k->peer_closed = true;
        break;
    }
    conn_steps(h, k);
}

static void enclave_progress(struct hr *h)
{
    int fd;
    while ((fd = accept(h->lfd, NULL, NULL)) >= 0) {
        struct hr_conn *k;
        assert_true(h->n_conns < HR_MAX_CONNS);
        k = &h->conns[h->n_conns];
        memset(k, 0, sizeof(*k));
        k->script = h->n_conns < h->n_scripts ? h->scripts[h->n_conns] : &h->empty;
        h->n_conns++;
        set_nonblocking(fd);
        k->fd = fd;
        k->ssl = SSL_new(h->ctx);
        assert_non_null(k->ssl);
        assert_int_equal(SSL_set_fd(k->ssl, fd), 1);
        SSL_set_accept_state(k->ssl);
    }
    for (size_t i = 0; i < h->n_conns; i++)
        conn_progress(h, &h->conns[i]);
}

/* ---- Clients ------------------------------------------------------------------------------ */

size_t hr_client_open(struct hr *h)
{
    struct sockaddr_in sin = loopback(h->port);
    struct hr_client *cl;
    assert_true(h->n_clients < HR_MAX_CLIENTS);
    cl = &h->clients[h->n_clients];
    memset(cl, 0, sizeof(*cl));
    cl->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(cl->fd >= 0);
    assert_int_equal(connect(cl->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    set_nonblocking(cl->fd);
    return h->n_clients++;
}

void hr_client_send(struct hr *h, size_t client, const char *data)
{
    size_t len = strlen(data);
    assert_int_equal(send(h->clients[client].fd, data, len, 0), (ssize_t)len);
}

static void clients_progress(struct hr *h)
{
    for (size_t i = 0; i < h->n_clients; i++) {
        struct hr_client *cl = &h->clients[i];
        while (cl->fd >= 0 && !cl->eof) {
            char buf[16384];
            ssize_t n = recv(cl->fd, buf, sizeof(buf), 0);
            if (n > 0)
                append(&cl->buf, &cl->len, &cl->cap, buf, (size_t)n);
            else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                cl->eof = true;
            else
                break;
        }
    }
}

/* ---- Running ------------------------------------------------------------------------------ */

static void step_all(struct hr *h)
{
    struct pollfd fds[2 + HR_MAX_CONNS + HR_MAX_CLIENTS];
    nfds_t n = 0;
    uv_run(&h->loop, UV_RUN_NOWAIT);
    enclave_progress(h);
    clients_progress(h);
    fds[n++] = (struct pollfd){.fd = uv_backend_fd(&h->loop), .events = POLLIN};
    fds[n++] = (struct pollfd){.fd = h->lfd, .events = POLLIN};
    for (size_t i = 0; i < h->n_conns; i++)
        if (h->conns[i].fd >= 0 && !h->conns[i].peer_closed)
            fds[n++] = (struct pollfd){.fd = h->conns[i].fd, .events = POLLIN};
    for (size_t i = 0; i < h->n_clients; i++)
        if (h->clients[i].fd >= 0 && !h->clients[i].eof)
            fds[n++] = (struct pollfd){.fd = h->clients[i].fd, .events = POLLIN};
    (void)poll(fds, n, 2);
}

bool hr_run_until(struct hr *h, bool (*cond)(struct hr *h, void *arg), void *arg)
{
    uint64_t end = mono_ms() + HR_TIMEOUT_MS;
    for (;;) {
        step_all(h);
        if (cond(h, arg))
            return true;
        if (mono_ms() > end)
            return false;
    }
}

void hr_run_for(struct hr *h, unsigned ms)
{
    uint64_t end = mono_ms() + ms;
    while (mono_ms() < end)
        step_all(h);
}

struct client_want {
    size_t client, len;
};

static bool client_has(struct hr *h, void *arg)
{
    const struct client_want *w = arg;
    const struct hr_client *cl = &h->clients[w->client];
    return cl->len >= w->len || cl->eof;
}

static bool client_eof(struct hr *h, void *arg)
{
    return h->clients[*(size_t *)arg].eof;
}

void hr_expect_client(struct hr *h, size_t client, const char *want, bool closed)
{
    struct hr_client *cl = &h->clients[client];
    struct client_want w = {client, strlen(want)};
    char *exp = strdup(hr_expand(h, want));
    assert_non_null(exp);
    w.len = strlen(exp);
    (void)hr_run_until(h, client_has, &w);
    if (closed)
        (void)hr_run_until(h, client_eof, &client);
    else
        hr_run_for(h, SETTLE_MS);
    if (cl->len != w.len || (w.len > 0 && memcmp(cl->buf, exp, w.len) != 0)) {
        show("client expected", exp, w.len);
        show("client received", cl->buf, cl->len);
        fail_msg("client %zu did not receive the expected bytes", client);
    }
    if (cl->eof != closed)
        fail_msg("client %zu: the proxy %s the connection", client,
                 closed ? "did not close" : "closed");
    cl->len = 0; /* the next expectation starts here */
    free(exp);
}

static bool script_done(struct hr *h, void *arg)
{
    size_t i = *(size_t *)arg;
    const struct hr_conn *k = &h->conns[i];
    return i < h->n_conns && k->step < HR_MAX_STEPS && k->script->steps[k->step].kind == HR_END;
}

static bool peer_closed(struct hr *h, void *arg)
{
    size_t i = *(size_t *)arg;
    return i < h->n_conns && h->conns[i].peer_closed;
}

static void dump_conns(const struct hr *h)
{
    for (size_t i = 0; i < h->n_conns; i++) {
        char what[64];
        snprintf(what, sizeof(what), "enclave connection %zu at step %zu received", i,
                 h->conns[i].step);
        show(what, h->conns[i].rx, h->conns[i].rx_len);
    }
}

void hr_wait_script_done(struct hr *h, size_t i)
{
    if (!hr_run_until(h, script_done, &i)) {
        dump_conns(h);
        fail_msg("enclave connection %zu did not finish its script (%zu connections)", i,
                 h->n_conns);
    }
}

void hr_wait_peer_closed(struct hr *h, size_t i)
{
    if (!hr_run_until(h, peer_closed, &i)) {
        dump_conns(h);
        fail_msg("the proxy did not close enclave connection %zu", i);
    }
}

void hr_expect_enclave(struct hr *h, size_t i, const char *want, size_t n_evidence)
{
    const struct hr_conn *k = &h->conns[i];
    const char *exp = hr_expand(h, want);
    const char *path = h->cfg->services[0].evidence_path;
    char *app = NULL;
    size_t app_len = 0, app_cap = 0, at = 0;
    char line[CONFIG_PATH_MAX + 8];

    assert_true(i < h->n_conns);
    /* Every evidence request is the proxy's GET of the evidence path, and nothing else. */
    snprintf(line, sizeof(line), "GET %s", path);
    for (size_t e = 0; e < k->n_evidence; e++) {
        const char *req = k->rx + k->ev_off[e];
        if (k->ev_len[e] < strlen(line) || memcmp(req, line, strlen(line)) != 0 ||
            memmem(req, k->ev_len[e], "\r\nHost: ", 8) == NULL) {
            show("evidence request", req, k->ev_len[e]);
            fail_msg("enclave connection %zu: evidence request %zu is not a GET of %s", i, e, path);
        }
        append(&app, &app_len, &app_cap, k->rx + at, k->ev_off[e] - at);
        at = k->ev_off[e] + k->ev_len[e];
    }
    append(&app, &app_len, &app_cap, k->rx + at, k->rx_len - at);
    if (k->n_evidence != n_evidence)
        fail_msg("enclave connection %zu: %zu evidence requests, expected %zu", i, k->n_evidence,
                 n_evidence);
    if (app_len != strlen(exp) || (app_len > 0 && memcmp(app, exp, app_len) != 0)) {
        show("enclave expected", exp, strlen(exp));
        show("enclave received (application bytes)", app, app_len);
        fail_msg("enclave connection %zu did not receive the expected bytes", i);
    }
    free(app);
}

void hr_enclave_script(struct hr *h, const struct hr_script *const *scripts)
{
    h->n_scripts = 0;
    for (size_t i = 0; scripts[i] != NULL; i++) {
        assert_true(i < HR_MAX_CONNS);
        h->scripts[h->n_conns + i] = scripts[i];
        h->n_scripts = h->n_conns + i + 1;
    }
}

void hr_go(struct hr *h, unsigned flag)
{
    assert_true(flag < sizeof(h->go) / sizeof(h->go[0]));
    h->go[flag] = true;
}

/* ---- Start and stop ----------------------------------------------------------------------- */

static void write_config(struct hr *h, const char *extra)
{
    FILE *fp = fopen(h->conf, "w");
    assert_non_null(fp);
    fprintf(fp,
            "[daemon]\nlog_level = error\nshutdown_timeout = 1s\nbatch_wait_us = 0\n\n"
            "[service demo]\nlisten = 127.0.0.1:%u\nupstream = 127.0.0.1:%u\n"
            "allowed_hosts = app.test\nwarm_attestation = no\nconnect_timeout = 2s\n"
            "attestation_timeout = 2s\n%s%s%s\n",
            h->port, h->enclave_port,
            strstr(extra, "measurement") != NULL ? "" : "measurement = pcr0=",
            strstr(extra, "measurement") != NULL ? "" : HR_PCR0_HEX "\n", extra);
    fclose(fp);
}

static struct config *load(struct hr *h, const char *extra)
{
    char err[CONFIG_ERROR_MAX];
    struct config *cfg = NULL;
    write_config(h, extra);
    if (config_load(h->conf, &cfg, err, sizeof(err)) != 0)
        fail_msg("config_load: %s", err);
    return cfg;
}

static void on_done(void *ctx)
{
    struct hr *h = ctx;
    h->proxy = NULL;
    h->done_calls++;
}

struct hr *hr_start(const struct hr_pki *pki, const char *extra)
{
    struct hr *h = calloc(1, sizeof(*h));
    char err[256];
    uint8_t *spki = NULL;
    int spki_len;
    int lfd;

    assert_non_null(h);
    /* A write to a connection the proxy closed must fail, not end the test program. */
    signal(SIGPIPE, SIG_IGN);
    h->pki = pki;
    snprintf(h->dir, sizeof(h->dir), "/tmp/test_relay.XXXXXX");
    assert_non_null(mkdtemp(h->dir));
    snprintf(h->conf, sizeof(h->conf), "%s/a.conf", h->dir);
    snprintf(h->root, sizeof(h->root), "%s/root.pem", h->dir);
    hr_pki_write_root(pki, h->root);
    log_configure(getenv("HR_DEBUG") != NULL ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR, LOG_FORMAT_LOGFMT,
                  NULL);

    /* The enclave: a listening socket and a TLS key bound into its documents. */
    h->lfd = listen_any(&h->enclave_port);
    set_nonblocking(h->lfd);
    h->ctx = hr_server_ctx(&h->key, &h->cert);
    spki_len = i2d_PUBKEY(h->key, &spki);
    assert_true(spki_len > 0);
    SHA256(spki, (size_t)spki_len, h->user_data);
    OPENSSL_free(spki);

    /* The proxy's port: bound and released here, then bound by the proxy. */
    lfd = listen_any(&h->port);
    close(lfd);
    h->cfg = load(h, extra);
    snprintf(h->authority, sizeof(h->authority), "%s", h->cfg->services[0].upstream_authority);
    h->verifier = verifier_new(h->root, err, sizeof(err));
    if (h->verifier == NULL)
        fail_msg("verifier_new: %s", err);
    h->metrics = metrics_new();
    assert_non_null(h->metrics);
    assert_int_equal(uv_loop_init(&h->loop), 0);
    h->env.loop = &h->loop;
    h->env.cfg = &h->cfg;
    h->env.verifier = &h->verifier;
    h->env.metrics = h->metrics;
    h->env.ctx = h;
    assert_int_equal(proxy_start(&h->env, &h->proxy), 0);
    return h;
}

void hr_reload(struct hr *h, const char *extra)
{
    struct config *old = h->cfg;
    h->cfg = load(h, extra);
    proxy_reload(h->proxy, old, false); /* takes ownership of `old` */
}

void hr_stop(struct hr *h)
{
    uint64_t end;
    for (size_t i = 0; i < h->n_clients; i++)
        close(h->clients[i].fd);
    proxy_shutdown(h->proxy, on_done);
    /* The enclave goes on answering (TLS close_notify, FIN) while the proxy closes. */
    end = mono_ms() + HR_TIMEOUT_MS;
    while (h->done_calls == 0 && mono_ms() < end)
        step_all(h);
    assert_int_equal(h->done_calls, 1);
    assert_int_equal(uv_run(&h->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&h->loop), 0);
    for (size_t i = 0; i < h->n_conns; i++) {
        conn_close(&h->conns[i]);
        SSL_free(h->conns[i].ssl);
        free(h->conns[i].rx);
    }
    for (size_t i = 0; i < h->n_clients; i++)
        free(h->clients[i].buf);
    close(h->lfd);
    SSL_CTX_free(h->ctx);
    X509_free(h->cert);
    EVP_PKEY_free(h->key);
    config_free(h->cfg);
    verifier_free(h->verifier);
    metrics_free(h->metrics);
    unlink(h->conf);
    unlink(h->root);
    rmdir(h->dir);
    free(h);
}

struct hr_pki *hr_group_pki;

int hr_group_setup(void **state)
{
    (void)state;
    hr_group_pki = hr_pki_new();
    return 0;
}

int hr_group_teardown(void **state)
{
    (void)state;
    hr_pki_free(hr_group_pki);
    hr_group_pki = NULL;
    return 0;
}
