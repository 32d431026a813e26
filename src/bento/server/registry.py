"""The functions a box holds and their sessions, with the capabilities that guard them.

Functions live in memory and in ``state_dir/functions/<id>``; neither survives a server
restart (see docs/api.md, "Restarts"). Tokens are kept only as SHA-256 digests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from bento.protocol.descriptor import OfferedPackage
from bento.protocol.errors import ErrorCode
from bento.protocol.manifest import Manifest
from bento.protocol.messages import CodeKind, Replaced, Replaces, SessionInfo
from bento.protocol.policy import violations
from bento.sandbox.host import SandboxHost
from bento.server import code, packages, tokens
from bento.server.access import Access
from bento.server.admin.controls import OperatorControls, Pausable
from bento.server.admin.ledger import Ledger
from bento.server.attenuation import Narrowing
from bento.server.broker import BudgetSpec, Context, Gatekeeper
from bento.server.broker import Ledger as BudgetLedger
from bento.server.broker.network import system_resolver
from bento.server.broker.operations import Resolver
from bento.server.broker.service import Broker
from bento.server.broker.tor.instance import InstanceTor
from bento.server.broker.tor.service import TorForFunctions
from bento.server.config import ServerConfig
from bento.server.function import Deployed, Function
from bento.server.refusal import BoxError
from bento.server.retention import Retention
from bento.server.session import Session
from bento.server.store import StorageChannel, Store

T = TypeVar("T")


class Registry(Access):
    """Every function and session of this box; owns the tasks that run sessions (see :meth:`running`).

    Which token reaches which function or session is :class:`~bento.server.access.Access`'s.
    """

    def __init__(self, config: ServerConfig, boot_id: str, sandbox: SandboxHost, gate: Gatekeeper) -> None:
        self.config = config
        self.policy = config.policy
        self.sandbox = sandbox
        self.gate = gate
        self.boot_id = boot_id
        self.root = sandbox.root / "functions"
        self.store = Store(config.state_dir / "storage")
        self.offered: list[OfferedPackage] = []
        self.functions: dict[str, Function] = {}
        self.sessions: dict[str, Session] = {}
        self.retention = Retention(
            config.session_retention_seconds, config.retained_sessions, config.retained_output_bytes
        )
        self._group: asyncio.TaskGroup | None = None  # while running(): owns every session's task
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.tor: TorForFunctions | None = None  # set by the daemon when the box offers Tor
        self.resolver: Resolver = system_resolver  # set by the daemon: as the relay resolves
        self.controls = OperatorControls()  # the operator's pause and evictions (server/admin)
        self.ledger = Ledger()  # what functions used, for the operator: booked as sessions start and end

    def reset_storage(self) -> None:
        """Clear what a previous run left (functions do not survive restarts); install offered packages."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(mode=0o700, parents=True)
        self.sandbox.share(self.root)
        self.store.reset()
        self.offered = packages.install(self.sandbox.runtime_dir, self.policy.packages)
        self.sandbox.share(self.sandbox.runtime_dir, read_only=True)  # complete: nothing writes it again

    @contextlib.asynccontextmanager
    async def running(self, reap_interval: float = 30.0) -> AsyncIterator[Registry]:
        """Serve sessions inside this block; leaving it stops every session and waits for each.

        Every session's task lives in one task group: none outlives the block, and none
        is left unwatched. A session's task never fails (it ends the session with a cause
        instead), so one session cannot take the others down.
        """
        async with asyncio.TaskGroup() as group:
            self._group = group
            reaper = group.create_task(self.reap_forever(reap_interval))
            try:
                yield self
            finally:
                self._group = None  # no new sessions from here on
                reaper.cancel()
                for task in self._tasks.values():
                    task.cancel()
        await self.store.aclose()

    # --- lifecycle ----------------------------------------------------------------------

    async def deploy(
        self, manifest: Manifest, kind: CodeKind, encoded: str, replaces: Replaces | None = None
    ) -> Deployed:
        """Install a function; with ``replaces``, shut that one down once this one is installed."""
        self.refuse_if_paused("uploads")  # again: the operator may have paused while the body came
        problems = violations(manifest.needs, self.policy)
        if problems:
            raise BoxError(
                ErrorCode.EXCEEDS_POLICY,
                "the manifest asks for more than this box's policy allows: " + "; ".join(problems),
                "lower the manifest's needs, or pick a box that fits (`bento boxes --fits MANIFEST`)",
            )
        old = self._replaceable(replaces, manifest) if replaces else None
        try:
            raw = await _in_thread(code.decode, encoded) if encoded else b""
        except code.CodeError as exc:
            raise BoxError(ErrorCode.BAD_CODE, str(exc), exc.fix) from None
        limit = self.policy.max_upload_bytes
        if len(raw) > limit:
            raise BoxError(
                ErrorCode.UPLOAD_TOO_LARGE,
                f"the code is {len(raw)} bytes; this box accepts at most {limit}",
                "make the upload smaller, or choose a box with a larger limit",
            )
        function_id = tokens.new_id()
        target = self.root / function_id
        try:
            entry_points = await _in_thread(self._install, raw, kind, manifest, target)
        except code.CodeError as exc:
            await _in_thread(shutil.rmtree, target, True)
            raise BoxError(ErrorCode.BAD_CODE, str(exc), exc.fix) from None
        except BaseException:
            await _in_thread(shutil.rmtree, target, True)  # nothing of a failed upload is kept
            raise
        narrowing, invocation = Narrowing.mint(function_id)
        shutdown = tokens.new_token()
        function = Function(
            id=function_id,
            manifest=manifest,
            code_dir=target / "code",
            entry_points=entry_points,
            invocation_digest=tokens.digest(invocation),
            shutdown_digest=tokens.digest(shutdown),
            narrowing=narrowing,
        )
        self.functions[function_id] = function
        if old is None or self.functions.get(old.id) is not old:  # none, or shut down while we installed
            return Deployed(function, invocation, shutdown)
        heir = function if replaces and replaces.keep_storage else None
        stopped = await self.shutdown(old, heir)
        usage = held.usage() if heir and (held := self.store.existing(heir.id)) else {}
        replaced = Replaced(
            function_id=old.id,
            sessions_stopped=stopped,
            storage_bytes=usage.get("used", 0),
            storage_objects=usage.get("objects", 0),
        )
        return Deployed(function, invocation, shutdown, replaced)

    def _replaceable(self, replaces: Replaces, manifest: Manifest) -> Function:
        """The function an upload replaces, if its shutdown token is right; refused before
        anything is installed when its storage would not fit the new function's quota."""
        old = self.function(replaces.function_id, replaces.shutdown_token, shutdown=True)
        held = self.store.existing(old.id) if replaces.keep_storage else None
        quota = manifest.needs.storage_mb << 20
        if held is not None and held.used > quota:
            need = -(-held.used // (1 << 20))
            raise BoxError(
                ErrorCode.STORAGE_TOO_SMALL,
                f"function {old.id} stores {held.used} bytes, and the new manifest's storage_mb "
                f"allows {quota}: nothing was installed or shut down",
                f"ask for storage_mb = {need} or more, or replace with fresh storage "
                "(`bento deploy --replace --fresh-storage`) to shred the old function's storage",
            )
        return old

    def _install(self, raw: bytes, kind: CodeKind, manifest: Manifest, target: Path) -> list[str]:
        """Unpack, compile-check and share the code (blocking: run in a thread)."""
        entry_points = code.install(raw, kind, manifest, target / "code", self.policy.max_upload_bytes)
        self.sandbox.share(target)
        return entry_points

    def invoke(
        self,
        function: Function,
        entry: str,
        args: list[Any],
        kwargs: dict[str, Any],
        opened_by: str | None = None,
        right: str | None = None,
    ) -> Session:
        """Start a session whose client holds ``right`` (kept as a digest). A blinded or narrowed
        ``opened_by`` pays one use, spent once the instance exists: a refusal or a failed start
        leaves it good (``Access.payment``)."""
        if self.functions.get(function.id) is not function:  # shut down while the request arrived
            raise BoxError(ErrorCode.UNKNOWN_FUNCTION, f"function {function.id} was just shut down")
        if entry not in function.entry_points:
            listed = ", ".join(function.entry_points) or "none"
            raise BoxError(
                ErrorCode.UNKNOWN_ENTRY, f"the function has no entry point {entry!r} (it has: {listed})"
            )
        if self._group is None:
            raise BoxError(
                ErrorCode.BOX_STOPPING, "this box is stopping", "try again later, or use another box"
            )
        self.refuse_if_paused("invocations")
        self._admit(function)
        session = Session(tokens.new_id(), function.id, entry, self.config.session_buffer_bytes)
        session.right_digest = tokens.digest(right) if right is not None else None
        session.payment = self.payment(function, opened_by, entry, args, kwargs)
        try:
            run = self._run(function, session, args, kwargs)
        except BaseException:
            session.abandon("its resources could not be opened")  # gives the blinded token back
            raise
        task = self._group.create_task(run)
        task.add_done_callback(functools.partial(self._ran, session))
        self._tasks[session.id] = task
        self.ledger.started(session)
        function.sessions[session.id] = session
        self.sessions[session.id] = session
        return session

    def _run(
        self, function: Function, session: Session, args: list[Any], kwargs: dict[str, Any]
    ) -> Coroutine[Any, Any, None]:
        needs = function.manifest.needs
        if function.ledger is None:
            function.ledger = BudgetLedger(BudgetSpec.of(needs, self.policy))
        ledger = function.ledger
        storage = None
        if needs.storage_mb and self.policy.storage.allowed:
            storage = StorageChannel(self.store.of(function.id, needs.storage_mb), ledger)
        tor = None
        if self.tor is not None and (needs.tor_circuits or needs.onion_services or needs.call_boxes):
            tor = InstanceTor.open(self.tor, function.id, needs, self.policy, ledger, self.gate)
        context = Context(
            needs,
            self.policy,
            self.gate,
            self.resolver,
            function.id,
            session.id,
            storage,
            tor,
            on_refusal=functools.partial(self.ledger.broker_refused, function.id),
            budgets=ledger,
        )
        return session.run(self.sandbox, Broker(context), function.code_dir, function.manifest, args, kwargs)

    def _ran(self, session: Session, _task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never ran its clean-up: end the session here.
        session.abandon("stopped by the server")
        self._tasks.pop(session.id, None)
        self.ledger.ended(session)
        if session.id in self.sessions:  # not shut down meanwhile
            for old in self.retention.ended(session):
                self._forget(old)

    def refuse_if_paused(self, what: Pausable) -> None:
        """Raise the operator's refusal (503 box-paused, with its fix) while ``what`` is paused."""
        if (paused := self.controls.refusal(what)) is not None:
            raise BoxError(*paused)

    def _admit(self, function: Function) -> None:
        """Refuse an instance that would take Bento, or this function, past the policy."""
        needs = function.manifest.needs
        running = [s for s in self.sessions.values() if not s.ended]
        mine = sum(1 for s in running if s.function_id == function.id)
        if mine >= min(needs.instances, self.policy.instances_per_function):
            raise BoxError(
                ErrorCode.FUNCTION_BUSY,
                f"the function already runs {mine} instances, as many as its manifest asks for",
                "wait for a session to end, or deploy with a larger needs.instances",
            )
        memory = sum(
            self.functions[s.function_id].manifest.needs.memory_mb
            for s in running
            if s.function_id in self.functions
        )
        if (
            len(running) >= self.policy.instances_total
            or memory + needs.memory_mb > self.policy.total_memory_mb
        ):
            raise BoxError(
                ErrorCode.BOX_FULL,
                f"this box is at its limit ({len(running)} instances, {memory} MB of "
                f"{self.policy.total_memory_mb} MB promised)",
                "try again later, or use another box",
            )

    async def kill(self, session: Session) -> SessionInfo:
        """Kill one session (its client asked); its output stays retained like any ended one's."""
        session.kill("killed by its client")
        await session.done.wait()
        return session.info()

    async def shutdown(
        self, function: Function, heir: Function | None = None, reason: str = "its function was shut down"
    ) -> int:
        """Kill every instance of ``function``, then delete its code and its tokens, and its
        storage, unless ``heir`` (the function replacing it) takes that over."""
        del self.functions[function.id]
        self.ledger.gone(function.id)
        stopped = 0
        for session in function.sessions.values():
            self.sessions.pop(session.id, None)
            self.retention.drop(session)
            if not session.ended:
                session.kill(reason)
                stopped += 1
        for session in function.sessions.values():
            await session.done.wait()
        await _in_thread(shutil.rmtree, function.code_dir.parent, True)
        if heir is not None:
            self.store.hand_over(function.id, heir.id, heir.manifest.needs.storage_mb)
        await self.store.shred(function.id)  # its key first, then its ciphertext (none if handed over)
        return stopped

    async def stop_sessions(self, reason: str = "stopped by the server") -> None:
        """Kill every running session and wait until each has ended (the box serves on)."""
        running = [session for session in self.sessions.values() if not session.ended]
        for session in running:
            session.kill(reason)
        for session in running:
            await session.done.wait()

    # --- forgetting ----------------------------------------------------------------------

    def _forget(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self.retention.forget(session)
        function = self.functions.get(session.function_id)
        if function is not None:
            function.sessions.pop(session.id, None)

    async def reap_forever(self, interval: float = 30.0) -> None:
        """Forget sessions that ended more than ``session_retention_seconds`` ago."""
        while True:
            await asyncio.sleep(interval)
            self.reap()

    def reap(self, now: float | None = None) -> None:
        """Forget the ended sessions whose retention time is over at ``now``."""
        for session in self.retention.due(now):
            self._forget(session)


async def _in_thread(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` off the event loop. A thread cannot be stopped: if we are cancelled,
    we still wait for it to end, so that whatever cleans up after it runs after it."""
    job = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        await asyncio.wait([job])
        raise
