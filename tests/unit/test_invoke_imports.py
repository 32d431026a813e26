"""`bento invoke` is a new process each time: it imports only what an invocation uses.

A whole invocation should take about its Tor round trips; before, the command's own
imports (Stem for discovery, cryptography for descriptors, tarfile for uploads, httpx's
own command line) took longer than the box's answer. These modules stay out of it; rich
(the lines on stderr) loads while the invocation crosses Tor, not before it goes; the
collector does not walk what start-up loaded, and pydantic does not scan every installed
package for plugins (docs/benchmarks.md, "Invoke latency", has where the time goes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src"

# What the invoke path must never import: each is a module some other command needs.
NOT_FOR_INVOKE = (
    "stem",  # discovery of boxes in the consensus
    "cryptography",  # descriptors' signatures, blinded tokens
    "tarfile",  # uploads
    "click",  # httpx's own command line
    "pygments",
    "rich",  # the lines on stderr: loaded in the invocation's round trip (cli/invoke.py)
    "uvicorn",  # the server
    "starlette",
    "bento.server",
    "bento.sandbox",
    "bento.testnet",
    "bento.client.discovery",
    "bento.client.upload",
    "bento.client.cover",
    "bento.protocol.descriptor",
)

PROBE = """
import gc, importlib.metadata, json, sys
scanned = []  # pydantic's search for plugins reads every installed package's entry points
everything = importlib.metadata.entry_points
importlib.metadata.entry_points = lambda **kw: scanned.append(kw) or everything(**kw)
from bento.cli.main import main
sys.argv = ["bento", "invoke", "--help"]  # as the bento command runs: this process's own line
try:
    main()
except SystemExit:
    pass
from bento.cli import invoke  # what its handler runs with
modules = sorted(sys.modules)
from bento.protocol.messages import InvokeRequest
InvokeRequest(entry="main").model_dump_json()  # the first message an invocation builds
print(json.dumps({"modules": modules, "scanned": len(scanned), "gc": gc.isenabled(),
                  "frozen": gc.get_freeze_count()}))
"""


def probe() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, "PYTHONPATH": str(SOURCE)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return found


@pytest.mark.timeout(90)
def test_the_invoke_command_imports_only_what_an_invocation_uses() -> None:
    found = probe()
    modules = set(found["modules"])
    assert "bento.cli.invoke" in modules and "bento.client.box" in modules, "the probe ran the invoke path"
    heavy = sorted(
        m for m in modules if any(m == name or m.startswith(name + ".") for name in NOT_FOR_INVOKE)
    )
    assert heavy == []
    assert found["scanned"] == 0, "pydantic searched the installed packages for plugins"


@pytest.mark.timeout(90)
def test_the_command_freezes_what_it_loaded_and_collects_what_it_makes() -> None:
    """The objects start-up made are frozen (never walked by the collector again, at exit
    neither), and the collector is on for the run: a long session's garbage is collected."""
    found = probe()
    assert found["gc"] is True
    assert found["frozen"] > 10_000


def test_a_command_run_inside_another_program_leaves_its_collector_alone() -> None:
    """``main(argv)`` is how tests and other programs run a command: their objects are theirs."""
    import gc

    from bento.cli.main import main

    frozen = gc.get_freeze_count()
    with pytest.raises(SystemExit):
        main(["invoke", "--help"])
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_what_the_invoke_path_leaves_out_is_still_there_for_those_who_name_it() -> None:
    """The lazy names of bento.client and the link cover's options still resolve."""
    import argparse

    import bento.client
    from bento.cli import cover_options
    from bento.client.cover import Cover
    from bento.client.discovery import BoxInfo, discover

    assert bento.client.BoxInfo is BoxInfo and bento.client.discover is discover
    parser = argparse.ArgumentParser()
    cover_options.add(parser)
    args = parser.parse_args(["--cover", "500"])
    assert isinstance(cover_options.from_args(args), Cover)
    with pytest.raises(AttributeError):
        _ = bento.client.nothing_of_that_name  # type: ignore[attr-defined]
