/*
 * `attestproxy health`: asks a running daemon's admin API whether it is ready (/readyz) or
 * alive (/healthz) and turns the answer into an exit code, so that container and Kubernetes
 * probes need neither a shell nor curl. One blocking HTTP/1.1 exchange over TCP or a Unix
 * socket, bounded in time (--timeout) and in size (HEALTH_RESPONSE_MAX). The CLI dispatcher
 * (core/cli.c) calls health_cmd_main().
 */
#ifndef ATTESTPROXY_OPS_HEALTH_CMD_H
#define ATTESTPROXY_OPS_HEALTH_CMD_H

#include <stddef.h>

/* Exit codes of the command (Docker's HEALTHCHECK reads 0 as healthy, 1 as unhealthy). */
#define HEALTH_CMD_HEALTHY   0
#define HEALTH_CMD_UNHEALTHY 1
#define HEALTH_CMD_USAGE     2 /* usage error, or no admin address to ask */

#define HEALTH_RESPONSE_MAX    65536 /* bytes of response read; the rest is ignored */
#define HEALTH_STATUS_LINE_MAX 512   /* a longer status line is malformed */
#define HEALTH_DEFAULT_TIMEOUT 3000  /* ms, for the whole exchange */
#define HEALTH_MAX_TIMEOUT     60000 /* ms */
#define HEALTH_REASON_MAX      512   /* bytes of the one-line reason printed */

/**
 * Runs the command; argv[0] is "health". Prints one line: on stdout when healthy, on stderr
 * otherwise. Returns the exit code. Uses getopt_long(), so it resets optind itself.
 */
int health_cmd_main(int argc, char **argv);

/**
 * Parses the status line at the start of buf[0..len): exactly "HTTP/1.0" or "HTTP/1.1", one SP,
 * three digits (100-599), one SP, then a reason phrase of HTAB, SP, visible ASCII or obs-text,
 * then CRLF; nothing else is accepted (no bare LF, no missing reason separator). On success
 * stores the status code and returns the length of the line including CRLF. Returns 0 when
 * buf holds no complete line yet (and fewer than HEALTH_STATUS_LINE_MAX bytes), -EINVAL when
 * it is malformed or too long. Exposed for the tests.
 */
int health_parse_status_line(const char *buf, size_t len, int *status);

/**
 * Writes into out (cap > 0 bytes, always terminated) a one-line reason from a /readyz body:
 * for a JSON object, its "reason" string followed by "; NAME: REASON" for each entry of
 * "services" whose "ready" is not true; otherwise the body's first line. Control characters
 * become '?', and the text is cut at cap - 1 bytes. Exposed for the tests.
 */
void health_describe_body(const char *body, size_t len, char *out, size_t cap);

#endif
