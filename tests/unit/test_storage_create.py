"""api.storage.create: the one atomic step a function's instances share (an exclusive create).

The broker's channels of several instances of one function race for one key; exactly one
gets to write it, and a create whose write fails leaves the key free again.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from bento.protocol.policy import Needs, NodePolicy
from bento.server.broker.budgets import BudgetSpec, Ledger
from bento.server.store import StorageChannel, Store


def _channels(tmp_path: Path, count: int) -> list[StorageChannel]:
    store = Store(tmp_path / "storage")
    store.reset()
    function_store = store.of("f1", 1)
    ledger = Ledger(BudgetSpec.of(Needs(storage_mb=1), NodePolicy(storage={"allowed": True, "max_mb": 8})))
    return [StorageChannel(function_store, ledger) for _ in range(count)]  # one per instance


def _send(sock: socket.socket, data: bytes) -> dict[str, object]:
    with sock:
        sock.settimeout(10)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    status: dict[str, object] = json.loads(reply)
    return status


async def test_of_eight_instances_creating_one_key_exactly_one_does(tmp_path: Path) -> None:
    channels = _channels(tmp_path, 8)
    granted = [channel.put("claim/0", 3, exclusive=True) for channel in channels]
    winners = [sock for sock in granted if sock is not None]
    assert len(winners) == 1  # the second create is refused while the first is still in flight
    assert await asyncio.to_thread(_send, winners[0], b"one") == {"ok": True}
    assert all(channel.put("claim/0", 3, exclusive=True) is None for channel in channels)  # and after
    plain = channels[1].put("claim/0", 3)  # a plain put still replaces it
    assert plain is not None and await asyncio.to_thread(_send, plain, b"two") == {"ok": True}
    for channel in channels:
        await channel.aclose()


async def test_a_create_whose_write_fails_leaves_the_key_free(tmp_path: Path) -> None:
    first, second = _channels(tmp_path, 2)
    sock = first.put("claim/0", 100, exclusive=True)
    assert sock is not None and second.put("claim/0", 100, exclusive=True) is None
    status = await asyncio.to_thread(_send, sock, b"only ten b")
    assert status["ok"] is False and first.store.keys() == []
    for _ in range(100):  # the transfer's task ends on the loop after it answered
        if "claim/0" not in first.store.creating:
            break
        await asyncio.sleep(0.01)
    again = second.put("claim/0", 1, exclusive=True)
    assert again is not None and await asyncio.to_thread(_send, again, b"x") == {"ok": True}
    assert first.store.keys() == ["claim/0"] and first.store.reserved == 0
    await first.aclose()
    await second.aclose()
