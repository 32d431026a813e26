"""Packing a function's code for upload: a .py file, a directory (as tar.gz), or bytes."""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from bento.errors import BentoError
from bento.protocol.messages import CodeKind

Progress = Callable[[int, int], None]
UPLOAD_CHUNK = 64 << 10


def read_code(code: Path | bytes) -> tuple[bytes, CodeKind]:
    if isinstance(code, bytes):
        return code, CodeKind.MODULE
    if code.is_dir():
        return archive(code), CodeKind.TAR_GZ
    try:
        raw = code.read_bytes()
    except OSError as exc:
        raise BentoError(f"cannot read {code}: {exc.strerror}") from None
    if code.name.endswith((".tar.gz", ".tgz")):
        return raw, CodeKind.TAR_GZ
    return raw, CodeKind.MODULE


def archive(directory: Path) -> bytes:
    """The files under ``directory`` as a .tar.gz of regular files, the only kind a box accepts.

    A symbolic link goes as a copy of the file it names, if that file is inside ``directory``;
    one that leads out is refused here, so that nothing from elsewhere is uploaded unseen.
    """
    root = directory.resolve()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(directory.rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            real = path.resolve()
            if not real.is_relative_to(root):
                raise BentoError(
                    f"{path} is a link to {real}, outside {directory}",
                    fix="copy the file into the directory, or remove the link",
                )
            archive.add(real, arcname=str(path.relative_to(directory)), recursive=False)
    return buffer.getvalue()


async def chunks(body: bytes, progress: Progress | None) -> AsyncIterator[bytes]:
    for start in range(0, len(body), UPLOAD_CHUNK):
        yield body[start : start + UPLOAD_CHUNK]
        if progress is not None:
            progress(min(start + UPLOAD_CHUNK, len(body)), len(body))
