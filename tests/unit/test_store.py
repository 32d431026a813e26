"""Per-function storage: ciphertext on disk, authenticated, quota'd, shredded at shutdown."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path

import pytest

from bento.protocol.policy import Needs, NodePolicy
from bento.server.broker.budgets import BudgetSpec, Exhausted, Ledger
from bento.server.keyvault import KEY_BYTES, KeyVault
from bento.server.store import MAX_KEY_BYTES, FunctionStore, StorageChannel, StorageRefused, Store

SECRET = b"the launch codes are 0000"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _grep(root: Path, needle: bytes) -> list[Path]:
    return [p for p in _files(root) if needle in p.read_bytes()]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "storage")
    store.reset()
    return store


async def _put(fs: object, key: str, value: bytes) -> None:
    await fs.put(key, value, fs.reserve(key, len(value)), _threads())  # type: ignore[attr-defined]


def _threads() -> Ledger:
    """A function's budget of threads for its storage calls (the channel's ledger, in the server)."""
    return Ledger(BudgetSpec(threads=4))


async def test_values_round_trip_and_disk_holds_only_ciphertext(store: Store) -> None:
    fs = store.of("f1", 1)
    await _put(fs, "secret-name", SECRET)
    await _put(fs, "empty", b"")
    assert await fs.get("secret-name", _threads()) == SECRET
    assert await fs.get("empty", _threads()) == b""
    assert fs.keys() == ["empty", "secret-name"]
    assert fs.keys("sec") == ["secret-name"]
    assert len(_files(store.root)) == 2
    assert not _grep(store.root, SECRET), "a value reached the disk in clear"
    assert not _grep(store.root, b"secret-name"), "a key name reached the disk"
    assert all(p.stat().st_mode & 0o077 == 0 for p in _files(store.root))
    assert fs.usage() == {
        "used": len(SECRET) + len("secret-name") + len("empty"),
        "quota": 1 << 20,
        "objects": 2,
    }


async def test_replacing_a_value_leaves_one_object(store: Store) -> None:
    fs = store.of("f1", 1)
    await _put(fs, "k", b"one")
    await _put(fs, "k", b"two")
    assert await fs.get("k", _threads()) == b"two"
    assert len(_files(store.root)) == 1
    assert await fs.delete("k", _threads()) is True
    assert await fs.delete("k", _threads()) is False
    assert _files(store.root) == []
    with pytest.raises(KeyError):
        await fs.get("k", _threads())


async def test_tampering_moving_and_rollback_fail_authentication(store: Store) -> None:
    fs = store.of("f1", 1)
    await _put(fs, "a", b"value of a")
    await _put(fs, "b", b"value of b")
    file_a = store.root / "f1" / fs.objects["a"].object_id
    file_b = store.root / "f1" / fs.objects["b"].object_id
    old_a = file_a.read_bytes()

    damaged = bytearray(old_a)
    damaged[-1] ^= 1
    file_a.write_bytes(bytes(damaged))
    with pytest.raises(StorageRefused, match="failed authentication"):
        await fs.get("a", _threads())

    file_a.write_bytes(file_b.read_bytes())  # b's ciphertext under a's name
    with pytest.raises(StorageRefused, match="failed authentication"):
        await fs.get("a", _threads())

    file_a.write_bytes(old_a)
    await _put(fs, "a", b"newer value of a")
    (store.root / "f1" / fs.objects["a"].object_id).write_bytes(old_a)  # roll back to the old version
    with pytest.raises(StorageRefused, match="failed authentication"):
        await fs.get("a", _threads())

    other = store.of("f2", 1)
    await _put(other, "a", b"x")
    (store.root / "f2" / other.objects["a"].object_id).write_bytes(file_b.read_bytes())
    with pytest.raises(StorageRefused, match="failed authentication"):
        await other.get("a", _threads())


async def test_quota_counts_values_and_keys_and_allows_replacement(store: Store) -> None:
    fs = store.of("f1", 1)
    quota = 1 << 20
    await _put(fs, "big", bytes(quota - 3))
    with pytest.raises(StorageRefused, match="storage quota exceeded.*needs.storage_mb"):
        fs.reserve("more", 1)
    await _put(fs, "big", bytes(quota - 3))  # replacing frees the old value's share first
    with pytest.raises(StorageRefused, match="quota"):
        fs.reserve("big", quota)
    assert fs.reserved == 0
    assert fs.used == quota


@pytest.mark.parametrize("key", ["", "a\0b", "k" * (MAX_KEY_BYTES + 1), 7])
async def test_bad_keys_are_refused(store: Store, key: object) -> None:
    fs = store.of("f1", 1)
    with pytest.raises(StorageRefused, match="storage key"):
        fs.reserve(key, 1)  # type: ignore[arg-type]


async def test_shutdown_shreds_key_and_ciphertext(store: Store) -> None:
    fs = store.of("f1", 1)
    await _put(fs, "k", SECRET)
    page, slot = fs.key_handle.page, fs.key_handle.slot
    await store.shred("f1")
    assert not (store.root / "f1").exists()
    memory = store.vault._pages[page].memory
    assert memory[slot * KEY_BYTES : (slot + 1) * KEY_BYTES] == bytes(KEY_BYTES), "the key was not zeroed"
    with pytest.raises(StorageRefused, match="shut down"):
        await fs.get("k", _threads())
    assert store.of("f1", 1).keys() == [], "a new store of the same id starts empty, with a new key"


def test_vault_keys_are_distinct_and_reused_slots_are_fresh() -> None:
    vault = KeyVault()
    handles = [vault.create() for _ in range(200)]  # more than one page holds
    keys = {bytes(vault.key(h)) for h in handles}
    assert len(keys) == 200
    vault.destroy(handles[0])
    with pytest.raises(KeyError):
        vault.key(handles[0])
    again = vault.create()
    assert bytes(vault.key(again)) not in keys
    assert vault.protections.locked, "mlock failed on this host (RLIMIT_MEMLOCK?)"
    assert vault.protections.undumpable


async def test_a_restarted_store_forgets_everything(tmp_path: Path) -> None:
    first = Store(tmp_path / "storage")
    first.reset()
    await _put(first.of("f1", 1), "k", SECRET)
    second = Store(tmp_path / "storage")
    second.reset()
    assert _files(tmp_path) == []


def _channel(fs: FunctionStore, ledger: Ledger | None = None) -> StorageChannel:
    needs, policy = Needs(storage_mb=fs.quota >> 20), NodePolicy(storage={"allowed": True, "max_mb": 64})
    return StorageChannel(fs, ledger or Ledger(BudgetSpec.of(needs, policy)))


async def test_channel_put_get_list_over_socket_pairs(store: Store) -> None:
    channel = _channel(store.of("f1", 1))
    sock = channel.put("k", len(SECRET))
    assert json.loads(await asyncio.to_thread(_exchange, sock, SECRET)) == {"ok": True}
    found = await channel.get("k")
    assert found is not None and found[0] == len(SECRET)
    assert await asyncio.to_thread(_exchange, found[1], b"") == SECRET
    assert await channel.get("nothing") is None
    size, sock = channel.list("")
    assert json.loads(await asyncio.to_thread(_exchange, sock, b"")) == ["k"] and size == len(b'["k"]')
    await channel.aclose()


async def test_channel_short_write_keeps_nothing_and_frees_the_quota(store: Store) -> None:
    fs = store.of("f1", 1)
    channel = _channel(fs)
    sock = channel.put("k", 100)
    status = json.loads(await asyncio.to_thread(_exchange, sock, b"only ten b"))
    assert status["ok"] is False and "10 of 100" in status["error"]
    assert fs.reserved == 0 and fs.keys() == [] and _files(store.root) == []
    await asyncio.sleep(0)  # done-callbacks run on the loop's next turn
    assert channel.ledger.used["storage_transfers"] == channel.ledger.used["storage_bytes"] == 0
    await channel.aclose()


async def test_channel_closed_mid_transfer_frees_the_quota(store: Store) -> None:
    fs = store.of("f1", 1)
    channel = _channel(fs)
    sock = channel.put("k", 1000)
    with sock:
        sock.sendall(b"x" * 10)
        await channel.aclose()  # the instance died
    assert fs.reserved == 0 and fs.keys() == []
    assert channel.ledger.used["storage_bytes"] == 0


def _exchange(sock: socket.socket, send: bytes) -> bytes:
    """The function's side of a transfer: send, close our direction, read to the end."""
    with sock:
        sock.settimeout(10)
        if send:  # a put; a get only reads (the box may have closed its end already)
            sock.sendall(send)
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


