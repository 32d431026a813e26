"""Shard from the user's side: ``put`` spreads a file over N boxes' Dropboxes, ``get`` takes
it back from whichever K answer first.

Both run every box at once (at most ``concurrency`` transfers, each within its own
timeout), and own their tasks: ``get`` cancels and awaits the transfers it no longer needs
as soon as the file decodes. A box that fails during ``put`` is replaced by a spare box from
the consensus where there is one; ``put`` fails only when a shard finds no box at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bento.client.box import Box
from bento.client.discovery import BoxInfo
from bento.client.keyring import Keyring
from bento.errors import BentoError, TransportError
from bento.functions.dropbox import client as dropbox

from . import codec
from .manifest import ShardManifest, ShardRecord
from .placement import place

CONCURRENCY = 8
# Of a Dropbox's storage, kept for what a deposit holds besides the shard: its metadata and
# fetch claims (dropbox.deposits.room_for) and the seal's tags (16 bytes a 64 KiB chunk).
DROPBOX_BOOKKEEPING = 64 << 10
Progress = Callable[[int, int], None]  # told the bytes moved so far, and the bytes expected


def timeout_for(size: int) -> float:
    """Seconds one shard's transfer may take: two minutes to reach the box, then 50 kB/s."""
    return 120.0 + size / 50_000


@dataclass
class _Meter:
    total: int
    progress: Progress | None
    moved: dict[int, int] = field(default_factory=dict)

    def of(self, index: int) -> dropbox.Progress:
        def tell(done: int) -> None:
            self.moved[index] = done
            if self.progress is not None:
                self.progress(min(self.total, sum(self.moved.values())), self.total)

        return tell


@dataclass(frozen=True)
class Stored:
    manifest: ShardManifest
    warnings: list[str]
    failures: list[str]  # boxes that failed and were replaced, with why


async def put(
    data: bytes,
    *,
    name: str,
    boxes: list[BoxInfo],
    n: int,
    k: int,
    socks: str,
    keyring: Keyring,
    fetches: int = 1,
    seconds: float = 86400.0,
    concurrency: int = CONCURRENCY,
    progress: Progress | None = None,
    rng: random.Random | None = None,
) -> Stored:
    code = codec.Code.for_file(len(data), n=n, k=k)
    chosen, warnings = place(boxes, n, rng)
    spares = [b for b in boxes if b not in chosen]
    key, file_id = os.urandom(32), os.urandom(16)

    def sealed_shards() -> tuple[list[bytes], str]:
        shards = codec.encode(data, code)
        sealed = [codec.seal(key, file_id, code, i, s) for i, s in enumerate(shards)]
        return sealed, hashlib.sha256(data).hexdigest()

    shards, digest = await asyncio.to_thread(sealed_shards)  # CPU work, off the event loop
    room = (dropbox.manifest().needs.storage_mb << 20) - DROPBOX_BOOKKEEPING
    if len(shards[0]) > room:  # every shard is as large: found out before anything is sent
        raise BentoError(
            f"each shard would be {len(shards[0]) / 1e6:.1f} MB, more than a Dropbox holds "
            f"({room / 1e6:.1f} MB)",
            fix="raise --k (and --n with it): each shard is about the file's size / K",
        )
    meter = _Meter(sum(map(len, shards)), progress)
    gate = asyncio.Semaphore(concurrency)
    one_at_a_time = {b.onion: asyncio.Lock() for b in boxes}  # one deployment per box
    failures: list[str] = []

    async def store(index: int) -> ShardRecord:
        box = chosen[index]
        while True:
            try:
                async with (
                    gate,
                    one_at_a_time[box.onion],
                    asyncio.timeout(timeout_for(len(shards[index]))),
                    Box(box.onion, socks=socks, info=box) as client,
                ):
                    capability, _ = await dropbox.put(
                        client, keyring, shards[index], fetches=fetches, seconds=seconds,
                        progress=meter.of(index),
                    )  # fmt: skip
                return ShardRecord(
                    index=index,
                    box=box.nickname,
                    fingerprint=box.fingerprint,
                    capability=str(capability),
                    bytes=len(shards[index]),
                )
            except (BentoError, TimeoutError) as exc:
                failures.append(f"{box.nickname}: {_why(exc)}")
                meter.of(index)(0)
                if not spares:
                    raise BentoError(
                        f"shard {index} could not be stored: {'; '.join(failures)}",
                        fix="try again later, or with --boxes naming boxes that answer",
                    ) from None
                box = spares.pop()

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(store(i)) for i in range(n)]
    except ExceptionGroup as failed:  # the first shard that found no box says why
        refusals = [e for e in failed.exceptions if isinstance(e, BentoError)]
        if not refusals:
            raise
        raise refusals[0] from None
    now = time.time()
    manifest = ShardManifest(
        name=name,
        length=len(data),
        sha256=digest,
        n=n,
        k=k,
        symbol=code.symbol,
        file_id=file_id.hex(),
        key=key.hex(),
        created=now,
        expires=now + seconds,
        fetches=fetches,
        shards=[t.result() for t in tasks],
    )
    return Stored(manifest, warnings, failures)


