"""``bento invoke`` and ``bento attach``: run an entry point and talk to its session."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import stat
import sys

from bento.cli import arguments, client_options
from bento.cli.output import console, emit_json, errors
from bento.client.box import Box
from bento.client.keyring import Deployment, Keyring
from bento.client.stream import SessionStream
from bento.errors import BentoError
from bento.protocol.messages import ResourceUsage, SessionState


def add_invoke(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "ARGS and the values of --kw are JSON (3, true, '\"text\"', '{\"k\": 1}'), or plain strings "
        "with --str; anything else is an error. Nothing is ever evaluated. Ctrl-C detaches: the "
        "session goes on, and `bento attach SESSION` picks it up."
    )
    parser.add_argument("function", help="function id, or its name if unique in the keyring")
    parser.add_argument("entry", help="the entry point: a top-level function of the module")
    parser.add_argument("args", nargs="*", metavar="ARG", help="positional arguments, JSON")
    parser.add_argument(
        "--kw", action="append", default=[], metavar="NAME=VALUE", help="a keyword argument, VALUE JSON"
    )
    parser.add_argument("--str", action="store_true", help="every ARG and --kw VALUE is a plain string")
    parser.add_argument("--detach", action="store_true", help="start the session and print its id only")
    client_options.add(parser)
    parser.set_defaults(handler=cmd_invoke)


def add_attach(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", help="session id")
    client_options.add(parser)
    parser.set_defaults(handler=cmd_attach)


def cmd_invoke(args: argparse.Namespace) -> int:
    positional, keywords = arguments.parse(args.args, args.kw, strings=args.str)
    keyring = Keyring(args.keyring)
    deployment = keyring.function(args.function)
    started: list[str] = []  # the session id, once there is one

    async def run() -> int:
        async with Box(deployment.onion, socks=args.socks) as box:
            session_id = await box.invoke(deployment, args.entry, positional, keywords)
            started.append(session_id)
            await asyncio.to_thread(keyring.add_session, session_id, deployment.function_id)
            if args.detach:
                if args.json:
                    emit_json({"session_id": session_id})
                else:
                    console.print(session_id)
                return 0
            if not args.json:
                errors.print(f"[dim]session {session_id}[/dim]")
            return await _talk(box, deployment, session_id, args.json)

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return _detached(args, started[0]) if started else 130


def _detached(args: argparse.Namespace, session_id: str) -> int:
    """Ctrl-C left the session running on its box: say so, and how to get back to it."""
    command = ["bento", "attach", session_id]
    if args.keyring is not None:
        command += ["--keyring", shlex.quote(str(args.keyring))]
    if args.socks != client_options.default_socks():
        command += ["--socks", args.socks]
    attach = " ".join(command)
    kill = attach.replace("bento attach", "bento kill", 1)
    if args.json:
        emit_json({"session_id": session_id, "detached": True, "attach": attach, "kill": kill})
    else:
        errors.print(
            f"\n[yellow]detached[/yellow]: session {session_id} goes on on its box. "
            f"Attach again with:\n  {attach}\nor stop it with:\n  {kill}"
        )
    return 130


def cmd_attach(args: argparse.Namespace) -> int:
    keyring = Keyring(args.keyring)
    deployment = keyring.function_of_session(args.session)

    async def run() -> int:
        async with Box(deployment.onion, socks=args.socks) as box:
            return await _talk(box, deployment, args.session, args.json)

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return _detached(args, args.session)


async def _talk(box: Box, deployment: Deployment, session_id: str, as_json: bool) -> int:
    """Pump stdin to the session and its output to stdout until it ends."""
    collected = bytearray()
    async with await box.attach(deployment, session_id) as stream:
        feeder = asyncio.ensure_future(_feed_stdin(stream))
        try:
            async for chunk in stream:
                if as_json:
                    collected += chunk
                else:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, BentoError):
                await feeder
    ended = stream.ended
    assert ended is not None
    if as_json:
        emit_json(
            {
                "session_id": session_id,
                "state": ended.state.value,
                "result": ended.result,
                "error": ended.error.model_dump() if ended.error else None,
                "reason": ended.reason,
                "cause": ended.cause.value,
                "usage": ended.usage.model_dump(),
                "output": collected.decode(errors="replace"),
            }
        )
    elif ended.state is SessionState.COMPLETED:
        errors.print(f"[green]completed[/green], result: {json.dumps(ended.result)}")
        errors.print(f"[dim]{_usage(ended.usage)}[/dim]")
    else:
        if ended.error is not None and ended.error.traceback:
            errors.print(ended.error.traceback.rstrip(), markup=False)
        errors.print(f"[red]{ended.state.value} ({ended.cause.value})[/red]: {ended.reason}")
        errors.print(f"[dim]{_usage(ended.usage)}[/dim]")
    return {SessionState.COMPLETED: 0, SessionState.ERROR: 1}.get(ended.state, 2)


def _usage(usage: ResourceUsage) -> str:
    text = (
        f"used {usage.cpu_seconds:.2f} s CPU, {usage.peak_memory_bytes / 2**20:.1f} MiB peak memory, "
        f"{usage.bytes_out} B out, {usage.bytes_in} B in"
    )
    if usage.network_granted or usage.network_denied:
        text += f", {usage.network_granted} connection(s), {usage.network_denied} refused"
    return text


async def _feed_stdin(stream: SessionStream) -> None:
    """Send stdin to the function as it arrives; at its end, close the function's input."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd < 0:
        await stream.close_input()
        return
    mode = os.fstat(fd).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd):
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0))
        while chunk := await reader.read(65536):
            await stream.send(chunk)
    else:  # a regular file or /dev/null: reads never block for long
        while chunk := os.read(fd, 65536):
            await stream.send(chunk)
    await stream.close_input()
