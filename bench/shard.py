"""Shard on the testnet: put and get throughput against one Dropbox and raw Tor streams.

On a private testnet with ``--boxes`` Bento boxes, for a random file of ``--mb`` MB:

- raw Tor stream: the same bytes up and down one stream through the testnet's client, to a
  sink on loopback reached through an exit (the ceiling any Bento transfer works under);
- one Dropbox: ``dropbox.put`` then ``dropbox.get`` of the file on one box (a Dropbox holds
  at most its 32 MiB of storage: above that, the file's first 24 MiB, said in the output);
- Shard: ``shard.put`` over N boxes and ``shard.get`` back, and the storage it costs;
- recovery: ``shard.get`` again once N - K boxes' servers are stopped.

    python bench/shard.py [--mb 16] [--n 3] [--k 2] [--boxes 3]
    python bench/shard.py --mb 100 --n 5 --k 4 --boxes 5     # the full size: shards of 25 MB

(The full size needs each 25 MB shard to reach its Dropbox within the Dropbox session's 300 s:
on a quiet 2-core host it took 16 s; at a load average of 50 it did not, and the run stopped
with that refusal.)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import struct
import tempfile
import time
from pathlib import Path

from python_socks.async_.asyncio import Proxy

from bento.client.box import Box
from bento.client.discovery import discover
from bento.client.keyring import Keyring
from bento.functions.dropbox import client as dropbox
from bento.functions.shard import client as shard
from bento.testnet import Testnet, TestnetConfig, boxes
from record import record

DROPBOX_MAX = 24 << 20  # under the Dropbox's 32 MiB, with room for its bookkeeping


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """``U`` + 8-byte size + that many bytes: answers the count; ``D`` + 8-byte size: sends
    that many. (Sizes up front: a Tor stream has no half-close, so EOF cannot mark an end.)"""
    kind = await reader.readexactly(1)
    (size,) = struct.unpack(">Q", await reader.readexactly(8))
    if kind == b"U":
        total = 0
        while total < size and (chunk := await reader.read(min(1 << 16, size - total))):
            total += len(chunk)
        writer.write(struct.pack(">Q", total))
    else:
        block = os.urandom(1 << 16)
        for start in range(0, size, len(block)):
            writer.write(block[: size - start])
            await writer.drain()
    await writer.drain()
    writer.close()


async def raw_stream(socks: str, port: int, data: bytes) -> tuple[float, float]:
    proxy = Proxy.from_url(f"socks5://{socks}")

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = await proxy.connect(dest_host="127.0.0.1", dest_port=port, timeout=120)
        return await asyncio.open_connection(sock=sock)

    started = time.perf_counter()
    reader, writer = await connect()
    writer.write(b"U" + struct.pack(">Q", len(data)))
    for start in range(0, len(data), 1 << 16):
        writer.write(data[start : start + (1 << 16)])
        await writer.drain()
    assert struct.unpack(">Q", await reader.readexactly(8))[0] == len(data)
    up = time.perf_counter() - started
    writer.close()
    started = time.perf_counter()
    reader, writer = await connect()
    writer.write(b"D" + struct.pack(">Q", len(data)))
    received = 0
    while chunk := await reader.read(1 << 16):
        received += len(chunk)
    assert received == len(data)
    writer.close()
    return up, time.perf_counter() - started


async def one_dropbox(net: Testnet, keyring: Keyring, data: bytes) -> tuple[float, float]:
    node = net.state.boxes[0]
    assert node.bento_onion is not None
    async with Box(node.bento_onion, socks=net.socks_address) as box:
        started = time.perf_counter()
        capability, _ = await dropbox.put(box, keyring, data)
        up = time.perf_counter() - started
        started = time.perf_counter()
        assert await dropbox.get(box, capability) == data
        return up, time.perf_counter() - started


async def measure(net: Testnet, args: argparse.Namespace, tmp: Path) -> str:
    data = os.urandom(args.mb * 10**6)
    mb = len(data) / 1e6
    keyring = Keyring(tmp / "keyring.json")
    server = await asyncio.start_server(_sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        raw_up, raw_down = await raw_stream(net.socks_address, port, data)
    single = data[:DROPBOX_MAX]
    box_up, box_down = await one_dropbox(net, keyring, single)
    found = await asyncio.to_thread(discover, net.control_address)
    started = time.perf_counter()
    stored = await shard.put(
        data, name="bench", boxes=found, n=args.n, k=args.k, socks=net.socks_address, keyring=keyring,
        fetches=2,
    )  # fmt: skip
    put_s = time.perf_counter() - started
    started = time.perf_counter()
    fetched = await shard.get(stored.manifest, socks=net.socks_address)
    get_s = time.perf_counter() - started
    assert hashlib.sha256(fetched.data).digest() == hashlib.sha256(data).digest()
    # Recovery: the servers of N - K boxes that hold shards are stopped, then get again.
    holders = [r.fingerprint for r in stored.manifest.shards]
    down = [n for n in net.state.boxes if n.fingerprint in holders][: args.n - args.k]
    for node in down:
        await asyncio.to_thread(boxes.stop, node)
    started = time.perf_counter()
    recovered = await shard.get(stored.manifest, socks=net.socks_address)
    recovery_s = time.perf_counter() - started
    assert recovered.data == data
    stored_bytes = sum(r.bytes for r in stored.manifest.shards)
    capped = (
        "" if len(single) == len(data) else f" (the first {len(single) / 1e6:.0f} MB: a Dropbox holds 32 MiB)"
    )
    lines = [
        f"File: {mb:.0f} MB of random bytes; Shard N={args.n}, K={args.k} over {len(found)} boxes "
        f"(load average {os.getloadavg()[0]:.1f} at the start).",
        "",
        "| path | put MB/s | get MB/s |",
        "|---|---|---|",
        f"| raw Tor stream (to loopback through an exit) | {mb / raw_up:.2f} | {mb / raw_down:.2f} |",
        f"| one Dropbox{capped} | {len(single) / 1e6 / box_up:.2f} | {len(single) / 1e6 / box_down:.2f} |",
        f"| Shard (all {args.n} boxes up) | {mb / put_s:.2f} | {mb / get_s:.2f} |",
        f"| Shard, {args.n - args.k} box(es) down | | {mb / recovery_s:.2f} |",
        "",
        f"- storage: {stored_bytes / 1e6:.2f} MB on the boxes for {mb:.0f} MB, "
        f"{stored_bytes / len(data):.3f}x "
        f"(N/K = {args.n / args.k:.3f}; the rest is RaptorQ's repair margin and the AEAD's 28 bytes a shard)",
        f"- put: {put_s:.1f} s; get: {get_s:.1f} s using shards {fetched.used}, "
        f"{fetched.cancelled} transfer(s) cancelled once the file decoded",
        f"- recovery with {', '.join(n.nickname for n in down)} stopped: {recovery_s:.1f} s, shards "
        f"{recovered.used}, SHA-256 verified",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=16, help="file size in MB (10^6 bytes)")
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--boxes", type=int, default=3, help="Bento boxes on the testnet (at most 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bento-bench-") as tmp:
        config = TestnetConfig(directory=Path(tmp) / "net", bento_boxes=args.boxes, owner_pid=os.getpid())
        with Testnet.start(config) as net:
            body = asyncio.run(measure(net, args, Path(tmp)))
    command = f"python bench/shard.py --mb {args.mb} --n {args.n} --k {args.k} --boxes {args.boxes}"
    record("Shard", command, body)


if __name__ == "__main__":
    main()
