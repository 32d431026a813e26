"""System-call allow-lists, compiled to BPF with libseccomp.

Two filters confine an instance. bubblewrap installs the *policy* filter (every profile
the operator allows, plus execve so that bubblewrap can start Python) before the first
instruction of the runtime; the runtime then installs the *manifest* filter (only the
profiles the function asked for, no execve unless it asked for processes) before it
loads the function's code. Seccomp filters stack: the stricter answer wins. Anything
not allowed fails with EPERM; a foreign system-call ABI (32-bit calls) kills.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import tempfile
from collections.abc import Iterable

import pyseccomp as seccomp

from bento.protocol.policy import SyscallProfile

# What the Python runtime needs to run code that computes, reads its sandbox and talks
# over the inherited Bento channel. Not here, ever: ptrace, mount, unshare, setns,
# pivot_root, chroot, module loading, kexec, keyctl, bpf, perf_event_open, userfaultfd,
# process_vm_*, reboot, swap, the set*id family, mknod, acct, quotactl.
COMPUTE = """
read write readv writev pread64 pwrite64 preadv pwritev preadv2 pwritev2 lseek close close_range
dup dup2 dup3 fcntl ioctl flock fsync fdatasync ftruncate truncate fallocate sendfile copy_file_range
open openat openat2 creat stat fstat lstat newfstatat statx statfs fstatfs access faccessat faccessat2
readlink readlinkat getdents64 getcwd chdir fchdir mkdir mkdirat rmdir unlink unlinkat rename renameat
renameat2 chmod fchmod fchmodat umask utimensat futimesat symlink symlinkat link linkat
mmap munmap mprotect mremap madvise brk msync mincore
rt_sigaction rt_sigprocmask rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigqueueinfo sigaltstack
restart_syscall pause alarm setitimer getitimer
timer_create timer_settime timer_gettime timer_delete timer_getoverrun
timerfd_create timerfd_settime timerfd_gettime
clock_gettime clock_getres clock_nanosleep nanosleep gettimeofday time times
getpid getppid gettid getuid geteuid getgid getegid getgroups getresuid getresgid getpgrp getpgid getsid
getrlimit setrlimit prlimit64 getrusage sysinfo uname arch_prctl prctl seccomp getrandom
sched_yield sched_getaffinity sched_getparam sched_getscheduler sched_get_priority_max
sched_get_priority_min getpriority
set_robust_list get_robust_list set_tid_address futex futex_waitv rseq membarrier
pipe pipe2 eventfd eventfd2 epoll_create epoll_create1 epoll_ctl epoll_wait epoll_pwait epoll_pwait2
poll ppoll select pselect6
socketpair sendmsg recvmsg sendto recvfrom shutdown getsockopt setsockopt getsockname getpeername
exit exit_group wait4 waitid kill tkill tgkill
"""
PROCESSES = "fork vfork execve execveat"
NETWORK = "connect bind listen accept accept4 sendmmsg recvmmsg"
# What headless Chromium needs beyond processes, found by tracing it (strace -f) under
# bubblewrap and then removing calls until it failed: a Unix socket it binds and listens
# on (its profile's singleton; the socket filter below still allows only AF_UNIX without
# the network profile), capget/capset (it drops capabilities it does not have), and
# memfd_create for shared memory. io_uring, landlock, setpriority, sched_setaffinity and
# netlink sockets it tries too, and does without.
CHROMIUM = "connect bind listen capget capset memfd_create"

# clone may make threads (and, with the processes profile, processes) but never namespaces.
_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_CLONE_THREAD = 0x00010000
_SOCK_TYPE_MASK = 0xF


def compile_filter(profiles: Iterable[SyscallProfile], *, allow_exec: bool) -> bytes:
    """The BPF program allowing ``profiles`` (and execve if ``allow_exec``)."""
    chosen = set(profiles) | {SyscallProfile.COMPUTE}
    flt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    names = COMPUTE.split()
    if SyscallProfile.PROCESSES in chosen:
        names += PROCESSES.split()
    elif allow_exec:
        names.append("execve")
    if SyscallProfile.NETWORK in chosen:
        names += NETWORK.split()
    if SyscallProfile.CHROMIUM in chosen:
        names += CHROMIUM.split()
    for name in names:
        _allow(flt, name)
    # Threads always; new processes with the processes profile; namespaces never.
    if SyscallProfile.PROCESSES in chosen:
        flt.add_rule(seccomp.ALLOW, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, _NAMESPACE_FLAGS, 0))
    else:
        flt.add_rule(
            seccomp.ALLOW,
            "clone",
            seccomp.Arg(0, seccomp.MASKED_EQ, _NAMESPACE_FLAGS | _CLONE_THREAD, _CLONE_THREAD),
        )
    flt.add_rule(
        seccomp.ERRNO(errno.ENOSYS), "clone3"
    )  # its flags are out of a filter's reach: libc falls back
    # Sockets: Unix ones always (socketpair, asyncio); TCP and UDP with the network profile;
    # raw, packet and netlink sockets never.
    flt.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, socket.AF_UNIX))
    if SyscallProfile.NETWORK in chosen:
        for family in (socket.AF_INET, socket.AF_INET6):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                flt.add_rule(
                    seccomp.ALLOW,
                    "socket",
                    seccomp.Arg(0, seccomp.EQ, family),
                    seccomp.Arg(1, seccomp.MASKED_EQ, _SOCK_TYPE_MASK, kind),
                )
    with tempfile.TemporaryFile() as out:
        flt.export_bpf(out)
        out.seek(0)
        return out.read()


def _allow(flt: seccomp.SyscallFilter, name: str) -> None:
    # Names that are not system calls on this architecture (the legacy open on arm64) are skipped.
    with contextlib.suppress(RuntimeError, ValueError, OSError):
        flt.add_rule(seccomp.ALLOW, name)


def memfd(program: bytes) -> int:
    """A file descriptor holding ``program``, for bubblewrap's --seccomp."""
    fd = os.memfd_create("bento-seccomp", 0)
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
