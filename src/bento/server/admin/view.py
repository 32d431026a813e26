"""The operator's operations on a box's registry: list, measure, kill, evict, pause.

Built from what the registry, its sessions and its store already know; nothing here keeps
figures of its own (the registry's ledger keeps the counts that outlive sessions).
"""

from __future__ import annotations

from bento.protocol.errors import ErrorCode
from bento.protocol.messages import SessionState
from bento.server.admin.controls import PAUSABLE, Pausable
from bento.server.admin.models import (
    BoxUsage,
    Evicted,
    Figures,
    FunctionList,
    FunctionRow,
    FunctionUsage,
    PauseState,
    SessionList,
    SessionRow,
)
from bento.server.function import Function
from bento.server.refusal import BoxError
from bento.server.registry import Registry
from bento.server.session import Session

_MB = 1 << 20
EVICTED_REASON = "its function was evicted by the box's operator"
KILLED_REASON = "killed by the box's operator"


class OperatorView:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # --- reading ------------------------------------------------------------------------

    def functions(self) -> FunctionList:
        return FunctionList(functions=[self._function_row(f) for f in self.registry.functions.values()])

    def sessions(self) -> SessionList:
        return SessionList(sessions=[self._session_row(s) for s in self.registry.sessions.values()])

    def usage(self) -> BoxUsage:
        registry = self.registry
        per_function = [self._function_usage(f) for f in registry.functions.values()]
        running = sum(f.instances for f in per_function)
        box = Figures(
            instances=running,
            **registry.ledger.box_totals(),
            memory_bytes=sum(f.memory_bytes for f in per_function),
            storage_bytes=sum(f.storage_bytes for f in per_function),
        )
        return BoxUsage(
            box=box,
            functions=per_function,
            refusals=dict(registry.ledger.refusals),
            paused=self.paused(),
            memory_limit_bytes=registry.policy.total_memory_mb * _MB,
            instances_limit=registry.policy.instances_total,
        )

    def paused(self) -> list[Pausable]:
        return [what for what in PAUSABLE if what in self.registry.controls.paused]

    # --- acting -------------------------------------------------------------------------

    async def kill(self, session_id: str) -> SessionRow:
        session = self.registry.sessions.get(session_id)
        if session is None:
            raise BoxError(
                ErrorCode.UNKNOWN_SESSION,
                f"no session {session_id} on this box",
                "list them with `bento box sessions`",
            )
        session.kill(KILLED_REASON)
        await session.done.wait()
        return self._session_row(session)

    async def evict(self, function_id: str) -> Evicted:
        """Stop the function's instances, delete its code and storage, void its tokens; its
        clients are told the operator evicted it (not that it never existed)."""
        function = self._function(function_id)
        self.registry.controls.evicted(function.id)
        stopped = await self.registry.shutdown(function, reason=EVICTED_REASON)
        return Evicted(function_id=function.id, name=function.manifest.name, sessions_stopped=stopped)

    def pause(self, what: list[Pausable]) -> PauseState:
        self.registry.controls.pause(set(what))
        return PauseState(paused=self.paused())

    def resume(self, what: list[Pausable]) -> PauseState:
        self.registry.controls.resume(set(what))
        return PauseState(paused=self.paused())

    # --- rows ---------------------------------------------------------------------------

    def _function(self, function_id: str) -> Function:
        function = self.registry.functions.get(function_id)
        if function is None:
            raise BoxError(
                ErrorCode.UNKNOWN_FUNCTION,
                f"no function {function_id} on this box",
                "list them with `bento box functions`",
            )
        return function

    def _running(self, function: Function | None = None) -> list[Session]:
        sessions = self.registry.sessions if function is None else function.sessions
        return [s for s in sessions.values() if s.state is SessionState.RUNNING]

    def _storage(self, function: Function) -> tuple[int, int]:
        store = self.registry.store.existing(function.id)
        if store is None:
            return 0, function.manifest.needs.storage_mb * _MB
        return store.used, store.quota

    def _function_row(self, function: Function) -> FunctionRow:
        used, quota = self._storage(function)
        return FunctionRow(
            function_id=function.id,
            name=function.manifest.name,
            created_at=function.created_at,
            entry_points=function.entry_points,
            instances=len(self._running(function)),
            sessions=len(function.sessions),
            storage_bytes=used,
            storage_quota_bytes=quota,
        )

    def _function_usage(self, function: Function) -> FunctionUsage:
        running = self._running(function)
        return FunctionUsage(
            function_id=function.id,
            name=function.manifest.name,
            instances=len(running),
            **self.registry.ledger.function_totals(function.id),
            memory_bytes=len(running) * function.manifest.needs.memory_mb * _MB,
            storage_bytes=self._storage(function)[0],
            refusals=self.registry.ledger.function_refusals(function.id),
        )

    def _session_row(self, session: Session) -> SessionRow:
        info = session.info()
        function = self.registry.functions.get(session.function_id)
        return SessionRow(
            session_id=session.id,
            function_id=session.function_id,
            function_name=function.manifest.name if function else "",
            entry=session.entry,
            state=info.state,
            attached=info.attached,
            started_at=info.started_at,
            ended_at=info.ended_at,
            cpu_seconds=info.usage.cpu_seconds,
            peak_memory_bytes=info.usage.peak_memory_bytes,
            bytes_in=info.usage.bytes_in,
            bytes_out=info.usage.bytes_out,
            circuits=info.usage.circuits,
            onion_services=info.usage.onion_services,
            reason=info.reason,
        )
