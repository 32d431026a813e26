"""Deploying a standard function: its box-side modules as a package, reused while unchanged.

A standard function's deployment is named after a hash of its code (``browser-<hash>``),
so the keyring's entry is reused for exactly this code on this box, and a new version of
Bento deploys afresh.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

from bento.client.box import Box
from bento.client.keyring import Deployment, Keyring
from bento.protocol.manifest import Manifest
from bento.protocol.messages import CodeKind


def package(directory: Path, name: str, modules: tuple[str, ...]) -> bytes:
    """``modules`` of ``directory`` as the package ``name``: a reproducible .tar.gz."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for module in modules:
            data = (directory / f"{module}.py").read_bytes()
            info = tarfile.TarInfo(f"{name}/{module}.py")
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


def version(code: bytes) -> str:
    return hashlib.sha256(code).hexdigest()[:12]


async def ensure(
    box: Box, keyring: Keyring, code: bytes, manifest: Manifest, *, fresh: bool = False
) -> tuple[Deployment, bool]:
    """The keyring's deployment of ``manifest.name`` on ``box``, else a new one (kept); and
    whether it was deployed now."""
    for known in keyring.functions.values():
        if not fresh and known.name == manifest.name and known.onion == box.onion:
            return known, False
    deployed = await box.deploy(code, manifest, kind=CodeKind.TAR_GZ)
    keyring.add(deployed)
    return deployed, True
