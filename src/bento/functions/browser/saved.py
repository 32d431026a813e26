"""The saved copy: a box's archive (opened from its seal), read with strict limits, made inert, written out.

The box is not trusted with the user's safety: whatever its archive holds, the copy that
reaches her disk (or the viewer) has only plain files under names the box could have
made (``index.html``, ``resources/<hash>.<suffix>``), and every document is made inert
here (``inert``), so opening it requests nothing but its own files.

>>> archive = pack.pack({"index.html": b"<script>fetch('https://t.example/')</script><p>hi"},
...                     {"main": "index.html", "fetched_at": 0})
>>> copy = read_archive(archive)
>>> copy.main, b"<script" in copy.files["index.html"], b"<p>hi</p>" in copy.files["index.html"]
('index.html', False, True)
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bento.errors import BentoError

from . import pack
from .inert import INERT, Links, inert_files

MAX_UNPACKED = 1 << 30
MAX_MEMBERS = 10_000
# The names a box makes (rewrite.local_name, pack): nothing else may reach a user's disk, so
# no name can climb out of the folder, hide as a dotfile, or read as a URL scheme.
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}){0,3}$")


@dataclass
class SavedCopy:
    """A page's archive, its files inert: path -> bytes, and its index (``bento-page.json``)."""

    files: dict[str, bytes]
    index: dict[str, Any]
    main: str
    archive: bytes = field(repr=False, default=b"")

    def write(self, out: Path) -> Path:
        """The files under ``out`` (an existing directory), and the archive as it came; the main page."""
        for path, data in self.files.items():
            target = out / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (out / pack.ARCHIVE).write_bytes(self.archive)
        return out / self.main


def read_archive(archive: bytes, links: Links = INERT) -> SavedCopy:
    """The archive (already opened from its seal, so it is what the box sent this user), read
    in memory and made inert (``links``: what its links become; inert in a saved copy)."""
    files = _members(archive)
    try:
        index = json.loads(files.pop(pack.INDEX))
        main = str(index["main"])
    except (KeyError, ValueError, TypeError) as exc:
        raise BentoError(f"the archive has no usable {pack.INDEX}: {exc}") from None
    if not isinstance(index, dict) or main not in files:
        raise BentoError(f"the archive's {pack.INDEX} names no page inside it")
    made = inert_files(files, links)
    made[pack.INDEX] = json.dumps(index, indent=1).encode()
    return SavedCopy(made, index, main, archive)


def _members(archive: bytes) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            members = tar.getmembers()
            if len(members) > MAX_MEMBERS or sum(m.size for m in members) > MAX_UNPACKED:
                raise BentoError(f"the archive is too large to unpack ({len(members)} entries)")
            for member in members:
                if not member.isfile():
                    raise BentoError("the archive holds something other than plain files")
                if not _NAME.match(member.name) or member.name in files or ".." in member.name.split("/"):
                    raise BentoError(
                        f"the page's archive cannot be unpacked: it holds {member.name[:100]!r}, "
                        "a name Browser does not make"
                    )
                extracted = tar.extractfile(member)
                if extracted is None:
                    raise BentoError("the archive holds something other than plain files")
                files[member.name] = extracted.read(member.size + 1)[: member.size + 1]
                if len(files[member.name]) != member.size:
                    raise BentoError("the archive's sizes do not match its contents")
    except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as exc:
        raise BentoError(f"the page's archive cannot be unpacked: {exc}") from None
    return files
