"""Browser's client: what it accepts from a box (every byte hostile until checked)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import tarfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bento.errors import BentoError
from bento.functions.browser import client, pack, wire
from bento.functions.browser import receive as reader
from bento.protocol.messages import EndCause, Ended, FunctionError, SessionState

DONE = Ended(state=SessionState.COMPLETED, cause=EndCause.COMPLETED)


class Stream:
    """What a session stream hands the client: chunks, then how the session ended."""

    def __init__(
        self, data: bytes, chunk: int = 1000, ended: Ended = DONE, hold_after: int | None = None
    ) -> None:
        self.data, self.chunk, self.final = data, chunk, ended
        self.ended: Ended | None = None
        self.sent = 0
        self.hold_after = hold_after  # the box's bytes stop here until `go_on` is set
        self.go_on = asyncio.Event()
        self.all_sent = threading.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), self.chunk):
            if self.hold_after is not None and start >= self.hold_after:
                async with asyncio.timeout(10):
                    await self.go_on.wait()
            await asyncio.sleep(0)  # a real stream waits for the network
            self.sent = min(start + self.chunk, len(self.data))
            yield self.data[start : start + self.chunk]
        self.all_sent.set()
        self.ended = self.final


def archive(files: dict[str, bytes], index: dict[str, Any] | None = None) -> bytes:
    buffer = io.BytesIO()
    members = {pack.INDEX: json.dumps(index or {"main": "index.html"}).encode(), **files}
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


KEY = wire.new_key()  # the user's: the client sent it to Browser inside the session


def transfer(body: bytes, padding: int, announced: int | None = None, key: bytes = KEY) -> bytes:
    """What Browser sends, sealed under ``key``."""
    return wire.seal(key, body, padding if announced is None else announced) + wire.Padding(key).take(padding)


async def receive(stream: Stream, out: Path, **kwargs: Any) -> dict[str, Any]:
    out.mkdir(exist_ok=True)
    keep = functools.partial(reader.unpack, out=out)
    return await reader.receive(stream, KEY, keep, time.monotonic(), **kwargs)  # type: ignore[arg-type]


def _flipped(data: bytes, at: int) -> bytes:
    at %= len(data)
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def _plain_sha256_transfer(body: bytes, padding: int) -> bytes:
    """A forger's page in the old format: a checksum anyone can recompute, no key."""
    return (
        b"BENTOPG\x01"
        + len(body).to_bytes(8, "big")
        + padding.to_bytes(8, "big")
        + (hashlib.sha256(body).digest() + body + bytes(padding))
    )


async def test_the_page_is_shown_before_the_padding_ends(tmp_path: Path) -> None:
    body = archive({"index.html": b"<p>hi</p>", "resources/a.png": b"png"})
    page_end = wire.SEALED_HEADER + len(body) + wire.TAG
    # The box's padding waits until the page is shown: a client that showed it only at the
    # end of the transfer would wait for ever (10 s here).
    stream = Stream(transfer(body, 50_000), chunk=777, hold_after=page_end + 777)
    shown_at: list[int] = []

    async def on_page(main: Path) -> None:
        assert b"<body><p>hi</p></body>" in main.read_bytes()  # made inert: the same page
        shown_at.append(stream.sent)
        stream.go_on.set()

    got = await receive(stream, tmp_path / "out", on_page=on_page, progress=None)
    assert got["padding_bytes"] == 50_000 and got["received_bytes"] == len(stream.data)
    assert shown_at and shown_at[0] < len(stream.data) - 40_000
    assert got["seconds_to_page_bytes"] <= got["seconds_to_page"] <= got["seconds_to_last_byte"]
    assert (tmp_path / "out" / "page.tar.gz").read_bytes() == body