async def test_transfers_in_flight_are_bounded_per_function_before_the_disk_is_read(store: Store) -> None:
    """Two instances of one function share its budget: plaintext in flight in the server is
    at most the quota, counted before the disk read is awaited (60 reads at once of a full
    16 MB store once held 480 MB here)."""
    fs = store.of("f1", 1)
    await _put(fs, "big", bytes(600_000))
    first = _channel(fs)
    second = _channel(fs, first.ledger)  # another instance of the same function
    reads = [first.get("big"), second.get("big"), first.get("big")]
    results = await asyncio.gather(*reads, return_exceptions=True)
    refused = [r for r in results if isinstance(r, StorageRefused)]
    granted = [r for r in results if isinstance(r, tuple)]
    assert len(granted) == 1 and len(refused) == 2, results  # 2 x 600 kB > the 1 MiB quota
    assert "in flight" in str(refused[0])
    assert first.ledger.used["storage_bytes"] == 600_000
    small = [second.list("") for _ in range(3)]  # each a transfer: the fourth is refused
    with pytest.raises(Exhausted, match="storage_transfers"):
        second.list("")
    for _, sock in [*granted, *small]:
        sock.close()
    await first.aclose()
    await second.aclose()
    await asyncio.sleep(0)  # done-callbacks run on the loop's next turn
    assert first.ledger.used["storage_bytes"] == first.ledger.used["storage_transfers"] == 0


async def test_a_function_filling_its_threads_does_not_hold_up_a_neighbours_read(store: Store) -> None:
    """One function asks for more blocking calls at once than the functions' pool has threads
    (each stuck, as on a hung disk); a neighbour's storage read still comes back at once,
    because the first holds only its budget of them and its other calls wait on it."""
    greedy = Ledger(BudgetSpec(threads=4))
    neighbour = store.of("f2", 1)
    await _put(neighbour, "k", SECRET)
    stuck = threading.Event()
    calls = [asyncio.ensure_future(greedy.in_thread(stuck.wait, 30)) for _ in range(40)]
    try:
        assert await asyncio.wait_for(neighbour.get("k", _threads()), 5) == SECRET
        assert greedy.usage()["threads"] == 4 and not any(call.done() for call in calls)
    finally:
        stuck.set()
    assert await asyncio.wait_for(asyncio.gather(*calls), 30) == [True] * 40, "they waited, then ran"
    assert greedy.usage()["threads"] == 0
