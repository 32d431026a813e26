"""Packing a function's code for upload: a .py file, a directory (as tar.gz), or bytes."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from bento.client.keyring import Deployment
from bento.errors import BentoError
from bento.protocol.descriptor import Descriptor
from bento.protocol.manifest import Manifest
from bento.protocol.messages import CodeKind, Replaces
from bento.protocol.policy import violations

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


def upload_body(
    raw: bytes, kind: CodeKind, manifest: Manifest, *, replaces: Deployment | None, keep_storage: bool
) -> bytes:
    """The JSON of an ``UploadRequest`` (built by hand: the model would copy the code again)."""
    request: dict[str, Any] = {"manifest": manifest.model_dump(mode="json"), "kind": kind.value}
    request["code"] = base64.b64encode(raw).decode()
    if replaces is not None:
        request["replaces"] = Replaces(
            function_id=replaces.function_id,
            shutdown_token=replaces.shutdown_token,
            keep_storage=keep_storage,
        ).model_dump(mode="json")
    return json.dumps(request).encode()


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


def refuse_before_upload(
    box: str, descriptor: Descriptor, size: int, manifest: Manifest, *, require_sgx: bool
) -> None:
    """Refuse, before a byte is sent, an upload that the box ``box`` would refuse (or that
    the user would not want there: ``require_sgx`` and a box without an enclave)."""
    conclave = descriptor.runtime.conclave
    if require_sgx and not (descriptor.runtime.sgx and conclave and conclave.enclave != "none"):
        host = conclave.host if conclave else "it says nothing about enclaves"
        raise BentoError(
            f"the box {box} runs functions in no SGX enclave ({host}); nothing was uploaded",
            fix="choose a box whose descriptor shows an enclave, or deploy without --require-sgx "
            "if you trust its operator with your function's code and data",
        )
    if size > descriptor.policy.max_upload_bytes:
        raise BentoError(
            f"the code is {size} bytes; the box {box} accepts at most "
            f"{descriptor.policy.max_upload_bytes} (its policy's max_upload_bytes)",
            fix="make the upload smaller (leave data out: fetch it at run time), or use another box",
        )
    problems = violations(manifest.needs, descriptor.policy)
    if problems:
        raise BentoError(
            f"the box {box} would refuse this function: " + "; ".join(problems),
            fix="lower the manifest's needs, or find a box that fits with `bento boxes --fits MANIFEST`",
        )
