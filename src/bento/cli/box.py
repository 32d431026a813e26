"""``bento box``: the operator's view of their own box, over its admin socket.

Run on the box's machine, as the box's user (the socket is mode 0600)::

    sudo -u bento bento box functions
    sudo -u bento bento box evict 3f2a...
    sudo -u bento bento box pause --uploads

The box is found by ``--state-dir`` or by the same ``--config`` that ``bento server``
reads (its ``state_dir``; default /var/lib/bento).
"""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from bento.cli.output import console, emit_json, print_table, table
from bento.errors import BentoError, Refused
from bento.protocol.errors import ErrorCode
from bento.protocol.messages import ErrorBody
from bento.server.admin.models import BoxUsage, Evicted, FunctionList, PauseState, SessionList, SessionRow
from bento.server.admin.socket_api import socket_path
from bento.server.config import ServerConfig

TIMEOUT = 60.0  # seconds: an eviction waits for the function's instances to stop
_MIB = 1 << 20


def add_box(parser: argparse.ArgumentParser) -> None:
    parser.description = "See and steer your own Bento box (run on its machine, as its user)."
    actions = parser.add_subparsers(dest="box_command", required=True, metavar="ACTION")
    for name, help_text, handler in (
        ("functions", "the functions the box holds, their instances, sessions and storage", _functions),
        ("sessions", "every session: state, function, CPU, memory, bytes, circuits", _sessions),
        ("usage", "what the box and each function have used since the server started", _usage),
        ("kill", "kill one session (its function goes on)", _kill),
        ("evict", "stop a function, delete its code and storage, void its tokens", _evict),
        ("pause", "refuse new uploads and/or invocations (503 box-paused); running sessions go on", _pause),
        ("resume", "accept new uploads and/or invocations again", _resume),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        if name == "kill":
            action.add_argument("session", help="session id (see `bento box sessions`)")
        if name == "evict":
            action.add_argument("function", help="function id (see `bento box functions`)")
        if name in ("pause", "resume"):
            action.add_argument("--uploads", action="store_true", help=f"{name} uploads only")
            action.add_argument("--invocations", action="store_true", help=f"{name} invocations only")
        action.add_argument(
            "--state-dir", type=Path, help="the box's state directory (default /var/lib/bento)"
        )
        action.add_argument("--config", type=Path, help="the box's config file: its state_dir is used")
        action.add_argument("--json", action="store_true", help="print one JSON document")
        action.set_defaults(handler=handler)


def _socket(args: argparse.Namespace) -> Path:
    overrides = {"state_dir": args.state_dir}
    path = socket_path(ServerConfig.load(args.config, overrides).state_dir)
    who = f"the box's user (e.g. `sudo -u bento bento box {args.box_command}`)"
    try:
        os.stat(path)
    except FileNotFoundError:
        raise BentoError(
            f"no admin socket at {path}",
            fix="is `bento server` running with this state directory? Name it with --state-dir or --config",
        ) from None
    except PermissionError:
        raise BentoError(f"permission denied reading {path.parent}", fix=f"run this as {who}") from None
    if not os.access(path, os.R_OK | os.W_OK):
        raise BentoError(f"permission denied on the admin socket {path}", fix=f"run this as {who}")
    return path


def _call(args: argparse.Namespace, method: str, path: str, answer: type[BaseModel], body: Any = None) -> Any:
    where = _socket(args)
    transport = httpx.HTTPTransport(uds=str(where))
    try:
        with httpx.Client(transport=transport, base_url="http://box", timeout=TIMEOUT) as client:
            response = client.request(method, path, json=body)
    except httpx.ConnectError as exc:
        raise BentoError(
            f"cannot connect to the admin socket {where}: {exc}",
            fix="the server is not running (the socket is left from an earlier run): start `bento server`",
        ) from None
    except httpx.HTTPError as exc:
        raise BentoError(f"the admin socket {where} failed: {exc}") from None
    try:
        if response.is_success:
            return answer.model_validate_json(response.content)
        refusal = ErrorBody.model_validate_json(response.content)
    except ValidationError:
        raise BentoError(f"the admin socket answered {response.status_code} with an unknown body") from None
    raise Refused(refusal.error, code=refusal.code, status=response.status_code, fix=refusal.fix)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _functions(args: argparse.Namespace) -> int:
    listing: FunctionList = _call(args, "GET", "/v1/functions", FunctionList)
    if args.json:
        emit_json(listing.model_dump(mode="json"))
        return 0
    rows = table(("function", "name", "created (UTC)", "instances", "sessions", "storage MiB", "quota MiB"))
    for f in listing.functions:
        rows.add_row(
            f.function_id,
            f.name,
            _when(f.created_at),
            str(f.instances),
            str(f.sessions),
            f"{f.storage_bytes / _MIB:.2f}",
            f"{f.storage_quota_bytes / _MIB:.0f}",
        )
    print_table(rows)
    return 0


def _sessions(args: argparse.Namespace) -> int:
    listing: SessionList = _call(args, "GET", "/v1/sessions", SessionList)
    if args.json:
        emit_json(listing.model_dump(mode="json"))
        return 0
    rows = table(
        ("session", "function", "entry", "state", "started (UTC)", "cpu s", "MiB", "in", "out", "circuits")
    )
    for s in listing.sessions:
        rows.add_row(
            s.session_id,
            f"{s.function_name} ({s.function_id[:8]})",
            s.entry,
            s.state.value,
            _when(s.started_at),
            f"{s.cpu_seconds:.2f}",
            f"{s.peak_memory_bytes / _MIB:.1f}",
            str(s.bytes_in),
            str(s.bytes_out),
            str(s.circuits),
        )
    print_table(rows)
    return 0


def _usage(args: argparse.Namespace) -> int:
    usage: BoxUsage = _call(args, "GET", "/v1/usage", BoxUsage)
    if args.json:
        emit_json(usage.model_dump(mode="json"))
        return 0
    rows = table(("", "instances", "sessions", "cpu s", "in", "out", "memory MiB", "storage MiB"))
    for label, figures in [
        ("box", usage.box),
        *[(f"{f.name} ({f.function_id[:8]})", f) for f in usage.functions],
    ]:
        rows.add_row(
            label,
            str(figures.instances),
            str(figures.sessions_total),
            f"{figures.cpu_seconds_total:.2f}",
            str(figures.bytes_in_total),
            str(figures.bytes_out_total),
            f"{figures.memory_bytes / _MIB:.0f}",
            f"{figures.storage_bytes / _MIB:.2f}",
        )
    print_table(rows)
    console.print(
        f"limits: {usage.instances_limit} instances, {usage.memory_limit_bytes // _MIB} MiB; "
        f"paused: {', '.join(usage.paused) or 'nothing'}; "
        f"refused: {', '.join(f'{code} {n}' for code, n in usage.refusals.items()) or 'nothing'}"
    )
    return 0


def _kill(args: argparse.Namespace) -> int:
    row: SessionRow = _call(args, "POST", f"/v1/sessions/{_id(args.session)}/kill", SessionRow)
    if args.json:
        emit_json(row.model_dump(mode="json"))
    else:
        console.print(f"session {row.session_id} of {row.function_name}: {row.state.value} ({row.reason})")
    return 0


def _evict(args: argparse.Namespace) -> int:
    evicted: Evicted = _call(args, "POST", f"/v1/functions/{_id(args.function)}/evict", Evicted)
    if args.json:
        emit_json(evicted.model_dump(mode="json"))
    else:
        console.print(
            f"evicted {evicted.name} ({evicted.function_id}): {evicted.sessions_stopped} session(s) stopped, "
            "code and storage deleted, tokens void"
        )
    return 0


def _pause(args: argparse.Namespace) -> int:
    return _switch(args, "pause")


def _resume(args: argparse.Namespace) -> int:
    return _switch(args, "resume")


def _switch(args: argparse.Namespace, verb: str) -> int:
    what = [w for w, chosen in (("uploads", args.uploads), ("invocations", args.invocations)) if chosen]
    state: PauseState = _call(
        args, "POST", f"/v1/{verb}", PauseState, {"what": what or ["uploads", "invocations"]}
    )
    if args.json:
        emit_json(state.model_dump(mode="json"))
    else:
        console.print(f"paused: {', '.join(state.paused) or 'nothing'}")
    return 0


def _id(value: str) -> str:
    """An id as the box makes them (32 hex digits): anything else is refused here, not sent."""
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise Refused(
            f"{value[:40]!r} is not an id (32 hex digits)",
            code=ErrorCode.INVALID_REQUEST,
            status=ErrorCode.INVALID_REQUEST.status,
            fix="copy it from `bento box functions` or `bento box sessions`",
        )
    return value
