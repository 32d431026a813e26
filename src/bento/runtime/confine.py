"""Tightening the sandbox from inside, before the function's code is loaded.

The START frame carries the part of the instance's spec (bento.sandbox.spec) that a
process can only apply to itself: every rlimit (RLIMIT_NPROC must be set inside the
instance's own user namespace, where it counts only the instance's processes; a pooled
sandbox lowers its policy maxima to the manifest's), the stack size of new threads
(RLIMIT_DATA counts their stacks), and the manifest's seccomp program, compiled with
libseccomp on the server side: installing it needs only prctl, so the sandbox needs no
library for it. bubblewrap has already set no_new_privs, which makes this allowed.
"""

from __future__ import annotations

import _thread
import binascii
import ctypes
import resource
import struct

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

TYPE_CHECKING = False  # importing typing would cost the sandbox start-up time
if TYPE_CHECKING:
    from typing import Any


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def apply(confinement: dict[str, Any]) -> None:
    """Apply the START frame's confinement: rlimits, thread stacks, then the seccomp filter last."""
    for name, value in confinement["rlimits"].items():
        # Soft and hard alike, so the function cannot raise them again; CPU: SIGXCPU, then SIGKILL.
        resource.setrlimit(getattr(resource, name), (value, value + (name == "RLIMIT_CPU")))
    _thread.stack_size(confinement["thread_stack"])
    install_filter(binascii.a2b_base64(confinement["seccomp"]))


def install_filter(program: bytes) -> None:
    """Install a BPF seccomp program (an array of 8-byte ``struct sock_filter``)."""
    if not program or len(program) % struct.calcsize("HBBI"):
        raise ValueError("not a seccomp BPF program")
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
