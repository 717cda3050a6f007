/*
 * `attestproxy verify`: checks one attestation document offline with the daemon's own
 * verifier and prints what it found. The CLI dispatcher (core/cli.c) calls verify_cmd_main().
 */
#ifndef ATTESTPROXY_APP_VERIFY_CMD_H
#define ATTESTPROXY_APP_VERIFY_CMD_H

#include <stdint.h>

/* Exit codes of the command. */
#define VERIFY_CMD_ACCEPTED 0
#define VERIFY_CMD_REJECTED 1
#define VERIFY_CMD_USAGE    2 /* usage error, unreadable file, unloadable root */

/**
 * Runs the command; argv[0] is "verify". Writes the summary (or JSON) to stdout and, on
 * rejection, the reason as one line to stderr. Returns the exit code. Uses getopt_long(), so
 * it resets optind itself and must not run concurrently with other getopt users.
 */
int verify_cmd_main(int argc, char **argv);

/**
 * Parses a --at value: Unix seconds (optionally with a fraction) or an RFC 3339 UTC time such as
 * 2023-05-24T17:07:50Z or 2023-05-24T17:07:50.582Z. Returns 0 or -EINVAL. Exposed for the tests.
 */
int verify_cmd_parse_time(const char *s, int64_t *ms);

/**
 * Length of the longest prefix of s[0..n) that does not end inside a UTF-8 character: a
 * certificate name cut at its buffer's end stays valid UTF-8, which JSON needs. Exposed for the
 * tests.
 */
int verify_cmd_utf8_whole(const char *s, int n);

#endif
