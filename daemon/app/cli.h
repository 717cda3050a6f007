/*
 * Command-line interface: subcommand dispatch, --help and --version, exit codes.
 *
 * Exit codes (documented in --help and docs/operations.md):
 *   0  success (the daemon stopped cleanly; the configuration is valid; the document verified)
 *   1  runtime failure (cannot bind, root certificate unusable) or a rejected document
 *   2  usage error or invalid configuration
 */
#ifndef ATTESTPROXY_APP_CLI_H
#define ATTESTPROXY_APP_CLI_H

#define EXIT_OK      0
#define EXIT_RUNTIME 1
#define EXIT_USAGE   2

/** Runs the command line `argv` and returns the process exit code. */
int cli_main(int argc, char **argv);

#endif
