#include "base/log.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

/* A line longer than this is cut: an event never needs more, and a bound keeps a hostile
 * value from turning one log call into a large allocation. */
#define LOG_LINE_MAX 4096

static struct {
    enum log_level level;
    enum log_format format;
    FILE *stream;
} logger = {LOG_LEVEL_INFO, LOG_FORMAT_LOGFMT, NULL};

void log_configure(enum log_level level, enum log_format format, FILE *stream)
{
    logger.level = level;
    logger.format = format;
    logger.stream = stream;
}

int log_enabled(enum log_level level)
{
    return level >= logger.level;
}

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const format_names[] = {"logfmt", "json"};

const char *log_level_name(enum log_level level)
{
    if ((unsigned)level > LOG_LEVEL_ERROR)
        return "unknown";
    return level_names[level];
}

const char *log_format_name(enum log_format format)
{
    return format == LOG_FORMAT_JSON ? "json" : "logfmt";
}

int log_parse_level(const char *s, enum log_level *out)
{
    for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

int log_parse_format(const char *s, enum log_format *out)
{
    for (unsigned i = 0; i < sizeof(format_names) / sizeof(format_names[0]); i++) {
        if (strcmp(s, format_names[i]) == 0) {
            *out = (enum log_format)i;
            return 0;
        }
    }
    return -EINVAL;
}

/* logfmt values need quotes when they are empty or hold a space, '=', '"' or any byte that
 * is not printable ASCII. */
static bool logfmt_needs_quotes(const char *v)
{
    if (*v == '\0')
        return true;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p <= ' ' || *p == '=' || *p == '"' || *p == '\\' || *p >= 0x7f)
            return true;
    }
    return false;
}

struct out {
    char *buf;
    size_t cap;
    size_t len;
    bool overflow;
};

static void out_putn(struct out *o, const char *s, size_t n)
{
    if (o->overflow)
        return;
    if (o->len + n >= o->cap) {
        o->overflow = true;
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

static void out_puts(struct out *o, const char *s)
{
    out_putn(o, s, strlen(s));
}

/* Writes one escaped character. Both formats escape quotes, backslashes and control bytes;
 * JSON escapes bytes >= 0x80 too, as \u00XX, because values may be arbitrary bytes that are not
 * valid UTF-8 and a JSON line must stay valid whatever the input. logfmt does the same with
 * \xXX so that a line stays one line of printable ASCII. */
static void out_escaped_char(struct out *o, enum log_format format, unsigned char c)
{
    char tmp[8];
    switch (c) {
    case '"':
        out_puts(o, "\\\"");
        return;
    case '\\':
        out_puts(o, "\\\\");
        return;
    case '\n':
        out_puts(o, "\\n");
        return;
    case '\r':
        out_puts(o, "\\r");
        return;
    case '\t':
        out_puts(o, "\\t");
        return;
    default:
        break;
    }
    if (c < 0x20 || c >= 0x7f) {
        if (format == LOG_FORMAT_JSON)
            snprintf(tmp, sizeof(tmp), "\\u%04x", c);
        else
            snprintf(tmp, sizeof(tmp), "\\x%02x", c);
        out_puts(o, tmp);
        return;
    }
    out_putn(o, (const char *)&c, 1);
}

static void out_value(struct out *o, enum log_format format, const char *v)
{
    bool quote = format == LOG_FORMAT_JSON || logfmt_needs_quotes(v);
    if (quote)
        out_puts(o, "\"");
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        out_escaped_char(o, format, *p);
    if (quote)
        out_puts(o, "\"");
}

int log_escape(enum log_format format, const char *value, char *out, size_t cap)
{
    struct out o = {out, cap, 0, false};
    if (cap == 0)
        return -1;
    out[0] = '\0';
    out_value(&o, format, value);
    if (o.overflow) {
        /* Keep what fits, then mark the cut; never split an escape sequence in half. */
        size_t keep = cap > 4 ? cap - 4 : 0;
        o.len = 0;
        o.overflow = false;
        o.cap = keep;
        out[0] = '\0';
        out_value(&o, format, value);
        memcpy(out + o.len, "...", cap > 3 ? 4 : 0);
        return -1;
    }
    return (int)o.len;
}

/* Keys are chosen by the code, never by input, but they are still restricted to a safe
 * alphabet so that a programming mistake cannot produce an unparsable line. */
static void out_key(struct out *o, const char *k)
{
    for (const char *p = k; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.'))
            c = '_';
        out_putn(o, &c, 1);
    }
}

static void out_field(struct out *o, enum log_format format, const char *k, const char *v,
                      bool first)
{
    if (format == LOG_FORMAT_JSON) {
        if (!first)
            out_puts(o, ",");
        out_puts(o, "\"");
        out_key(o, k);
        out_puts(o, "\":");
    } else {
        if (!first)
            out_puts(o, " ");
        out_key(o, k);
        out_puts(o, "=");
    }
    out_value(o, format, v ? v : "");
}

void log_eventv(enum log_level level, const char *event, va_list ap)
{
    char line[LOG_LINE_MAX];
    char ts[64];
    struct timespec now;
    struct tm tm;
    struct out o = {line, sizeof(line) - 2, 0, false};
    enum log_format format = logger.format;
    FILE *stream = logger.stream ? logger.stream : stderr;

    if (!log_enabled(level))
        return;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (long)(now.tv_nsec / 1000000));

    line[0] = '\0';
    if (format == LOG_FORMAT_JSON)
        out_puts(&o, "{");
    out_field(&o, format, "ts", ts, true);
    out_field(&o, format, "level", log_level_name(level), false);
    out_field(&o, format, "event", event, false);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        const char *v;
        if (k == NULL)
            break;
        v = va_arg(ap, const char *);
        out_field(&o, format, k, v, false);
    }
    if (o.overflow) {
        /* Cut at the last complete field so the line stays parsable, and say so. */
        o.overflow = false;
        o.cap = sizeof(line) - 2;
        if (o.len > sizeof(line) - 64)
            o.len = sizeof(line) - 64;
        while (o.len > 0 && line[o.len - 1] != (format == LOG_FORMAT_JSON ? ',' : ' '))
            o.len--;
        if (o.len > 0)
            o.len--;
        line[o.len] = '\0';
        out_field(&o, format, "truncated", "true", false);
    }
    if (format == LOG_FORMAT_JSON)
        out_puts(&o, "}");
    line[o.len++] = '\n';
    fwrite(line, 1, o.len, stream);
    fflush(stream);
}

void log_event(enum log_level level, const char *event, ...)
{
    va_list ap;
    va_start(ap, event);
    log_eventv(level, event, ap);
    va_end(ap);
}
