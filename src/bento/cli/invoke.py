"""``bento invoke``, ``bento attach`` and ``bento logs``: run an entry point and talk to its session.

The function's output goes to stdout; what it prints (its logs) to stderr, dimmed, so
the two never mix. A connection that drops is re-attached by the client library; the
user hears of it only if the box stays unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import importlib
import json
import os
import shlex
import stat
import sys
from typing import Any

from bento.cli import arguments, client_options, cover_options
from bento.client import capability
from bento.client.box import Box
from bento.client.keyring import Deployment, Keyring
from bento.client.stream import Reconnecting, SessionStream
from bento.errors import BentoError
from bento.protocol.errors import ExitStatus
from bento.protocol.messages import FunctionError, Log, LogStream, ResourceUsage

QUIET_TRIES = 2  # re-attach tries made before the user is told the box is hard to reach


def add_invoke(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "ARGS and the values of --kw are JSON (3, true, '\"text\"', '{\"k\": 1}'), or plain strings "
        "with --str; anything else is an error. Nothing is ever evaluated. Ctrl-C detaches: the "
        "session goes on, and `bento attach SESSION` picks it up."
    )
    parser.add_argument(
        "function", help="function id, its name if unique in the keyring, or a capability (bento tokens)"
    )
    parser.add_argument("entry", help="the entry point: a top-level function of the module")
    parser.add_argument("args", nargs="*", metavar="ARG", help="positional arguments, JSON")
    parser.add_argument(
        "--kw", action="append", default=[], metavar="NAME=VALUE", help="a keyword argument, VALUE JSON"
    )
    parser.add_argument("--str", action="store_true", help="every ARG and --kw VALUE is a plain string")
    parser.add_argument("--detach", action="store_true", help="start the session and print its id only")
    _no_input(parser)
    cover_options.add(parser)
    client_options.add(parser)
    parser.set_defaults(handler=cmd_invoke)


def add_attach(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Output resumes after the last byte any client took in, logs after the last line shown "
        "here (`bento logs SESSION` shows them all). Standard input goes to the function; the "
        "function's input is closed only when you close it (Ctrl-D, or the end of piped input), "
        "not when there is none (a script's /dev/null)."
    )
    parser.add_argument("session", help="session id")
    _no_input(parser)
    client_options.add(parser)
    parser.set_defaults(handler=cmd_attach)


def _no_input(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-input", action="store_true", help="send nothing to the function and leave its input open"
    )


def add_logs(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "What the session's function printed (print, stdout, stderr, warnings, logging), as far "
        "as the box still holds it: the newest 1 MiB, while it keeps the session."
    )
    parser.add_argument("session", help="session id")
    client_options.add(parser)
    parser.set_defaults(handler=cmd_logs)


def cmd_invoke(args: argparse.Namespace) -> int:
    positional, keywords = arguments.parse(args.args, args.kw, strings=args.str)
    keyring = Keyring(args.keyring)
    deployment, kept = capability.resolve(args.function, keyring)
    if args.detach and not kept:
        raise BentoError(
            "a session started with a capability cannot be attached again later",
            fix="run it without --detach (a blinded capability is good for one invocation)",
        )
    started: list[str] = []  # the session id, once there is one
    cover = cover_options.from_args(args)
    if cover is not None and args.detach:
        raise BentoError("--cover covers an attached session; --detach attaches none", fix="drop one of them")

    async def run() -> int:
        printing = _load_output()
        async with Box(deployment.onion, socks=args.socks, nickname=deployment.relay_nickname) as box:
            if args.detach:
                session_id = await box.invoke(deployment, args.entry, positional, keywords)
                started.append(session_id)
                await asyncio.to_thread(
                    keyring.add_session,
                    session_id,
                    deployment.function_id,
                    deployment.session_rights.get(session_id),
                )
                await printing
                from bento.cli.output import console, emit_json

                if args.json:
                    emit_json({"session_id": session_id})
                else:
                    console.print(session_id)
                return ExitStatus.OK
            # Invoke and attach in one round trip: output follows the box's first answer.
            stream = await box.start(deployment, args.entry, positional, keywords, cover=cover)
            started.append(stream.session_id)
            streams.append(stream)
            if kept:
                await asyncio.to_thread(
                    keyring.add_session,
                    stream.session_id,
                    deployment.function_id,
                    deployment.session_rights.get(stream.session_id),
                )
            await printing
            if not args.json:
                from bento.cli.output import errors

                errors.print(f"[dim]session {stream.session_id}[/dim]")
            given = Input.NONE if args.no_input else Input.CLOSE_AT_END
            return await _talk(stream, args.json, given, deployment)

    streams: list[SessionStream] = []
    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return _detached(args, started[0]) if started else ExitStatus.INTERRUPTED
    finally:
        if kept and streams and streams[0].log_offset:  # logs were shown: attach resumes after them
            keyring.record_logs_seen(streams[0].session_id, streams[0].log_offset)


def _load_output() -> asyncio.Future[object]:
    """``bento.cli.output``, imported in a worker thread: rich, which prints the lines on
    stderr, takes longer to import than the box takes to answer on a warm circuit, so it
    loads while the invocation crosses Tor instead of after the answer (the event loop
    sleeps in that round trip; the import would block it). Await it before printing."""
    return asyncio.ensure_future(asyncio.to_thread(importlib.import_module, "bento.cli.output"))


def _detached(args: argparse.Namespace, session_id: str) -> int:
    """Ctrl-C left the session running on its box: say so, and how to get back to it."""
    command = ["bento", "attach", session_id]
    if args.keyring is not None:
        command += ["--keyring", shlex.quote(str(args.keyring))]
    if args.socks != client_options.default_socks():
        command += ["--socks", args.socks]
    attach = " ".join(command)
    kill = attach.replace("bento attach", "bento kill", 1)
    from bento.cli.output import emit_json, errors

    if args.json:
        emit_json({"session_id": session_id, "detached": True, "attach": attach, "kill": kill})
    else:
        errors.print(
            f"\n[yellow]detached[/yellow]: session {session_id} goes on on its box. "
            f"Attach again with:\n  {attach}\nor stop it with:\n  {kill}"
        )
    return ExitStatus.INTERRUPTED


def cmd_attach(args: argparse.Namespace) -> int:
    from bento.cli.output import errors

    keyring = Keyring(args.keyring)
    deployment = keyring.function_of_session(args.session)
    logs_from = keyring.logs_seen.get(args.session, 0)
    streams: list[SessionStream] = []

    async def run() -> int:
        async with Box(deployment.onion, socks=args.socks, nickname=deployment.relay_nickname) as box:
            stream = await box.attach(deployment, args.session, logs_from=logs_from)
            streams.append(stream)
            if logs_from and not args.json:
                errors.print(
                    f"[dim]logs resume after the {logs_from} bytes shown before "
                    f"(`bento logs {args.session}` shows them all)[/dim]"
                )
            given = Input.NONE if args.no_input else Input.CLOSE_IF_ANY
            return await _talk(stream, args.json, given, deployment)

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return _detached(args, args.session)
    finally:
        if streams:
            keyring.record_logs_seen(args.session, streams[0].log_offset)


def cmd_logs(args: argparse.Namespace) -> int:
    from bento.cli.output import emit_json, errors

    keyring = Keyring(args.keyring)
    deployment = keyring.function_of_session(args.session)

    async def fetch() -> Any:
        async with Box(deployment.onion, socks=args.socks, nickname=deployment.relay_nickname) as box:
            return await box.logs(deployment, args.session)

    held = asyncio.run(fetch())
    if args.json:
        emit_json(held.model_dump(mode="json"))
        return ExitStatus.OK
    if held.dropped:
        errors.print(f"[dim]({held.dropped} bytes of older logs are no longer kept)[/dim]")
    for log in held.logs:
        stream = sys.stdout if log.stream is LogStream.STDOUT else sys.stderr
        stream.write(log.text)
    sys.stdout.flush()
    return ExitStatus.OK


def _show_log(log: Log) -> None:
    from bento.cli.output import errors

    style = "dim" if log.stream is LogStream.STDOUT else "dim yellow"
    errors.print(log.text.rstrip("\n"), style=style, markup=False, highlight=False)


def _reconnecting(session_id: str) -> Reconnecting:
    def tell(attempt: int, why: BaseException) -> None:
        from bento.cli.output import errors

        if attempt > QUIET_TRIES:  # a short pause is not news; a box that stays away is
            errors.print(f"[yellow]the box is unreachable ({why}); re-attaching, try {attempt}…[/yellow]")

    return tell


class Input(enum.Enum):
    """What standard input does for the function's input, whose end the function sees once."""

    CLOSE_AT_END = "close-at-end"  # invoke: input ends when stdin does (empty stdin: no input)
    CLOSE_IF_ANY = "close-if-any"  # attach: closed by the end of input that brought something, or
    # by Ctrl-D at a terminal; an empty stdin (/dev/null, a script) leaves the function's input open
    NONE = "none"  # --no-input: stdin is not read, the function's input stays open


