#include "proxy/pinset.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "base/hex.h"

void pinset_init(struct pinset *ps)
{
    memset(ps, 0, sizeof(*ps));
}

static bool pin_equal(const uint8_t a[PIN_LEN], const uint8_t b[PIN_LEN])
{
    return CRYPTO_memcmp(a, b, PIN_LEN) == 0;
}

static struct pin_entry *find_entry(const struct pinset *ps, const uint8_t pin[PIN_LEN])
{
    for (size_t i = 0; i < ps->n; i++) {
        if (pin_equal(ps->entries[i].pin, pin))
            return (struct pin_entry *)&ps->entries[i];
    }
    return NULL;
}

static struct pin_negative *find_negative(const struct pinset *ps, const uint8_t pin[PIN_LEN])
{
    for (size_t i = 0; i < ps->n_negative; i++) {
        if (pin_equal(ps->negatives[i].pin, pin))
            return (struct pin_negative *)&ps->negatives[i];
    }
    return NULL;
}

const struct pin_entry *pinset_find(const struct pinset *ps, const uint8_t pin[PIN_LEN])
{
    return find_entry(ps, pin);
}

struct pin_entry *pinset_entry(struct pinset *ps, const uint8_t pin[PIN_LEN])
{
    return find_entry(ps, pin);
}

enum pin_status pinset_lookup(const struct pinset *ps, const uint8_t pin[PIN_LEN], uint64_t now,
                              uint64_t *retry_after_ms)
{
    const struct pin_entry *fresh;
    return pinset_lookup_fresh(ps, pin, now, retry_after_ms, &fresh);
}

enum pin_status pinset_lookup_fresh(const struct pinset *ps, const uint8_t pin[PIN_LEN],
                                    uint64_t now, uint64_t *retry_after_ms,
                                    const struct pin_entry **fresh)
{
    const struct pin_entry *e = find_entry(ps, pin);
    const struct pin_negative *neg;

    *fresh = NULL;
    if (e != NULL && now < e->expires_mono_ms) {
        *fresh = e;
        return PIN_FRESH;
    }
    neg = find_negative(ps, pin);
    if (neg != NULL && now < neg->until_mono_ms) {
        if (retry_after_ms != NULL)
            *retry_after_ms = neg->until_mono_ms - now;
        return PIN_NEGATIVE;
    }
    return e != NULL ? PIN_EXPIRED : PIN_UNKNOWN;
}

static void remove_negative(struct pinset *ps, const uint8_t pin[PIN_LEN])
{
    struct pin_negative *neg = find_negative(ps, pin);
    if (neg == NULL)
        return;
    *neg = ps->negatives[--ps->n_negative];
}

/* When a pin attested at `verified_at` (wall clock) lapses: after the TTL, or `margin_ms`
 * before the NSM leaf certificate expires, whichever comes first. */
static int64_t expiry_wall(const struct pin_info *info, int64_t verified_at, uint64_t ttl_ms,
                           uint64_t margin_ms)
{
    int64_t ttl_limit = verified_at + (int64_t)ttl_ms;
    int64_t cert_limit = info->leaf_not_after_ms - (int64_t)margin_ms;
    return ttl_limit < cert_limit ? ttl_limit : cert_limit;
}

int pinset_add(struct pinset *ps, const uint8_t pin[PIN_LEN], const struct pin_info *info,
               uint64_t now, int64_t now_wall, uint64_t ttl_ms, uint64_t margin_ms)
{
    struct pin_entry *e;
    int64_t expires_wall = expiry_wall(info, now_wall, ttl_ms, margin_ms);

    if (expires_wall <= now_wall)
        return -ETIME;
    e = find_entry(ps, pin);
    if (e == NULL && ps->n < PINSET_MAX) {
        e = &ps->entries[ps->n++];
    } else if (e == NULL) {
        /* Full: the entry that expires first makes room; it would be the next to go anyway. */
        e = &ps->entries[0];
        for (size_t i = 1; i < ps->n; i++) {
            if (ps->entries[i].expires_mono_ms < e->expires_mono_ms)
                e = &ps->entries[i];
        }
    }
    memcpy(e->pin, pin, PIN_LEN);
    e->info = *info;
    e->serial = ++ps->last_serial;
    e->info.verified_at_ms = now_wall;
    e->info.expires_at_ms = expires_wall;
    e->expires_mono_ms = now + (uint64_t)(expires_wall - now_wall);
    e->refreshing = false;
    e->refresh_not_before_mono_ms = 0;
    remove_negative(ps, pin);
    return 0;
}

