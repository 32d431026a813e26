"""System-call allow-lists, compiled to BPF with libseccomp.

Two filters confine an instance. bubblewrap installs the *policy* filter (every profile
the operator allows, plus execve so that bubblewrap can start Python) before the first
instruction of the runtime; the runtime then installs the *manifest* filter (only the
profiles the function asked for, no execve unless it asked for processes) before it
loads the function's code. Seccomp filters stack: the stricter answer wins. Anything
not allowed fails with EPERM; a foreign system-call ABI (32-bit calls) kills.

A socket the broker grants (a connection, a SOCKS stream, a listener and what it accepts)
lives in the box's network namespace, so what a function may do with a socket is narrow
in every profile: no ``connect`` ever (not even ``AF_UNSPEC``, which dissolves a TCP
connection so that it can connect anew), no ``bind`` or ``listen`` (but in chromium's
profile, see CHROMIUM), no ``MSG_FASTOPEN`` (the one flag with which TCP reads the address
given to ``sendto``/``sendmsg``; without it TCP ignores the address), and ``setsockopt``
only for the options in :data:`SOCKET_OPTIONS`, none of which changes where a socket
talks, and ``ioctl`` for anything but the socket-configuration requests (``SIOCGIFCONF``
and its kin read the box's interfaces and addresses through a granted socket). The
runtime itself never calls the refused ones: its channel and the broker's socket are
inherited, and a connection a library asks for is the broker's, put in place with dup2.

>>> calls = allowed_calls({SyscallProfile.NETWORK}, allow_exec=False)
>>> sorted(calls & {"connect", "bind", "listen", "accept4", "setsockopt", "sendto"})
['accept4']
>>> (socket.IPPROTO_TCP, socket.TCP_NODELAY) in SOCKET_OPTIONS
True
>>> (socket.SOL_SOCKET, socket.SO_BINDTODEVICE) in SOCKET_OPTIONS
False
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
dup dup2 dup3 fcntl flock fsync fdatasync ftruncate truncate fallocate sendfile copy_file_range
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
socketpair recvmsg recvfrom shutdown getsockopt getsockname getpeername
exit exit_group wait4 waitid kill tkill tgkill
"""
PROCESSES = "fork vfork execve execveat"
# Accepting on a listener the broker made (a function can make none of its own).
NETWORK = "accept accept4 recvmmsg"
# What headless Chromium needs beyond processes, found by tracing it (strace -f) under
# bubblewrap and then removing calls until it failed: a Unix socket it binds and listens
# on (its profile's singleton; the socket filter below still allows only AF_UNIX without
# the network profile), capget/capset (it drops capabilities it does not have), and
# memfd_create for shared memory. io_uring, landlock, setpriority, sched_setaffinity and
# netlink sockets it tries too, and does without; connect it needs not (it talks to
# Playwright over pipes). bind and listen cannot move a granted socket: the kernel
# refuses to bind a bound socket (EINVAL) or to make a connected one listen (EINVAL).
CHROMIUM = "bind listen capget capset memfd_create"
# Refused in every profile: connect(AF_UNSPEC) and then connect re-points any TCP socket,
# the broker's included, and a filter cannot read the address a pointer leads to.
NEVER = frozenset({"connect"})
# The flag with which TCP connects to the address given to sendto/sendmsg (Fast Open).
MSG_FASTOPEN = 0x20000000
_SEND_FLAGS = {"sendto": 3, "sendmsg": 2, "sendmmsg": 3}  # which argument holds the flags
# The socket options a function may set: (level, option). Buffers, keep-alive, Nagle and
# time-outs, which say how much and how often, never where. Not here, among others:
# SO_BINDTODEVICE, SO_MARK, SO_PRIORITY, SO_ATTACH_FILTER, every IP and IPv6 option
# (IP_TRANSPARENT, IP_OPTIONS' source routes, IP_TTL, IP_HDRINCL), TCP_REPAIR,
# TCP_FASTOPEN(_CONNECT), TCP_CONGESTION, TCP_ULP, TCP_MD5SIG.
SOCKET_OPTIONS = frozenset(
    {(socket.SOL_SOCKET, option) for option in (
        socket.SO_REUSEADDR, socket.SO_SNDBUF, socket.SO_RCVBUF, socket.SO_KEEPALIVE, socket.SO_OOBINLINE,
        socket.SO_LINGER, socket.SO_PASSCRED, socket.SO_RCVLOWAT, socket.SO_SNDLOWAT,
        20, 21, 66, 67,  # SO_RCVTIMEO and SO_SNDTIMEO, old and new (64-bit time)
    )}
    | {(socket.IPPROTO_TCP, option) for option in (
        socket.TCP_NODELAY, socket.TCP_CORK, socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT,
        socket.TCP_QUICKACK, socket.TCP_USER_TIMEOUT, socket.TCP_NOTSENT_LOWAT,
    )}
)  # fmt: skip

