"""The client over Tor: a collapsed circuit is a pause, not an error; logs reach the CLI apart."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
from support import CLI, TIMEOUT, deploy, ok

from bento.client.box import Box
from bento.client.stream import Retry
from bento.testnet import Testnet
from bento.tor import control

pytestmark = pytest.mark.testnet

FLOOD = """
from bento.runtime import api

def flood(total, piece):
    for start in range(0, total, piece):
        api.send(bytes((start // piece + i) % 251 for i in range(piece)))
    return total
"""

CHATTY = """
import logging, sys
from bento.runtime import api

def main(name):
    print("about to greet", name)
    logging.warning("a warning from the function")
    api.send(f"hello {name}\\n")
    return {"greeted": name}
"""


def _expected(total: int, piece: int) -> bytes:
    pieces = (bytes((start // piece + i) % 251 for i in range(piece)) for start in range(0, total, piece))
    return b"".join(pieces)


def _collapse_circuits(address: str) -> int:
    """Close every circuit the testnet client has to onion services: what a relay failing does."""
    closed = 0
    with control.connect(address) as ctl:
        for circuit in ctl.get_circuits():
            if circuit.purpose.startswith("HS_CLIENT"):
                ctl.close_circuit(circuit.id)
                closed += 1
    return closed


async def test_a_collapsed_circuit_is_survived_and_every_byte_arrives_once(
    testnet: Testnet, box: Box
) -> None:
    deployment = await deploy(box, FLOOD, "flood")
    total, piece = 6 << 20, 64 << 10
    box.retry = Retry(attempts=8, first_delay=0.5)
    received = bytearray()
    collapsed = 0
    # Within pytest's own limit, so that a stream that hangs fails here, with its state.
    async with asyncio.timeout(TIMEOUT + 60):
        stream = await box.start(deployment, "flood", [total, piece])
        async with stream:
            async for chunk in stream:
                received += chunk
                if not collapsed and len(received) >= 1 << 20:
                    collapsed = await asyncio.to_thread(_collapse_circuits, testnet.control_address)
    assert collapsed >= 1
    assert stream.reattached >= 1, "the circuit went, so the stream must have re-attached"
    assert len(received) == total
    assert hashlib.sha256(received).digest() == hashlib.sha256(_expected(total, piece)).digest()
    assert stream.ended is not None and stream.ended.result == total


def test_the_cli_shows_logs_apart_from_output_and_keeps_them(cli: CLI, tmp_path: Path) -> None:
    source = tmp_path / "chatty.py"
    source.write_text(CHATTY)
    ok(cli("deploy", str(source), "--box", "exit0", "--json"))
    invoked = ok(cli("invoke", "chatty", "main", '"Bento"'))
    assert invoked.stdout == "hello Bento\n"  # the output alone
    assert "about to greet Bento" in invoked.stderr
    assert "WARNING:root:a warning from the function" in invoked.stderr

    as_json = json.loads(ok(cli("invoke", "chatty", "main", '"again"', "--json")).stdout)
    assert as_json["output"] == "hello again\n"
    assert {"stream": "stdout", "text": "about to greet again\n"} in as_json["logs"]

    held = json.loads(ok(cli("logs", as_json["session_id"], "--json")).stdout)
    assert [log["text"] for log in held["logs"]] == [log["text"] for log in as_json["logs"]]
    assert held["dropped"] == 0
    plain = ok(cli("logs", as_json["session_id"]))
    assert plain.stdout == "about to greet again\n"
    assert "a warning from the function" in plain.stderr
