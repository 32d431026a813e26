"""The client-only tor a Bento server starts and owns for its functions' circuits.

Functions' circuits, streams and onion services never touch the relay's own tor: they
live in a second, client-only ``tor`` process (no ORPort, so it carries nobody else's
traffic), started by the server, tied to it (``__OwningControllerProcess``: it exits
when the server does, however the server dies) and driven only by the server through
a control port that no function can reach. Its directory follows the relay's: the
authorities the relay trusts (``DirAuthority``, set on a private network such as the
testnet, empty on the live one) are copied into its torrc.

Options that matter, and why:

- ``__LeaveStreamsUnattached 1``: tor attaches no stream by itself; the server attaches
  each one to the circuit of the function that asked, or closes it.
- ``__DisablePredictedCircuits 1``: no circuits built "in case", so every circuit it has
  beyond directory fetches belongs to exactly one function.
- ``UseMicrodescriptors 0``: full descriptors carry full exit policies, so a function
  can ask whether an exit allows an address and port (a microdescriptor only has a
  summary of public ports).
- ``LearnCircuitBuildTimeout 0`` and ``CircuitBuildTimeout 60``: a function's circuit is
  built once, on request, and nobody builds another if tor gives up on it, so tor must
  not give up early. Tor's adaptive timeout learns from the circuits it has built; on a
  quiet network (a testnet on loopback builds in milliseconds) it learns a timeout that
  a busy moment then exceeds, and the function's circuit fails with TIMEOUT. A fixed
  minute, tor's own initial value, leaves the decision to the function (``wait(timeout)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import stem
import stem.control

from bento.errors import BentoError
from bento.tor import control

TOR = "tor"
START_TIMEOUT = 60.0
BOOTSTRAP_TIMEOUT = 300.0
_MIRRORED = ("DirAuthority", "AlternateDirAuthority", "TestingTorNetwork", "PathsNeededToBuildCircuits")

_TORRC = """\
# Written by Bento: a client-only tor it owns.
DataDirectory {data_dir}
ClientOnly 1
SocksPort 127.0.0.1:auto
ControlPort 127.0.0.1:auto
ControlPortWriteToFile {data_dir}/control-port
CookieAuthentication 1
Log notice file {data_dir}/notice.log
__OwningControllerProcess {owner}
"""
# What makes it the functions' tor (see the module's docstring).
FUNCTION_OPTIONS = """\
__LeaveStreamsUnattached 1
__DisablePredictedCircuits 1
UseMicrodescriptors 0
LearnCircuitBuildTimeout 0
CircuitBuildTimeout 60
"""


def relay_directory_lines(relay: stem.control.Controller) -> list[str]:
    """The relay's directory settings, as torrc lines, so both tors see the same network."""
    lines = []
    for option in _MIRRORED:
        with contextlib.suppress(stem.ControllerError):
            for value in relay.get_conf(option, [], multiple=True):
                if value:
                    lines.append(f"{option} {value}")
    return lines


def render_torrc(data_dir: Path, owner: int, directory: list[str], options: str = FUNCTION_OPTIONS) -> str:
    return (
        _TORRC.format(data_dir=data_dir, owner=owner) + options + "".join(f"{line}\n" for line in directory)
    )


@dataclass
class ClientTor:
    """A running client-only tor and the Stem controller that owns it."""

    process: asyncio.subprocess.Process
    controller: stem.control.Controller
    socks: tuple[str, int]
    control_port: tuple[str, int]
    data_dir: Path

    @classmethod
    async def start(cls, data_dir: Path, directory: list[str], options: str = FUNCTION_OPTIONS) -> ClientTor:
        """Start tor in ``data_dir`` and connect to it; it lives until :meth:`stop`.

        ``options`` are torrc lines of its role: by default, a box's functions' tor.

        Returns once the control port answers (within START_TIMEOUT);
        :meth:`wait_bootstrapped` waits for the consensus. BentoError with tor's last
        log lines if it does not come up.
        """
        torrc = await asyncio.to_thread(_prepare, data_dir, directory, options)
        port_file = data_dir / "control-port"
        with (data_dir / "stdout.log").open("ab") as log:
            try:
                process = await asyncio.create_subprocess_exec(
                    TOR,
                    "-f",
                    str(torrc),
                    "--defaults-torrc",
                    os.devnull,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                )
            except FileNotFoundError:
                raise BentoError(
                    "`tor` is not installed, so functions cannot have circuits",
                    fix="install Debian's tor package, or turn [policy.tor] off",
                ) from None
        try:
            address = await _wait_for_port_file(process, port_file, data_dir)
            ctl = await asyncio.to_thread(control.connect, address)  # takes ownership (Stem)
            try:
                socks = (await asyncio.to_thread(ctl.get_listeners, stem.control.Listener.SOCKS))[0]
            except BaseException:
                ctl.close()
                raise
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        return cls(process, ctl, (socks[0], int(socks[1])), control.parse_address(address), data_dir)

    async def wait_bootstrapped(self) -> None:
        """Wait (BOOTSTRAP_TIMEOUT at most) until tor has the directory to build circuits.

        Not bootstrap's 100%: tor reaches that by building a circuit of its own, which
        ``__DisablePredictedCircuits`` stops it from doing.
        """
        deadline = time.monotonic() + BOOTSTRAP_TIMEOUT
        while True:
            try:
                enough = await asyncio.to_thread(self.controller.get_info, "status/enough-dir-info")
            except (stem.ControllerError, stem.SocketError) as exc:
                raise BentoError(f"the functions' tor stopped answering: {exc}") from None
            if enough.strip() == "1":
                return
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise BentoError(
                    "the functions' tor found too little of the directory to build circuits",
                    fix=f"see {self.data_dir / 'notice.log'}",
                )
            await asyncio.sleep(0.5)

    def listeners(self) -> set[tuple[str, int]]:
        """Its SOCKS and control ports: functions must never reach them."""
        return {self.socks, self.control_port}

    async def stop(self) -> None:
        """Close the owning connection (tor exits on its own then) and reap the process."""
        await asyncio.to_thread(self.controller.close)
        try:
            async with asyncio.timeout(10):
                await self.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


def _prepare(data_dir: Path, directory: list[str], options: str) -> Path:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)  # tor refuses a DataDirectory others can read
    (data_dir / "control-port").unlink(missing_ok=True)
    torrc = data_dir / "torrc"
    torrc.write_text(render_torrc(data_dir, os.getpid(), directory, options))
    return torrc


async def _wait_for_port_file(process: asyncio.subprocess.Process, port_file: Path, data_dir: Path) -> str:
    """``host:port`` of the control port, once tor has written it (``PORT=host:port``)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with contextlib.suppress(OSError):
            text = await asyncio.to_thread(port_file.read_text)
            if text.endswith("\n"):
                return text.strip().removeprefix("PORT=")
        if process.returncode is not None or time.monotonic() > deadline:
            from bento.tor.process import log_tail

            raise BentoError(
                "the functions' tor did not start; the end of its log:\n" + log_tail(data_dir / "stdout.log"),
            )
        await asyncio.sleep(0.05)
