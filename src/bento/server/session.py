"""A session: one invocation of a function, its instance, and its output stream."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from bento.protocol.frames import HEADER, Frame, FrameError, decode_header, decode_json, encode, encode_json
from bento.protocol.messages import FunctionError, SessionInfo, SessionState
from bento.server.buffer import OutputBuffer
from bento.server.instance import Instance, describe_exit


class Session:
    def __init__(self, session_id: str, function_id: str, entry: str, buffer_bytes: int) -> None:
        self.id = session_id
        self.function_id = function_id
        self.entry = entry
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.state = SessionState.RUNNING
        self.result: Any = None
        self.error: FunctionError | None = None
        self.reason = ""
        self.output = OutputBuffer(buffer_bytes)
        self.bytes_in = 0
        self.instance: Instance | None = None
        self.attachment: object | None = None  # the one client connection attached, if any
        self.done = asyncio.Event()
        self.started = asyncio.Event()  # set once the instance exists (or failed to)
        self._input_lock = asyncio.Lock()

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
            bytes_in=self.bytes_in,
            buffered=self.output.held,
        )

    # --- driving the instance ---------------------------------------------------------

    async def run(
        self, code_dir: str, module: str, args: list[Any], kwargs: dict[str, Any], wall_seconds: float
    ) -> None:
        """Start the instance and pump its frames until it exits. Owned by the supervisor."""
        try:
            self.instance = await Instance.start_in(code_dir)
        except OSError as exc:
            await self._finish(SessionState.ERROR, reason=f"the instance could not start: {exc}")
            return
        finally:
            self.started.set()
        instance = self.instance
        stderr = asyncio.ensure_future(instance.drain_stderr())
        try:
            start = {
                "code_dir": code_dir,
                "module": module,
                "entry": self.entry,
                "args": args,
                "kwargs": kwargs,
            }
            instance.writer.write(encode_json(Frame.START, start))
            async with asyncio.timeout(wall_seconds):
                await self._pump(instance)
                returncode = await instance.process.wait()
        except TimeoutError:
            instance.kill()
            await self._finish(SessionState.KILLED, reason=f"wall-clock limit of {wall_seconds:g} s reached")
        except (FrameError, ValueError) as exc:
            instance.kill()
            await self._finish(SessionState.KILLED, reason=f"protocol violation by the instance: {exc}")
        except asyncio.CancelledError:
            instance.kill()
            await self._finish(SessionState.KILLED, reason="stopped by the server")
            raise
        else:
            if not self.ended:
                tail = await stderr
                detail = f"; its last words: {tail.strip()[-1000:]}" if tail.strip() else ""
                await self._finish(
                    SessionState.ERROR,
                    reason=f"the function's process ended with {describe_exit(returncode)} "
                    f"before returning{detail}",
                )
        finally:
            instance.kill()
            await instance.process.wait()
            stderr.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stderr

    async def _pump(self, instance: Instance) -> None:
        reader = instance.reader
        while True:
            try:
                kind, length = decode_header(await reader.readexactly(HEADER.size))
                payload = await reader.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the instance closed its end: it is exiting
            if kind is Frame.OUTPUT:
                await self.output.put(payload)  # waits while the client is behind
            elif kind is Frame.RESULT:
                await self._finish(SessionState.COMPLETED, result=decode_json(payload).get("value"))
            elif kind is Frame.ERROR:
                error = FunctionError.model_validate(decode_json(payload))
                await self._finish(SessionState.ERROR, error=error, reason=f"{error.type}: {error.message}")
            else:
                raise FrameError(f"unexpected {kind.name} frame from the instance")

    async def _finish(
        self, state: SessionState, *, result: Any = None, error: FunctionError | None = None, reason: str = ""
    ) -> None:
        if self.ended:
            return
        self.state, self.result, self.error, self.reason = state, result, error, reason
        self.ended_at = time.time()
        await self.output.close()
        self.done.set()

    # --- input from the client ---------------------------------------------------------

    async def send_input(self, data: bytes) -> None:
        """Forward client bytes to the function; waits while the function is not reading."""
        await self.started.wait()
        if self.ended or self.instance is None:
            return
        async with self._input_lock:
            self.bytes_in += len(data)
            view = memoryview(data)
            with contextlib.suppress(ConnectionError):
                for start in range(0, len(view), 1 << 20):
                    self.instance.writer.write(encode(Frame.INPUT, bytes(view[start : start + (1 << 20)])))
                    await self.instance.writer.drain()

    async def close_input(self) -> None:
        await self.started.wait()
        if self.ended or self.instance is None:
            return
        async with self._input_lock:
            with contextlib.suppress(ConnectionError):
                self.instance.writer.write(encode(Frame.EOF))
                await self.instance.writer.drain()
