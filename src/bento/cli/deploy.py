"""``bento deploy``: upload a function to a box and keep its tokens in the keyring."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from bento.cli import client_options
from bento.cli.boxes import find_box
from bento.cli.manifests import read_manifest
from bento.cli.output import console, emit_json, errors
from bento.client.box import Box
from bento.client.keyring import Deployment, Keyring
from bento.protocol.manifest import Manifest

PROGRESS_ABOVE = 1 << 20  # show a progress bar for uploads larger than this


def add_deploy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a .py module, a directory, or a .tar.gz archive")
    parser.add_argument("--box", required=True, help="nickname, fingerprint or onion address")
    parser.add_argument("--manifest", type=Path, help="manifest file (TOML or JSON)")
    parser.add_argument("--name", help="the function's name (default: the file's name)")
    client_options.add(parser, control=True)
    parser.set_defaults(handler=cmd_deploy)


def _manifest(args: argparse.Namespace) -> Manifest:
    defaults = {"name": args.name or args.file.name.removesuffix(".py").removesuffix(".tar.gz") or "function"}
    if args.manifest is None:
        return Manifest.model_validate(defaults)
    manifest = read_manifest(args.manifest, defaults)
    return manifest.model_copy(update={"name": args.name}) if args.name else manifest


def cmd_deploy(args: argparse.Namespace) -> int:
    manifest = _manifest(args)
    info = find_box(args)
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
