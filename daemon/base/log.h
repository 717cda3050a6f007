/*
 * Structured event logging: one line per event on stderr, as logfmt or JSON.
 *
 * Every event has a name and a list of key/value string pairs. Values are escaped so that a
 * hostile value (a Host header, a module_id from a document) can never forge a second line or
 * a second field. Callers must never pass bodies, Authorization values, tokens or key material.
 *
 * The logger's settings (level, format, stream) are the one piece of process-wide state in the
 * daemon: every module logs, and threading a logger through each call would add noise without
 * adding safety. They are set at start-up and on reload only, from the loop thread.
 */
#ifndef ATTESTPROXY_BASE_LOG_H
#define ATTESTPROXY_BASE_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

enum log_level {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO = 1,
    LOG_LEVEL_WARN = 2,
    LOG_LEVEL_ERROR = 3,
};

enum log_format {
    LOG_FORMAT_LOGFMT = 0,
    LOG_FORMAT_JSON = 1,
};

/** Sets the minimum level, the line format and the output stream (NULL keeps stderr). */
void log_configure(enum log_level level, enum log_format format, FILE *stream);

/** Returns true when events at `level` are written; lets callers skip costly formatting. */
int log_enabled(enum log_level level);

/**
 * Writes one event. The variadic part is key, value, key, value, ..., NULL: all `const char *`.
 * A NULL value is written as an empty string. The line is written with a single fwrite so that
 * concurrent writers (several processes on one journal) never interleave inside a line.
 */
void log_event(enum log_level level, const char *event, ...);
void log_eventv(enum log_level level, const char *event, va_list ap);

/**
 * Escapes `value` for the given format into `out` (at most `cap` bytes, always NUL-terminated).
 * Returns the length written, or -1 when `out` was too small (the output is then truncated at a
 * character boundary and ends with "..."). Exposed for the unit tests.
 */
int log_escape(enum log_format format, const char *value, char *out, size_t cap);

/** Parses "debug|info|warn|error" and "logfmt|json"; return 0 or -EINVAL. */
int log_parse_level(const char *s, enum log_level *out);
int log_parse_format(const char *s, enum log_format *out);
const char *log_level_name(enum log_level level);
const char *log_format_name(enum log_format format);

#endif
