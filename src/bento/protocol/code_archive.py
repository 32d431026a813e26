"""A function's uploaded ``.tar.gz``, read in memory into plain files and directories.

Nothing of an archive touches a disk until all of it has been read and checked here:
only regular files and directories pass; symbolic and hard links, devices, FIFOs and
sparse files are refused, and so are absolute names, ``..``, names given twice (or as a
file and as a directory), over-long names and bombs (too many entries, too many bytes,
or a compression ratio no source tree has). What passes is a list of :class:`Entry`,
whose names are plain relative parts: whoever writes them needs no check of its own.

>>> import io, tarfile
>>> def tar(name: str, kind: bytes = tarfile.REGTYPE) -> bytes:
...     out = io.BytesIO()
...     with tarfile.open(fileobj=out, mode="w:gz") as archive:
...         info = tarfile.TarInfo(name)
...         info.type, info.linkname = kind, "."
...         archive.addfile(info, io.BytesIO(b""))
...     return out.getvalue()
>>> [(entry.name, entry.data) for entry in read(tar("./pkg/main.py"), max_bytes=1000)]
[('pkg', None), ('pkg/main.py', b'')]
>>> read(tar("up/../../main.py"), max_bytes=1000)
Traceback (most recent call last):
...
bento.protocol.code_archive.ArchiveError: 'up/../../main.py' names a place outside the archive (..)
>>> read(tar("l2", tarfile.SYMTYPE), max_bytes=1000)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
bento.protocol.code_archive.ArchiveError: 'l2' is a symbolic link: an upload holds only regular files...

Used by the box (``bento.server.code``) and by ``bento deploy``, which reads an archive's
imports without unpacking it. Standard library only.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from dataclasses import dataclass

MAX_ENTRIES = 1000
MAX_NAME_BYTES = 1024  # a whole name, as UTF-8
MAX_PART_BYTES = 255  # one part of a name (Linux's NAME_MAX)
MAX_DEPTH = 32
# Source trees compress 3-10 fold and a tar of many small files up to ~50 fold; a bomb
# compresses a thousand fold. Below the floor, any ratio is harmless.
MAX_RATIO = 100
RATIO_FLOOR = 1 << 20
_INFLATE_STEP = 64 << 10
_UNUSABLE = "the archive is not a usable .tar.gz"
_REPACK = "pack it with `tar -czf`, or deploy the directory itself"
_FIX = "pack only regular files and directories (`bento deploy DIRECTORY` does), then deploy again"

_KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}


class ArchiveError(ValueError):
    """The archive cannot be used; the message says why, ``fix`` what to do about it."""

    def __init__(self, message: str, fix: str = _FIX) -> None:
        super().__init__(message)
        self.fix = fix


@dataclass(frozen=True)
class Entry:
    """A directory (``data`` is None) or a regular file, at ``parts`` under the upload's root."""

    parts: tuple[str, ...]
    data: bytes | None
    executable: bool = False

    @property
    def name(self) -> str:
        return "/".join(self.parts)


def read(raw: bytes, max_bytes: int) -> list[Entry]:
    """Every entry of the .tar.gz ``raw``, parents before children; files hold at most ``max_bytes``.

    Directories an archive leaves implicit (``pkg/main.py`` without ``pkg/``) are added.
    Raises :class:`ArchiveError` for anything else, before anything is written anywhere.
    """
    stream = _inflate(raw, max_bytes + (MAX_ENTRIES + 4) * 3 * tarfile.BLOCKSIZE)
    entries: dict[tuple[str, ...], Entry] = {}
    explicit: set[tuple[str, ...]] = set()  # the names the archive gives (not implied parents)
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(stream), mode="r:") as archive:
            for count, member in enumerate(archive, start=1):
                if count > MAX_ENTRIES:
                    raise ArchiveError(f"the archive has more than {MAX_ENTRIES} entries")
                entry = _entry(member, stream)
                total += len(entry.data or b"")
                if total > max_bytes:
                    raise ArchiveError(f"the archive unpacks to more than {max_bytes} bytes")
                _add(entries, explicit, entry, member.name)
                if len(entries) > 2 * MAX_ENTRIES:  # with the directories the names imply
                    raise ArchiveError(f"the archive's names imply more than {2 * MAX_ENTRIES} entries")
    except (tarfile.TarError, EOFError) as exc:
        raise ArchiveError(f"{_UNUSABLE}: {exc}", _REPACK) from None
    return [entries[parts] for parts in sorted(entries)]


