#include <uv.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

// Small C helpers so the Swift side need not build libuv's unions and flag sets by hand.

/// Marks every descriptor from 3 up close-on-exec, so a task inherits none of the agent's
/// sockets or files (the agent's listeners would otherwise outlive it in its tasks).
static inline void caravan_cloexec_from(int lowfd) {
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)lowfd, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536) max = 65536;
    for (int fd = lowfd; fd < max; fd++) {
        int flags = fcntl(fd, F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC)) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
}

/// Spawns `file` detached (own session) with stdin from /dev/null and stdout/stderr to the given fds.
static inline int caravan_uv_spawn(uv_loop_t *loop, uv_process_t *proc, const char *file, char **args, char **env,
                                   const char *cwd, int out_fd, int err_fd) {
    uv_process_options_t o;
    memset(&o, 0, sizeof o);
    uv_stdio_container_t io[3];
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    io[0].flags = devnull >= 0 ? UV_INHERIT_FD : UV_IGNORE;
    io[0].data.fd = devnull;
    io[1].flags = out_fd >= 0 ? UV_INHERIT_FD : UV_IGNORE;
    io[1].data.fd = out_fd;
    io[2].flags = err_fd >= 0 ? UV_INHERIT_FD : UV_IGNORE;
    io[2].data.fd = err_fd;
    o.file = file;
    o.args = args;
    o.env = env;
    o.cwd = cwd;
    o.flags = UV_PROCESS_DETACHED;
    o.stdio_count = 3;
    o.stdio = io;
    o.exit_cb = NULL;
    caravan_cloexec_from(3);
    // libuv takes over SIGCHLD on its first spawn, which would starve anything else in the
    // process that waits on children (Foundation's Process, libdispatch). Caravan learns of
    // exits through pidfds instead, so the previous handler is put back at once.
    struct sigaction previous;
    sigaction(SIGCHLD, NULL, &previous);
    int rc = uv_spawn(loop, proc, &o);
    sigaction(SIGCHLD, &previous, NULL);
    if (devnull >= 0) close(devnull);
    return rc;
}

/// A file descriptor that becomes readable when the process exits (Linux ≥ 5.3), or -1.
static inline int caravan_pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

/// Reaps the process behind a pidfd if it is this process's child: returns 0 and fills
/// `code`/`sig`; returns -1 if it is not a child (its exit status is then unknown).
static inline int caravan_pidfd_reap(int pidfd, int *code, int *sig) {
#ifndef P_PIDFD
#define P_PIDFD 3
#endif
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, WEXITED | WNOHANG) != 0) return -1;
    if (info.si_pid == 0) return -1;
    if (info.si_code == CLD_EXITED) { *code = info.si_status; *sig = 0; }
    else { *code = 128 + info.si_status; *sig = info.si_status; }
    return 0;
}
