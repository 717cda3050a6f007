/*
 * `attestproxy policy`: signing keys and policy bundles (docs/policy-bundles.md).
 *   policy keygen --out KEYFILE [--key-name NAME]
 *   policy sign --key KEYFILE --key-name NAME BODYFILE
 *   policy verify --key NAME:PUB [--key ...] BUNDLE
 *   policy show BUNDLE
 */
#ifndef ATTESTPROXY_APP_POLICY_CMD_H
#define ATTESTPROXY_APP_POLICY_CMD_H

/**
 * Runs the command; argv[0] is "policy". Returns 0 on success, 1 when a bundle is refused (the
 * reason on stderr), 2 on a usage error or an unreadable file. Uses getopt_long().
 */
int policy_cmd_main(int argc, char **argv);

#endif