def _inflate(raw: bytes, cap: int) -> bytes:
    """The tar inside the gzip ``raw``, refused as soon as it grows past ``cap`` or ``MAX_RATIO``.

    Inflated step by step, so a bomb costs at most one step past the limit, never its size.
    """
    out = bytearray()
    rest = raw
    try:
        while rest:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip members, one after another
            pending = rest
            while not inflater.eof:
                chunk = inflater.decompress(pending, _INFLATE_STEP)
                pending = inflater.unconsumed_tail
                if not chunk and not pending:
                    raise ArchiveError(f"{_UNUSABLE}: it ends early", _REPACK)
                out += chunk
                if len(out) > cap:
                    raise ArchiveError(f"the archive inflates to more than {cap} bytes")
                if len(out) > RATIO_FLOOR and len(out) > MAX_RATIO * len(raw):
                    raise ArchiveError(
                        f"the archive inflates more than {MAX_RATIO}-fold (a compression bomb)",
                        fix="upload source code and data that do not compress so well",
                    )
            rest = inflater.unused_data.lstrip(b"\0")  # gzip allows zero padding at its end
    except zlib.error as exc:
        raise ArchiveError(f"{_UNUSABLE}: {exc}", _REPACK) from None
    return bytes(out)


def _entry(member: tarfile.TarInfo, stream: bytes) -> Entry:
    parts = _parts(member.name)
    if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
        end = member.offset_data + member.size
        if end > len(stream):
            raise ArchiveError(f"{_UNUSABLE}: {member.name!r} is cut short", _REPACK)
        if not parts:
            raise ArchiveError(f"{member.name!r} is a file with no name")
        return Entry(parts, stream[member.offset_data : end], executable=bool(member.mode & 0o100))
    if member.type == tarfile.DIRTYPE:
        return Entry(parts, None)
    kind = _KINDS.get(member.type, f"of type {member.type!r}")
    raise ArchiveError(f"{member.name!r} is {kind}: an upload holds only regular files and directories")


def _parts(name: str) -> tuple[str, ...]:
    """``name`` as its parts, ``.`` and empty parts left out; refused where it could leave the tree."""
    if name.startswith("/"):
        raise ArchiveError(f"{name!r} is an absolute name: an upload's names are relative to its root")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ArchiveError(f"{name!r} names a place outside the archive (..)")
    try:
        encoded = name.encode()
    except UnicodeEncodeError:
        raise ArchiveError(f"{name!r} is not a UTF-8 name") from None
    if any(ord(c) < 32 or c in "\\\x7f" for c in name):
        raise ArchiveError(f"{name!r} has a control character or a backslash in its name")
    if len(encoded) > MAX_NAME_BYTES or any(len(p.encode()) > MAX_PART_BYTES for p in parts):
        raise ArchiveError(f"{name[:80]!r}... is too long a name (at most {MAX_NAME_BYTES} bytes)")
    if len(parts) > MAX_DEPTH:
        raise ArchiveError(f"{name[:80]!r} is nested deeper than {MAX_DEPTH} directories")
    return parts


def _add(
    entries: dict[tuple[str, ...], Entry], explicit: set[tuple[str, ...]], entry: Entry, name: str
) -> None:
    """Add ``entry`` and its implicit parents; refuse a name given twice, or as a file and a directory."""
    for depth in range(1, len(entry.parts)):
        parent = entry.parts[:depth]
        if entries.setdefault(parent, Entry(parent, None)).data is not None:
            raise ArchiveError(f"{name!r} is under {'/'.join(parent)!r}, which the archive has as a file")
    if not entry.parts:
        return  # the root itself ("./"): always a directory
    if entry.parts in explicit:
        raise ArchiveError(f"{name!r} is in the archive twice")
    if entry.parts in entries and entry.data is not None:  # an earlier name made it a directory
        raise ArchiveError(f"{name!r} is in the archive as a directory and as a file")
    explicit.add(entry.parts)
    entries[entry.parts] = entry
