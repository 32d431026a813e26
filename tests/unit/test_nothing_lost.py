"""Nothing is lost without asking: no file written over without --force, and a shard get
that uses up only the K shards it needs (more only when some fail or lose their box), saying
why it failed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bento.errors import BentoError, TransportError
from bento.functions.shard import client as shard
from bento.functions.shard import codec
from bento.functions.shard.manifest import ShardManifest, ShardRecord

DATA = os.urandom(50_000)
CAPABILITY = ":".join(("bento-dropbox", "q" * 56, "f" * 32, "tok", "1" * 32, "0" * 64, "k" * 43, "-"))


def _bento(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BENTO_KEYRING": str(tmp_path / "keyring.json"), "BENTO_SOCKS": "127.0.0.1:9"}
    return subprocess.run(
        [sys.executable, "-m", "bento", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )


def test_dropbox_get_refuses_an_existing_file_before_fetching(tmp_path: Path) -> None:
    kept = tmp_path / "kept.txt"
    kept.write_text("mine")
    result = _bento("dropbox", "get", CAPABILITY, "--out", str(kept), tmp_path=tmp_path)
    assert result.returncode == 1
    assert f"{kept} exists already; nothing was fetched" in result.stderr
    assert "--force" in result.stderr and "cannot reach" not in result.stderr, "refused before any fetch"
    assert kept.read_text() == "mine"
    forced = _bento("dropbox", "get", CAPABILITY, "--out", str(kept), "--force", tmp_path=tmp_path)
    assert forced.returncode == 1 and "cannot reach the box" in forced.stderr  # it went on to fetch
    assert kept.read_text() == "mine", "a failed fetch leaves the file as it was"


def _manifest(n: int = 5, k: int = 3, fetches: int = 1) -> tuple[ShardManifest, dict[int, bytes]]:
    code = codec.Code.for_file(len(DATA), n=n, k=k)
    key, file_id = os.urandom(32), os.urandom(16)
    sealed = {i: codec.seal(key, file_id, code, i, s) for i, s in enumerate(codec.encode(DATA, code))}
    records = [
        ShardRecord(index=i, box=f"box{i}", fingerprint=f"{i:040X}", capability=CAPABILITY, bytes=len(s))
        for i, s in sealed.items()
    ]
    manifest = ShardManifest(
        name="data.bin", length=len(DATA), sha256=hashlib.sha256(DATA).hexdigest(), n=n, k=k,
        symbol=code.symbol, file_id=file_id.hex(), key=key.hex(), created=0.0, expires=1e12,
        fetches=fetches, shards=records,
    )  # fmt: skip
    return manifest, sealed


class Boxes:
    """The shards' Dropboxes, each fetchable ``fetches`` times, some of them silent."""

    def __init__(self, sealed: dict[int, bytes], fetches: int, silent: frozenset[int] = frozenset()) -> None:
        self.sealed, self.left, self.silent = sealed, dict.fromkeys(sealed, fetches), silent
        self.asked: list[int] = []

    async def fetch(self, record: ShardRecord, in_doubt: shard.InDoubt) -> bytes:
        self.asked.append(record.index)
        if record.index in self.silent:
            raise TransportError(f"cannot reach the box {record.box} over Tor")
        if self.left[record.index] == 0:
            raise BentoError("the Dropbox refused: no deposit for this id and right (fetched its last time)")
        self.left[record.index] -= 1
        return self.sealed[record.index]


async def test_a_get_fetches_only_k_shards_and_the_others_stay_for_later() -> None:
    manifest, sealed = _manifest(n=5, k=3, fetches=1)
    boxes = Boxes(sealed, fetches=1)
    fetched = await shard.get(manifest, socks="", fetch=boxes.fetch, rng=random.Random(1))
    assert fetched.data == DATA
    assert len(boxes.asked) == 3 and sorted(fetched.used) == sorted(boxes.asked)
    assert sum(boxes.left.values()) == 2, "two shards keep their fetch"

    with pytest.raises(BentoError) as used_up:
        await shard.get(manifest, socks="", fetch=boxes.fetch, rng=random.Random(2))
    assert "only 2 shard(s) of the 3 needed" in used_up.value.message
    assert "every box answered" in (used_up.value.fix or "")
    assert "1 get(s) in all" in (used_up.value.fix or "") and "--fetches" in (used_up.value.fix or "")


async def test_a_failed_shard_is_replaced_by_another_and_silence_is_told_apart() -> None:
    manifest, sealed = _manifest(n=5, k=3, fetches=2)
    boxes = Boxes(sealed, fetches=2, silent=frozenset({0, 1}))
    fetched = await shard.get(manifest, socks="", fetch=boxes.fetch, rng=random.Random(3))
    assert fetched.data == DATA and sorted(fetched.used) == [2, 3, 4]
    assert len(fetched.failures) == len(set(boxes.asked) & {0, 1})

    boxes.silent = frozenset({0, 1, 2})
    with pytest.raises(BentoError) as silent:
        await shard.get(manifest, socks="", fetch=boxes.fetch)
    assert "try again when more of the boxes answer" in (silent.value.fix or "")
    assert "box0" in (silent.value.fix or "") and "box1" in (silent.value.fix or "")


class DroppingBoxes(Boxes):
    """The first shard asked for loses its connection (its box was killed) and tries to
    attach again for as long as it is let: it answers only by being cancelled."""

    def __init__(self, sealed: dict[int, bytes], fetches: int) -> None:
        super().__init__(sealed, fetches)
        self.cancelled: list[int] = []

    async def fetch(self, record: ShardRecord, in_doubt: shard.InDoubt) -> bytes:
        if self.asked:
            return await super().fetch(record, in_doubt)
        self.asked.append(record.index)
        in_doubt()  # what the stream says at its first re-attach
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(record.index)
            raise
        raise AssertionError("unreachable")


async def test_a_shard_whose_box_stops_answering_does_not_hold_the_get_up() -> None:
    manifest, sealed = _manifest(n=3, k=2, fetches=1)
    boxes = DroppingBoxes(sealed, fetches=1)
    async with asyncio.timeout(30):  # without the spare, the get waits for the lost shard for ever
        fetched = await shard.get(manifest, socks="", fetch=boxes.fetch, rng=random.Random(4))
    lost = boxes.asked[0]
    assert fetched.data == DATA and sorted(fetched.used) == sorted({0, 1, 2} - {lost})
    assert boxes.cancelled == [lost] and fetched.cancelled == 1, "the lost transfer is not left running"
    assert len(boxes.asked) == 3 and fetched.failures == []


def test_the_manifest_says_how_many_gets_it_allows() -> None:
    assert _manifest(5, 3, 1)[0].allowed_gets().endswith(": 1 get(s) in all")
    assert _manifest(5, 3, 3)[0].allowed_gets().endswith(": up to 5 get(s) in all")
