"""What a newcomer to the ``bento`` command expects: options anywhere on the line, the
manifest beside the code found, a warning before upload when the code uses a capability
its manifest does not ask for, ``name@box`` where names repeat, logs shown once, and
tracebacks that name the user's own files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bento.cli import code_check
from bento.cli.main import build_parser
from bento.client.keyring import Deployment, Keyring
from bento.errors import BentoError
from bento.protocol.manifest import Manifest


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["invoke", "FN", "main", "--str", "you"], {"args": ["you"], "str": True}),
        (["invoke", "FN", "--kw", "n=1", "main", "1", "--detach", "2"], {"args": ["1", "2"], "kw": ["n=1"]}),
        (["invoke", "FN", "main", "--", "--not-an-option"], {"args": ["--not-an-option"]}),
        (["dropbox", "get", "CAP", "--out", "x"], {"capability": "CAP"}),
        (["deploy", "f.py", "--box", "exit0", "--as", "n"], {"name": "n"}),
        (["testnet", "run", "--", "sh", "-c", "true"], {"cmd": ["--", "sh", "-c", "true"]}),
    ],
)
def test_options_may_come_anywhere(argv: list[str], expected: dict[str, object]) -> None:
    args = build_parser([argv[0]]).parse_args(argv)
    assert {name: getattr(args, name) for name in expected} == expected


def _bento(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BENTO_KEYRING": str(cwd / "keyring.json"),
        "BENTO_CONTROL": "127.0.0.1:9",  # no Tor: deploy stops where it looks for the box
        "BENTO_SOCKS": "127.0.0.1:9",
    }
    return subprocess.run(
        [sys.executable, "-m", "bento", *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd
    )


COUNTER = """
from bento.runtime import api

def count():
    n = int(api.storage.get("n") or b"0") + 1
    api.storage.put("n", str(n).encode())
    return n
