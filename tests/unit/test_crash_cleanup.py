"""A server killed with SIGKILL leaves function code behind; the next start clears all of it.

The crashed server is a real process: it deploys a function, starts a session of it (a
sandbox, pooled code copied in), says so, and is killed with SIGKILL, so no clean-up of
its own runs. A new server over the same state directory then finds nothing of it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from localbox import without_sandbox

from bento.protocol.policy import NodePolicy
from bento.sandbox.host import SandboxHost, SandboxUnavailable, work_dir_of
from bento.server import broker
from bento.server.config import ServerConfig
from bento.server.registry import Registry

CRASHING_SERVER = r"""
import asyncio, base64, json, sys
from pathlib import Path
from bento.protocol.manifest import Manifest
from bento.protocol.messages import CodeKind
from bento.sandbox.host import SandboxHost
from bento.server import broker
from bento.server.config import ServerConfig
from bento.server.registry import Registry

CODE = b"import time\ndef main():\n    time.sleep(3600)\n"

async def main():
    config = ServerConfig(state_dir=Path(sys.argv[1]), onion=False, advertise=False)
    sandbox = SandboxHost(config.policy, config.state_dir)
    registry = Registry(config, "crash", sandbox, broker.closed_gate())
    registry.reset_storage()
    pool = asyncio.ensure_future(sandbox.keep_pool(1))
    async with registry.running():
        deployed = await registry.deploy(
            Manifest(name="doomed"), CodeKind.MODULE, base64.b64encode(CODE).decode()
        )
        session = registry.invoke(deployed.function, "main", [], {})
        await session.started.wait()
        print(json.dumps({"code_dir": str(deployed.function.code_dir)}), flush=True)
        await asyncio.Event().wait()  # until killed

asyncio.run(main())
"""


def _sandbox_or_skip(state_dir: Path) -> SandboxHost:
    try:
        return SandboxHost(NodePolicy(), state_dir)
    except SandboxUnavailable as exc:
        without_sandbox(exc)


@pytest.mark.timeout(120)
def test_the_next_start_clears_what_a_killed_server_left() -> None:
    with tempfile.TemporaryDirectory(prefix="bento-crash-") as scratch:
        state_dir = Path(scratch) / "state"
        _sandbox_or_skip(Path(scratch) / "probe").close()
        crashing = subprocess.Popen(
            [sys.executable, "-c", CRASHING_SERVER, str(state_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        try:
            assert crashing.stdout is not None
            line = crashing.stdout.readline()  # the server says when its session runs
            assert line, crashing.stderr.read().decode() if crashing.stderr else "no output"
            started = json.loads(line)
        finally:
            crashing.send_signal(signal.SIGKILL)
            crashing.wait(30)
        work_dir = work_dir_of(state_dir)
        left = {p.relative_to(work_dir).parts[0] for p in work_dir.rglob("*.py")}
        assert Path(started["code_dir"]).is_dir(), "SIGKILL let nothing clean up: the code is still there"
        assert "functions" in left, left

        sandbox = SandboxHost(NodePolicy(), state_dir)  # the next start
        try:
            config = ServerConfig(state_dir=state_dir, onion=False, advertise=False)
            Registry(config, "next", sandbox, broker.closed_gate()).reset_storage()
            leftovers = [
                p for p in work_dir.rglob("*") if p.is_file() and not p.is_relative_to(sandbox.runtime_dir)
            ]
            assert leftovers == [], "no function code of the killed server is left"
            assert not Path(started["code_dir"]).exists()
        finally:
            sandbox.close()
        assert not work_dir.exists(), "a server that stops cleanly leaves no work directory"
