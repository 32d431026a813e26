"""``bento shard put FILE --n N --k K`` and ``bento shard get MANIFEST``.

``put`` spreads a file over N boxes (RaptorQ, sealed shards in Dropboxes) and writes the
manifest, the one file to keep (mode 0600, sealed with ``--passphrase`` if asked); ``get``
rebuilds the file from whichever K boxes answer first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from bento.cli import client_options
from bento.cli.dropbox import parse_duration
from bento.cli.files import refuse_existing, write_private
from bento.cli.output import console, emit_json, errors
from bento.client.discovery import discover, resolve
from bento.client.keyring import Keyring
from bento.errors import BentoError
from bento.functions.shard import client as shard
from bento.functions.shard import manifest as manifests
from bento.functions.shard.placement import tolerated

PASSPHRASE_ENV = "BENTO_PASSPHRASE"  # noqa: S105 (the variable's name, not a secret)


def add_shard(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="shard_command", required=True, metavar="ACTION")
    put = actions.add_parser("put", help="spread a file over N boxes; any K of them give it back")
    put.add_argument("file", type=Path, help="the file to spread")
    put.add_argument("--n", type=int, required=True, help="shards, one per box")
    put.add_argument("--k", type=int, required=True, help="shards that rebuild the file (at most --n)")
    put.add_argument(
        "--boxes", help="comma-separated boxes to choose from (default: every box in the consensus)"
    )
    put.add_argument(
        "--manifest", type=Path, help="where to write the manifest (default: FILE's name + .shard)"
    )
    put.add_argument(
        "--passphrase",
        action="store_true",
        help=f"seal the manifest with a passphrase (asked for, or ${PASSPHRASE_ENV})",
    )
    put.add_argument(
        "--fetches", type=int, default=1, help="how many times each shard may be fetched (default 1)"
    )
    put.add_argument("--expires", type=parse_duration, default=86400.0, metavar="DURATION",
                     help="when the shards self-destruct (default 1d; 90s, 30m, 12h, 7d)")  # fmt: skip
    client_options.add(put, control=True)
    put.set_defaults(handler=cmd_put)
    get = actions.add_parser("get", help="rebuild a file from the shards its manifest names")
    get.add_argument("manifest", type=Path, help="the manifest `bento shard put` wrote")
    get.add_argument(
        "--out", type=Path, help="file to write ('-': standard output; default: the file's name)"
    )
    get.add_argument("--force", action="store_true", help="overwrite the --out file if it exists")
    get.add_argument("--passphrase", action="store_true",
                     help=f"the manifest is sealed (asked for, or ${PASSPHRASE_ENV})")  # fmt: skip
    client_options.add(get)
    get.set_defaults(handler=cmd_get)


def _passphrase(*, confirm: bool, why: str) -> str:
    if (given := os.environ.get(PASSPHRASE_ENV)) is not None:
        if not given:
            raise BentoError(f"${PASSPHRASE_ENV} is empty")
        return given
    if not sys.stdin.isatty():
        raise BentoError(f"{why}, and there is no terminal to ask for it", fix=f"set ${PASSPHRASE_ENV}")
    first = getpass.getpass("passphrase for the manifest: ")
    if not first:
        raise BentoError("an empty passphrase protects nothing")
    if confirm and getpass.getpass("again: ") != first:
        raise BentoError("the two passphrases differ")
    return first


@contextlib.contextmanager
def _bar(label: str, quiet: bool) -> Iterator[shard.Progress]:
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=errors,
        disable=quiet,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def cmd_put(args: argparse.Namespace) -> int:
    path = args.manifest or Path(f"{args.file.name}.shard")
    if path.exists():
        raise BentoError(f"{path} exists already", fix="give another --manifest path")
    if not os.access(path.parent, os.W_OK):  # found out now, not after the upload
        raise BentoError(f"cannot write the manifest into {path.parent}", fix="give another --manifest path")
    passphrase = _passphrase(confirm=True, why="--passphrase needs a passphrase") if args.passphrase else None
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise BentoError(f"cannot read {args.file}: {exc.strerror}") from None
    found = discover(args.control)
    boxes = [resolve(name, found) for name in args.boxes.split(",")] if args.boxes else found
    keyring = Keyring(args.keyring)
    started = time.monotonic()

    async def run() -> shard.Stored:
        with _bar(f"{args.n} shards", args.json) as progress:
            return await shard.put(
                data, name=args.file.name, boxes=boxes, n=args.n, k=args.k, socks=args.socks,
                keyring=keyring, fetches=args.fetches, seconds=args.expires, progress=progress,
            )  # fmt: skip

    stored = asyncio.run(run())
    seconds = time.monotonic() - started
    manifests.write(path, manifests.encode(stored.manifest, passphrase))
    records = stored.manifest.shards
    stored_bytes = sum(r.bytes for r in records)
    survives = tolerated([r.fingerprint for r in records], args.k)
    if args.json:
        emit_json(
            {
                "manifest": str(path),
                "sealed": passphrase is not None,
                "bytes": len(data),
                "n": args.n,
                "k": args.k,
                "boxes": [{"shard": r.index, "box": r.box, "bytes": r.bytes} for r in records],
                "stored_bytes": stored_bytes,
                "overhead": round(stored_bytes / len(data), 4),
                "survives_boxes_lost": survives,
                "allowed_gets": stored.manifest.allowed_gets(),
                "seconds": round(seconds, 3),
                "warnings": stored.warnings,
                "replaced": stored.failures,
            }
        )
        return 0
    for warning in stored.warnings:
        errors.print(f"[bold yellow]warning:[/bold yellow] {warning}")
    for failure in stored.failures:
        errors.print(f"[yellow]replaced[/yellow] {failure}")
    names = ", ".join(r.box for r in records)
    console.print(
        f"stored {args.file} ({len(data)} bytes) as {args.n} shards on {names}: any {args.k} rebuild it, "
        f"so it survives the loss of any {survives} box(es); {stored_bytes} bytes stored "
        f"({stored_bytes / len(data):.2f}x) in {seconds:.1f} s"
    )
    sealed = ", sealed with your passphrase" if passphrase else ""
    console.print(f"manifest: {path} (mode 0600{sealed}): keep it, it is the only key to the file")
    console.print(
        f"gets: {stored.manifest.allowed_gets()} (--fetches sets how often each shard may be fetched)"
    )
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    raw = manifests.read(args.manifest)
    sealed = args.passphrase or manifests.is_sealed(raw)
    why = "this shard manifest is sealed with a passphrase"
    passphrase = _passphrase(confirm=False, why=why) if sealed else None
    manifest = manifests.decode(raw, passphrase)
    out = args.out or Path(Path(manifest.name).name or "shard.out")
    refuse_existing(out, force=args.force)  # before the fetches use the shards up
    started = time.monotonic()

    async def run() -> shard.Fetched:
        with _bar(f"any {manifest.k} of {manifest.n} shards", args.json) as progress:
            return await shard.get(manifest, socks=args.socks, progress=progress)

    fetched = asyncio.run(run())
    seconds = time.monotonic() - started
    if str(out) == "-":
        sys.stdout.buffer.write(fetched.data)
        sys.stdout.buffer.flush()
    else:
        write_private(out, fetched.data, force=args.force)
    if args.json:
        emit_json(
            {
                "out": str(out),
                "bytes": len(fetched.data),
                "sha256": manifest.sha256,
                "shards_used": fetched.used,
                "failures": fetched.failures,
                "cancelled": fetched.cancelled,
                "allowed_gets": manifest.allowed_gets(),
                "seconds": round(seconds, 3),
            }
        )
    elif str(out) != "-":
        for failure in fetched.failures:
            errors.print(f"[yellow]unavailable[/yellow] {failure}")
        console.print(
            f"rebuilt {out} ({len(fetched.data)} bytes, SHA-256 verified) from shards "
            f"{', '.join(map(str, fetched.used))} of {manifest.n} in {seconds:.1f} s"
        )
        console.print(
            f"[dim]this get used one fetch of {len(fetched.used)} shard(s); {manifest.allowed_gets()}[/dim]"
        )
    return 0
