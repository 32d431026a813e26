"""Recording the watched link: Debian's ``dumpcap`` with a capture filter, one file per visit."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from pathlib import Path

from bento.errors import BentoError

START_TIMEOUT = 20.0


class Sniffer:
    """``async with Sniffer(path, filter):`` records loopback packets matching ``filter``."""

    def __init__(self, path: Path, capture_filter: str, interface: str = "lo") -> None:
        self.path, self.filter, self.interface = path, capture_filter, interface
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Sniffer:
        program = shutil.which("dumpcap")
        if program is None:
            raise BentoError(
                "capturing traces needs Debian's dumpcap",
                fix="apt-get install tshark (scripts/bootstrap.sh does)",
            )
        self.path.unlink(missing_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            program, "-q", "-i", self.interface, "-f", self.filter, "-P", "-w", str(self.path),
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

    async def __aexit__(self, *_: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)  # dumpcap writes out what it has, then exits
        try:
            async with asyncio.timeout(10):
                await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
