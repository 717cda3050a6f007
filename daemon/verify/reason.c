#include "verify/reason.h"

#include <stdio.h>
#include <string.h>

struct reason_row {
    enum verify_stage stage;
    const char *name;
    const char *message;
};

#define VERIFY_REASON_ROW_(name_, stage_, id_, msg_) {VERIFY_STAGE_##stage_, id_, msg_},
static const struct reason_row reasons[VERIFY_R_COUNT_] = {VERIFY_REASONS(VERIFY_REASON_ROW_)};
#undef VERIFY_REASON_ROW_

static const char *const stage_names[] = {
    [VERIFY_STAGE_NONE] = "none",         [VERIFY_STAGE_ENVELOPE] = "envelope",
    [VERIFY_STAGE_COSE] = "cose",         [VERIFY_STAGE_PAYLOAD] = "payload",
    [VERIFY_STAGE_CHAIN] = "chain",       [VERIFY_STAGE_SIGNATURE] = "signature",
    [VERIFY_STAGE_POLICY] = "policy",     [VERIFY_STAGE_BINDING] = "binding",
    [VERIFY_STAGE_INTERNAL] = "internal",
};

/* An out-of-range code can only come from a bug; report it as the internal reason rather
 * than index past the table. */
static const struct reason_row *row(enum verify_reason reason)
{
    if ((unsigned)reason >= VERIFY_R_COUNT_)
        return &reasons[VERIFY_R_INTERNAL];
    return &reasons[reason];
}

int verify_error_set(struct verify_error *err, enum verify_reason reason, const char *detail)
{
    err->reason = reason;
    err->detail[0] = '\0';
    if (detail != NULL)
        snprintf(err->detail, sizeof(err->detail), "%s", detail);
    return VERIFY_REJECT;
}

const char *verify_reason_string(enum verify_reason reason)
{
    return row(reason)->message;
}

const char *verify_reason_name(enum verify_reason reason)
{
    return row(reason)->name;
}

enum verify_stage verify_reason_stage(enum verify_reason reason)
{
    return row(reason)->stage;
}

const char *verify_stage_name(enum verify_stage stage)
{
    if ((unsigned)stage >= sizeof(stage_names) / sizeof(stage_names[0]))
        return "unknown";
    return stage_names[stage];
}

void verify_error_format(const struct verify_error *err, char *out, size_t cap)
{
    if (cap == 0)
        return;
    if (err->detail[0] != '\0')
        snprintf(out, cap, "%s (%s)", verify_reason_string(err->reason), err->detail);
    else
        snprintf(out, cap, "%s", verify_reason_string(err->reason));
}
