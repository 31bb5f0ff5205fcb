#include <uv.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

// Small C helpers so the Swift side need not build libuv's unions and flag sets by hand.

/// Starts `file` (an absolute path) in its own session, with stdin from /dev/null, stdout and
/// stderr to the given fds (/dev/null when -1), in `cwd`, every signal at its default and
/// unblocked — and **no other descriptor**: the child closes everything from 3 up before exec,
/// so a socket or pipe another thread of the agent creates at that moment (without
/// close-on-exec, or before it could set it) cannot leak into the task. glibc's posix_spawn
/// (clone with CLONE_VFORK) reports a failed exec as its result. Returns 0 and sets `*pid`, or a
/// negative errno.
static inline int caravan_spawn(const char *file, char *const *args, char *const *env, const char *cwd,
                                int out_fd, int err_fd, pid_t *pid) {
#ifndef POSIX_SPAWN_SETSID
#define POSIX_SPAWN_SETSID 0x80
#endif
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) return -errno;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawn_file_actions_adddup2(&fa, devnull, 0);
    posix_spawn_file_actions_adddup2(&fa, out_fd >= 0 ? out_fd : devnull, 1);
    posix_spawn_file_actions_adddup2(&fa, err_fd >= 0 ? err_fd : devnull, 2);
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
