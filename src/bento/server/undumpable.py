"""Keeping the server's memory to itself: no core dumps, no debugger of its own user.

The server holds what must not leak: its identity key, every function's storage key
(bento.server.keyvault), tokens in flight. A core dump would write them to disk, and any
process of the server's user could read them through ``/proc/<pid>/mem`` or ptrace. At
start the server sets RLIMIT_CORE to 0 and clears its *dumpable* flag
(``prctl(PR_SET_DUMPABLE, 0)``): the kernel then writes no core for it, refuses ptrace
and ``/proc/<pid>/mem`` to everyone without CAP_SYS_PTRACE, and makes ``/proc/<pid>``
root's. The flag is reset by ``execve``, so the sandboxes and tools it starts are not
affected.

>>> import subprocess, sys
>>> probe = "from bento.server import undumpable; undumpable.protect(); print(undumpable.dumpable())"
>>> subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout
'False\\n'
"""

from __future__ import annotations

import ctypes
import os
import resource

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
_LIBC = ctypes.CDLL(None, use_errno=True)


def protect() -> None:
    """No core file, no ptrace or /proc/<pid>/mem by this user's other processes: for this process."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if _LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_DUMPABLE, 0): {os.strerror(errno)}")


def dumpable() -> bool:
    """Whether this process may be dumped (and traced by its own user)."""
    return bool(_LIBC.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
