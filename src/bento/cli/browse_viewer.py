"""``bento browse --serve`` and ``--open``: the viewer on 127.0.0.1, every page through Browser.

The viewer runs until Ctrl-C, holding one connection to the box. Its address carries the
run's secret, so a browser is never given it on a command line (other users of the
machine can read every process's arguments): it is handed a file of the user's own
(mode 0600, in a private folder) that leads to the address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile
import webbrowser
from collections.abc import Iterator
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from bento.cli.output import errors
from bento.client.box import Box
from bento.client.discovery import BoxInfo
from bento.client.keyring import Keyring
from bento.errors import BentoError
from bento.functions.browser import client as browser
from bento.functions.browser import pack
from bento.functions.browser.inert import Links
from bento.functions.browser.saved import SavedCopy


def check_display() -> None:
    """Fail now, before anything is fetched, where no browser window could open."""
    graphical = sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd"))
    if graphical and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise BentoError(
            "--open needs a display to open a browser on, and there is none ($DISPLAY and $WAYLAND_DISPLAY "
            "are unset)",
            fix="run `bento browse --serve --box BOX` and open the address it prints in a browser "
            "(from another machine: ssh -L PORT:127.0.0.1:PORT), or drop --open and open the saved copy",
        )


def serve(
    args: argparse.Namespace,
    options: browser.Options,
    info: BoxInfo,
    *,
    first: str | None = None,
    saved: browser.Page | None = None,
) -> int:
    """Run the viewer until Ctrl-C: at ``first`` (fetched once a browser asks), or showing
    the page just ``saved``; with ``--open``, in a browser."""
    from bento.functions.browser import viewer  # starlette and uvicorn: only where a viewer runs

    keyring = Keyring(args.keyring)
    describe = f"Browser on {info.nickname}, " + (
        f"padded to a multiple of {options.pad:,} bytes" if options.scheme == "multiple" else "padded (Padmé)"
    )

    async def run() -> None:
        async with Box(info.onion, socks=args.socks, info=info) as box:

            async def fetch(
                url: str, cookies: dict[str, str], links: Links
            ) -> tuple[SavedCopy, dict[str, Any]]:
                asked = dataclasses.replace(options, cookies=cookies)
                return await browser.browse_in_memory(box, keyring, url, asked, links)

            async with viewer.running(fetch, describe, port=args.port) as shown:
                if first is not None or saved is not None:
                    url = saved.url if saved is not None else str(first)
                    if options.cookies:  # --cookie: the user allows them for the first page's site
                        shown.cookies[(urlsplit(url).hostname or "").lower()] = dict(options.cookies)
                address = shown.address
                if saved is not None:
                    entry = await shown.add(
                        saved.url, (saved.directory / pack.ARCHIVE).read_bytes(), _figures(saved)
                    )
                    address += f"view/{entry.number}"
                elif first is not None:
                    address += "go?" + urlencode({"url": first})
                errors.print(f"viewer: {address}", soft_wrap=True, highlight=False)
                errors.print(f"  (every page through {describe}; Ctrl-C to stop)")
                try:
                    with _launcher(address) as launcher:
                        if args.open:
                            await _open(launcher, args.browser)
                        await asyncio.Event().wait()  # until Ctrl-C
                finally:
                    if args.history is not None:  # the user asked for it to outlive the viewer
                        args.history.write_text(json.dumps(shown.history(), indent=1) + "\n")

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def _figures(page: browser.Page) -> dict[str, Any]:
    return {"archive_bytes": page.archive_bytes, "padding_bytes": page.padding_bytes}


@contextlib.contextmanager
def _launcher(address: str) -> Iterator[Path]:
    """A page of the user's own that leads the browser to ``address`` (removed at the end)."""
    with tempfile.TemporaryDirectory(prefix="bento-viewer-") as folder:  # mode 0700
        path = Path(folder) / "open.html"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            link = escape(address)
            file.write(
                f'<!doctype html><meta http-equiv="refresh" content="0; url={link}">'
                f'<a href="{link}">Bento viewer</a>'
            )
        yield path


async def _open(launcher: Path, command: str | None) -> None:
    if command is None:
        opened = await asyncio.to_thread(webbrowser.open, launcher.as_uri())
        if not opened:
            raise BentoError("no browser could be started", fix="name one with --browser COMMAND")
        return
    try:
        await asyncio.create_subprocess_exec(
            *shlex.split(command),
            launcher.as_uri(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # the user's browser lives on after the viewer, as she chooses
        )
    except (OSError, ValueError) as exc:
        raise BentoError(
            f"cannot start the browser {command!r}: {exc}", fix="name another with --browser"
        ) from None
