"""Browser's delivery schedule (functions/browser/timing.py): the page arrives in the window of
a deadline from the user's set, at a constant rate, padded to fill it, whatever the site.

The box's side runs here in process against a real HTTP server, with its clock made a
counter that only its waits move (so a loaded host cannot change a window): what it sends,
and when by that clock, is recorded where the sandbox's ``api.send`` would stream it.
"""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bento.errors import BentoError
from bento.functions.browser import client, fetch, function, timing, wire
from browser_site import Server, png, serve

SCHEDULE = timing.Schedule(deadlines=(1.0, 2.0, 4.0), rate=200_000)  # windows of 100, 200, 400 KB


class Clock:
    """``time`` for the box's code: monotonic seconds that move only when it waits (or when a
    test says the fetch took long); the sends, with their moments."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sent: list[tuple[float, bytes]] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1.8e9 + self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds

    def send(self, data: bytes) -> None:
        self.sent.append((self.now - 1000.0, bytes(data)))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    made = Clock()
    monkeypatch.setattr(function, "time", made)
    monkeypatch.setattr(function.api, "send", made.send)
    return made


@pytest.fixture
async def site() -> Any:
    server = Server("127.0.0.1", "127.0.0.1")
    server.files = {
        "/": (b'<!doctype html><p>small</p><img src="/a.png">', "text/html"),
        "/big.html": (b'<!doctype html><p>big</p><img src="/noise.bin">', "text/html"),
        "/a.png": (png(1, 2, 3), "image/png"),
        "/noise.bin": (os.urandom(150_000), "image/png"),  # incompressible: over the first window
    }
    async with serve(server):
        yield server


async def _browse(url: str, key: bytes, schedule: Any = None, **given: Any) -> None:
    schedule = SCHEDULE.request() if schedule is None else schedule
    await asyncio.to_thread(
        function.browse, url, seal=wire.encode_key(key), timing=schedule, **{"pad_bytes": 0, **given}
    )


def _received(clock: Clock, key: bytes) -> dict[str, Any]:
    """What the user's client makes of the sends: the page opens, the padding is the key's."""
    data = b"".join(piece for _, piece in clock.sent)
    length, padding = wire.open_header(key, data[: wire.SEALED_HEADER])
    body = data[wire.SEALED_HEADER : wire.SEALED_HEADER + length + wire.TAG]
    assert wire.open_archive(key, body)[:2] == b"\x1f\x8b"  # the gzipped tar
    assert data[-padding:] == wire.Padding(key).take(padding)
    return client._kept(client.Timing(deadlines=SCHEDULE.deadlines, rate=SCHEDULE.rate), len(data))


def _window_kept(clock: Clock, deadline: float) -> None:
    """Every byte goes between half the deadline and the deadline, evenly: one send each 50 ms."""
    start, end = SCHEDULE.window(deadline)
    moments = [at for at, _ in clock.sent]
    assert moments[0] == pytest.approx(start) and start <= min(moments) and max(moments) < end
    sizes = [len(piece) for _, piece in clock.sent]
    assert sum(sizes) == SCHEDULE.size(deadline) and max(sizes) - min(sizes) <= 1
    ticks = math.ceil((end - start) * timing.TICKS_PER_SECOND)
    assert moments == pytest.approx([start + (end - start) * n / ticks for n in range(ticks)])


async def test_a_page_ready_in_time_arrives_in_the_first_window(clock: Clock, site: Server) -> None:
    key = wire.new_key()
    await _browse(f"{site.origin}/", key)
    _window_kept(clock, 1.0)
    assert _received(clock, key) == {"deadline": 1.0, "deadlines_missed": 0}


async def test_a_page_not_ready_by_its_window_goes_to_the_next_deadline(
    clock: Clock, site: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    crawl = fetch.crawl

    def slow_crawl(*args: Any) -> Any:
        clock.now += 0.7  # past the first window's start (0.5 s)
        return crawl(*args)

    monkeypatch.setattr(fetch, "crawl", slow_crawl)
    key = wire.new_key()
    await _browse(f"{site.origin}/", key)
    _window_kept(clock, 2.0)
    assert _received(clock, key) == {"deadline": 2.0, "deadlines_missed": 1}


async def test_a_page_too_big_for_a_window_goes_to_the_next_deadline(clock: Clock, site: Server) -> None:
    key = wire.new_key()
    await _browse(f"{site.origin}/big.html", key)
    _window_kept(clock, 2.0)  # 150 KB of noise: over the 1 s window's 100 KB, within the 2 s one's
    assert _received(clock, key) == {"deadline": 2.0, "deadlines_missed": 1}


async def test_a_page_ready_for_no_window_fails_at_the_last_deadline(
    clock: Clock, site: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    crawl = fetch.crawl

    def crawl_past_every_window(*args: Any) -> Any:
        clock.now += 2.5  # the last window began at 2 s
        return crawl(*args)

    monkeypatch.setattr(fetch, "crawl", crawl_past_every_window)
    with pytest.raises(function.BrowseError, match="fits no window of the schedule.*later deadline"):
        await _browse(f"{site.origin}/", wire.new_key())
    assert clock.sent == [] and clock.now - 1000.0 == pytest.approx(4.0)  # told at the last deadline


async def test_a_page_that_cannot_be_fetched_is_told_at_a_deadline(clock: Clock) -> None:
    with pytest.raises(function.BrowseError):
        await _browse("http://127.0.0.1:9/", wire.new_key())  # nothing listens on the discard port
    assert clock.sent == [] and clock.now - 1000.0 == pytest.approx(1.0)  # not when it failed


@pytest.mark.parametrize(
    ("schedule", "problem", "client_problem"),
    [
        ({"deadlines": [10, 5], "rate": 200_000}, "must increase", "must increase"),
        ({"deadlines": [], "rate": 200_000}, "1 to 8 deadlines", "1 to 8 deadlines"),
        ({"deadlines": list(range(1, 10)), "rate": 200_000}, "1 to 8 deadlines", "1 to 8 deadlines"),
        ({"deadlines": [float("inf")], "rate": 200_000}, "1 to 240 s", "finite number"),
        ({"deadlines": [float("nan")], "rate": 200_000}, "1 to 240 s", "finite number"),
        ({"deadlines": [0.5], "rate": 200_000}, "1 to 240 s", "1 to 240 s"),
        ({"deadlines": [True], "rate": 200_000}, "a number of seconds", "valid number"),
        ({"deadlines": ["5"], "rate": 200_000}, "a number of seconds", "valid number"),
        ({"deadlines": [5], "rate": 1.5}, "the rate must be", "valid integer"),
        ({"deadlines": [5], "rate": 10**9}, "the rate must be", "the rate must be"),
        ({"deadlines": [240], "rate": 10_000_000}, "at most 134217728", "at most 134217728"),
        ({"deadlines": [5], "rate": 200_000, "start": 0}, "a schedule is", "Extra inputs"),
    ],
)
async def test_a_bad_schedule_is_refused_with_the_rule_it_breaks(
    clock: Clock, site: Server, schedule: dict[str, Any], problem: str, client_problem: str
) -> None:
    # The box refuses it before it fetches anything ...
    with pytest.raises(function.BrowseError, match=f"cannot keep this delivery schedule: .*{problem}"):
        await _browse(f"{site.origin}/", wire.new_key(), schedule)
    assert site.requests == [] and clock.sent == []
    # ... and the client's strict model before it asks.
    with pytest.raises(ValidationError, match=client_problem):
        client.Timing(**{**schedule, "deadlines": tuple(schedule["deadlines"])})


async def test_a_schedule_that_is_not_an_object_is_refused(clock: Clock, site: Server) -> None:
    with pytest.raises(function.BrowseError, match="a schedule is"):
        await _browse(f"{site.origin}/", wire.new_key(), "5,10")
    with pytest.raises(function.BrowseError, match="a list of seconds"):
        await _browse(f"{site.origin}/", wire.new_key(), {"deadlines": "5,10", "rate": 200_000})
    assert site.requests == []


async def test_a_schedule_takes_no_other_padding(clock: Clock, site: Server) -> None:
    with pytest.raises(function.BrowseError, match="ask for no other padding"):
        await _browse(f"{site.origin}/", wire.new_key(), pad_bytes=1_000_000)
    options = client.Options(pad=1_000_000, timing=client.Timing())
    with pytest.raises(BentoError, match="takes no other padding"):
        client._arguments(f"{site.origin}/", options)


def test_the_client_refuses_a_transfer_that_is_no_windows_length() -> None:
    """A box that ignored the schedule sent the page when it was ready: the user is told."""
    schedule = client.Timing(deadlines=(1.0, 2.0), rate=200_000)
    assert client._kept(schedule, 200_000) == {"deadline": 2.0, "deadlines_missed": 1}
    with pytest.raises(BentoError, match="did not keep the delivery schedule: it sent 150000 bytes"):
        client._kept(schedule, 150_000)


def test_the_cli_asks_for_the_schedule_and_refuses_a_bad_one() -> None:
    from bento.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(
        ["browse", "http://x/", "--box", "b", "--deliver-at", "5,10,20", "--deliver-rate", "1MB/s"]
    )
    from bento.cli.browse import _options

    options = _options(args)
    assert options.pad == 0 and options.timing == client.Timing(deadlines=(5, 10, 20), rate=1_000_000)
    assert _options(parser.parse_args(["browse", "http://x/", "--box", "b"])).timing is None
    bad = parser.parse_args(["browse", "http://x/", "--box", "b", "--deliver-at", "20,10"])
    with pytest.raises(BentoError, match="cannot keep this schedule: the deadlines must increase"):
        _options(bad)
    with pytest.raises(BentoError, match="pads the transfer to fill its window"):
        _options(
            parser.parse_args(["browse", "http://x/", "--box", "b", "--deliver-at", "5", "--pad", "1MB"])
        )


def test_timing_is_uploaded_with_browser() -> None:
    assert "timing" in client.BOX_MODULES and Path(timing.__file__).parent == Path(function.__file__).parent


@pytest.mark.parametrize("given", ["timing", "cover"])
async def test_a_deposit_refuses_a_schedule_or_cover_rather_than_ignore_it(
    tmp_path: Path, given: str
) -> None:
    """A deposit goes box to box while the user is away: there is no transfer on her link to
    schedule, and a library caller is told so before anything is asked of a box."""
    from bento.client.cover import Cover
    from bento.client.keyring import Keyring
    from bento.functions.browser import via_dropbox

    options = (
        client.Options(timing=client.Timing()) if given == "timing" else client.Options(cover=Cover(rate=10))
    )
    unreachable: Any = object()  # any use of the box would be an AttributeError, not this refusal
    with pytest.raises(BentoError, match="no transfer on your link to schedule or cover") as refused:
        await via_dropbox.deposit(unreachable, Keyring(tmp_path / "k.json"), "http://x/", "b" * 56, options)
    assert refused.value.fix is not None and "--deliver-at" in refused.value.fix
