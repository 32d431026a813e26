"""``bento deploy``: upload a function to a box and keep its tokens in the keyring."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from rich.markup import escape
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
from bento.protocol.messages import Replaced

PROGRESS_ABOVE = 1 << 20  # show a progress bar for uploads larger than this
SCANNED_BYTES = 1 << 30  # an archive's imports are read only up to this many unpacked bytes
MANIFEST_NAMES = ("manifest.toml", "manifest.json")  # looked for beside the code without --manifest


def add_deploy(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Upload a function. Its tokens go to the keyring. A name already in the keyring is refused "
        "unless --replace (the old function is shut down once the new one is up, and the new one takes "
        "over its storage) or --as NEW."
    )
    parser.add_argument("file", type=Path, help="a .py module, a directory, or a .tar.gz archive")
    parser.add_argument("--box", required=True, help="nickname, fingerprint or onion address")
    parser.add_argument(
        "--manifest", type=Path, help="manifest file, TOML or JSON (default: manifest.toml beside the code)"
    )
    parser.add_argument(
        "--name", "--as", dest="name", metavar="NAME", help="the function's name (default: the file's name)"
    )
    parser.add_argument(
        "--require-sgx",
        action="store_true",
        help="refuse a box that does not run functions in an SGX enclave (none does today)",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="shut down the keyring's function of this name once deployed; this one takes over its storage",
    )
    parser.add_argument(
        "--fresh-storage",
        action="store_true",
        help="with --replace: shred the old function's storage instead of handing it over",
    )
    client_options.add(parser, control=True)
    parser.set_defaults(handler=cmd_deploy)


def _manifest(args: argparse.Namespace) -> Manifest:
    defaults = {"name": args.name or args.file.name.removesuffix(".py").removesuffix(".tar.gz") or "function"}
    path = args.manifest or beside(args.file)
    if path is None:
        return Manifest.model_validate(defaults)
    if args.manifest is None and not args.json:
        errors.print(
            f"[dim]using the manifest {path}, found beside the code (--manifest names another)[/dim]"
        )
    manifest = read_manifest(path, defaults)
    return manifest.model_copy(update={"name": args.name}) if args.name else manifest


def beside(code: Path) -> Path | None:
    """The ``manifest.toml`` (or ``.json``) beside the code: in the directory deployed, or
    in the directory of the file, as faas-cli finds its stack file."""
    directory = code if code.is_dir() else code.parent
    found = [directory / name for name in MANIFEST_NAMES if (directory / name).is_file()]
    return found[0] if found else None


def cmd_deploy(args: argparse.Namespace) -> int:
    manifest = _manifest(args)
    code_check.check(args.file, manifest)
    keyring = Keyring(args.keyring)
    old = keyring.named(manifest.name)
    if old and not args.replace:
        listed = ", ".join(f"{d.address} ({d.function_id})" for d in old)
        raise BentoError(
            f"a function called {manifest.name!r} is already in the keyring: {listed}",
            fix="--replace shuts it down and deploys this one (which takes over its storage); "
            "--as NEW deploys this one under another name",
        )
    if args.fresh_storage and not args.replace:
        raise BentoError(
            "--fresh-storage goes with --replace", fix="add --replace, or leave --fresh-storage out"
        )
    warnings = code_check.unasked_capabilities(args.file, manifest)
    for warning in warnings if not args.json else []:
        errors.print(f"[yellow]warning[/yellow]: {escape(warning)}")
    info = find_box(args)
    in_place, elsewhere = _replaced(old, info.onion, info.nickname, fresh=args.fresh_storage)

    async def upload() -> tuple[Deployment, Replaced | None]:
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
                unprovided = unprovided_imports(args.file, offered)
                warnings.extend(unprovided)
                for warning in unprovided if not args.json else []:
                    errors.print(f"[yellow]warning[/yellow]: {escape(warning)}")
                return await box.replace(
                    in_place,
                    args.file,
                    manifest,
                    keep_storage=not args.fresh_storage,
                    require_sgx=args.require_sgx,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )

    deployment, replaced_in_place = asyncio.run(upload())
    if not args.file.name.endswith((".tar.gz", ".tgz")):  # an archive's files are not on disk to name
        deployment.source = str(args.file.resolve())
        deployment.box_path = "/function/" if args.file.is_dir() else f"/function/{manifest.module}.py"
    keyring.add(deployment)
    if in_place is not None:
        keyring.forget(in_place.function_id, how="replaced")
    replaced = [d.function_id for d in elsewhere if _replace(d, args)]
    if args.json:
        emit_json(
            {
                "function_id": deployment.function_id,
                "name": deployment.name,
                "box": info.nickname,
                "onion": info.onion,
                "entry_points": deployment.entry_points,
                "replaced": ([replaced_in_place.function_id] if replaced_in_place else []) + replaced,
                "storage_taken_over": replaced_in_place.model_dump(mode="json")
                if replaced_in_place
                else None,
                "keyring": str(keyring.path),
                "warnings": warnings,
            }
        )
    else:
        console.print(
            f"deployed [bold]{deployment.name}[/bold] to {info.nickname}: function {deployment.function_id}"
        )
        console.print(f"  entry points: {', '.join(deployment.entry_points) or '(none)'}")
        if replaced_in_place is not None:
            console.print(f"  replaced {replaced_in_place.function_id}: {_moved(replaced_in_place, args)}")
        for function_id in replaced:
            console.print(f"  replaced {function_id}: shut down")
        console.print(f"  tokens saved in {keyring.path}")
    return 0


def _replaced(
    old: list[Deployment], onion: str, box: str, *, fresh: bool
) -> tuple[Deployment | None, list[Deployment]]:
    """The function the box replaces in place (same box: its storage can move), and those
    on other boxes, which are shut down after the deploy; refused before anything is sent
    where storage would be lost without --fresh-storage."""
    here = [d for d in old if d.onion == onion]
    if len(here) > 1:
        ids = ", ".join(d.function_id for d in here)
        raise BentoError(
            f"{len(here)} functions of this name are on {box}: {ids}; --replace takes over one",
            fix="shut the others down first (`bento shutdown FUNCTION_ID`)",
        )
    elsewhere = [d for d in old if d.onion != onion]
    holding = [d for d in elsewhere if d.storage_mb != 0]  # None: deployed before the keyring kept it
    if holding and not fresh:
        listed = ", ".join(f"{d.address} ({d.function_id})" for d in holding)
        raise BentoError(
            f"the function(s) this one replaces ({listed}) may hold storage, and storage does not "
            f"move between boxes: nothing was uploaded to {box}",
            fix=f"deploy to {holding[0].box} (--box) to take its storage over, or add "
            "--fresh-storage to shut it down with its storage",
        )
    return (here[0] if here else None), elsewhere


def _moved(replaced: Replaced, args: argparse.Namespace) -> str:
    stopped = f"shut down ({replaced.sessions_stopped} running session(s) stopped)"
    if args.fresh_storage:
        return f"{stopped}; its storage was shredded (--fresh-storage)"
    if not replaced.storage_objects:
        return f"{stopped}; it held no storage"
    return (
        f"{stopped}; the new function took over its storage "
        f"({replaced.storage_objects} object(s), {replaced.storage_bytes} bytes)"
    )


def _replace(old: Deployment, args: argparse.Namespace) -> bool:
    """Shut down the function the new one replaces; a failure leaves it in the keyring, said so."""
    keyring = Keyring(args.keyring)
    try:
        asyncio.run(shut_down(old, args.socks))
    except BentoError as exc:
        errors.print(
            f"[yellow]warning[/yellow]: could not shut down the old {old.address} ({old.function_id}): "
            f"{escape(exc.message)}\n  it stays in the keyring: `bento shutdown "
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
