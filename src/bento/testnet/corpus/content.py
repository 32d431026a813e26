"""The bytes of each corpus resource, made on demand from the corpus seed.

Pages, style sheets and scripts are real markup that references the site's other
resources (``<link>``, ``<script src>``, ``<img src srcset>``, ``<iframe>``, CSS ``url()``
and ``@import``, and URLs that only a running script assembles); images are valid PNGs
of random pixels (incompressible, like the JPEGs that weigh most on real pages); fonts are
random bytes behind a WOFF2 signature. Each is padded to its target size.
"""

from __future__ import annotations

import random
import struct
import zlib

from bento.testnet.corpus.model import Corpus, Resource, url

CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "frame": "text/html; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "data": "application/json",
    "image": "image/png",
    "font": "font/woff2",
}

_WORDS = [
    "tor",
    "relay",
    "onion",
    "circuit",
    "exit",
    "guard",
    "middle",
    "bento",
    "box",
    "function",
    "page",
    "style",
    "script",
    "image",
    "font",
    "frame",
    "cell",
    "stream",
    "padding",
    "latency",
    "bandwidth",
    "descriptor",
    "consensus",
    "authority",
    "client",
]


def render(corpus: Corpus, resource: Resource, port: int) -> bytes:
    """The body of ``resource`` as served on ``port``."""
    rng = random.Random(f"bento-corpus:{corpus.seed}:{resource.host}{resource.path}")
    if resource.kind == "image":
        return _png(rng, resource.size)
    if resource.kind == "font":
        return b"wOF2" + rng.randbytes(max(0, resource.size - 4))
    text = {
        "html": _html,
        "frame": _html,
        "css": _css,
        "js": _js,
        "data": _data,
    }[resource.kind](resource, port)
    return _pad(rng, resource, text).encode()


def _html(page: Resource, port: int) -> str:
    head, body = [], []
    for r in page.links:
        link = url(r, port)
        if r.kind == "css":
            head.append(f'<link rel="stylesheet" href="{link}">')
        elif r.kind == "js":
            head.append(f'<script src="{link}" defer></script>')
        elif r.kind == "frame":
            body.append(f'<iframe src="{link}" width="640" height="360" title="embed"></iframe>')
        elif r.kind == "image":
            srcset = "" if r.srcset is None else f' srcset="{link} 1x, {url(r.srcset, port)} 2x"'
            body.append(f'<img src="{link}"{srcset} alt="">')
    title = page.host.split(".")[1] if page.kind == "html" else "embed"
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>\n'
        + "\n".join(head)
        + f"\n</head><body><h1>{title}</h1>\n"
        + "\n".join(body)
        + "\n<!-- PADDING --></body></html>\n"
    )


def _css(sheet: Resource, port: int) -> str:
    rules = [f'@import url("{url(r, port)}");' for r in sheet.imports]  # must come first
    for n, r in enumerate(sheet.links):
        if r.kind == "font":
            rules.append(f'@font-face {{ font-family: "f{n}"; src: url("{url(r, port)}") format("woff2"); }}')
            rules.append(f'h{n % 6 + 1} {{ font-family: "f{n}", sans-serif; }}')
        elif r.kind == "image" and r.srcset is not None:
            both = f'url("{url(r, port)}") 1x, url("{url(r.srcset, port)}") 2x'
            rules.append(f".bg{n} {{ background-image: image-set({both}); }}")
        elif r.kind == "image":
            rules.append(f'.bg{n} {{ background-image: url("{url(r, port)}"); }}')
    return "\n".join(rules) + "\n/* PADDING */\n"


def _js(script: Resource, port: int) -> str:
    lines = ['"use strict";']
    for n, r in enumerate(script.scripted):
        # Assembled at run time, so no static parser can find the URL in the source.
        scheme, rest = url(r, port).split("//", 1)
        host, path = rest.split("/", 1)
        parts = ", ".join(f'"{p}"' for p in (scheme + "/", host, *path.split("/")))
        target = f"u{n}"
        lines.append(f"const {target} = [{parts}].join('/');")
        if r.kind == "image":
            lines.append(f"new Image().src = {target};")
        else:
            lines.append(f"fetch({target}).then(r => r.text()).catch(() => null);")
    return "\n".join(lines) + "\n/* PADDING */\n"


def _data(_resource: Resource, _port: int) -> str:
    return '{"items": [], "padding": "PADDING"}\n'


def _pad(rng: random.Random, resource: Resource, text: str) -> str:
    missing = resource.size - len(text.encode()) + len("PADDING")
    words: list[str] = []
    length = 0
    while length < missing:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    filler = " ".join(words)[: max(0, missing)]
    return text.replace("PADDING", filler, 1)


def _png(rng: random.Random, size: int) -> bytes:
    """A valid RGB PNG of random pixels, about ``size`` bytes (stored, not compressed)."""
    width = 64
    height = max(1, (size - 100) // (width * 3 + 1))
    raw = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 0))
        + chunk(b"IEND", b"")
    )
