"""Recording the watched link: Debian's ``dumpcap`` with a capture filter, one file per visit."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
import signal
import socket
from pathlib import Path

from bento.errors import BentoError

START_TIMEOUT = 20.0
# Loopback packets are up to 64 KiB, and a page arrives in a burst: with dumpcap's default
# 2 MB buffer the kernel drops packets under load, and a trace with holes undercounts cells.
BUFFER_MB = 256
# Neither end of a capture can be taken on trust. dumpcap says "Capturing on" before its
# filter is live (seen: the first 0.5 s of a page missing), and it writes its file in
# batches, about once a second, so a file that stopped growing is not a finished one (seen:
# the end of a page missing). So each end is marked: a datagram to a port of ours, carrying a
# nonce, sent until it shows up in the file. Everything captured before the end mark is in
# the file once the mark is. The marks are UDP; the traces are read from TCP only.
MARK_EVERY = 0.02
MARK_TIMEOUT = 10.0
_DROPS = re.compile(rb"received/dropped on interface .*?: (\d+)/(\d+)")


class Sniffer:
    """``async with Sniffer(path, filter):`` records loopback packets matching ``filter``.

    On leaving, a capture that lost packets raises :class:`BentoError` (``dropped`` says
    how many), so that no trace is made from a capture with holes.
    """

    def __init__(self, path: Path, capture_filter: str) -> None:
        self.path, self.filter = path, capture_filter
        self._process: asyncio.subprocess.Process | None = None
        self._marks: socket.socket | None = None
        self._nonce = secrets.token_hex(16).encode()
        self.dropped: int | None = None

    async def __aenter__(self) -> Sniffer:
        program = shutil.which("dumpcap")
        if program is None:
            raise BentoError(
                "capturing traces needs Debian's dumpcap",
                fix="apt-get install tshark (scripts/bootstrap.sh does)",
            )
        self.path.unlink(missing_ok=True)
        # The marks go to a port bound here, so they reach no one else's socket.
        self._marks = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._marks.bind(("127.0.0.1", 0))
        self._marks.setblocking(False)
        marks = f"udp and dst host 127.0.0.1 and dst port {self._marks.getsockname()[1]}"
        self._process = await asyncio.create_subprocess_exec(
            program, "-q", "-i", "lo", "-f", f"({self.filter}) or ({marks})", "-B", str(BUFFER_MB),
            "-P", "-w", str(self.path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self._process.stderr is not None
        try:  # dumpcap says "Capturing on 'Loopback: lo'" once packets are being recorded
            async with asyncio.timeout(START_TIMEOUT):
                while b"Capturing on" not in (line := await self._process.stderr.readline()):
                    if not line:
                        raise BentoError("dumpcap did not start capturing on the loopback interface")
            await self._mark(b"start")
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:
                await self._mark(b"end")
        finally:
            summary = await self._stop()
        if kind is None and (found := _DROPS.search(summary)):
            self.dropped = int(found[2])
            if self.dropped:
                raise BentoError(
                    f"the capture lost {self.dropped} packets ({found[1].decode()} received)",
                    fix="the machine is too busy to capture every packet: visit again when it is quieter",
                )

    async def _mark(self, which: bytes) -> None:
        """Send the ``which`` mark until it is in the file: the capture is live (start), or
        holds everything before it (end)."""
        assert self._marks is not None
        mark = b"bento-capture-" + which + b"-" + self._nonce
        port = self._marks.getsockname()[1]
        searched = 0  # read only what is new: a page's capture is MBs
        try:
            async with asyncio.timeout(MARK_TIMEOUT):
                while True:
                    with contextlib.suppress(BlockingIOError):
                        self._marks.sendto(mark, ("127.0.0.1", port))
                    await asyncio.sleep(MARK_EVERY)
                    start = max(0, searched - len(mark))  # a mark may straddle two reads
                    tail = await asyncio.to_thread(_read_from, self.path, start)
                    if mark in tail:
                        return
                    searched = start + len(tail)
        except TimeoutError:
            raise BentoError(
                f"dumpcap did not record the capture's {which.decode()} mark in {MARK_TIMEOUT:.0f} s",
                fix="the machine is too busy to capture reliably: try again when it is quieter",
            ) from None

    async def _stop(self) -> bytes:
        """Stop dumpcap; what it said at the end (its packet counts)."""
        if self._marks is not None:
            self._marks.close()
        process = self._process
        if process is None or process.returncode is not None:
            return b""
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)  # dumpcap writes out what it has, then exits
        try:
            async with asyncio.timeout(10):
                _, said = await process.communicate()
                return said
        except TimeoutError:
            process.kill()
            await process.wait()
            return b""


def _read_from(path: Path, offset: int) -> bytes:
    """What ``path`` holds from ``offset`` on (nothing if dumpcap has not created it yet)."""
    try:
        with path.open("rb") as written:
            written.seek(offset)
            return written.read()
    except FileNotFoundError:
        return b""
