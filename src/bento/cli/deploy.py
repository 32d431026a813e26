"""``bento deploy``: upload a function to a box and keep its tokens in the keyring."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from bento.cli import client_options, code_check
from bento.cli.boxes import find_box
from bento.cli.functions import shut_down
from bento.cli.manifests import read_manifest
from bento.cli.output import console, emit_json, errors
from bento.client.box import Box
from bento.client.keyring import Deployment, Keyring
from bento.errors import BentoError
from bento.protocol import code_archive, imports
from bento.protocol.manifest import Manifest

PROGRESS_ABOVE = 1 << 20  # show a progress bar for uploads larger than this
SCANNED_BYTES = 1 << 30  # an archive's imports are read only up to this many unpacked bytes


def add_deploy(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Upload a function. Its tokens go to the keyring. A name already in the keyring is refused "
        "unless --replace (the old function is shut down once the new one is up) or --as NEW."
    )
    parser.add_argument("file", type=Path, help="a .py module, a directory, or a .tar.gz archive")
    parser.add_argument("--box", required=True, help="nickname, fingerprint or onion address")
    parser.add_argument("--manifest", type=Path, help="manifest file (TOML or JSON)")
    parser.add_argument(
        "--name", "--as", dest="name", metavar="NAME", help="the function's name (default: the file's name)"
    )
    parser.add_argument(
        "--require-sgx",
        action="store_true",
        help="refuse a box that does not run functions in an SGX enclave (none does today)",
    )
    parser.add_argument(
        "--replace", action="store_true", help="shut down the keyring's function of this name once deployed"
    )
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
    code_check.check(args.file, manifest)
    keyring = Keyring(args.keyring)
    old = keyring.named(manifest.name)
    if old and not args.replace:
        listed = ", ".join(f"{d.function_id} on {d.relay_nickname}" for d in old)
        raise BentoError(
            f"a function called {manifest.name!r} is already in the keyring: {listed}",
            fix="--replace shuts it down and deploys this one; --as NEW deploys this one under another name",
        )
    info = find_box(args)
    warnings: list[str] = []

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
                runtime = (await box.descriptor()).runtime
                offered = [m for p in runtime.packages for m in p.modules]
                if runtime.conclave is not None and runtime.conclave.enclave == "none" and not args.json:
                    errors.print(  # what protects the function from this box, before it goes there
                        f"[dim]{info.nickname} runs functions in no enclave: its operator can read and "
                        "change their code and data while they run (`bento descriptor` says more)[/dim]"
                    )
                warnings.extend(unprovided_imports(args.file, offered))
                for warning in warnings:
                    errors.print(f"[yellow]warning[/yellow]: {warning}")
                return await box.deploy(
                    args.file,
                    manifest,
                    require_sgx=args.require_sgx,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )

    deployment = asyncio.run(upload())
    keyring.add(deployment)
    replaced = [d.function_id for d in old if _replace(d, args)]
    if args.json:
        emit_json(
            {
                "function_id": deployment.function_id,
                "name": deployment.name,
                "box": info.nickname,
                "onion": info.onion,
                "entry_points": deployment.entry_points,
                "replaced": replaced,
                "keyring": str(keyring.path),
                "warnings": warnings,
            }
        )
    else:
        console.print(
            f"deployed [bold]{deployment.name}[/bold] to {info.nickname}: function {deployment.function_id}"
        )
        console.print(f"  entry points: {', '.join(deployment.entry_points) or '(none)'}")
        for function_id in replaced:
            console.print(f"  replaced {function_id}: shut down")
        console.print(f"  tokens saved in {keyring.path}")
    return 0


def _replace(old: Deployment, args: argparse.Namespace) -> bool:
    """Shut down the function the new one replaces; a failure leaves it in the keyring, said so."""
    keyring = Keyring(args.keyring)
    try:
        asyncio.run(shut_down(old, args.socks))
    except BentoError as exc:
        errors.print(
            f"[yellow]warning[/yellow]: could not shut down the old {old.name} ({old.function_id} on "
            f"{old.relay_nickname}): {exc.message}\n  it stays in the keyring: `bento shutdown "
            f"{old.function_id}` once its box answers, or `bento forget {old.function_id}` if it is gone"
        )
        return False
    keyring.forget(old.function_id, how="replaced")
    return True


def unprovided_imports(code: Path, offered: list[str]) -> list[str]:
    """One warning per module the code imports that neither the upload nor the box provides."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        if code.is_dir():
            root = code
        elif code.name.endswith((".tar.gz", ".tgz")):
            try:  # read as the box reads it: only plain files and directories come out
                entries = code_archive.read(code.read_bytes(), max_bytes=SCANNED_BYTES)
            except (code_archive.ArchiveError, OSError):
                return []  # the box will say what is wrong with the archive
            for entry in entries:
                path = root.joinpath(*entry.parts)
                if entry.data is None:
                    path.mkdir(exist_ok=True)
                else:
                    path.write_bytes(entry.data)
        else:
            (root / code.name).write_bytes(code.read_bytes())
        found = imports.missing(root, offered)
    return [f"{', '.join(files)} imports {module!r}, {_remedy(module)}" for module, files in found.items()]


def _remedy(module: str) -> str:
    if module.startswith("bento."):
        return "which this box does not offer: pick a box whose descriptor lists the package 'bento'"
    return (
        "which neither the upload nor the box provides: ship it in vendor/ "
        f"(pip install --target vendor {module}) or pick a box that offers it"
    )