# clone may make threads (and, with the processes profile, processes) but never namespaces.
_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_CLONE_THREAD = 0x00010000
_SOCK_TYPE_MASK = 0xF
# ioctl: every request but the socket-configuration ones, whose type byte (bits 8-15) is
# 0x89 (sockios.h: SIOCGIFCONF, SIOCGIFADDR and the other SIOCGIF*, routes, ARP, bridges,
# device-private) or 0x8B (wireless extensions, which name interfaces too). On a socket the
# broker granted they read the box's own interfaces and addresses. Nothing in the runtime
# needs them (Python asks FIONBIO, FIOCLEX, FIONREAD, TCGETS: type 0x54), nor chromium: run
# unconfined it asks SIOCGIFNAME, SIOCETHTOOL and SIOCGIW* for the interfaces its netlink
# socket names, but under this filter its netlink socket is refused and it asks none
# (strace -f -e trace=ioctl of headless chromium --dump-dom, which renders the same).
# The kernel reads the request as 32 bits, so the rule looks at bits 8-15 whatever is above.
_SOCKET_IOCTLS = (0xFD00, 0x8900)  # (mask, value): type 0x89 or 0x8B, any number, size or direction


def allowed_calls(profiles: Iterable[SyscallProfile], *, allow_exec: bool) -> frozenset[str]:
    """The system calls ``profiles`` allow outright, whatever their arguments."""
    chosen = set(profiles) | {SyscallProfile.COMPUTE}
    names = COMPUTE.split()
    if SyscallProfile.PROCESSES in chosen:
        names += PROCESSES.split()
    elif allow_exec:
        names.append("execve")
    if SyscallProfile.NETWORK in chosen:
        names += NETWORK.split()
    if SyscallProfile.CHROMIUM in chosen:
        names += CHROMIUM.split()
    return frozenset(names) - NEVER


def compile_filter(profiles: Iterable[SyscallProfile], *, allow_exec: bool) -> bytes:
    """The BPF program allowing ``profiles`` (and execve if ``allow_exec``)."""
    chosen = set(profiles) | {SyscallProfile.COMPUTE}
    flt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    for name in sorted(allowed_calls(chosen, allow_exec=allow_exec)):
        _allow(flt, name)
    # Sends with any flags but MSG_FASTOPEN (sendmmsg only with the network profile).
    for name, flags in _SEND_FLAGS.items():
        if name != "sendmmsg" or SyscallProfile.NETWORK in chosen:
            flt.add_rule(seccomp.ALLOW, name, seccomp.Arg(flags, seccomp.MASKED_EQ, MSG_FASTOPEN, 0))
    for level, option in sorted(SOCKET_OPTIONS):
        flt.add_rule(
            seccomp.ALLOW, "setsockopt", seccomp.Arg(1, seccomp.EQ, level), seccomp.Arg(2, seccomp.EQ, option)
        )
    for mask, value in _complement(*_SOCKET_IOCTLS):
        flt.add_rule(seccomp.ALLOW, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, mask, value))
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


def _complement(mask: int, value: int) -> list[tuple[int, int]]:
    """(mask, value) pairs that together match exactly the numbers ``x & mask != value`` does.

    A seccomp rule can ask ``x & mask == value`` but not ``!=``, and libseccomp takes one
    comparison per argument in a rule; rules for one call are ORed. So: for each bit of
    ``mask``, from the top, the numbers that agree with ``value`` above it and differ on it.

    >>> rules = _complement(0xF0, 0x30)
    >>> [(hex(m), hex(v)) for m, v in rules]
    [('0x80', '0x80'), ('0xc0', '0x40'), ('0xe0', '0x0'), ('0xf0', '0x20')]
    >>> all((x & 0xF0 != 0x30) == any(x & m == v for m, v in rules) for x in range(512))
    True
    """
    out, above = [], 0
    for bit in reversed(range(mask.bit_length())):
        if mask >> bit & 1:
            here = above | 1 << bit
            out.append((here, (value & above) | (~value & 1 << bit)))
            above = here
    return out


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
