#include <uv.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <stdlib.h>
#include <termios.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

// Small C helpers so the Swift side need not build libuv's unions and flag sets by hand.

/// Starts `file` (an absolute path) in its own session, with stdin, stdout and stderr from the
/// given fds (/dev/null when -1) — or all three on the terminal `tty`, which becomes its
/// controlling terminal — in `cwd`, every signal at its default and
/// unblocked — and **no other descriptor**: the child closes everything from 3 up before exec,
/// so a socket or pipe another thread of the agent creates at that moment (without
/// close-on-exec, or before it could set it) cannot leak into the task. glibc's posix_spawn
/// (clone with CLONE_VFORK) reports a failed exec as its result. Returns 0 and sets `*pid`, or a
/// negative errno.
static inline int caravan_spawn(const char *file, char *const *args, char *const *env, const char *cwd,
                                int in_fd, int out_fd, int err_fd, const char *tty, pid_t *pid) {
#ifndef POSIX_SPAWN_SETSID
#define POSIX_SPAWN_SETSID 0x80
#endif
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) return -errno;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    if (tty) {
        // Opened after setsid, without O_NOCTTY: it becomes the controlling terminal.
        posix_spawn_file_actions_addopen(&fa, 0, tty, O_RDWR, 0);
        posix_spawn_file_actions_adddup2(&fa, 0, 1);
        posix_spawn_file_actions_adddup2(&fa, 0, 2);
    } else {
        posix_spawn_file_actions_adddup2(&fa, in_fd >= 0 ? in_fd : devnull, 0);
        posix_spawn_file_actions_adddup2(&fa, out_fd >= 0 ? out_fd : devnull, 1);
        posix_spawn_file_actions_adddup2(&fa, err_fd >= 0 ? err_fd : devnull, 2);
    }
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    if (cwd) posix_spawn_file_actions_addchdir_np(&fa, cwd);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    int rc = posix_spawn(pid, file, &fa, &at, args, env);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    close(devnull);
    return -rc;
}

/// A new pseudo-terminal: its master (close-on-exec) and the path of its slave. 0 or -errno.
static inline int caravan_openpty(int *master, char *slave, size_t len) {
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0) return -errno;
    if (grantpt(m) != 0 || unlockpt(m) != 0 || ptsname_r(m, slave, len) != 0) { int e = errno; close(m); return -e; }
    *master = m;
    return 0;
}

/// A pipe whose two ends are close-on-exec (fds[0] reads, fds[1] writes). 0 or -1.
static inline int caravan_pipe_cloexec(int *fds) {
    return pipe2(fds, O_CLOEXEC);
}

/// Sets a terminal's size (rows × columns): its session gets SIGWINCH.
static inline int caravan_set_winsize(int fd, unsigned short rows, unsigned short cols) {
    struct winsize w = { .ws_row = rows, .ws_col = cols, .ws_xpixel = 0, .ws_ypixel = 0 };
    return ioctl(fd, TIOCSWINSZ, &w);
}

/// A terminal's size, or -1 when `fd` is not one.
static inline int caravan_get_winsize(int fd, unsigned short *rows, unsigned short *cols) {
    struct winsize w;
    if (ioctl(fd, TIOCGWINSZ, &w) != 0) return -1;
    *rows = w.ws_row;
    *cols = w.ws_col;
    return 0;
}

/// Makes this process a child subreaper: orphans among its descendants (a container's init once
/// `runc create` has exited) become its children, so their exit status can be reaped. 0 on success.
static inline int caravan_set_subreaper(void) {
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
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