@dataclass(frozen=True)
class Fetched:
    data: bytes
    used: list[int]  # the shards that went into the decoder, in order
    failures: list[str]  # shards that could not be had, with why
    cancelled: int  # transfers still running when the file decoded


InDoubt = Callable[[], None]  # called by a fetch whose box stopped answering, as it tries again
FetchShard = Callable[[ShardRecord, InDoubt], Awaitable[bytes]]  # a shard's sealed bytes, or BentoError


def over_tor(socks: str, meter: _Meter) -> FetchShard:
    """Fetch a shard from its Dropbox through Tor's SOCKS port ``socks``; a transfer whose
    connection drops is in doubt from that moment, while its stream tries to attach again."""

    async def fetch(record: ShardRecord, in_doubt: InDoubt) -> bytes:
        capability = dropbox.Capability.parse(record.capability)
        async with Box(capability.onion, socks=socks) as client:
            return await dropbox.get(
                client, capability, progress=meter.of(record.index), on_reconnect=lambda *_: in_doubt()
            )

    return fetch


async def get(
    manifest: ShardManifest,
    *,
    socks: str,
    concurrency: int = CONCURRENCY,
    progress: Progress | None = None,
    fetch: FetchShard | None = None,
    rng: random.Random | None = None,
) -> Fetched:
    """The file, from K shards: each fetch uses one of its shard's fetches up, so ``get``
    starts only K, chosen at random (so that repeated gets spread over the N), and starts
    another only for one that fails, or is in doubt, or when K arrived and did not decode.
    BentoError if fewer than K can be had, or if what they decode to is not the file that
    was put.

    A fetch is in doubt once its connection dropped: its box may have died, and telling
    that apart from a slow circuit takes the stream's whole re-attach back-off (half a
    minute, minutes under load), so a spare shard starts at once beside it; whichever K
    arrive first decode, and the other is cancelled."""
    code = manifest.code
    decoder = codec.Decoder(code)  # checks the code's shape first
    key, file_id = bytes.fromhex(manifest.key), bytes.fromhex(manifest.file_id)
    per_shard = max((r.bytes for r in manifest.shards), default=0)
    meter = _Meter(per_shard * manifest.k, progress)
    fetch = fetch or over_tor(socks, meter)
    gate = asyncio.Semaphore(concurrency)
    unanswered: list[str] = []  # shards whose box did not answer (the others refused: used up, expired)

    async def one(record: ShardRecord) -> tuple[ShardRecord, bytes | str]:
        """The shard's plaintext, or why it cannot be had."""
        try:
            async with gate, asyncio.timeout(timeout_for(record.bytes)):
                sealed = await fetch(record, lambda: doubt(record.index))
            return record, codec.open_shard(key, file_id, code, record.index, sealed)
        except (BentoError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError | TransportError):
                unanswered.append(record.box)
            return record, f"shard {record.index} on {record.box}: {_why(exc)}"

    waiting = list(manifest.shards)
    (rng or random.SystemRandom()).shuffle(waiting)
    running: dict[asyncio.Task[tuple[ShardRecord, bytes | str]], int] = {}  # -> its shard's index
    doubted: set[int] = set()  # shards whose fetch lost its connection: a spare runs beside each
    used: list[int] = []
    failures: list[str] = []
    data: bytes | None = None
    wanted = manifest.k  # shards arrived or on their way (not in doubt), when there are enough
    finished = False  # no more starts: the get decoded, or failed, or is being cancelled

    def start() -> None:
        on_their_way = [i for i in running.values() if i not in doubted]
        while not finished and waiting and len(used) + len(on_their_way) < wanted:
            record = waiting.pop()
            running[asyncio.create_task(one(record))] = record.index
            on_their_way.append(record.index)

    def doubt(index: int) -> None:
        if index not in doubted:
            doubted.add(index)
            start()

    start()
    try:
        while running and data is None:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                del running[task]
                record, plain = task.result()
                if isinstance(plain, str):
                    failures.append(plain)
                    continue
                used.append(record.index)
                if data is None:
                    data = await asyncio.to_thread(decoder.feed, plain)
            wanted = max(manifest.k, len(used) + 1)  # a failure, or K that did not decode: one more
            start()
    finally:
        finished = True
        cancelled = len(running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    if data is None:
        raise _too_few(manifest, used, failures, unanswered)
    if await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest()) != manifest.sha256:
        raise BentoError("the shards decode to a file whose SHA-256 is not the manifest's")
    return Fetched(data, used, failures, cancelled)


def _too_few(
    manifest: ShardManifest, used: list[int], failures: list[str], unanswered: list[str]
) -> BentoError:
    """Why the file cannot be rebuilt, and the fix: wait for boxes that did not answer, or
    put it again where the boxes answered that its shards are used up or expired."""
    message = f"only {len(used)} shard(s) of the {manifest.k} needed could be had: " + "; ".join(failures)
    if unanswered:
        return BentoError(
            message, fix=f"try again when more of the boxes answer ({', '.join(unanswered)} did not)"
        )
    return BentoError(
        message,
        fix=f"every box answered: its shards are used up or expired ({manifest.allowed_gets()}); "
        "put the file again, with a larger --fetches to get it more often",
    )


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return exc.message if isinstance(exc, BentoError) else str(exc)
