"""A session: one invocation of a function, its sandboxed instance, and its output stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from bento.errors import describe_validation
from bento.protocol.frames import HEADER, Frame, FrameError, decode_header, encode, encode_json
from bento.protocol.manifest import Manifest
from bento.protocol.messages import (
    EndCause,
    Ended,
    FunctionError,
    LogStream,
    ResourceUsage,
    SessionInfo,
    SessionState,
)
from bento.sandbox.host import SandboxHost, SandboxUnavailable
from bento.sandbox.instance import Exited, Instance
from bento.server.broker.service import Broker
from bento.server.buffer import OutputBuffer
from bento.server.channel import open_channel
from bento.server.logs import LogBuffer
from bento.server.outcome import usage_so_far, verdict
from bento.server.tokens import Payment

log = logging.getLogger("bento.session")
M = TypeVar("M", bound=BaseModel)
_STATE = {EndCause.COMPLETED: SessionState.COMPLETED, EndCause.ERROR: SessionState.ERROR}
_MB = 1 << 20
RETURN_GRACE = 2.0  # seconds an instance may take to exit after its function returned
LOG_BYTES = 1 << 20  # the newest log bytes a session keeps
_LOG_STREAMS = {b"1": LogStream.STDOUT, b"2": LogStream.STDERR}


class Session:
    def __init__(
        self, session_id: str, function_id: str, entry: str, buffer_bytes: int, log_bytes: int = LOG_BYTES
    ) -> None:
        self.id = session_id
        self.function_id = function_id
        self.entry = entry
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.state = SessionState.RUNNING
        self.cause: EndCause | None = None
        self.result: Any = None
        self.error: FunctionError | None = None
        self.reason = ""
        self.usage = ResourceUsage()
        self.output = OutputBuffer(buffer_bytes)
        self.logs = LogBuffer(log_bytes)
        self.instance: Instance | None = None
        self.attachment: object | None = None  # the one client connection attached, if any
        self.done = asyncio.Event()
        self.started = asyncio.Event()  # set once the instance exists (or failed to)
        # Set once the START frame is written (or the session is over): input sent sooner
        # would find no channel, or go before START, so it waits for this.
        self._takes_input = asyncio.Event()
        self.answered = asyncio.Event()  # set once the function has returned or raised
        self._writer: asyncio.StreamWriter | None = None
        self._input_lock = asyncio.Lock()
        self._verdict: tuple[EndCause, str] | None = None  # set when we decide to kill it
        self._broker: Broker | None = None
        self._driving: asyncio.Task[None] | None = None  # the task reading its channel
        self._stderr_tail = b""
        self.right_digest: bytes | None = None  # SHA-256 of the session right its invocation returned
        self.payment: Payment | None = None  # a blinded or narrowed token's use: spent once it starts

    @property
    def ended(self) -> bool:
        return self.state is not SessionState.RUNNING

    def info(self) -> SessionInfo:
        return SessionInfo(
            session_id=self.id,
            entry=self.entry,
            state=self.state,
            attached=self.attachment is not None,
            started_at=self.started_at,
            ended_at=self.ended_at,
            bytes_out=self.output.end,
            bytes_in=self.usage.bytes_in,
            buffered=self.output.held,
            output_expired=self.output.expired,
            cause=self.cause,
            reason=self.reason,
            usage=self._current_usage(),
        )

    def _current_usage(self) -> ResourceUsage:
        running = self.instance if not self.ended else None
        return usage_so_far(self.usage, self.output, self.logs, self._broker, running)

    def ended_event(self) -> Ended:
        assert self.cause is not None
        return Ended(
            state=self.state,
            cause=self.cause,
            result=self.result,
            error=self.error,
            reason=self.reason,
            usage=self._current_usage(),
        )

    # --- driving the instance ---------------------------------------------------------

    async def run(
        self,
        sandbox: SandboxHost,
        broker: Broker,
        code_dir: Path,
        manifest: Manifest,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> None:
        """Start the sandboxed instance, serve it until it exits, and say why it ended.

        Owned by the registry. Whatever happens (a hostile instance, a bug of ours, a
        cancellation) the session ends with a cause, and its instance is killed.
        """
        try:
            await self._run(sandbox, broker, code_dir, manifest, args, kwargs)
        except asyncio.CancelledError:
            self._end(EndCause.SHUTDOWN, "stopped by the server")
            raise
        except Exception as exc:
            log.exception("session %s failed", self.id)
            self._end(EndCause.ERROR, f"the box failed while running this session ({type(exc).__name__})")
        finally:
            if self.instance is not None:
                self.instance.kill()
            self.started.set()
            self._takes_input.set()
            await broker.aclose()  # also when the sandbox never started and the broker never served

    async def _run(
        self,
        sandbox: SandboxHost,
        broker: Broker,
        code_dir: Path,
        manifest: Manifest,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> None:
        needs = manifest.needs
        try:
            instance = await sandbox.acquire(code_dir, needs)
        except (OSError, SandboxUnavailable) as exc:
            self._end(EndCause.ERROR, f"the sandbox could not start: {exc}")
            return
        self.instance, self._broker = instance, broker
        if self.payment is not None:
            self.payment.spend()
        self.started.set()
        try:
            start = self._start_frame(sandbox, instance, manifest, args, kwargs)
            if self._verdict is None:  # else it was killed while it was starting
                async with asyncio.timeout(needs.wall_seconds):
                    try:
                        await self._serve(instance, broker, start, needs.output_mb * _MB)
                    except* FrameError as group:
                        problem = group.exceptions[0]
                        broke = (EndCause.POLICY, f"broke the instance protocol: {problem}")
                        self._verdict = self._verdict or broke
        except TimeoutError:
            self._verdict = self._verdict or (
                EndCause.WALL,
                f"wall-clock limit of {needs.wall_seconds} s reached",
            )
        finally:
            instance.kill()
            with contextlib.suppress(OSError):
                instance.broker.close()
            exited = await asyncio.shield(instance.wait())  # a kill is delivered at once
        self._conclude(exited, needs.cpu_seconds)

    def _start_frame(
        self,
        sandbox: SandboxHost,
        instance: Instance,
        manifest: Manifest,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> bytes:
        start = {
            "code_dir": "/function",
            "module": manifest.module,
            "entry": self.entry,
            "args": args,
            "kwargs": kwargs,
            "confine": instance.confinement,
        }
        return encode_json(Frame.START, start)

    async def _serve(self, instance: Instance, broker: Broker, start: bytes, output_limit: int) -> None:
        """Everything an instance needs while it runs, in one task group: its broker, its stderr,
        its channel. When one part fails, the others are cancelled and the caller kills it."""
        reader, self._writer = await open_channel(instance.channel)
        try:
            async with asyncio.TaskGroup() as group:
                brokering = group.create_task(broker.serve(instance.broker))
                draining = group.create_task(self._drain_stderr(instance))
                self._driving = group.create_task(self._drive(instance, reader, start, output_limit))
                await asyncio.wait([self._driving])  # ends when the instance has exited
                instance.kill()  # whatever it left behind goes too
                brokering.cancel()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RETURN_GRACE):
                        await asyncio.wait([draining])  # its last words, already written
                draining.cancel()
        finally:
            self._writer.close()

    async def _drive(
        self, instance: Instance, reader: asyncio.StreamReader, start: bytes, output_limit: int
    ) -> None:
        assert self._writer is not None
        self._writer.write(start)
        self._takes_input.set()
        await self._pump(reader, output_limit)
        # It has ended its side: hang up ours, so that it stops waiting for more input and
        # exits (runtime.hang_up); input the client sends from now on goes nowhere.
        self._writer.close()
        if self._verdict is not None:
            # It has answered: a thread it left behind must not keep the session open.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETURN_GRACE):
                    await instance.wait()
        else:
            await instance.wait()

    async def _drain_stderr(self, instance: Instance, limit: int = 4096) -> None:
        """Read the instance's stderr all along (a full pipe would block it); keep the end."""
        assert instance.process.stderr is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), instance.process.stderr
        )
        try:
            while chunk := await reader.read(65536):
                self._stderr_tail = (self._stderr_tail + chunk)[-limit:]
        finally:
            transport.close()

    async def _pump(self, reader: asyncio.StreamReader, output_limit: int) -> None:
        while True:
            try:
                kind, length = decode_header(await reader.readexactly(HEADER.size))
                payload = await reader.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the instance closed its end: it is exiting
            if kind in (Frame.OUTPUT, Frame.LOG):
                if self.output.end + self.logs.total + len(payload) > output_limit:
                    self._verdict = (
                        EndCause.OUTPUT,
                        f"sent more than its output limit of {output_limit} bytes (output and logs)",
                    )
                    if self.instance is not None:
                        self.instance.kill()
                    return
                if kind is Frame.LOG:
                    await self.logs.put(_log_stream(payload[:1]), payload[1:])
                else:
                    await self.output.put(payload)  # waits while the client is behind
            elif kind is Frame.READY:
                continue  # a cold instance announces itself too
            elif kind is Frame.RESULT:
                self.result = _parse(kind, _Result, payload).value
                self._verdict = self._verdict or (EndCause.COMPLETED, "")
                self.answered.set()
            elif kind is Frame.ERROR:
                self.error = _parse(kind, FunctionError, payload)
                cause = EndCause.MEMORY if self.error.type == "MemoryError" else EndCause.ERROR
                self._verdict = self._verdict or (cause, f"{self.error.type}: {self.error.message}")
                self.answered.set()
            else:
                raise FrameError(f"unexpected {kind.name} frame from the instance")

    def _conclude(self, exited: Exited, cpu_limit: int) -> None:
        """Say why the session ended, from what we decided and what the kernel reports."""
        self.usage.cpu_seconds = round(exited.usage.cpu_seconds, 3)
        self.usage.peak_memory_bytes = exited.usage.peak_memory_bytes
        self._end(*verdict(exited, self._verdict, cpu_limit, self._stderr_tail))

    def _end(self, cause: EndCause, reason: str = "") -> None:
        """The session has ended (synchronous: nothing can interrupt it half-way)."""
        if self.ended:
            return
        self.cause, self.reason = cause, reason
        self.state = _STATE.get(cause, SessionState.KILLED)
        self.ended_at = time.time()
        self.logs.close()
        self.output.close()
        self.done.set()

    def kill(self, reason: str) -> None:
        """Stop the instance; if it is still starting, it is killed as soon as it exists."""
        if self.ended:
            return
        self._verdict = self._verdict or (EndCause.SHUTDOWN, reason)
        if self.instance is not None:
            self.instance.kill()
        if self._driving is not None:
            self._driving.cancel()  # it may wait for a client to take output: nobody will

    def abandon(self, reason: str) -> None:
        """End the session now if it has not ended (its task never ran): kill what it started.
        A blinded or narrowed token's use that paid for an instance that never existed is good again."""
        if self.payment is not None:
            self.payment.release()
        if not self.ended:
            if self.instance is not None:
                self.instance.kill()
            self._end(EndCause.SHUTDOWN, reason)

    # --- input from the client ---------------------------------------------------------

    async def send_input(self, data: bytes) -> None:
        """Forward client bytes to the function; waits while the function is not reading."""
        await self._takes_input.wait()
        if self.ended or self._writer is None:
            return
        async with self._input_lock:
            self.usage.bytes_in += len(data)
            view = memoryview(data)
            with contextlib.suppress(ConnectionError):
                for start in range(0, len(view), 1 << 20):
                    self._writer.write(encode(Frame.INPUT, bytes(view[start : start + (1 << 20)])))
                    await self._writer.drain()

    async def close_input(self) -> None:
        await self._takes_input.wait()
        if self.ended or self._writer is None:
            return
        async with self._input_lock:
            with contextlib.suppress(ConnectionError):
                self._writer.write(encode(Frame.EOF))
                await self._writer.drain()


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: Any = None


def _parse(kind: Frame, model: type[M], payload: bytes) -> M:
    """A JSON frame from the instance, as ``model``: bounded in depth, any flaw a FrameError."""
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise FrameError(f"malformed {kind.name} frame: {describe_validation(exc)}") from None


def _log_stream(tag: bytes) -> LogStream:
    stream = _LOG_STREAMS.get(tag)
    if stream is None:
        raise FrameError(f"a LOG frame must start with b'1' or b'2', not {tag!r}")
    return stream
