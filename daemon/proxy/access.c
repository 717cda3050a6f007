/*
 * The Host allow-list and the bearer token of a service (access.h).
 */
#include "proxy/access.h"

#include <stdio.h>
#include <string.h>

#include "proxy/http1.h"

static bool host_allowed(const struct service_config *cfg, const char *v, size_t len)
{
    const char *list[CONFIG_MAX_HOSTS + 3 + CONFIG_MAX_LISTEN];
    char bracketed[CONFIG_MAX_LISTEN][CONFIG_HOST_MAX + 2];
    size_t n = 0;

    if (cfg->n_allowed_hosts > 0) {
        for (size_t i = 0; i < cfg->n_allowed_hosts; i++)
            list[n++] = cfg->allowed_hosts[i];
    } else {
        list[n++] = "localhost";
        list[n++] = "127.0.0.1";
        list[n++] = "[::1]";
        for (size_t i = 0; i < cfg->n_listen; i++) {
            const struct listen_addr *a = &cfg->listen[i];
            if (a->is_unix)
                continue;
            if (strchr(a->host, ':') != NULL) {
                snprintf(bracketed[i], sizeof(bracketed[i]), "[%s]", a->host);
                list[n++] = bracketed[i];
            } else {
                list[n++] = a->host;
            }
        }
    }
    return http1_host_allowed(v, len, list, n);
}

bool access_check(const struct service_config *cfg, const struct http1_head *h,
                  enum proxy_error *err, char *msg, size_t cap)
{
    int hi = http1_head_find(h, HTTP1_FIELD_HOST, 0);

    if (hi >= 0 &&
        !host_allowed(cfg, http1_head_str(h, h->hdrs[hi].value_off), h->hdrs[hi].value_len)) {
        snprintf(msg, cap, "Host '%.*s' is not allowed for this service",
                 (int)(h->hdrs[hi].value_len > 200 ? 200 : h->hdrs[hi].value_len),
                 http1_head_str(h, h->hdrs[hi].value_off));
        *err = PROXY_ERR_HOST_NOT_ALLOWED;
        return false;
    }
    if (cfg->token[0] != '\0') {
        int ai = http1_head_find(h, HTTP1_FIELD_AUTHORIZATION, 0);
        if (ai < 0 || http1_head_count(h, HTTP1_FIELD_AUTHORIZATION) != 1 ||
            !http1_bearer_matches(http1_head_str(h, h->hdrs[ai].value_off), h->hdrs[ai].value_len,
                                  cfg->token)) {
            snprintf(msg, cap, "%s",
                     "a valid bearer token is required (Authorization: Bearer ...)");
            *err = PROXY_ERR_UNAUTHORIZED;
            return false;
        }
    }
    return true;
}