async def _talk(stream: SessionStream, as_json: bool, given: Input, deployment: Deployment) -> int:
    """Pump stdin to the session, its output to stdout and its logs to stderr, until it ends."""
    from bento.cli.output import emit_json, errors

    collected = bytearray()
    if not as_json:
        stream.on_log = _show_log
    stream.on_reconnect = _reconnecting(stream.session_id)
    async with stream:
        feeder = asyncio.ensure_future(_feed_stdin(stream, given))
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
                "session_id": stream.session_id,
                "state": ended.state.value,
                "result": ended.result,
                "error": _error(ended.error, deployment),
                "reason": ended.reason,
                "cause": ended.cause.value,
                "usage": ended.usage.model_dump(),
                "output": collected.decode(errors="replace"),
                "logs": [{"stream": log.stream.value, "text": log.text} for log in stream.logs],
                "reattached": stream.reattached,
            }
        )
    elif ended.state.value == "completed":
        errors.print(f"[green]completed[/green], result: {json.dumps(ended.result)}")
        errors.print(f"[dim]{_usage(ended.usage)}[/dim]")
    else:
        if ended.error is not None and ended.error.traceback:
            errors.print(deployment.local_paths(ended.error.traceback).rstrip(), markup=False)
        errors.print(f"[red]{ended.state.value} ({ended.cause.value})[/red]: {ended.reason}")
        errors.print(f"[dim]{_usage(ended.usage)}[/dim]")
    return ExitStatus.for_session(ended.state.value)


