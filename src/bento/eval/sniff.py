"""Recording the watched link: Debian's ``dumpcap`` with a capture filter, one file per visit."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
from pathlib import Path

from bento.errors import BentoError

START_TIMEOUT = 20.0
# Loopback packets are up to 64 KiB, and a page arrives in a burst: with dumpcap's default
# 2 MB buffer the kernel drops packets under load, and a trace with holes undercounts cells.
BUFFER_MB = 256
# dumpcap stops reading when told to, and what the kernel still holds for it is lost
# without being counted as dropped: on a busy host that was half of a page. So a capture
# ends only once its file has stopped growing for IDLE seconds (the link went quiet, as an
# attacker would also take a page load to have ended), and after SETTLE_MAX at most.
IDLE = 0.3
SETTLE_MAX = 10.0
_DROPS = re.compile(rb"received/dropped on interface .*?: (\d+)/(\d+)")


class Sniffer:
    """``async with Sniffer(path, filter):`` records loopback packets matching ``filter``.

    On leaving, a capture that lost packets raises :class:`BentoError` (``dropped`` says
    how many), so that no trace is made from a capture with holes.
    """

    def __init__(self, path: Path, capture_filter: str, interface: str = "lo") -> None:
        self.path, self.filter, self.interface = path, capture_filter, interface
        self._process: asyncio.subprocess.Process | None = None
        self.dropped: int | None = None

    async def __aenter__(self) -> Sniffer:
        program = shutil.which("dumpcap")
        if program is None:
            raise BentoError(
                "capturing traces needs Debian's dumpcap",
                fix="apt-get install tshark (scripts/bootstrap.sh does)",
            )
        self.path.unlink(missing_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            program, "-q", "-i", self.interface, "-f", self.filter, "-B", str(BUFFER_MB), "-P",
            "-w", str(self.path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self._process.stderr is not None
        try:  # dumpcap says "Capturing on 'Loopback: lo'" once packets are being recorded
            async with asyncio.timeout(START_TIMEOUT):
                while b"Capturing on" not in (line := await self._process.stderr.readline()):
                    if not line:
                        raise BentoError(f"dumpcap did not start capturing on {self.interface}")
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            await self._settle()
        summary = await self._stop()
        if kind is None and (found := _DROPS.search(summary)):
            self.dropped = int(found[2])
            if self.dropped:
                raise BentoError(
                    f"the capture lost {self.dropped} packets ({found[1].decode()} received)",
                    fix="the machine is too busy to capture every packet: visit again when it is quieter",
                )

    async def _settle(self) -> None:
        """Wait until the capture file has not grown for ``IDLE`` s (``SETTLE_MAX`` at most)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + SETTLE_MAX
        size = -1
        while loop.time() < give_up:
            now = self.path.stat().st_size if self.path.exists() else 0
            if now == size:
                return
            size = now
            await asyncio.sleep(IDLE)

    async def _stop(self) -> bytes:
        """Stop dumpcap; what it said at the end (its packet counts)."""
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
