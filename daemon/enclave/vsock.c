/*
 * AF_VSOCK, the only way into a Nitro enclave: the parent instance's vsock proxy (or any
 * process on it) connects to the enclave's CID and this port. libuv has no vsock handle, so
 * the listening socket is made here and watched with a uv_poll_t (companion.c); accepted
 * sockets are ordinary stream sockets that a uv_pipe_t reads and writes (conn.c).
 */
#include "enclave/companion.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

int vsock_listen_fd(unsigned cid, unsigned port, int backlog)
{
    struct sockaddr_vm addr;
    int fd, rc;

    fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    memset(&addr, 0, sizeof(addr));
    addr.svm_family = AF_VSOCK;
    addr.svm_cid = cid;
    addr.svm_port = port;
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(fd, backlog) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}
