"""A client attached to a session: its output and logs out, its input and acknowledgements in.

Over one WebSocket (or a covered one, bento.server.cover). Output is delivered exactly
once: the client acknowledges what it took, and a new attachment resumes at the last
acknowledged byte (docs/api.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from bento.errors import teardown
from bento.protocol.messages import Ack, Attached, InputEnd
from bento.server.cover import CLOSED, CoveredSocket, StreamSocket
from bento.server.session import Session


async def attach(session: Session, websocket: StreamSocket, logs_from: int) -> None:
    """Stream the session's output to this client and its input to the function.

    The newest attachment wins: an older connection (say, one whose network died
    unnoticed) is closed, and output resumes at the last acknowledged byte.
    """
    previous = session.attachment
    session.attachment = websocket
    if isinstance(previous, (WebSocket, CoveredSocket)):
        with teardown("closing a replaced attachment", *CLOSED):
            await previous.close(4001, "another client attached to this session")
    try:
        async with asyncio.TaskGroup() as group:
            if isinstance(websocket, CoveredSocket):  # its cover ends at most `linger` s after the session
                lingering = group.create_task(websocket.linger(session.done))
            lock = asyncio.Lock()  # one message at a time from the two senders
            logs = group.create_task(_until_gone(_send_logs(session, websocket, logs_from, lock)))
            sender = group.create_task(_until_gone(_send_output(session, websocket, logs, lock)))
            await _receive_input(session, websocket)
            sender.cancel()
            logs.cancel()
            if isinstance(websocket, CoveredSocket):
                lingering.cancel()
    except* (WebSocketDisconnect, ConnectionError, RuntimeError):
        pass  # the client went away; the session runs on, its output buffered
    finally:
        if session.attachment is websocket:
            session.attachment = None


async def _until_gone(sending: Awaitable[None]) -> None:
    """Send until the client goes. A send that fails because it went must not cancel the
    reading of what it sent before its close: its last acknowledgements (seen: 256 KiB sent
    again to the next attachment, as nobody read their acks)."""
    with contextlib.suppress(WebSocketDisconnect, ConnectionError, RuntimeError):
        await sending


async def _send_output(
    session: Session, websocket: StreamSocket, logs: asyncio.Task[None], lock: asyncio.Lock
) -> None:
    offset = session.output.acked
    async with lock:
        await websocket.send_text(Attached(offset=offset).model_dump_json())
    while True:
        data = await session.output.read(offset)
        if data is None:
            break
        # The buffer reads from `acked` when an ack got ahead of us (a late ack from a client's
        # previous connection): say where these bytes start, so the client skips nothing.
        start = max(offset, session.output.acked)
        async with lock:
            if start != offset:
                await websocket.send_text(Attached(offset=start).model_dump_json())
            await websocket.send_bytes(data)
        offset = start + len(data)
    await logs  # every log line before the end
    async with lock:
        await websocket.send_text(session.ended_event().model_dump_json())


async def _send_logs(session: Session, websocket: StreamSocket, offset: int, lock: asyncio.Lock) -> None:
    while (entries := await session.logs.read(offset)) is not None:
        for entry in entries:
            async with lock:
                await websocket.send_text(entry.model_dump_json())
            offset = entry.offset + len(entry.text.encode())


async def _receive_input(session: Session, websocket: StreamSocket) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            await session.send_input(message["bytes"])
        elif message.get("text") is not None:
            await _control(session, message["text"])


async def _control(session: Session, text: str) -> None:
    for model in (Ack, InputEnd):
        try:
            event = model.model_validate_json(text)
        except ValidationError:
            continue
        if isinstance(event, Ack):
            session.output.ack(event.offset)
        else:
            await session.close_input()
        return
    # Unknown control messages are ignored: newer clients may send more.
