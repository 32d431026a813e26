"""The archive: a gzip-compressed POSIX (pax) tar of the page's tree.

Why a tar and not WARC: the archive is built inside a sandbox that has only the standard
library (warcio is not there, and ``tarfile`` is), and what the user wants is a page she
can open offline, which a tar of the rewritten tree is as soon as it is unpacked, with
any browser; a WARC keeps the original responses and needs a replay tool to be seen.
The tree is ``index.html``, ``resources/...`` and ``bento-page.json``, the index of what
was fetched (each URL, where its copy is, its status, type, size and any error).
"""

from __future__ import annotations

import io
import json
import tarfile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .fetch import Resource

ARCHIVE = "page.tar.gz"  # the name clients save it under
INDEX = "bento-page.json"
FORMAT = "bento-page/1"


def index(
    page: Resource,
    resources: list[Resource],
    names: dict[str, str],
    fetched_at: float,
    seconds: float,
    parser: str,
    engine: str = "static",
) -> dict[str, Any]:
    def entry(resource: Resource) -> dict[str, Any]:
        return {
            "url": resource.url,
            "kind": resource.kind,
            "path": names.get(resource.url),
            "status": resource.status,
            "type": resource.content_type,
            "bytes": len(resource.body),
            "seconds": round(resource.seconds, 3),
            "error": resource.error or None,
        }

    return {
        "format": FORMAT,
        "url": page.url,
        "final_url": page.final_url,
        "main": names[page.url],
        "fetched_at": int(fetched_at),
        "seconds": round(seconds, 3),
        "parser": parser,
        "engine": engine,  # static: references in HTML and CSS; chromium: what chromium asked for
        "page": entry(page),
        "resources": [entry(r) for r in resources],
    }


def pack(files: dict[str, bytes], page_index: dict[str, Any]) -> bytes:
    """The tar.gz of the index and ``files`` (path -> bytes), in a stable order."""
    buffer = io.BytesIO()
    members = [(INDEX, json.dumps(page_index, indent=1).encode()), *sorted(files.items())]
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT, compresslevel=6) as archive:
        for path, data in members:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = page_index["fetched_at"]
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
