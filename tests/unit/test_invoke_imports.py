"""`bento invoke` is a new process each time: it imports only what an invocation uses.

A whole invocation should take about its Tor round trips; before, the command's own
imports (Stem for discovery, cryptography for descriptors, tarfile for uploads, httpx's
own command line) took longer than the box's answer. These modules stay out of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src"

# What the invoke path must never import: each is a module some other command needs.
NOT_FOR_INVOKE = (
    "stem",  # discovery of boxes in the consensus
    "cryptography",  # descriptors' signatures, blinded tokens
    "tarfile",  # uploads
    "click",  # httpx's own command line
    "pygments",
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
import json, sys
from bento.cli.main import main
try:
    main(["invoke", "--help"])
except SystemExit:
    pass
from bento.cli import invoke  # what its handler runs with
print(json.dumps(sorted(sys.modules)))
"""


def imported_by_invoke() -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, "PYTHONPATH": str(SOURCE)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.timeout(90)
def test_the_invoke_command_imports_only_what_an_invocation_uses() -> None:
    modules = imported_by_invoke()
    assert "bento.cli.invoke" in modules and "bento.client.box" in modules, "the probe ran the invoke path"
    heavy = sorted(
        m for m in modules if any(m == name or m.startswith(name + ".") for name in NOT_FOR_INVOKE)
    )
    assert heavy == []


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