size_t pinset_limit(struct pinset *ps, uint64_t ttl_ms, uint64_t margin_ms)
{
    size_t n = 0;
    for (size_t i = 0; i < ps->n; i++) {
        struct pin_entry *e = &ps->entries[i];
        int64_t limit = expiry_wall(&e->info, e->info.verified_at_ms, ttl_ms, margin_ms);
        uint64_t cut;
        if (limit >= e->info.expires_at_ms)
            continue;
        cut = (uint64_t)(e->info.expires_at_ms - limit);
        e->expires_mono_ms = e->expires_mono_ms > cut ? e->expires_mono_ms - cut : 0;
        e->info.expires_at_ms = limit;
        e->serial = ++ps->last_serial;
        n++;
    }
    return n;
}

bool pinset_remove(struct pinset *ps, const uint8_t pin[PIN_LEN])
{
    struct pin_entry *e = find_entry(ps, pin);
    if (e == NULL)
        return false;
    *e = ps->entries[--ps->n];
    return true;
}

void pinset_add_negative(struct pinset *ps, const uint8_t pin[PIN_LEN], uint64_t now,
                         uint64_t duration_ms)
{
    struct pin_negative *neg;
    if (duration_ms == 0)
        return;
    neg = find_negative(ps, pin);
    if (neg == NULL && ps->n_negative < PINSET_NEGATIVE_MAX) {
        neg = &ps->negatives[ps->n_negative++];
    } else if (neg == NULL) {
        neg = &ps->negatives[0];
        for (size_t i = 1; i < ps->n_negative; i++) {
            if (ps->negatives[i].until_mono_ms < neg->until_mono_ms)
                neg = &ps->negatives[i];
        }
    }
    memcpy(neg->pin, pin, PIN_LEN);
    neg->until_mono_ms = now + duration_ms;
}

void pinset_clear(struct pinset *ps)
{
    struct pin_failure keep = ps->last_failure;
    uint64_t serial = ps->last_serial; /* serials are never reused (pin_entry.serial) */
    memset(ps, 0, sizeof(*ps));
    ps->last_failure = keep;
    ps->last_serial = serial;
}

size_t pinset_expire(struct pinset *ps, uint64_t now)
{
    size_t dropped = 0;
    for (size_t i = 0; i < ps->n;) {
        if (now >= ps->entries[i].expires_mono_ms) {
            ps->entries[i] = ps->entries[--ps->n];
            dropped++;
        } else {
            i++;
        }
    }
    for (size_t i = 0; i < ps->n_negative;) {
        if (now >= ps->negatives[i].until_mono_ms)
            ps->negatives[i] = ps->negatives[--ps->n_negative];
        else
            i++;
    }
    return dropped;
}

bool pinset_any_fresh(const struct pinset *ps, uint64_t now)
{
    return pinset_next_expiry(ps, now) != NULL;
}

const struct pin_entry *pinset_next_expiry(const struct pinset *ps, uint64_t now)
{
    const struct pin_entry *best = NULL;
    for (size_t i = 0; i < ps->n; i++) {
        const struct pin_entry *e = &ps->entries[i];
        if (now < e->expires_mono_ms &&
            (best == NULL || e->expires_mono_ms < best->expires_mono_ms))
            best = e;
    }
    return best;
}

bool pinset_info_satisfies(const struct pin_info *info, const struct policy *policy)
{
    bool any = false;
    if (info->debug_mode && !policy->allow_debug)
        return false;
    /* Every set is compared in full (no early exit) so the time taken does not depend on
     * which set matched. */
    for (size_t s = 0; s < policy->n_sets; s++) {
        const struct measurement_set *set = &policy->sets[s];
        bool ok = (set->mask & info->pcr_mask) == set->mask;
        for (unsigned i = 0; i < NITRO_PCR_COUNT; i++) {
            if (!(set->mask & (1u << i)))
                continue;
            if (CRYPTO_memcmp(set->pcr[i], info->pcrs[i], NITRO_PCR_LEN) != 0)
                ok = false;
        }
        if (ok && set->mask != 0)
            any = true;
    }
    return any;
}

void pinset_set_failure(struct pinset *ps, int64_t now_wall, bool rejected, const char *reason,
                        const char *message, const uint8_t *pin)
{
    struct pin_failure *f = &ps->last_failure;
    memset(f, 0, sizeof(*f));
    f->set = true;
    f->at_ms = now_wall;
    f->rejected = rejected;
    snprintf(f->reason, sizeof(f->reason), "%s", reason != NULL ? reason : "unknown");
    snprintf(f->message, sizeof(f->message), "%s", message != NULL ? message : "");
    if (pin != NULL) {
        f->has_pin = true;
        memcpy(f->pin, pin, PIN_LEN);
    }
}

void pin_hex(const uint8_t pin[PIN_LEN], char out[PIN_HEX_LEN + 1])
{
    hex_encode(pin, PIN_LEN, out);
}
