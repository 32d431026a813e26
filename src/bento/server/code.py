"""Receiving a function's code: unpacking, syntax checking, finding its entry points.

Code is checked at upload so that a syntax error is reported to the person deploying,
not to whoever invokes later. Archives are unpacked with tarfile's "data" filter (no
absolute paths, links out of the tree, devices or set-id bits) and bounded in size.

An archive may ship pure-Python dependencies: a ``vendor/`` directory and ``.whl``
files (at the top or in ``vendor/``), which the runtime puts on ``sys.path``. Their
sources are not syntax-checked (third-party trees hold files never imported), but
compiled parts are refused: the sandbox's Python is the box's, not the uploader's.
"""

from __future__ import annotations

import ast
import base64
import binascii
import io
import shutil
import tarfile
import zipfile
from pathlib import Path

from bento.protocol.manifest import Manifest
from bento.protocol.messages import CodeKind

MAX_FILES = 1000
EXPANSION = 8  # an archive may unpack to at most this multiple of the upload limit


class CodeError(Exception):
    """The uploaded code cannot be used; the message says why, for the uploader."""


def decode(code: str) -> bytes:
    try:
        return base64.b64decode(code, validate=True)
    except (binascii.Error, ValueError):
        raise CodeError("the code is not valid base64") from None


def install(raw: bytes, kind: CodeKind, manifest: Manifest, target: Path, max_bytes: int) -> list[str]:
    """Write the code under ``target``, check it, and return the module's entry points."""
    target.mkdir(parents=True)
    if kind is CodeKind.MODULE:
        if "." in manifest.module:
            raise CodeError("a single-file upload is a top-level module: the manifest's module has no dots")
        (target / f"{manifest.module}.py").write_bytes(raw)
    else:
        _unpack(raw, target, max_bytes * EXPANSION)
    for path in sorted(target.rglob("*")):
        relative = path.relative_to(target)
        if path.suffix in _COMPILED:
            raise CodeError(f"{relative} is compiled code; only pure-Python code and packages are accepted")
        if path.suffix == ".whl":
            _check_wheel(path, relative)
        elif path.suffix == ".py" and relative.parts[0] != "vendor":
            _check_syntax(path, target)
    return _entry_points(target, manifest.module)


_COMPILED = (".so", ".pyd", ".dylib")


def _check_wheel(path: Path, relative: Path) -> None:
    """A vendored wheel must be a zip of pure-Python code (it is imported in place)."""
    try:
        with zipfile.ZipFile(path) as wheel:
            names = wheel.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise CodeError(f"{relative} is not a wheel (a zip archive): {exc}") from None
    compiled = [n for n in names if n.endswith(_COMPILED)]
    if compiled:
        raise CodeError(
            f"{relative} has compiled parts ({compiled[0]}); only pure-Python wheels (py3-none-any) "
            "can be vendored: use a package the box offers (see its descriptor) instead"
        )


def _unpack(raw: bytes, target: Path, limit: int) -> None:
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as archive:
            members = archive.getmembers()
            if len(members) > MAX_FILES:
                raise CodeError(f"the archive has {len(members)} entries; at most {MAX_FILES} are allowed")
            if sum(m.size for m in members) > limit:
                raise CodeError(f"the archive unpacks to more than {limit} bytes")
            for member in members:
                _extract(archive, member, target)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CodeError(f"the archive is not a usable .tar.gz: {exc}") from None


def _extract(archive: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    """Extract one member as a plain file, a directory, or a link within the tree; or refuse it.

    By hand rather than with ``extractall(filter="data")``, which Pythons before 3.11.4 lack
    (Debian 12's is 3.11.2, and a box run by a dedicated user may be on it), to the same
    rules: no absolute names or ``..``, no devices or hard links, symbolic links only to
    places inside the tree, and no set-uid, set-gid or group- and world-writable modes.
    """
    name = Path(member.name)
    if not name.parts or name.is_absolute() or ".." in name.parts:
        raise tarfile.TarError(f"{member.name!r} names a path outside the archive's tree")
    path = target.joinpath(*name.parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    if member.isdir():
        path.mkdir(exist_ok=True)
    elif member.isfile():
        source = archive.extractfile(member)
        assert source is not None  # a regular file always has contents
        with source, path.open("xb") as out:
            shutil.copyfileobj(source, out)
        path.chmod(0o644 | (0o111 if member.mode & 0o100 else 0))
    elif member.issym():
        link = Path(member.linkname)
        inside = (path.parent / link).resolve().is_relative_to(target.resolve())
        if link.is_absolute() or not inside:
            raise tarfile.TarError(f"{member.name!r} links outside the archive's tree")
        path.symlink_to(link)
    else:
        raise tarfile.TarError(f"{member.name!r} is not a file, a directory or a link within the tree")


def _check_syntax(path: Path, root: Path) -> None:
    name = str(path.relative_to(root))
    try:
        compile(path.read_bytes(), name, "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f"{exc.filename or name}" + (f" line {exc.lineno}" if exc.lineno else "")
        raise CodeError(f"syntax error in {where}: {exc.msg}") from None
    except ValueError as exc:  # e.g. NUL bytes
        raise CodeError(f"{name} is not Python source: {exc}") from None
    except (RecursionError, MemoryError):  # pathological nesting: refuse, do not crash
        raise CodeError(f"{name} is too deeply nested to compile") from None


def _entry_points(root: Path, module: str) -> list[str]:
    parts = module.split(".")
    for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            try:
                tree = ast.parse(candidate.read_bytes())
            except (RecursionError, MemoryError):
                raise CodeError(f"{module} is too deeply nested to parse") from None
            return sorted(
                node.name
                for node in tree.body
                if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
            )
    raise CodeError(f"the upload has no module {module!r} (looked for {'/'.join(parts)}.py)")