async def test_the_padding_is_read_while_the_page_is_unpacked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that stopped reading to unpack would leave the padding in Tor's windows, and
    the padding would end later by the time it took (Table 2's padding cost)."""
    body = archive({"index.html": b"<p>hi</p>"})
    stream = Stream(transfer(body, 200_000), chunk=1000)
    unpack = reader.unpack

    def slow_unpack(archive: bytes, out: Path) -> dict[str, Any]:
        assert stream.all_sent.wait(10), "the padding was not read while the page was unpacked"
        return unpack(archive, out)

    monkeypatch.setattr(reader, "unpack", slow_unpack)
    got = await receive(stream, tmp_path / "out", on_page=None, progress=None)
    assert got["padding_bytes"] == 200_000
    assert got["seconds_to_page_bytes"] <= got["seconds_to_last_byte"] <= got["seconds_to_page"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"NOTBENTO" + bytes(48), "not a Browser page sealed for you"),
        (_plain_sha256_transfer(archive({"index.html": b"forged"}), 10), "not a Browser page sealed for you"),
        (transfer(archive({"index.html": b"forged"}), 10, key=wire.new_key()), "sealed for someone else"),
        (
            _flipped(transfer(archive({"index.html": b"x"}), 10), wire.SEALED_HEADER + 5),
            "archive was refused",
        ),
        (_flipped(transfer(archive({"index.html": b"x"}), 10), -3), "padding was altered"),
        (transfer(archive({"index.html": b"x"}), 10, announced=5), "more padding than the 5 bytes"),
        (
            transfer(archive({"index.html": b"x"}), 10, announced=20),
            "announced 20 bytes of padding and sent 10",
        ),
        (transfer(archive({"../escape.html": b"x"}), 0), "cannot be unpacked"),
        (transfer(archive({"index.html": b"x"}, {"main": "../../etc/passwd"}), 0), "names no page inside it"),
        (transfer(b"not gzip at all", 0), "cannot be unpacked"),
        (wire.seal(KEY, b"", 0), "accepts 1 to"),
        (transfer(archive({"index.html": b"x"}), 0)[:100], "ended before the whole page arrived"),
    ],
    # Named by the refusal, not by the bytes: sealed ones differ each run (fresh nonces), and
    # every pytest-xdist worker must collect the same test names.
    ids=lambda value: value if isinstance(value, str) else "transfer",
)
async def test_hostile_transfers_are_refused(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(BentoError, match=message):
        await receive(Stream(data, chunk=64), tmp_path / "out", on_page=None, progress=None)
    assert not (tmp_path / "escape.html").exists()


async def test_links_in_the_archive_are_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("index.html")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(BentoError, match="other than plain files"):
        await receive(Stream(transfer(buffer.getvalue(), 0)), tmp_path / "out", on_page=None, progress=None)


async def test_a_failed_session_says_why(tmp_path: Path) -> None:
    ended = Ended(
        state=SessionState.ERROR, cause=EndCause.ERROR,
        error=FunctionError(type="BrowseError", message="cannot fetch http://x/: HTTP 404 Not Found"),
    )  # fmt: skip
    with pytest.raises(BentoError, match="could not fetch the page: cannot fetch http://x/: HTTP 404"):
        await receive(Stream(b"", ended=ended), tmp_path / "out", on_page=None, progress=None)


def test_the_uploaded_code_is_the_box_modules_and_reproducible() -> None:
    code = client.code()
    assert code == client.code()
    with tarfile.open(fileobj=io.BytesIO(code), mode="r:gz") as tar:
        names = sorted(tar.getnames())
    assert names == sorted(f"bento_browser/{m}.py" for m in client.BOX_MODULES)
    assert client.manifest().name == f"browser-{hashlib.sha256(code).hexdigest()[:12]}"


def test_a_deposited_transfer_is_verified_and_unpacked(tmp_path: Path) -> None:
    from bento.functions.browser.via_dropbox import open_transfer

    body = archive({"index.html": b"<p>hi</p>"})
    page = open_transfer(transfer(body, 500), tmp_path / "page", KEY)
    assert b"<body><p>hi</p></body>" in page.main.read_bytes()
    assert (page.archive_bytes, page.padding_bytes) == (len(body), 500)
    forged = archive({"index.html": b"<p>the Dropbox's own page</p>"})
    for damaged, why in (
        (transfer(body, 500)[:-1], "its Browser header announces"),  # padding cut short
        (_flipped(transfer(body, 500), -1), "padding was altered"),
        (_flipped(transfer(body, 0), wire.SEALED_HEADER), "archive was refused"),
        (_plain_sha256_transfer(forged, 0), "not a Browser page sealed for you"),
        (transfer(forged, 0, key=wire.new_key()), "sealed for someone else"),  # a swapped deposit
        (b"BENTO", "too short for its header"),
    ):
        with pytest.raises(BentoError, match=why):
            open_transfer(damaged, tmp_path / "bad", KEY)
        assert not (tmp_path / "bad").exists()  # nothing left behind


def test_a_carrier_sees_neither_the_page_nor_where_it_ends() -> None:
    body = archive({"index.html": b"<p>a secret page</p>"})
    sent = transfer(body, 3000)
    assert b"a secret page" not in sent and body not in sent
    assert len(sent) == wire.SEALED_HEADER + len(body) + wire.TAG + 3000
    assert wire.Padding(KEY).take(3000) == sent[-3000:] != bytes(3000)


def test_the_composed_browser_is_a_deployment_of_its_own_that_may_call_boxes() -> None:
    plain, composed = client.manifest(), client.manifest(via_dropbox=True)
    assert composed.name != plain.name and composed.name.startswith("browser-via-")
    assert composed.needs.call_boxes and not plain.needs.call_boxes
