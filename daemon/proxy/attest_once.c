/*
 * `attestproxy attest -c FILE SERVICE`: connect once to the service's enclave, attest it over
 * that connection exactly as the relay would (same verifier, policy, nonce and binding), report,
 * and close. No listener is opened and no request is relayed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/attest.h"
#include "proxy/proxy.h"
#include "proxy/proxy_internal.h"
#include "proxy/upstream.h"

struct once {
    void *ctx;
    struct upstream *up;
    void (*done)(void *ctx, const struct proxy_attest_result *r);
    bool finished;
    struct proxy_attest_result res;
};

static void finish(struct once *o, bool accepted, const char *message)
{
    if (o->finished)
        return;
    o->finished = true;
    o->res.accepted = accepted;
    snprintf(o->res.message, sizeof(o->res.message), "%s", message ? message : "");
    o->done(o->ctx, &o->res);
    /* The connection served its one purpose; closing it now lets the shutdown that `done`
     * started finish at once instead of draining it as an exchange. */
    if (o->up != NULL && !upstream_is_closing(o->up))
        upstream_close(o->up, "attest command finished");
}

static void on_attested(struct upstream *up, const struct attest_outcome *out, void *arg)
{
    struct once *o = arg;
    if (up->has_pin) {
        o->res.has_pin = true;
        memcpy(o->res.pin, up->pin, PIN_LEN);
    }
    finish(o, out->accepted, out->accepted ? "accepted" : out->message);
}

static void on_connected(struct upstream *up, int status, void *arg)
{
    struct once *o = arg;
    if (status < 0) {
        finish(o, false, upstream_failure(up));
        return;
    }
    if (attest_start(up, on_attested, o) < 0)
        finish(o, false, "attestation could not start");
}

static void on_error(struct upstream *up, const char *msg, void *arg)
{
    (void)up;
    finish(arg, false, msg);
}

static void on_closed(struct upstream *up, void *arg)
{
    (void)up;
    finish(arg, false, "the connection closed before attestation finished");
}

static void on_timeout(struct upstream *up, void *arg)
{
    (void)up;
    finish(arg, false, "timed out");
}

static const struct upstream_handler once_handler = {
    .on_connected = on_connected,
    .on_error = on_error,
    .on_timeout = on_timeout,
    .on_closed = on_closed,
};

int proxy_attest_once(const struct proxy_env *env, const char *service,
                      void (*done)(void *ctx, const struct proxy_attest_result *r),
                      struct proxy **out)
{
    struct proxy_service *svc = proxy__start_unlistened(env, service, out);
    struct once *o;
    int rc;

    if (svc == NULL)
        return -ENOENT;
    /* The proxy owns this state and frees it with itself, after the last callback that could
     * reach it (the upstream's) has run. */
    o = calloc(1, sizeof(*o));
    if (o == NULL)
        return -ENOMEM;
    (*out)->attest_once = o;
    o->ctx = env->ctx;
    o->done = done;
    rc = upstream_connect(svc, &once_handler, o, &o->up);
    return rc < 0 ? rc : 0;
}
