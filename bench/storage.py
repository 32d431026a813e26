"""Function storage throughput: encrypted store vs. the raw disk, and from inside a sandbox.

Three figures for the same values (``--count`` values of ``--size`` MiB):

- raw: plain files written and read back in the store's directory (no encryption);
- store: bento.server.store in the server (AES-256-GCM, one file per value);
- function: ``api.storage.put``/``get`` from a real sandboxed instance, through the broker
  and a socket pair per value (timed inside the function).

Reads come from the page cache in all three (nothing is dropped), so the figures compare
the cost of Bento's path, not the disk's.

    python bench/storage.py [--size 1] [--count 64]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import tempfile
import time
from pathlib import Path

from bento.protocol.manifest import Manifest
from bento.protocol.messages import CodeKind
from bento.protocol.policy import Needs, NodePolicy, StoragePolicy
from bento.sandbox.host import SandboxHost
from bento.server.broker import closed_gate
from bento.server.config import ServerConfig
from bento.server.registry import Registry
from bento.server.store import Store
from record import record

FUNCTION = b"""
import os, time
from bento.runtime import api

def run(size, count):
    value = os.urandom(size)
    started = time.perf_counter()
    for i in range(count):
        api.storage.put(f"v{i}", value)
    written = time.perf_counter()
    for i in range(count):
        assert len(api.storage.get(f"v{i}")) == size
    done = time.perf_counter()
    return [written - started, done - written]
"""


def _rate(total: int, seconds: float) -> float:
    return total / seconds / 1e6


def raw(directory: Path, value: bytes, count: int) -> tuple[float, float]:
    directory.mkdir(parents=True)
    started = time.perf_counter()
    for i in range(count):
        (directory / f"v{i}").write_bytes(value)
    written = time.perf_counter()
    for i in range(count):
        assert len((directory / f"v{i}").read_bytes()) == len(value)
    done = time.perf_counter()
    return written - started, done - written


async def store(root: Path, value: bytes, count: int) -> tuple[float, float]:
    box = Store(root)
    box.reset()
    fs = box.of("bench", (len(value) * count >> 20) + 16)
    started = time.perf_counter()
    for i in range(count):
        await fs.put(f"v{i}", value, fs.reserve(f"v{i}", len(value)))
    written = time.perf_counter()
    for i in range(count):
        assert len(await fs.get(f"v{i}")) == len(value)
    done = time.perf_counter()
    await box.aclose()
    return written - started, done - written


async def function(state: Path, size: int, count: int) -> tuple[float, float]:
    quota = (size * count >> 20) + 16
    policy = NodePolicy(storage=StoragePolicy(allowed=True, max_mb=quota))
    config = ServerConfig(state_dir=state, policy=policy)
    sandbox = SandboxHost(config.policy, config.state_dir)
    registry = Registry(config, "bench", sandbox, closed_gate())
    registry.reset_storage()
    try:
        async with registry.running():
            manifest = Manifest(name="bench", needs=Needs(storage_mb=quota, memory_mb=256, wall_seconds=600))
            code = base64.b64encode(FUNCTION).decode()
            deployed = await registry.deploy(manifest, CodeKind.MODULE, code)
            session = registry.invoke(deployed.function, "run", [size, count], {})
            await session.done.wait()
            if session.error is not None:
                raise RuntimeError(session.error.traceback or session.reason)
            write, read = session.result
            return float(write), float(read)
    finally:
        sandbox.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1, help="MiB per value")
    parser.add_argument("--count", type=int, default=64)
    args = parser.parse_args()
    size, count = args.size << 20, args.count
    value = os.urandom(size)
    total = size * count
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bento-bench-") as tmp:
        results = {
            "raw files": raw(Path(tmp) / "raw", value, count),
            "store (AES-256-GCM, in the server)": asyncio.run(store(Path(tmp) / "store", value, count)),
            "api.storage from a sandboxed function": asyncio.run(function(Path(tmp) / "state", size, count)),
        }
    lines = [
        f"- {name}: write {_rate(total, w):.0f} MB/s, read {_rate(total, r):.0f} MB/s"
        for name, (w, r) in results.items()
    ]
    record(
        "Function storage",
        f"python bench/storage.py --size {args.size} --count {count}",
        f"{count} values of {args.size} MiB written, then read back (page cache warm, no fsync; "
        f"load average {load:.1f} on {os.cpu_count()} cores at the start):\n\n" + "\n".join(lines) + "\n",
    )


if __name__ == "__main__":
    main()