"""


def test_deploy_finds_the_manifest_beside_the_code_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "counter.py").write_text(COUNTER)
    (tmp_path / "manifest.toml").write_text('name = "tally"\n[needs]\nstorage_mb = 1\n')
    result = _bento("deploy", "counter.py", "--box", "exit0", cwd=tmp_path)
    assert "using the manifest manifest.toml, found beside the code" in result.stderr
    assert "warning" not in result.stderr, "the manifest asks for storage: nothing to warn about"
    assert result.returncode == 1 and "error:" in result.stderr  # no Tor here: stopped at finding the box


def test_deploy_warns_before_upload_of_a_capability_the_manifest_lacks(tmp_path: Path) -> None:
    (tmp_path / "counter.py").write_text(COUNTER)
    result = _bento("deploy", "counter.py", "--box", "exit0", cwd=tmp_path)
    stderr = " ".join(result.stderr.split())
    assert "using the manifest" not in stderr
    assert (
        "counter.py, line 5 uses api.storage, but the manifest asks for no storage" in stderr
    )  # its first use
    assert "add storage_mb = 1 under [needs]" in stderr


@pytest.mark.parametrize(
    ("source", "needs", "warned"),
    [
        ("from bento.runtime import api\ndef f():\n    api.tor.circuit()\n", {}, ["api.tor"]),
        ("from bento.runtime import api\ndef f():\n    api.tor.circuit()\n", {"tor_circuits": 1}, []),
        ("from bento.runtime.api import connect, listen\ndef f(): pass\n", {"network": True}, ["api.listen"]),
        ("import bento.client\ndef f(): pass\n", {}, ["bento.client"]),
        ("from bento.client.box import Box\ndef f(): pass\n", {"call_boxes": True}, []),
        ("from bento.runtime import api\ndef f():\n    api.send(b'')\n", {}, []),
        # Every way of importing the runtime is seen: aliases, dotted names, its submodules.
        (
            "from bento.runtime import api as bento_api\ndef f():\n    bento_api.storage.put('k', b'')\n",
            {},
            ["api.storage"],
        ),
        ("import bento.runtime.api as x\ndef f():\n    x.connect('a', 1)\n", {}, ["api.connect"]),
        ("import bento.runtime.api\ndef f():\n    bento.runtime.api.tor.circuit()\n", {}, ["api.tor"]),
        ("import bento.runtime as rt\ndef f():\n    rt.api.listen()\n", {"network": True}, ["api.listen"]),
        ("from bento.runtime.storage import put\ndef f(): pass\n", {}, ["api.storage"]),
        ("from bento.runtime.net import connect as dial\ndef f(): pass\n", {}, ["api.connect"]),
        ("from bento.runtime.api import *\ndef f():\n    tor.circuit()\n", {}, ["api.tor"]),
        # A name that merely is `api` is not the runtime's.
        ("import json as api\ndef f():\n    api.storage\n", {}, []),
    ],
)
def test_capabilities_are_found_statically(
    tmp_path: Path, source: str, needs: dict[str, object], warned: list[str]
) -> None:
    (tmp_path / "main.py").write_text(source)
    manifest = Manifest.model_validate({"name": "f", "needs": needs})
    warnings = code_check.unasked_capabilities(tmp_path, manifest)
    assert [w.split(" uses ")[1].split(",")[0] for w in warnings] == warned


def _deployment(function_id: str, name: str, nickname: str, onion_letter: str) -> Deployment:
    return Deployment(function_id, name, onion_letter * 56, "A" * 40, nickname, "t", "t", "b", [], 0.0)


def test_a_name_on_several_boxes_is_named_name_at_box(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "keyring.json")
    ring.add(_deployment("1" * 32, "dropbox-1", "exit0", "a"))
    ring.add(_deployment("2" * 32, "dropbox-1", "exit1", "b"))
    with pytest.raises(BentoError, match="several functions are called 'dropbox-1'") as ambiguous:
        ring.function("dropbox-1")
    assert (
        "dropbox-1@exit0" in ambiguous.value.message and ambiguous.value.fix == "name one as dropbox-1@exit0"
    )
    assert ring.function("dropbox-1@exit1").function_id == "2" * 32
    assert ring.function("dropbox-1@EXIT0").function_id == "1" * 32
    assert ring.function(f"dropbox-1@{'b' * 20}.onion"[:-6]).function_id == "2" * 32  # an onion's start
    with pytest.raises(BentoError, match="no function 'dropbox-1@exit9'"):
        ring.function("dropbox-1@exit9")


def test_shutdown_names_a_function_by_name_at_box(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "keyring.json")
    ring.add(_deployment("1" * 32, "dropbox-1", "exit0", "a"))
    ring.add(_deployment("2" * 32, "dropbox-1", "", "b"))  # a box whose nickname is not known
    result = _bento("shutdown", "dropbox-1", cwd=tmp_path)
    assert result.returncode == 1 and "name one as dropbox-1@exit0" in " ".join(result.stderr.split())
    result = _bento("shutdown", f"dropbox-1@{'b' * 16}", cwd=tmp_path)
    assert result.returncode == 1 and f"cannot reach the box {'b' * 16} over Tor" in result.stderr


def test_attach_remembers_the_logs_it_showed_per_session(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "keyring.json")
    ring.add(_deployment("1" * 32, "talker", "exit0", "a"))
    ring.add_session("S1", "1" * 32)
    ring.record_logs_seen("S1", 120)
    ring.record_logs_seen("S1", 40)  # an older stream's figure never goes back
    ring.record_logs_seen("S2", 10)  # not a session of the keyring: nothing kept
    assert Keyring(tmp_path / "keyring.json").logs_seen == {"S1": 120}
    ring.forget("1" * 32)
    assert "S1" not in Keyring(tmp_path / "keyring.json").logs_seen


def test_a_traceback_names_the_file_deployed() -> None:
    single = Deployment("f", "n", "q" * 56, "", "", "", "", "", [], 0.0, source="/src/app.py",
                        box_path="/function/main.py")  # fmt: skip
    tree = Deployment("f", "n", "q" * 56, "", "", "", "", "", [], 0.0, source="/src/pkg",
                      box_path="/function/")  # fmt: skip
    trace = 'File "/function/main.py", line 3, in main\nFile "/function/lib/util.py", line 9'
    assert single.local_paths(trace).splitlines()[0] == 'File "/src/app.py", line 3, in main'
    assert 'File "/src/pkg/lib/util.py", line 9' in tree.local_paths(trace)