def _error(error: FunctionError | None, deployment: Deployment) -> dict[str, Any] | None:
    """The function's error, its traceback naming the files deployed (not the box's copies)."""
    if error is None:
        return None
    return {**error.model_dump(), "traceback": deployment.local_paths(error.traceback)}


def _usage(usage: ResourceUsage) -> str:
    text = (
        f"used {usage.cpu_seconds:.2f} s CPU, {usage.peak_memory_bytes / 2**20:.1f} MiB peak memory, "
        f"{usage.bytes_out} B out, {usage.bytes_in} B in, {usage.log_bytes} B of logs"
    )
    if usage.network_granted or usage.network_denied:
        text += f", {usage.network_granted} connection(s), {usage.network_denied} refused"
    return text


async def _feed_stdin(stream: SessionStream, given: Input) -> None:
    """Send stdin to the function as it arrives; at its end, close the function's input
    where ``given`` says the user closed it."""
    fd = sys.stdin.fileno() if sys.stdin is not None and given is not Input.NONE else -1
    if fd < 0:
        if given is Input.CLOSE_AT_END:
            await stream.close_input()
        return
    sent = False
    mode = os.fstat(fd).st_mode
    terminal = os.isatty(fd)
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or terminal:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0))
        while chunk := await reader.read(65536):
            await stream.send(chunk)
            sent = True
    else:  # a regular file or /dev/null: reads never block for long
        while chunk := os.read(fd, 65536):
            await stream.send(chunk)
            sent = True
    if given is Input.CLOSE_AT_END or sent or terminal:  # Ctrl-D at a terminal is the user's close
        await stream.close_input()
