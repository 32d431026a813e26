"""Why a testnet box did not publish: what its relay's tor said of each descriptor upload
(HS_DESC events, parsed by Stem from tor's own wire format), and a probe's timeout named."""

from __future__ import annotations

import socket
import time

import stem.response
from stem.response.events import HSDescEvent

from bento.testnet import boxes
from bento.testnet.state import Node, Role
from bento.testnet.uploads import DescriptorUploads

ONION = "a" * 56
HSDIRS = [f"${char * 40}~relay{n}" for n, char in enumerate("ABC")]


def _event(line: str) -> HSDescEvent:
    event = stem.response.ControlMessage.from_str(f"650 HS_DESC {line}\r\n", "EVENT", normalize=True)
    assert isinstance(event, HSDescEvent)
    return event


def _watching() -> DescriptorUploads:
    """Events fed by hand, as Stem's thread would deliver them (no tor to connect to)."""
    return DescriptorUploads("127.0.0.1:9", ONION)


def test_uploads_say_which_hsdirs_took_the_descriptor_and_why_others_refused() -> None:
    uploads = _watching()
    for hsdir in HSDIRS:
        uploads._on_event(_event(f"UPLOAD {ONION} UNKNOWN {hsdir} DESCID HSDIR_INDEX=00"))
    uploads._on_event(_event(f"UPLOADED {ONION} UNKNOWN {HSDIRS[0]}"))
    uploads._on_event(_event(f"FAILED {ONION} UNKNOWN {HSDIRS[1]} REASON=UPLOAD_REJECTED"))
    uploads._on_event(_event(f"FAILED {'b' * 56} UNKNOWN {HSDIRS[2]} REASON=NOT_FOUND"))  # not ours
    assert not uploads.settled(), "one HSDir has not answered"
    said = uploads.explain()
    assert "uploaded the descriptor to 1 of 3 HSDirs" in said
    assert "1 failed ($BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB: UPLOAD_REJECTED)" in said
    assert "1 not answered yet" in said

    uploads._on_event(_event(f"UPLOADED {ONION} UNKNOWN {HSDIRS[2]}"))
    assert uploads.settled()
    assert uploads.wait_settled(time.monotonic()) is False, "no tor watched: nothing to wait for"
    assert uploads.accepted() == ["A" * 40, "C" * 40]
    uploads.forget()  # a new server of the same onion publishes afresh
    assert uploads.accepted() == [] and not uploads.settled()


def test_no_upload_at_all_is_said_with_what_tor_lacks() -> None:
    with DescriptorUploads("127.0.0.1:9", ONION) as uploads:  # nothing listens on port 9
        said = uploads.explain()
    assert "could not be followed" in said and "cannot reach tor's control port" in said


def test_a_probe_that_times_out_names_its_failure() -> None:
    """The CI run's message read 'is not reachable over Tor ()': a timeout's str() is empty."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # a SOCKS port that never answers
        socks = f"127.0.0.1:{silent.getsockname()[1]}"
        node = Node(Role.EXIT, "exit0", "/nonexistent", 1, bento_onion=ONION)
        failures = boxes.unreachable([node], socks, deadline=time.monotonic() + 0.5)
    assert failures["exit0"] == (
        "the box on exit0 is not reachable over Tor (fetching its descriptor through the client failed: "
        "TimeoutError)"
    )
