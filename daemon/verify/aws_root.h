/*
 * The AWS Nitro Enclaves Root-G1 certificate, compiled in (BRIEF §2.5). The verifier checks
 * the SHA-256 of these bytes against AWS_ROOT_G1_SHA256 when it loads them and refuses to
 * start on a mismatch, so a corrupted or edited array cannot silently become a trust anchor.
 */
#ifndef ATTESTPROXY_VERIFY_AWS_ROOT_H
#define ATTESTPROXY_VERIFY_AWS_ROOT_H

#include <stddef.h>
#include <stdint.h>

/* DER SHA-256 published by AWS for root.pem in AWS_NitroEnclaves_Root-G1.zip. */
#define AWS_ROOT_G1_SHA256_HEX "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"

extern const uint8_t aws_root_g1_der[];
extern const size_t aws_root_g1_der_len;
extern const uint8_t aws_root_g1_sha256[32];

#endif
