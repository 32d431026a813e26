"""Writing what a command fetched: never over an existing file unless the user says ``--force``.

A fetch may use something up (a Dropbox deposit's last fetch, a shard's), so an existing
file is refused *before* anything is fetched (:func:`refuse_existing`), and written after
with :func:`write_private`: all of it or nothing, mode 0600, and still never over a file
that appeared meanwhile (it is linked into place, which fails if the name is taken).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bento.errors import BentoError


def refuse_existing(path: Path | None, *, force: bool, option: str = "--out") -> None:
    """Refuse, before anything is fetched, to write over the file ``path`` without ``force``."""
    if path is not None and str(path) != "-" and path.exists() and not force:
        raise BentoError(
            f"{path} exists already; nothing was fetched",
            fix=f"give another {option} path, or add --force to overwrite it",
        )


def write_private(path: Path, data: bytes, *, force: bool) -> None:
    """``path`` holds all of ``data`` (mode 0600) or is left as it was; without ``force``,
    a file that appeared meanwhile is kept, and the data waits beside it under a name given
    in the error."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise BentoError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as target:
            target.write(data)
            target.flush()
            os.fsync(target.fileno())
        if force:
            os.replace(tmp, path)
            return
        os.link(tmp, path)  # fails if the name is taken: nothing is overwritten
    except FileExistsError:
        raise BentoError(
            f"{path} appeared while the data was fetched; it is kept, and the data is in {tmp}",
            fix=f"move {tmp} where you want it",
        ) from None
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise BentoError(f"cannot write {path}: {exc.strerror}") from None
    Path(tmp).unlink(missing_ok=True)
