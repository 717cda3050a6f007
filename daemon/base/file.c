#include "base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int file_read(const char *path, size_t max, unsigned flags, uint8_t **out, size_t *len)
{
    /* "-" is standard input for the commands that read a named input; a file the daemon is
     * configured with (FILE_REGULAR) is never standard input. */
    bool is_stdin = strcmp(path, "-") == 0 && !(flags & FILE_REGULAR);
    /* O_NONBLOCK with FILE_REGULAR: opening a FIFO would otherwise wait for a writer before
     * fstat() could refuse it (it changes nothing for a regular file). */
    int fd =
        is_stdin
            ? STDIN_FILENO
            : open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | (flags & FILE_REGULAR ? O_NONBLOCK : 0));
    uint8_t *buf = NULL;
    size_t n = 0;
    struct stat st;
    int rc = 0;

    if (fd < 0)
        return -errno;
    if ((flags & FILE_REGULAR) && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
        rc = -EINVAL;
        goto out;
    }
    buf = malloc(max + 1);
    if (buf == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    while (n < max + 1) {
        ssize_t got = read(fd, buf + n, max + 1 - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = -errno;
            goto out;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    *out = buf;
    *len = n;
    buf = NULL;
out:
    free(buf);
    if (!is_stdin)
        close(fd);
    return rc;
}

FILE *file_fopen_regular(const char *path)
{
    struct stat st;
    FILE *fp;
    int flags, e, fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) < 0) {
        e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        e = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        close(fd);
        errno = e;
        return NULL;
    }
    flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        (void)fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    fp = fdopen(fd, "r");
    if (fp == NULL) {
        e = errno;
        close(fd);
        errno = e;
    }
    return fp;
}

const char *file_strerror(int e)
{
    return e == EINVAL ? "not a regular file" : strerror(e);
}

int file_sync_dir(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    int fd, rc = 0;
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

int file_write_atomic(const char *path, const char *tmp, const void *data, size_t len,
                      unsigned mode, bool sync)
{
    const uint8_t *p = data;
    size_t off = 0;
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, (mode_t)mode);

    if (fd < 0)
        return -errno;
    while (off < len) {
        ssize_t w = write(fd, p + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = w < 0 ? -errno : -EIO;
            break;
        }
        off += (size_t)w;
    }
    if (rc == 0 && sync && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    return sync ? file_sync_dir(path) : 0;
}

/* A Unix socket path may be left over from a previous run. It is replaced only when it is a
 * socket and nobody accepts on it; anything else is an error the operator must look at. */
int file_clear_stale_socket(const char *path)
{
    struct stat st;
    struct sockaddr_un sun;
    int fd, rc, err;

    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sun.sun_path))
        return -ENAMETOOLONG;
    memcpy(sun.sun_path, path, strlen(path));
    /* Non-blocking: a live socket with a full backlog answers EAGAIN at once instead of
     * holding the loop. Only ECONNREFUSED (nobody accepts) makes the file stale; any other
     * failure (EACCES on another user's socket, EAGAIN) leaves it alone. */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
    err = errno;
    close(fd);
    if (rc == 0 || err == EAGAIN || err == EINPROGRESS)
        return -EADDRINUSE;
    if (err != ECONNREFUSED)
        return -err;
    return unlink(path) == 0 ? 0 : -errno;
}
