"""LoadBalancer from the user's side: start it with a service, follow what it does.

``start`` deploys the LoadBalancer to a box (reused from the keyring while its code and
the service's name are unchanged: the same deployment keeps the same onion address),
gives it the replica's code (the user's module with the replica wrapper), and returns
the session's stream once the service's onion address is known. The events that follow
(one JSON object a line: ``up``, ``lost``, ``stopped``, ``scale``) come from ``events``.
"""

from __future__ import annotations

import ast
import base64
import gzip
import io
import json
import re
import tarfile
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bento.client.box import Box
from bento.client.keyring import Deployment, Keyring
from bento.client.stream import SessionStream
from bento.errors import BentoError
from bento.functions import deploy
from bento.protocol.manifest import Manifest
from bento.protocol.messages import SessionState
from bento.protocol.policy import Needs, SyscallProfile

from .function import BROKER_THREADS, OTHER_THREADS, fit
from .policy import Settings

PACKAGE = "bento_loadbalancer"
BOX_MODULES = ("__init__", "policy", "function")
MAX_SERVICE = 1 << 20
_HERE = Path(__file__).parent
# accept() on a listener the broker made is in the sandbox's "network" system-call profile
# (needs.listen alone grants the listener); the profile opens no way around the broker.
NETWORKED = [SyscallProfile.COMPUTE, SyscallProfile.NETWORK]


def replica_code(service: Path, entry: str = "handle") -> bytes:
    """The replica's upload: ``bento_lb_service`` (the user's module) and the wrapper."""
    try:
        source = service.read_bytes()
    except OSError as exc:
        raise BentoError(f"cannot read the service function {service}: {exc.strerror}") from None
    if len(source) > MAX_SERVICE:
        raise BentoError(
            f"the service function {service} is over {MAX_SERVICE} bytes", fix="give one .py file"
        )
    try:
        tree = ast.parse(source, filename=str(service))
    except (SyntaxError, ValueError) as exc:
        raise BentoError(f"the service function {service} is not valid Python: {exc}") from None
    if not any(isinstance(n, ast.FunctionDef) and n.name == entry for n in tree.body):
        raise BentoError(
            f"the service function {service} has no top-level function {entry}(conn)",
            fix=f"define `def {entry}(conn):` (conn: the client's connected socket), or name yours: --entry",
        )
    files = {
        "bento_lb_service.py": source,
        "bento_lb_replica/__init__.py": b"",
        "bento_lb_replica/replica.py": (_HERE / "replica.py").read_bytes(),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


def code() -> bytes:
    return deploy.package(_HERE, PACKAGE, BOX_MODULES)


def manifest(service_name: str, lifetime: int, cpu_seconds: int) -> Manifest:
    label = re.sub(r"[^A-Za-z0-9_.-]", "-", service_name)[:32]
    return Manifest(
        name=f"loadbalancer-{deploy.version(code())}-{label}",
        module=f"{PACKAGE}.function",
        description="LoadBalancer: one onion address, connections spread over replicas on other boxes",
        needs=Needs(
            listen=True,
            onion_services=1,
            tor_circuits=1,  # streams to the replicas' onion services (not Bento boxes)
            call_boxes=True,
            storage_mb=1,  # the service's onion key
            memory_mb=256,
            processes=BROKER_THREADS + OTHER_THREADS,  # threads count (RLIMIT_NPROC); fit() may lower it
            open_files=1024,
            instances=1,  # one LoadBalancer per deployment: its onion address is one service
            syscall_profiles=NETWORKED,
            wall_seconds=lifetime,
            cpu_seconds=cpu_seconds,
        ),
    )


def replica_needs(concurrency: int, lifetime: int, cpu_seconds: int) -> Needs:
    return Needs(
        listen=True,
        onion_services=64,  # one a replica; a box counts a function's together (capped to its policy)
        processes=concurrency + 8,
        memory_mb=128,
        instances=64,  # several replicas may share a box
        syscall_profiles=NETWORKED,
        wall_seconds=lifetime,
        cpu_seconds=cpu_seconds,
    )


async def start(
    box: Box,
    keyring: Keyring,
    service: Path,
    settings: Settings,
    boxes: list[str],
    *,
    entry: str = "handle",
    concurrency: int = 4,
    idle_seconds: float = 60.0,
    connect_timeout: float = 30.0,
    lifetime: int = 600,
    client_auth: str | None = None,
) -> tuple[Deployment, SessionStream, str]:
    """Deploy (or reuse) the LoadBalancer, start it; its deployment, stream and onion address.
    ``client_auth``: the base32 X25519 public key of the one client let in (``client_key``)."""
    settings.check()
    payload = replica_code(service, entry)
    limits = (await box.descriptor()).policy.instance
    lifetime, cpu = min(lifetime, limits.wall_seconds), limits.cpu_seconds
    chosen = manifest(service.stem, lifetime, cpu)
    chosen = chosen.model_copy(update={"needs": fit(chosen.needs, limits)})
    function, _ = await deploy.ensure(box, keyring, code(), chosen)
    replica = {
        "entry": entry,
        "concurrency": concurrency,
        "idle_seconds": idle_seconds,
        "connect_timeout": connect_timeout,
        "needs": replica_needs(concurrency, lifetime, cpu).model_dump(mode="json"),
        "code": base64.b64encode(payload).decode(),
    }
    stream = await box.start(function, "run", [asdict(settings), boxes, replica, client_auth])
    try:
        first = await anext(events(stream), None)
        if first is None:
            ended = stream.ended
            why = f"{ended.state.value}: {ended.reason}" if ended is not None else "no end was said"
            raise BentoError(f"the LoadBalancer ended before it published the address ({why})")
    except BaseException:
        await stream.close()
        raise
    if first.get("event") != "address":
        raise BentoError(f"the LoadBalancer said {first!r} before its address")
    return function, stream, str(first["address"])


async def events(stream: SessionStream) -> AsyncIterator[dict[str, Any]]:
    """The LoadBalancer's events, one dict each; BentoError if it ends with an error."""
    buffered = b""
    while (chunk := await stream.receive()) is not None:
        buffered += chunk
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            try:
                event = json.loads(line)
            except ValueError:
                raise BentoError("the LoadBalancer sent a line that is not JSON") from None
            if isinstance(event, dict):
                yield event
        if len(buffered) > 65536:
            raise BentoError("the LoadBalancer sent an over-long line")
    ended = stream.ended
    if ended is not None and ended.error is not None:
        raise BentoError(f"the LoadBalancer stopped: {ended.error.type}: {ended.error.message}")
    if ended is not None and ended.state is not SessionState.COMPLETED:
        raise BentoError(f"the LoadBalancer ended: {ended.state.value}: {ended.reason}")
