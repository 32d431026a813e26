"""Circuit cover from the user's side: deploy Cover to a box (or reuse it), run it, report.

The code uploaded is this package's ``function`` module, as the package ``bento_cover``;
its deployment is named after a hash of that code (``cover-<hash>``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bento.client.box import Box
from bento.client.keyring import Keyring
from bento.errors import BentoError
from bento.functions import deploy
from bento.protocol.manifest import Manifest
from bento.protocol.messages import SessionState
from bento.protocol.policy import Needs, SyscallProfile

PACKAGE = "bento_cover"
BOX_MODULES = ("__init__", "function")
MAX_CIRCUITS = 8  # the default policy's tor.max_circuits; the function itself takes up to 16
BUILD_SECONDS = 120  # the most building the circuits may take, on top of the cover itself
Progress = Callable[[float, int], None]  # (seconds so far, bytes sent so far)


def code() -> bytes:
    return deploy.package(Path(__file__).parent, PACKAGE, BOX_MODULES)


def manifest(circuits: int = MAX_CIRCUITS, seconds: float = 300) -> Manifest:
    return Manifest(
        name=f"cover-{deploy.version(code())}",
        module=f"{PACKAGE}.function",
        description="Cover: circuits kept busy at a constant rate, into a sink of the function's own",
        needs=Needs(
            listen=True,  # the sink
            syscall_profiles=[SyscallProfile.COMPUTE, SyscallProfile.NETWORK],  # its accept()
            tor_circuits=circuits,
            processes=2 * circuits + 8,  # a sender and a sink reader per circuit
            open_files=64 + 4 * circuits,
            cpu_seconds=60,
            wall_seconds=int(seconds) + BUILD_SECONDS,
            memory_mb=96,
        ),
    )


async def circuits(
    box: Box,
    keyring: Keyring,
    count: int,
    rate: int,
    seconds: float,
    *,
    sink: str = "box",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run circuit cover on ``box``: ``count`` circuits at ``rate`` cells/s each for ``seconds``."""
    function, deployed = await deploy.ensure(box, keyring, code(), manifest())
    stream = await box.start(function, "circuits", [count, rate, seconds, sink])
    keyring.add_session(stream.session_id, function.function_id, function.session_rights[stream.session_id])
    buffer = b""
    async with stream:
        async for chunk in stream:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                tick = json.loads(line)
                if progress is not None:
                    progress(float(tick["seconds"]), int(tick["sent"]))
    ended = stream.ended
    if ended is None or ended.state is not SessionState.COMPLETED:
        error = ended.error if ended is not None else None
        why = error.message if error is not None and error.type == "CoverError" else None
        reason = why or (f"{error.type}: {error.message}" if error else ended.reason if ended else "")
        raise BentoError(
            f"Cover could not run on {box.name}: {reason}",
            fix="ask for fewer circuits or a lower rate, or use a box whose policy offers Tor circuits",
        )
    result: dict[str, Any] = ended.result
    result["box"], result["function_id"], result["deployed"] = box.name, function.function_id, deployed
    result["bytes_sent"] = sum(c["bytes_sent"] for c in result["circuits"])
    result["bytes_received"] = sum(c["bytes_received"] for c in result["circuits"])
    return result
