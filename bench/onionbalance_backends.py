"""Onionbalance (v3, the Tor Project's tool) on a Bento testnet, for bench/loadbalance.py.

N backends, each an onion service of one tor of ours (``HiddenServiceOnionbalanceInstance
1`` with an ``ob_config`` naming the frontend's address) leading to a local server that
serves one request at a time with the same fixed service time as LoadBalancer's replicas;
and the onionbalance frontend, which fetches the backends' descriptors and publishes the
frontend address's descriptor with their introduction points.

Onionbalance 0.2.4 assumes chutney's 20 s voting interval on a test network
(``--is-testnet``: a time period of 8 minutes, a shared-random phase of 4); the Bento
testnet votes every 10 s, so tor's time period there is 24 x 10 s = 4 minutes and a phase
2 minutes. The frontend runs with those two values patched in, or its descriptors would
be blinded for the wrong period and no client would find them. It also waits 45 s before
its first fetch (``INITIAL_CALLBACK_DELAY``), which is lowered to 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bento.protocol import onion
from bento.testnet import Testnet
from bento.tor import control
from bento.tor.client_tor import ClientTor, relay_directory_lines

PATCHED_FRONTEND = """
import sys
from onionbalance.hs_v3 import consensus, params
consensus.Consensus.get_time_period_length = lambda self: 4      # minutes: 24 rounds of 10 s
consensus.Consensus._get_srv_phase_duration = lambda self: 2     # minutes: 12 rounds of 10 s
params.INITIAL_CALLBACK_DELAY = 5
from onionbalance.manager import main
sys.argv = ["onionbalance"] + sys.argv[1:]
sys.exit(main())
"""


class Backend:
    """A local server: one request at a time, ``seconds`` each, answering its name."""

    def __init__(self, name: str, seconds: float) -> None:
        self.name, self.seconds = name, seconds
        self.lock = asyncio.Lock()
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with self.lock:
                async with asyncio.timeout(60):
                    line = await reader.readline()
                if line:
                    await asyncio.sleep(self.seconds)  # the fixed service time
                    writer.write(self.name.encode() + b"\n")
                    await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


@contextlib.asynccontextmanager
async def onionbalance(net: Testnet, work: Path, count: int, seconds: float) -> AsyncIterator[str]:
    """Onionbalance with ``count`` backends; yields the frontend's address (with .onion)."""
    key = Ed25519PrivateKey.generate()
    master = onion.address_of(key)
    (work / "master.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    backends = [Backend(f"ob{i}", seconds) for i in range(count)]
    options = ""
    for i, backend in enumerate(backends):
        port = await backend.start()
        hs = work / f"hs{i}"
        hs.mkdir(mode=0o700)
        (hs / "ob_config").write_text(f"MasterOnionAddress {master}.onion\n")
        options += f"HiddenServiceDir {hs}\nHiddenServicePort 80 127.0.0.1:{port}\n"
        options += "HiddenServiceOnionbalanceInstance 1\n"
    relay = await asyncio.to_thread(control.connect, net.control_address)
    try:
        lines = await asyncio.to_thread(relay_directory_lines, relay)
    finally:
        relay.close()
    tor = await ClientTor.start(work / "tor", lines, options=options)
    frontend = None
    try:
        await tor.wait_bootstrapped()
        addresses = []
        async with asyncio.timeout(120):
            for i in range(count):
                while not (work / f"hs{i}" / "hostname").exists():  # noqa: ASYNC110 (tor writes it)
                    await asyncio.sleep(0.2)
                addresses.append((work / f"hs{i}" / "hostname").read_text().strip())
        config = "services:\n- key: master.key\n  instances:\n" + "".join(
            f"  - address: {a}\n    name: node{i}\n" for i, a in enumerate(addresses)
        )
        (work / "config.yaml").write_text(config)
        host, port = tor.control_port
        with (work / "onionbalance.log").open("ab") as log:
            frontend = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PATCHED_FRONTEND, "-i", host, "-p", str(port),
                "-c", str(work / "config.yaml"), "--is-testnet", "-v", "info",
                stdout=log, stderr=asyncio.subprocess.STDOUT, cwd=work,
                env={**os.environ, "ONIONBALANCE_TOR_CONTROL_SOCKET": str(work / "none")},
            )  # fmt: skip
        yield f"{master}.onion"
    finally:
        if frontend is not None and frontend.returncode is None:
            frontend.terminate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await frontend.wait()
            if frontend.returncode is None:
                frontend.kill()
                await frontend.wait()
        await tor.stop()
        for backend in backends:
            if backend.server is not None:
                backend.server.close()
