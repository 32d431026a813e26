"""Receiving a function's code: checking it, writing it safely, finding its entry points.

Code is checked at upload so that a syntax error is reported to the person deploying,
not to whoever invokes later. An archive is read and checked whole in memory first
(:mod:`bento.protocol.code_archive`: regular files and directories only, bounded in
entries, bytes and compression ratio); only then is anything written, under a fresh
directory, by descriptor and never through a link (:func:`write`).

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
import os
import shutil
import zipfile
from pathlib import Path

from bento.protocol import code_archive
from bento.protocol.code_archive import Entry
from bento.protocol.manifest import Manifest
from bento.protocol.messages import CodeKind

MAX_FILES = code_archive.MAX_ENTRIES
EXPANSION = 8  # an archive may unpack to at most this multiple of the upload limit
_COMPILED = (".so", ".pyd", ".dylib")
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class CodeError(Exception):
    """The uploaded code cannot be used; the message says why and ``fix`` what to do, for the uploader."""

    def __init__(self, message: str, fix: str = "fix the code and deploy again") -> None:
        super().__init__(message)
        self.fix = fix


def decode(code: str) -> bytes:
    try:
        return base64.b64decode(code, validate=True)
    except (binascii.Error, ValueError):
        raise CodeError("the code is not valid base64", "send the code base64-encoded") from None


def install(raw: bytes, kind: CodeKind, manifest: Manifest, target: Path, max_bytes: int) -> list[str]:
    """Check the code, write it to the fresh directory ``target``, and return the module's entry points.

    Everything is checked before the first byte is written; ``target`` must not exist.
    """
    entries = _entries(raw, kind, manifest, max_bytes * EXPANSION)
    for entry in entries:
        if entry.data is None:
            continue
        if entry.name.endswith(_COMPILED):
            raise CodeError(f"{entry.name} is compiled code; only pure-Python code and packages are accepted")
        if entry.name.endswith(".whl"):
            _check_wheel(entry, max_bytes * EXPANSION)
        elif entry.name.endswith(".py") and entry.parts[0] != "vendor":
            _check_syntax(entry)
    entry_points = _entry_points({e.parts: e.data for e in entries if e.data is not None}, manifest.module)
    target.parent.mkdir(parents=True, exist_ok=True)
    write(entries, target)
    return entry_points


def _entries(raw: bytes, kind: CodeKind, manifest: Manifest, max_bytes: int) -> list[Entry]:
    if kind is CodeKind.MODULE:
        if "." in manifest.module:
            raise CodeError("a single-file upload is a top-level module: the manifest's module has no dots")
        return [Entry((f"{manifest.module}.py",), raw)]
    try:
        return code_archive.read(raw, max_bytes)
    except code_archive.ArchiveError as exc:
        raise CodeError(str(exc), exc.fix) from None


def write(entries: list[Entry], target: Path) -> None:
    """Make the directory ``target`` and write ``entries`` (parents first) under it; on failure, none.

    Each directory is made here and opened relative to its parent's descriptor with
    O_NOFOLLOW, and each file is created in its directory's descriptor with O_CREAT |
    O_EXCL | O_NOFOLLOW, one name part at a time: every name resolves to something this
    call made, never to a link or a place outside ``target``, whatever else changes on
    the disk meanwhile. (``openat2``'s RESOLVE_BENEATH says the same for paths of many
    parts; nothing here resolves more than one, and Python's ``os`` has no binding.)
    """
    os.mkdir(target, 0o700)  # FileExistsError if anything is there: always a fresh directory
    try:
        # The chain of open directories down to the current entry: at most MAX_DEPTH descriptors.
        chain: list[tuple[tuple[str, ...], int]] = [((), os.open(target, _DIRECTORY))]
        try:
            for entry in entries:
                while chain[-1][0] != entry.parts[:-1]:  # sorted: the parent is on the chain
                    os.close(chain.pop()[1])
                parent, name = chain[-1][1], entry.parts[-1]
                if entry.data is None:
                    os.mkdir(name, 0o755, dir_fd=parent)
                    chain.append((entry.parts, os.open(name, _DIRECTORY, dir_fd=parent)))
                else:
                    _write_file(parent, name, entry.data, 0o755 if entry.executable else 0o644)
        finally:
            for _, fd in chain:
                os.close(fd)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # holds only what this call made: no links
        raise


def _write_file(directory: int, name: str, data: bytes, mode: int) -> None:
    fd = os.open(name, _NEW_FILE, mode, dir_fd=directory)
    with open(fd, "wb") as out:
        out.write(data)


def _check_wheel(entry: Entry, max_bytes: int) -> None:
    """A vendored wheel must be a zip of pure-Python code (it is imported in place), not a bomb."""
    assert entry.data is not None  # a file
    try:
        with zipfile.ZipFile(io.BytesIO(entry.data)) as wheel:
            members = wheel.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CodeError(f"{entry.name} is not a wheel (a zip archive): {exc}") from None
    compiled = [m.filename for m in members if m.filename.endswith(_COMPILED)]
    if compiled:
        raise CodeError(
            f"{entry.name} has compiled parts ({compiled[0]}); only pure-Python wheels (py3-none-any) "
            "can be vendored: use a package the box offers (see its descriptor) instead"
        )
    inflated = sum(m.file_size for m in members)
    ratio = code_archive.MAX_RATIO
    if inflated > max_bytes or (inflated > code_archive.RATIO_FLOOR and inflated > ratio * len(entry.data)):
        raise CodeError(
            f"{entry.name} inflates to {inflated} bytes (at most {max_bytes}, and at most {ratio}-fold)",
            "vendor a smaller wheel, or its sources in vendor/",
        )


def _check_syntax(entry: Entry) -> None:
    assert entry.data is not None  # a file
    try:
        compile(entry.data, entry.name, "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f"{exc.filename or entry.name}" + (f" line {exc.lineno}" if exc.lineno else "")
        raise CodeError(f"syntax error in {where}: {exc.msg}") from None
    except ValueError as exc:  # e.g. NUL bytes
        raise CodeError(f"{entry.name} is not Python source: {exc}") from None
    except (RecursionError, MemoryError):  # pathological nesting: refuse, do not crash
        raise CodeError(f"{entry.name} is too deeply nested to compile") from None


def _entry_points(files: dict[tuple[str, ...], bytes | None], module: str) -> list[str]:
    parts = tuple(module.split("."))
    for candidate in ((*parts[:-1], f"{parts[-1]}.py"), (*parts, "__init__.py")):
        source = files.get(candidate)
        if source is not None:
            try:
                tree = ast.parse(source)
            except (RecursionError, MemoryError):
                raise CodeError(f"{module} is too deeply nested to parse") from None
            return sorted(
                node.name
                for node in tree.body
                if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
            )
    raise CodeError(f"the upload has no module {module!r} (looked for {'/'.join(parts)}.py)")
