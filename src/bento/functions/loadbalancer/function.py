"""LoadBalancer's entry point on its box: ``run(settings, boxes, replica)``.

The service's onion address is the LoadBalancer's: its key is made here once and kept in
the function's encrypted storage, so the address stays while the function is deployed
(a later ``run`` of the same deployment publishes it again) and dies with it. Each
connection to it is forwarded, as an opaque byte stream, to a replica's own onion
service (``api.tor.connect_onion``); replicas are sessions of the service, deployed with
the client library (``needs.call_boxes``) on the boxes named, started and stopped as
:mod:`.policy` decides.

The replica's code (a .tar.gz, as ``bento loadbalance`` builds it) comes base64-encoded
in ``replica["code"]`` (it is no secret from this box, which deploys it); the session's
output is one JSON line per event: ``address``, ``up``, ``lost``, ``stopped``, ``scale``.
Connections to a lost replica are closed at once (their bytes may have been half served:
the LoadBalancer cannot know whether a replay would be safe); a connection whose stream
to a replica cannot be opened is tried on another replica before anything reaches its
client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import json
import os
import resource
import socket
import time
import traceback
from typing import Any

from bento.client.box import Box
from bento.client.keyring import Deployment
from bento.client.stream import Retry, SessionStream
from bento.client.via_broker import BrokerTransport
from bento.errors import BentoError, teardown
from bento.protocol.manifest import Manifest
from bento.protocol.messages import CodeKind
from bento.protocol.policy import InstanceLimits, Needs
from bento.runtime import api

from .policy import Pool, Replica, Settings, Start, Stop

MAX_CODE = 1 << 20  # the user's module is at most 1 MiB (client.MAX_SERVICE)
TICK = 0.5  # seconds between two looks at the load
HEARTBEAT = 10.0  # seconds between heartbeats to each replica
CONNECT_TRIES = 3
# Broker calls block, so threads carry them: as many as the broker answers at once for one
# instance (bento.server.broker.service.MAX_IN_FLIGHT), so forwarded connections open side by
# side; fewer where the box allows fewer processes (threads count as processes).
BROKER_THREADS = 64
OTHER_THREADS = 8  # the main thread, and room for what the runtime and libraries start


def broker_threads() -> int:
    """How many threads may carry broker calls under this instance's RLIMIT_NPROC."""
    allowed, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if allowed == resource.RLIM_INFINITY:
        return BROKER_THREADS
    return max(1, min(BROKER_THREADS, allowed - OTHER_THREADS))


_CHUNK = 64 << 10


class LoadBalancerError(Exception):
    """The LoadBalancer cannot run as asked; the message says why."""


def run(
    settings: dict[str, Any], boxes: list[str], replica: dict[str, Any], client_auth: str | None = None
) -> dict[str, Any]:
    """Balance the service over replicas on ``boxes`` until the session is ended. With
    ``client_auth`` (a base32 X25519 public key), only the client holding its private key
    reaches the service (Tor's client authorization)."""
    try:
        chosen = Settings(**settings)
        chosen.check()
    except (TypeError, ValueError) as exc:
        raise LoadBalancerError(f"bad settings: {exc}") from None
    if not isinstance(boxes, list) or not boxes or not all(isinstance(b, str) for b in boxes):
        raise LoadBalancerError("boxes must be a non-empty list of onion addresses")
    try:
        code = base64.b64decode(str(replica.get("code", "")), validate=True)
    except (binascii.Error, ValueError):
        raise LoadBalancerError("the replica's code is not base64") from None
    if not code or len(code) > MAX_CODE:
        raise LoadBalancerError(f"the replica's code is missing or over {MAX_CODE} bytes")
    if client_auth is not None and not (isinstance(client_auth, str) and len(client_auth) == 52):
        raise LoadBalancerError("client_auth is a base32 X25519 public key of 52 characters")
    balancer = Balancer(chosen, [b.removesuffix(".onion") for b in boxes], code, replica)
    balancer.client_auth = client_auth
    return asyncio.run(balancer.run())


def fit(needs: Needs, limits: InstanceLimits) -> Needs:
    """``needs`` lowered to what one instance may have on a box (its policy's limits)."""
    names = ("memory_mb", "cpu_seconds", "wall_seconds", "processes", "open_files", "scratch_mb", "output_mb")
    return needs.model_copy(update={n: min(getattr(needs, n), getattr(limits, n)) for n in names})


def _key() -> bytes:
    """The service's Ed25519 seed: made once, kept (encrypted) in the function's storage."""
    seed = api.storage.get("onion-key")
    if seed is None or len(seed) != 32:
        seed = os.urandom(32)
        api.storage.put("onion-key", seed)
    return seed


