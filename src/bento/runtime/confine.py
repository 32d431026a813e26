"""Tightening the sandbox from inside, before the function's code is loaded.

The server sends the manifest's seccomp program (compiled with libseccomp on the server
side) in the START frame; installing it needs only prctl, so the sandbox needs no
library for it. bubblewrap has already set no_new_privs, which makes this allowed.
"""

from __future__ import annotations

import ctypes
import struct

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_filter(program: bytes) -> None:
    """Install a BPF seccomp program (an array of 8-byte ``struct sock_filter``)."""
    if not program or len(program) % struct.calcsize("HBBI"):
        raise ValueError("not a seccomp BPF program")
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
