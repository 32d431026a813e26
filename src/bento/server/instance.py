"""Starting a function instance: a separate process on the far end of a socket pair.

This is the boundary the sandbox wraps: the instance shares no memory with the server,
inherits exactly one file descriptor (its end of the socket pair), and learns what to
run from the START frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys

# What an instance sees of the environment: nothing of the server's.
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


class Instance:
    """A running instance process and the server's end of its channel."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.process = process
        self.reader = reader
        self.writer = writer

    @classmethod
    async def start_in(cls, code_dir: str) -> Instance:
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-m",
                "bento.runtime",
                str(theirs.fileno()),
                pass_fds=[theirs.fileno()],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                cwd=code_dir,
                env=_ENV,
                start_new_session=True,  # its own process group, killed as a whole
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours, limit=2 << 20)
        return cls(process, reader, writer)

    def kill(self) -> None:
        """Kill the instance and anything it started; harmless if it is gone."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.writer.close()

    async def drain_stderr(self, limit: int = 4096) -> str:
        """Read stderr until the instance closes it; return its last ``limit`` bytes.

        Read all along, not at the end, so that a chatty function cannot block on a full pipe.
        """
        tail = b""
        if self.process.stderr is not None:
            while chunk := await self.process.stderr.read(65536):
                tail = (tail + chunk)[-limit:]
        return tail.decode(errors="replace")


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"