class Balancer:
    def __init__(self, settings: Settings, boxes: list[str], code: bytes, replica: dict[str, Any]) -> None:
        self.pool = Pool(settings, boxes)
        self.code, self.replica = code, replica
        self.entry = str(replica.get("entry", "handle"))
        self.connect_timeout = float(replica.get("connect_timeout", 30.0))
        self.idle = float(replica.get("idle_seconds", 60.0))
        self.needs = Needs(**replica.get("needs", {}))
        self.boxes: dict[str, Box] = {}
        self.deployments: dict[str, Deployment] = {}
        self.sessions: dict[int, tuple[str, str]] = {}  # replica id -> (box, session id)
        self.streams: dict[int, SessionStream] = {}
        self.connections: dict[int, set[asyncio.Task[None]]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.changed = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.address = ""
        self.client_auth: str | None = None  # the one client's X25519 key, where only it may connect

    def emit(self, event: str, **fields: Any) -> None:
        self.events.put_nowait({"event": event, "time": round(time.time(), 3), **fields})

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(broker_threads()))
        listener = api.listen()
        service = await asyncio.to_thread(
            api.tor.publish, listener, virtual_port=80, key=_key(), client_auth=self.client_auth
        )
        self.address = service.address
        self.emit("address", address=service.address + ".onion")
        listener.setblocking(False)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._send_events())
                group.create_task(self._heartbeats())
                group.create_task(self._accept(listener))
                await self._scale(group)
        except* Exception as failed:  # a bug of ours: its traceback to the logs, its words to the user
            for exc in failed.exceptions:
                traceback.print_exception(exc)
            first = failed.exceptions[0]
            raise LoadBalancerError(f"the LoadBalancer failed: {type(first).__name__}: {first}") from None
        finally:
            listener.close()
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self._shutdown_replicas()
        return self.pool.status()

    # --- scaling --------------------------------------------------------------------------

    async def _scale(self, group: asyncio.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        desired = -1
        while True:
            for action in self.pool.plan(loop.time()):
                if isinstance(action, Start):
                    self._own(group.create_task(self._replica(action.replica)))
                elif isinstance(action, Stop):
                    self._own(group.create_task(self._stop(action.replica, action.why)))
            if self.pool.desired != desired:
                desired = self.pool.desired
                self.emit("scale", desired=desired, load=round(self.pool.load(), 3))
            await asyncio.sleep(TICK)

    def _own(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _box(self, onion: str) -> tuple[Box, Deployment]:
        box = self.boxes.get(onion)
        if box is None:
            box = Box(
                onion, socks=None, transport=BrokerTransport(), retry=Retry(attempts=2, first_delay=1.0)
            )
            await box.__aenter__()
            self.boxes[onion] = box
        deployment = self.deployments.get(onion)
        if deployment is None:
            policy = (await box.descriptor()).policy
            needs = fit(self.needs, policy.instance)
            # Each replica publishes an onion service, and a box counts them per function:
            # ask for as many as the box allows, so that several replicas may share it.
            onions = min(needs.onion_services, policy.tor.max_onion_services)
            needs = needs.model_copy(update={"onion_services": onions})
            manifest = Manifest(name="lb-replica", module="bento_lb_replica.replica", needs=needs)
            deployment = await box.deploy(self.code, manifest, kind=CodeKind.TAR_GZ)
            self.deployments[onion] = deployment
        return box, deployment

    async def _replica(self, replica: Replica) -> None:
        loop = asyncio.get_running_loop()
        why, stream = "", None
        try:
            box, deployment = await self._box(replica.box)
            args = ["bento_lb_service", self.entry, int(self.replica.get("concurrency", 4)), self.idle]
            stream = await box.start(deployment, "serve", args)
            self.sessions[replica.id] = (replica.box, stream.session_id)
            self.streams[replica.id] = stream
            async with asyncio.timeout(self.pool.settings.start_timeout):
                line = await _first_line(stream)
            address = json.loads(line)["address"]
            self.pool.ready(replica, str(address), loop.time())
            self.emit("up", replica=replica.id, box=replica.box, address=address + ".onion")
            self.changed.set()
            async for _ in stream:  # nothing more is said: the session's end is the news
                pass
            ended = stream.ended
            why = (
                ended.error.message if ended and ended.error else ended.reason if ended else ""
            ) or "it ended"
        except BentoError as exc:
            why = exc.message
            self.deployments.pop(replica.box, None)  # a restarted box forgot it: deploy again
        except TimeoutError:
            why = f"not ready within {self.pool.settings.start_timeout:g} s"
        except (ValueError, KeyError, TypeError):
            why = "it did not say its onion address"
        finally:
            self.sessions.pop(replica.id, None)
            self.streams.pop(replica.id, None)
            if stream is not None:
                with contextlib.suppress(BentoError, OSError):
                    await stream.close()
        if self.pool.lost(replica, loop.time()):
            self.emit("lost", replica=replica.id, box=replica.box, why=why[:300])
            for task in self.connections.pop(replica.id, set()):
                task.cancel()  # in flight: closed now, rather than left to hang
        self.changed.set()

    async def _stop(self, replica: Replica, why: str) -> None:
        where = self.sessions.get(replica.id)
        if where is not None:
            box, session_id = where
            with contextlib.suppress(BentoError):
                await self.boxes[box].kill(self.deployments[box], session_id)
        self.emit("stopped", replica=replica.id, box=replica.box, why=why, served=replica.served)

    async def _heartbeats(self) -> None:
        async def beat(stream: SessionStream) -> None:
            with contextlib.suppress(BentoError, OSError, TimeoutError):
                async with asyncio.timeout(HEARTBEAT / 2):  # a dead box must not delay the others
                    await stream.send(b".")

        while True:
            await asyncio.sleep(HEARTBEAT)
            await asyncio.gather(*(beat(stream) for stream in list(self.streams.values())))

    async def _shutdown_replicas(self) -> None:
        for onion, deployment in list(self.deployments.items()):
            with contextlib.suppress(BentoError, TimeoutError):
                async with asyncio.timeout(20):
                    await self.boxes[onion].shutdown(deployment)
        for box in self.boxes.values():
            with teardown("closing a connection to a replica's box", OSError, BentoError):
                await box.__aexit__(None, None, None)

    async def _send_events(self) -> None:
        while True:
            event = await self.events.get()
            await asyncio.to_thread(api.send, json.dumps(event) + "\n")

    # --- connections ----------------------------------------------------------------------

    async def _accept(self, listener: socket.socket) -> None:
        # Not asyncio.start_server: it would call listen() again on the broker's listener.
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            self._own(asyncio.create_task(self._client(conn)))

    async def _client(self, conn: socket.socket) -> None:
        task = asyncio.current_task()
        assert task is not None
        replica = None
        reader, writer = await asyncio.open_connection(sock=conn, limit=_CHUNK)
        try:
            replica, sock = await self._connect()
            self.connections.setdefault(replica.id, set()).add(task)
            up_reader, up_writer = await asyncio.open_connection(sock=sock, limit=_CHUNK)
            try:
                await _splice(reader, writer, up_reader, up_writer, self.idle)
            finally:
                up_writer.close()
        except (OSError, TimeoutError, LoadBalancerError) as exc:
            print(f"a connection was not served: {exc}")
        finally:
            if replica is not None:
                self.connections.get(replica.id, set()).discard(task)
                self.pool.closed(replica)
            writer.close()

    async def _connect(self) -> tuple[Replica, socket.socket]:
        """A stream to a ready replica (the fewest connections first), trying others."""
        loop = asyncio.get_running_loop()
        tried: set[int] = set()
        deadline = loop.time() + self.connect_timeout
        while len(tried) < CONNECT_TRIES and (left := deadline - loop.time()) > 0:
            replica = self.pool.choose(frozenset(tried))
            if replica is None:
                self.changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self.changed.wait()  # a replica is up, or lost
                continue
            self.pool.opened(replica)
            opening = loop.run_in_executor(None, api.tor.connect_onion, replica.address, 80)
            try:
                async with asyncio.timeout(left):
                    sock = await asyncio.shield(opening)
            except (OSError, TimeoutError) as exc:
                opening.add_done_callback(_close_late)
                self.pool.closed(replica, served=False)
                tried.add(replica.id)
                print(f"replica {replica.id} on {replica.box[:16]}: no stream ({exc}); trying another")
                continue
            sock.setblocking(False)
            return replica, sock
        raise LoadBalancerError(f"no replica took the connection within {self.connect_timeout:g} s")


async def _first_line(stream: SessionStream) -> bytes:
    buffered = b""
    while b"\n" not in buffered:
        chunk = await stream.receive()
        if chunk is None:
            ended = stream.ended
            raise BentoError(ended.error.message if ended and ended.error else "it ended before it was ready")
        buffered += chunk
        if len(buffered) > 4096:
            raise ValueError("too long")
    return buffered.split(b"\n", 1)[0]


def _close_late(future: asyncio.Future[socket.socket]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    idle: float,
) -> None:
    """Copy both ways until both sides are done; closed after ``idle`` seconds of silence."""
    last = [time.monotonic()]

    async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(_CHUNK):
            sink.write(data)
            await sink.drain()
            last[0] = time.monotonic()
        if sink.can_write_eof():
            with contextlib.suppress(OSError):
                sink.write_eof()

    pumps = [asyncio.create_task(pump(reader, up_writer)), asyncio.create_task(pump(up_reader, writer))]
    try:
        while pending := [p for p in pumps if not p.done()]:
            done, _ = await asyncio.wait(pending, timeout=max(0.1, last[0] + idle - time.monotonic()))
            for finished in done:
                if (error := finished.exception()) is not None:
                    raise error  # one side broke: the connection is over both ways
            if time.monotonic() - last[0] >= idle and any(not p.done() for p in pumps):
                raise TimeoutError(f"nothing either way for {idle:g} s: closed")
    finally:
        for p in pumps:
            p.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
