/*
 * `attestproxy audit verify [--archive DIR] [--root-ca PEM] FILE...`: checks the audit log's
 * hash chain (base/audit.h) over one file or several rotated files given oldest first
 * (FILE.2 FILE.1 FILE), and re-verifies archived evidence documents at their own time.
 */
#ifndef ATTESTPROXY_APP_AUDIT_CMD_H
#define ATTESTPROXY_APP_AUDIT_CMD_H

#define AUDIT_CMD_OK 0 /* every record links to the one before */
#define AUDIT_CMD_BROKEN                                                                           \
    1 /* a record was edited, deleted, inserted or reordered, or a document                        \
       * does not verify */
#define AUDIT_CMD_USAGE 2
#define AUDIT_CMD_TORN  3 /* only the last line is torn (a crash mid-write); the rest verify */

/** Runs the command; argv[0] is "audit". Returns one of the codes above. */
int audit_cmd_main(int argc, char **argv);

#endif
