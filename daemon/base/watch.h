/*
 * Policy file watching: when a service's policy_file or policy_bundle changes on disk (and
 * watch_policy = yes),
 * the daemon reloads its configuration exactly as on SIGHUP — parse and validate everything
 * first, swap only on success.
 *
 * Each watched file is observed through its directory (uv_fs_event on the directory, filtered
 * by file name), because editors and config-management tools replace files by rename, which a
 * watch on the file itself would not survive. Bursts of events (write, then rename, then chmod)
 * are coalesced by a short settle timer into one reload.
 */
#ifndef ATTESTPROXY_BASE_WATCH_H
#define ATTESTPROXY_BASE_WATCH_H

#include <uv.h>

#include "base/config.h"

#define WATCH_MAX_DIRS  CONFIG_MAX_SERVICES
#define WATCH_SETTLE_MS 200

struct watch;

/** Called (from the loop) once the watched files settled after a change. */
typedef void (*watch_change_cb)(void *arg);

/**
 * Starts watching the policy files of `cfg` that have watch_policy = yes. Returns 0 (also when
 * nothing needs watching; *out is then an empty watcher) or a negative libuv error.
 * `cb(arg)` fires after changes settle. Free with watch_close().
 */
int watch_start(uv_loop_t *loop, const struct config *cfg, watch_change_cb cb, void *arg,
                struct watch **out);

/**
 * Stops watching and closes every handle; the memory is released from the last close callback.
 * NULL is a no-op. No callback fires after this returns.
 */
void watch_close(struct watch *w);

#endif
