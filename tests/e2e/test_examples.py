"""The example functions in examples/, deployed as an author would, on a testnet box."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from support import TIMEOUT, run

from bento.client.box import Box
from bento.protocol.manifest import Manifest
from bento.protocol.messages import SessionState
from bento.testnet import Node, Testnet
from bento.testnet.site import LocalSite

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 2)]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _manifest(directory: Path) -> Manifest:
    return Manifest.model_validate(tomllib.loads((directory / "manifest.toml").read_text()))


def vendor(distribution: str, target: Path) -> None:
    """What ``pip install --target TARGET --no-deps DIST`` does, from this environment's copy."""
    dist = importlib.metadata.distribution(distribution)
    for file in dist.files or []:
        source = Path(str(dist.locate_file(file)))
        if ".." in file.parts or "__pycache__" in file.parts or not source.is_file():
            continue
        (target / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / file)


async def test_echo(box: Box) -> None:
    directory = EXAMPLES / "echo"
    deployment = await box.deploy(directory, _manifest(directory))
    output, ended = await run(box, deployment, "hello", "Tor")
    assert (output, ended.result) == (b"hello Tor\n", {"greeted": "Tor"})

    session_id = await box.invoke(deployment, "shout")
    async with await box.attach(deployment, session_id) as stream:
        await stream.send("one\ntwo\n")
        reply = b""
        while len(reply) < 8:
            chunk = await asyncio.wait_for(stream.receive(), TIMEOUT)
            assert chunk is not None
            reply += chunk
        await stream.close_input()
        assert await stream.receive() is None
    assert reply == b"ONE\nTWO\n"
    assert stream.ended is not None and stream.ended.result == {"lines": 2}
    await box.shutdown(deployment)


async def test_notes(box: Box, box_node: Node) -> None:
    directory = EXAMPLES / "notes"
    deployment = await box.deploy(directory, _manifest(directory))
    for text in ("buy onions", "relay 7c0ffee: upgrade tor"):
        _, ended = await run(box, deployment, "add", text)
        assert ended.state is SessionState.COMPLETED, ended.reason
    output, ended = await run(box, deployment, "read")
    assert output == b"buy onions\nrelay 7c0ffee: upgrade tor\n"
    assert ended.result["objects"] == 2
    _, ended = await run(box, deployment, "attach", "log", "x" * 5000)
    _, ended = await run(box, deployment, "attach", "log", "y" * 5000)
    assert ended.result == 10000

    assert box_node.bento_dir is not None
    state = Path(box_node.bento_dir)
    on_disk = [p for p in state.rglob("*") if p.is_file() and b"7c0ffee" in p.read_bytes()]
    assert on_disk == [], "a note reached the operator's disk in clear"
    await box.shutdown(deployment)
    assert not (state / "storage" / deployment.function_id).exists()


async def test_fetch_with_a_vendored_urllib3(box: Box, tmp_path: Path) -> None:
    directory = tmp_path / "fetch"
    shutil.copytree(EXAMPLES / "fetch", directory)
    vendor("urllib3", directory / "vendor")
    page = b"<html>" + bytes(range(256)) * 400 + b"</html>"
    async with LocalSite({"/page": page}, content_type="application/octet-stream") as site:
        deployment = await box.deploy(directory, _manifest(directory))
        output, ended = await run(box, deployment, "get", f"{site.url}page")
    assert ended.state is SessionState.COMPLETED, ended.reason
    assert output == page
    assert ended.result == {
        "status": 200,
        "bytes": len(page),
        "sha256": hashlib.sha256(page).hexdigest(),
        "via": "urllib3",
    }
    assert ended.usage.network_granted >= 1
    await box.shutdown(deployment)


def test_the_cli_deploys_an_example_and_warns_about_imports_nobody_provides(
    testnet: Testnet, tmp_path: Path
) -> None:
    env = {**os.environ, **testnet.environment(), "BENTO_KEYRING": str(tmp_path / "keyring.json")}

    def cli(*args: str) -> Any:
        command = [sys.executable, "-m", "bento", *args, "--json"]
        done = subprocess.run(command, env=env, input="", capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0, f"bento {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
        return json.loads(done.stdout)

    notes = EXAMPLES / "notes"
    deployed = cli("deploy", str(notes), "--box", "exit0", "--manifest", str(notes / "manifest.toml"))
    assert deployed["warnings"] == []
    assert cli("invoke", "notes", "add", '"from the command line"')["result"] == "note/000001"

    function = tmp_path / "caller"
    function.mkdir()
    (function / "main.py").write_text(
        "import requests\n"
        "from bento.client import Box  # offered by the testnet's boxes\n"
        "try:\n    import simplejson\nexcept ImportError:\n    simplejson = None\n"
        "def main():\n    return 1\n"
    )
    deployed = cli("deploy", str(function), "--box", "exit0", "--name", "caller")
    imports, capability = sorted(deployed["warnings"])  # one of each kind, found without running it
    assert imports.startswith("main.py imports 'requests'") and "vendor" in imports
    assert capability.startswith("main.py, line 2 uses bento.client") and "call_boxes = true" in capability
    for name in ("notes", "caller"):
        cli("shutdown", name)
