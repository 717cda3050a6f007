#include "ops/sdnotify.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/num.h"

/* Fills `addr` from a NOTIFY_SOCKET value: "/path" or "@abstract". */
static int notify_address(const char *value, struct sockaddr_un *addr, socklen_t *len)
{
    size_t n = strlen(value);

    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    if (n < 2 || (value[0] != '/' && value[0] != '@'))
        return -EINVAL; /* relative paths and vsock: addresses are not supported */
    if (n >= sizeof(addr->sun_path))
        return -ENAMETOOLONG;
    memcpy(addr->sun_path, value, n);
    if (value[0] == '@') {
        /* An abstract address is the name after a leading NUL, without a terminator. */
        addr->sun_path[0] = '\0';
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

/* ---- sd_notify ------------------------------------------------------------------------------- */

int sdnotify_init(struct sdnotify *sn, uv_loop_t *loop)
{
    const char *sock = getenv("NOTIFY_SOCKET");
    const char *wd_usec = getenv("WATCHDOG_USEC");
    const char *wd_pid = getenv("WATCHDOG_PID");
    int rc;

    memset(sn, 0, sizeof(*sn));
    sn->loop = loop;
    sn->fd = -1;

    rc = uv_timer_init(loop, &sn->watchdog_timer);
    if (rc < 0)
        return rc;
    sn->watchdog_timer.data = sn;
    uv_unref((uv_handle_t *)&sn->watchdog_timer);

    if (sock != NULL && sock[0] != '\0') {
        rc = notify_address(sock, &sn->addr, &sn->addr_len);
        if (rc == 0) {
            sn->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
            if (sn->fd == -1)
                rc = -errno;
        }
        if (rc < 0)
            sn->config_error = rc;
        else
            sn->enabled = true;
    }

    if (wd_usec != NULL) {
        uint64_t usec = 0;
        uint64_t pid = 0;
        bool ours = true;
        if (num_parse_u64(wd_usec, &usec) < 0) {
            sn->config_error = sn->config_error ? sn->config_error : -EINVAL;
            usec = 0;
        }
        if (wd_pid != NULL) {
            if (num_parse_u64(wd_pid, &pid) < 0 || pid != (uint64_t)getpid())
                ours = false;
        }
        sn->watchdog_usec = ours ? usec : 0;
    }
    return 0;
}

int sdnotify_config_error(const struct sdnotify *sn)
{
    return sn->config_error;
}

bool sdnotify_enabled(const struct sdnotify *sn)
{
    return sn->enabled && !sn->closing;
}

uint64_t sdnotify_watchdog_usec(const struct sdnotify *sn)
{
    return sn->watchdog_usec;
}

int sdnotify_send(struct sdnotify *sn, const char *message)
{
    size_t n = strnlen(message, SDNOTIFY_MESSAGE_MAX + 1);
    ssize_t sent;

    if (n == 0 || n > SDNOTIFY_MESSAGE_MAX)
        return -EINVAL;
    if (!sn->enabled || sn->closing || sn->fd == -1)
        return 0;
    sent =
        sendto(sn->fd, message, n, MSG_NOSIGNAL, (const struct sockaddr *)&sn->addr, sn->addr_len);
    if (sent == -1)
        return -errno;
    return (size_t)sent == n ? 0 : -EMSGSIZE;
}

/*
 * Builds "<head>[\nSTATUS=<status>]" into `buf`. Control characters in the status become spaces
 * so that a status can never add a second assignment to the datagram.
 */
static int compose(char *buf, size_t cap, const char *head, const char *status)
{
    size_t n = strlen(head);
    size_t i;

    if (n >= cap)
        return -EINVAL;
    memcpy(buf, head, n);
    if (status != NULL) {
        static const char key[] = "\nSTATUS=";
        size_t klen = sizeof(key) - 1;
        if (n + klen >= cap)
            return -EINVAL;
        memcpy(buf + n, key, klen);
        n += klen;
        for (i = 0; i < SDNOTIFY_STATUS_MAX && status[i] != '\0' && n + 1 < cap; i++) {
            unsigned char c = (unsigned char)status[i];
            buf[n++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
        }
    }
    buf[n] = '\0';
    return 0;
}

static int send_with_status(struct sdnotify *sn, const char *head, const char *status)
{
    char buf[SDNOTIFY_MESSAGE_MAX + 1];
    int rc = compose(buf, sizeof(buf), head, status);
    if (rc < 0)
        return rc;
    return sdnotify_send(sn, buf);
}

int sdnotify_ready(struct sdnotify *sn, const char *status)
{
    return send_with_status(sn, "READY=1", status);
}

int sdnotify_reloading(struct sdnotify *sn, const char *status)
{
    char head[64];
    struct timespec ts;
    uint64_t usec;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return -errno;
    usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    snprintf(head, sizeof(head), "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)usec);
    return send_with_status(sn, head, status);
}

int sdnotify_stopping(struct sdnotify *sn, const char *status)
{
    return send_with_status(sn, "STOPPING=1", status);
}

int sdnotify_status(struct sdnotify *sn, const char *status)
{
    char buf[SDNOTIFY_MESSAGE_MAX + 1];
    int rc;

    if (status == NULL)
        return -EINVAL;
    /* compose() adds "\nSTATUS="; skip its leading newline. */
    rc = compose(buf, sizeof(buf), "", status);
    if (rc < 0)
        return rc;
    return sdnotify_send(sn, buf + 1);
}

int sdnotify_watchdog(struct sdnotify *sn)
{
    return sdnotify_send(sn, "WATCHDOG=1");
}

int sdnotify_extend_timeout(struct sdnotify *sn, uint64_t usec)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "EXTEND_TIMEOUT_USEC=%llu", (unsigned long long)usec);
    return sdnotify_send(sn, buf);
}

static void on_watchdog_tick(uv_timer_t *t)
{
    struct sdnotify *sn = t->data;
    /* A full queue or a restarting manager is not our failure: the next tick tries again. */
    (void)sdnotify_watchdog(sn);
}

int sdnotify_watchdog_start(struct sdnotify *sn)
{
    uint64_t period_ms;

    if (sn->closing || !sn->enabled || sn->watchdog_usec == 0)
        return 0;
    /* Half the interval, as sd_watchdog_enabled(3) recommends; at least 1 ms. */
    period_ms = sn->watchdog_usec / 2000u;
    if (period_ms == 0)
        period_ms = 1;
    return uv_timer_start(&sn->watchdog_timer, on_watchdog_tick, 0, period_ms);
}

void sdnotify_watchdog_stop(struct sdnotify *sn)
{
    if (!sn->closing)
        uv_timer_stop(&sn->watchdog_timer);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct sdnotify *sn = h->data;
    sdnotify_close_cb cb = sn->close_cb;
    sn->close_cb = NULL;
    if (cb != NULL)
        cb(sn);
}

void sdnotify_close(struct sdnotify *sn, sdnotify_close_cb done)
{
    if (sn->closing)
        return;
    uv_timer_stop(&sn->watchdog_timer);
    sn->closing = true;
    sn->close_cb = done;
    if (sn->fd != -1) {
        close(sn->fd);
        sn->fd = -1;
    }
    uv_close((uv_handle_t *)&sn->watchdog_timer, on_timer_closed);
}
