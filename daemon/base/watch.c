#include "base/watch.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

struct watch_dir {
    uv_fs_event_t handle;
    struct watch *owner;
    char dir[CONFIG_PATH_MAX];
    /* Names of the watched files in this directory (several services may share one). */
    char names[CONFIG_MAX_SERVICES][CONFIG_NAME_MAX * 4];
    size_t n_names;
    bool started;
};

struct watch {
    uv_loop_t *loop;
    uv_timer_t settle;
    struct watch_dir *dirs;
    size_t n_dirs;
    size_t pending_closes;
    bool closing;
    watch_change_cb cb;
    void *arg;
};

/* Close callbacks: the settle timer's data is the watch, a directory handle's is its
 * watch_dir; both lead to the owner, which is freed after its last handle closed. */
static void release_one(struct watch *w)
{
    if (--w->pending_closes == 0) {
        free(w->dirs);
        free(w);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    release_one(h->data);
}

static void on_dir_closed(uv_handle_t *h)
{
    struct watch_dir *d = h->data;
    release_one(d->owner);
}

void watch_close(struct watch *w)
{
    if (w == NULL || w->closing)
        return;
    w->closing = true;
    w->pending_closes = 1;
    uv_close((uv_handle_t *)&w->settle, on_timer_closed);
    for (size_t i = 0; i < w->n_dirs; i++) {
        if (!w->dirs[i].started)
            continue;
        w->pending_closes++;
        uv_close((uv_handle_t *)&w->dirs[i].handle, on_dir_closed);
    }
}

static void on_settled(uv_timer_t *t)
{
    struct watch *w = t->data;
    if (!w->closing)
        w->cb(w->arg);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    struct watch_dir *d = h->data;
    struct watch *w = d->owner;
    (void)events;
    if (w->closing)
        return;
    if (status < 0) {
        log_event(LOG_LEVEL_WARN, "policy_watch_error", "dir", d->dir, "error", uv_strerror(status),
                  NULL);
        return;
    }
    if (filename == NULL)
        return;
    for (size_t i = 0; i < d->n_names; i++) {
        if (strcmp(filename, d->names[i]) == 0) {
            /* Restarting the timer coalesces a burst of events into one reload. */
            uv_timer_start(&w->settle, on_settled, WATCH_SETTLE_MS, 0);
            return;
        }
    }
}

/* Splits `path` into directory and file name. */
static int split_path(const char *path, char *dir, size_t dcap, char *name, size_t ncap)
{
    char tmp[CONFIG_PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (strlen(path) >= sizeof(tmp))
        return -ENAMETOOLONG;
    if (slash == NULL) {
        snprintf(dir, dcap, ".");
        snprintf(name, ncap, "%s", path);
    } else if (slash == path) {
        snprintf(dir, dcap, "/");
        snprintf(name, ncap, "%s", slash + 1);
    } else {
        snprintf(dir, dcap, "%.*s", (int)(slash - path), path);
        snprintf(name, ncap, "%s", slash + 1);
    }
    return name[0] == '\0' ? -EINVAL : 0;
}

int watch_start(uv_loop_t *loop, const struct config *cfg, watch_change_cb cb, void *arg,
                struct watch **out)
{
    struct watch *w;
    int rc = 0;

    *out = NULL;
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        return UV_ENOMEM;
    w->dirs = calloc(cfg->n_services ? cfg->n_services : 1, sizeof(*w->dirs));
    if (w->dirs == NULL) {
        free(w);
        return UV_ENOMEM;
    }
    w->loop = loop;
    w->cb = cb;
    w->arg = arg;
    uv_timer_init(loop, &w->settle);
    w->settle.data = w;

    for (size_t s = 0; s < cfg->n_services; s++) {
        const struct service_config *svc = &cfg->services[s];
        char dir[CONFIG_PATH_MAX], name[CONFIG_NAME_MAX * 4];
        struct watch_dir *d = NULL;
        /* A service has a policy file or a policy bundle, never both (config.c). */
        const char *file = svc->policy_bundle[0] != '\0' ? svc->policy_bundle : svc->policy_file;
        if (file[0] == '\0' || !svc->watch_policy)
            continue;
        rc = split_path(file, dir, sizeof(dir), name, sizeof(name));
        if (rc < 0)
            goto out_fail;
        for (size_t i = 0; i < w->n_dirs; i++) {
            if (strcmp(w->dirs[i].dir, dir) == 0)
                d = &w->dirs[i];
        }
        if (d == NULL) {
            d = &w->dirs[w->n_dirs++];
            snprintf(d->dir, sizeof(d->dir), "%s", dir);
            d->owner = w;
            rc = uv_fs_event_init(loop, &d->handle);
            if (rc < 0)
                goto out_fail;
            d->handle.data = d;
            d->started = true; /* initialised: must be closed from now on */
            rc = uv_fs_event_start(&d->handle, on_fs_event, d->dir, 0);
            if (rc < 0) {
                log_event(LOG_LEVEL_ERROR, "policy_watch_failed", "service", svc->name, "dir",
                          d->dir, "error", uv_strerror(rc), NULL);
                goto out_fail;
            }
        }
        snprintf(d->names[d->n_names++], sizeof(d->names[0]), "%s", name);
        log_event(LOG_LEVEL_DEBUG, "policy_watch", "service", svc->name, "file", file, NULL);
    }
    *out = w;
    return 0;

out_fail:
    watch_close(w);
    return rc;
}
