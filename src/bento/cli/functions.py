"""Client commands: boxes, descriptor, deploy, invoke, attach, sessions, shutdown."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import stat
import sys
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from bento.cli import client_options
from bento.cli.output import console, emit_json, errors
from bento.client.box import Box
from bento.client.discovery import BoxInfo, discover, resolve
from bento.client.keyring import Deployment, Keyring
from bento.client.stream import SessionStream
from bento.errors import BentoError, describe_validation
from bento.protocol.manifest import Manifest
from bento.protocol.messages import ResourceUsage, SessionState
from bento.protocol.policy import violations

PROGRESS_ABOVE = 1 << 20  # show a progress bar for uploads larger than this


def register(commands: Any) -> None:
    boxes = commands.add_parser("boxes", help="list the Bento boxes in the Tor consensus")
    boxes.add_argument(
        "--fits", type=Path, metavar="MANIFEST",
        help="only boxes whose policy admits this manifest (fetches each descriptor over Tor)",
    )  # fmt: skip
    client_options.add(boxes, control=True)
    boxes.set_defaults(handler=cmd_boxes)

    desc = commands.add_parser("descriptor", help="fetch and verify a box's descriptor")
    desc.add_argument("box", help="nickname, fingerprint or onion address")
    client_options.add(desc, control=True)
    desc.set_defaults(handler=cmd_descriptor)

    deploy = commands.add_parser("deploy", help="upload a function to a box")
    deploy.add_argument("file", type=Path, help="a .py module, a directory, or a .tar.gz archive")
    deploy.add_argument("--box", required=True, help="nickname, fingerprint or onion address")
    deploy.add_argument("--manifest", type=Path, help="manifest file (TOML or JSON)")
    deploy.add_argument("--name", help="the function's name (default: the file's name)")
    client_options.add(deploy, control=True)
    deploy.set_defaults(handler=cmd_deploy)

    invoke = commands.add_parser(
        "invoke",
        help="run an entry point; streams output to stdout and stdin to the function",
        description="ARGS are JSON values (3, true, '\"text\"', '{\"k\": 1}'); anything that is not "
        "valid JSON is passed as a string. Nothing is ever evaluated.",
    )
    invoke.add_argument("function", help="function id, or its name if unique in the keyring")
    invoke.add_argument("entry", help="the entry point: a top-level function of the module")
    invoke.add_argument("args", nargs="*", help="JSON arguments")
    invoke.add_argument("--detach", action="store_true", help="start the session and print its id only")
    client_options.add(invoke)
    invoke.set_defaults(handler=cmd_invoke)

    attach = commands.add_parser("attach", help="re-attach to a session; resumes where output stopped")
    attach.add_argument("session", help="session id")
    client_options.add(attach)
    attach.set_defaults(handler=cmd_attach)

    sessions = commands.add_parser("sessions", help="list a function's sessions")
    sessions.add_argument("function", help="function id or name")
    client_options.add(sessions)
    sessions.set_defaults(handler=cmd_sessions)

    shutdown = commands.add_parser("shutdown", help="stop a function and delete it from its box")
    shutdown.add_argument("function", help="function id or name")
    client_options.add(shutdown)
    shutdown.set_defaults(handler=cmd_shutdown)


# --- boxes and descriptors --------------------------------------------------------------


def cmd_boxes(args: argparse.Namespace) -> int:
    boxes = discover(args.control)
    if args.fits is not None:
        boxes = asyncio.run(_fitting(boxes, _read_manifest(args.fits, {}), args.socks))
    if args.json:
        emit_json([b.as_json() for b in boxes])
        return 0
    table = Table(title=f"{len(boxes)} Bento box(es) in the consensus")
    for column in ("nickname", "fingerprint", "flags", "onion address"):
        table.add_column(column, no_wrap=True)
    for box in boxes:
        flags = " ".join(f for f in box.flags if f in ("Exit", "Guard", "HSDir", "Stable", "Fast"))
        table.add_row(box.nickname, box.fingerprint, flags, f"{box.onion}.onion")
    console.print(table)
    return 0


async def _fitting(boxes: list[BoxInfo], manifest: Manifest, socks: str) -> list[BoxInfo]:
    """The boxes whose verified descriptor admits ``manifest``; the others are reported."""

    async def check(info: BoxInfo) -> BoxInfo | None:
        try:
            async with Box(info.onion, socks=socks, info=info) as box:
                problems = violations(manifest.needs, (await box.descriptor()).policy)
        except BentoError as exc:
            errors.print(f"[yellow]{info.nickname}[/yellow]: skipped ({exc.message})")
            return None
        if problems:
            errors.print(f"[dim]{info.nickname}: does not fit: {'; '.join(problems)}[/dim]")
            return None
        return info

    results = await asyncio.gather(*(check(b) for b in boxes))
    return [b for b in results if b is not None]


def _find(args: argparse.Namespace) -> BoxInfo:
    return resolve(args.box, discover(args.control))


def cmd_descriptor(args: argparse.Namespace) -> int:
    info = _find(args)

    async def fetch() -> dict[str, Any]:
        async with Box(info.onion, socks=args.socks, info=info) as box:
            return (await box.descriptor()).model_dump(mode="json")

    descriptor = asyncio.run(fetch())
    if args.json:
        emit_json(descriptor)
    else:
        console.print(
            f"[green]verified[/green]: signed by {info.onion}.onion, advertised by relay "
            f"{info.nickname} ({info.fingerprint})"
        )
        console.print_json(json.dumps(descriptor))
    return 0


# --- deploy -------------------------------------------------------------------------------


def _manifest(args: argparse.Namespace) -> Manifest:
    defaults = {"name": args.name or args.file.name.removesuffix(".py").removesuffix(".tar.gz") or "function"}
    if args.manifest is None:
        return Manifest.model_validate(defaults)
    manifest = _read_manifest(args.manifest, defaults)
    return manifest.model_copy(update={"name": args.name}) if args.name else manifest


def _read_manifest(path: Path, defaults: dict[str, Any]) -> Manifest:
    """A manifest file, TOML or JSON (``name``, ``module``, ``description``, ``[needs]``)."""
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as exc:
        raise BentoError(f"cannot read the manifest {path}: {exc}") from None
    data = {**defaults, **data}
    data.setdefault("name", path.stem)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise BentoError(f"invalid manifest: {describe_validation(exc)}") from None


def cmd_deploy(args: argparse.Namespace) -> int:
    manifest = _manifest(args)
    info = _find(args)
    keyring = Keyring(args.keyring)

    async def upload() -> Deployment:
        size = args.file.stat().st_size if args.file.is_file() else 0
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=errors,
            disable=args.json or size < PROGRESS_ABOVE,
            transient=True,
        ) as bar:
            task = bar.add_task(f"uploading to {info.nickname}", total=None)
            async with Box(info.onion, socks=args.socks, info=info) as box:
                return await box.deploy(
                    args.file,
                    manifest,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )

    deployment = asyncio.run(upload())
    keyring.functions[deployment.function_id] = deployment
    keyring.save()
    if args.json:
        emit_json(
            {
                "function_id": deployment.function_id,
                "name": deployment.name,
                "box": info.nickname,
                "onion": info.onion,
                "entry_points": deployment.entry_points,
                "keyring": str(keyring.path),
            }
        )
    else:
        console.print(
            f"deployed [bold]{deployment.name}[/bold] to {info.nickname}: function {deployment.function_id}"
        )
        console.print(f"  entry points: {', '.join(deployment.entry_points) or '(none)'}")
        console.print(f"  tokens saved in {keyring.path}")
    return 0


# --- sessions -----------------------------------------------------------------------------


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_invoke(args: argparse.Namespace) -> int:
    keyring = Keyring(args.keyring)
    deployment = keyring.function(args.function)

    async def run() -> int:
        async with Box(deployment.onion, socks=args.socks) as box:
            session_id = await box.invoke(deployment, args.entry, [_json_arg(a) for a in args.args])
            keyring.sessions[session_id] = deployment.function_id
            keyring.save()
            if args.detach:
                if args.json:
                    emit_json({"session_id": session_id})
                else:
                    console.print(session_id)
                return 0
            if not args.json:
                errors.print(f"[dim]session {session_id}[/dim]")
            return await _talk(box, deployment, session_id, args.json)

    return asyncio.run(run())


def cmd_attach(args: argparse.Namespace) -> int:
    keyring = Keyring(args.keyring)
    deployment = keyring.function_of_session(args.session)

    async def run() -> int:
        async with Box(deployment.onion, socks=args.socks) as box:
            return await _talk(box, deployment, args.session, args.json)

    return asyncio.run(run())


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


def cmd_sessions(args: argparse.Namespace) -> int:
    deployment = Keyring(args.keyring).function(args.function)

    async def fetch() -> Any:
        async with Box(deployment.onion, socks=args.socks) as box:
            return await box.sessions(deployment)

    listing = asyncio.run(fetch())
    if args.json:
        emit_json(listing.model_dump(mode="json"))
        return 0
    table = Table(title=f"sessions of {deployment.name} ({deployment.function_id})")
    for column in ("session", "entry", "state", "attached", "out", "in", "buffered", "cpu s", "peak MiB"):
        table.add_column(column, no_wrap=True)
    for s in listing.sessions:
        state = s.state.value if s.cause in (None, "completed", "error") else f"{s.state.value} ({s.cause})"
        table.add_row(
            s.session_id,
            s.entry,
            state,
            "yes" if s.attached else "no",
            str(s.bytes_out),
            str(s.bytes_in),
            str(s.buffered),
            f"{s.usage.cpu_seconds:.2f}",
            f"{s.usage.peak_memory_bytes / 2**20:.1f}",
        )
    console.print(table)
    return 0


def cmd_shutdown(args: argparse.Namespace) -> int:
    keyring = Keyring(args.keyring)
    deployment = keyring.function(args.function)

    async def stop() -> Any:
        async with Box(deployment.onion, socks=args.socks) as box:
            return await box.shutdown(deployment)

    response = asyncio.run(stop())
    keyring.forget(deployment.function_id)
    keyring.save()
    if args.json:
        emit_json(response.model_dump(mode="json"))
    else:
        console.print(
            f"{deployment.name} ({deployment.function_id}) shut down; "
            f"{response.sessions_stopped} running session(s) stopped; its tokens are void"
        )
    return 0
