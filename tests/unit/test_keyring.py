"""The client's keyring: a private, atomically written wallet of capabilities."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bento.client import keyring
from bento.client.keyring import Deployment, Keyring
from bento.errors import BentoError


def _deployment(function_id: str, name: str) -> Deployment:
    return Deployment(
        function_id=function_id,
        name=name,
        onion="a" * 56,
        relay_fingerprint="A" * 40,
        relay_nickname="relay",
        invocation_token=f"INVOKE-SECRET-{function_id}",
        shutdown_token=f"SHUTDOWN-SECRET-{function_id}",
        boot_id="boot",
        entry_points=["main"],
        deployed_at=1.5,
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "config" / "bento" / "keyring.json"


def _filled(path: Path) -> Keyring:
    ring = Keyring(path)
    for function_id, name in (("f1", "echo"), ("f2", "echo"), ("f3", "browser")):
        ring.add(_deployment(function_id, name))
    for session_id, function_id in (("s1", "f1"), ("s2", "f3"), ("s3", "f1")):
        ring.add_session(session_id, function_id)
    return ring


def test_it_is_private_and_round_trips(path: Path) -> None:
    saved = _filled(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = Keyring(path)
    assert loaded.functions == saved.functions
    assert loaded.sessions == saved.sessions


def test_saving_replaces_a_readable_file_with_a_private_one(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_text('{"functions": {}, "sessions": {}}')
    path.chmod(0o644)
    _filled(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_crash_while_saving_leaves_the_old_keyring_whole(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring = _filled(path)
    before = path.read_bytes()

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", crash)  # the keyring module's json is this one
    with pytest.raises(OSError, match="disk full"):
        ring.add(_deployment("f4", "new"))
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["keyring.json", "keyring.json.lock"]
    monkeypatch.undo()
    assert set(Keyring(path).functions) == {"f1", "f2", "f3"}


def test_lookup_by_id_or_unique_name(path: Path) -> None:
    ring = _filled(path)
    assert ring.function("f2").function_id == "f2"
    assert ring.function("browser").function_id == "f3"
    listed = r"echo@relay \(f1\), echo@relay \(f2\)"
    with pytest.raises(BentoError, match=rf"several functions are called 'echo': {listed}") as ambiguous:
        ring.function("echo")
    assert ambiguous.value.fix == "name one by its id"
    with pytest.raises(BentoError, match="no function 'nope' in the keyring") as missing:
        ring.function("nope")
    assert missing.value.fix


def test_sessions_lead_to_their_function(path: Path) -> None:
    ring = _filled(path)
    assert ring.function_of_session("s2").name == "browser"
    with pytest.raises(BentoError, match="no session s9"):
        ring.function_of_session("s9")
    assert ring.forget("f1") == _deployment("f1", "echo")
    assert set(ring.functions) == {"f2", "f3"}
    assert set(Keyring(path).functions) == {"f2", "f3"}
    with pytest.raises(
        BentoError,
        match=r"session s3 belonged to function f1 \('echo' on relay\), which was "
        "forgotten",
    ) as gone:
        Keyring(path).function_of_session("s3")
    assert gone.value.fix and "SECRET" not in path.read_text().split('"gone"')[1]
    assert ring.forget("unknown") is None  # harmless


def test_tokens_never_appear_in_reprs(path: Path) -> None:
    ring = _filled(path)
    for shown in (repr(ring.functions), str(ring.functions["f1"]), repr(list(ring.functions.values()))):
        assert "SECRET" not in shown
    assert "f1" in repr(ring.functions["f1"]) and "echo" in repr(ring.functions["f1"])


def test_a_corrupt_keyring_is_a_clear_error(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    with pytest.raises(BentoError, match="cannot read the keyring"):
        Keyring(path)


def test_a_missing_keyring_is_empty(path: Path) -> None:
    ring = Keyring(path)
    assert (ring.functions, ring.sessions) == ({}, {})
    assert not path.exists(), "reading does not create it"


def test_default_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BENTO_KEYRING", str(tmp_path / "mine.json"))
    assert keyring.default_path() == tmp_path / "mine.json"
    monkeypatch.delenv("BENTO_KEYRING")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert keyring.default_path() == tmp_path / "xdg" / "bento" / "keyring.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert keyring.default_path() == tmp_path / "home" / ".config" / "bento" / "keyring.json"


def test_the_file_is_plain_json(path: Path) -> None:
    _filled(path)
    data = json.loads(path.read_text())
    assert data["sessions"] == {"s1": "f1", "s2": "f3", "s3": "f1"}
    assert data["functions"]["f1"]["invocation_token"] == "INVOKE-SECRET-f1"


def test_a_shut_down_function_is_named_as_such(path: Path) -> None:
    ring = _filled(path)
    ring.forget("f3", how="shut down")
    with pytest.raises(BentoError, match=r"session s2 belonged to function f3 .* was shut down at .*: its "):
        Keyring(path).function_of_session("s2")
    with pytest.raises(BentoError, match=r"function f3 \('browser' on relay\) was shut down"):
        Keyring(path).function("f3")
    ring.add(_deployment("f3", "browser"))  # deployed again under the same id: known again
    assert Keyring(path).function_of_session("s2").function_id == "f3"


def test_changes_are_made_on_the_file_s_latest_state(path: Path) -> None:
    """Two keyrings loaded before either changes: neither loses the other's change."""
    first, second = Keyring(path), Keyring(path)
    first.add(_deployment("f1", "a"))
    second.add(_deployment("f2", "b"))
    second.add_session("s1", "f1")
    first.forget("f2")
    loaded = Keyring(path)
    assert set(loaded.functions) == {"f1"} and loaded.sessions == {"s1": "f1"}


WRITER = """
import sys
from bento.client.keyring import Deployment, Keyring
ring = Keyring()
worker = sys.argv[1]
for i in range(int(sys.argv[2])):
    ring.add(Deployment(f"f-{worker}-{i}", "n", "a" * 56, "A" * 40, "r", "t", "t", "b", [], 0.0))
    ring.add_session(f"s-{worker}-{i}", f"f-{worker}-{i}")
    if i % 2:
        ring.forget(f"f-{worker}-{i}")
"""


def test_many_processes_at_once_lose_nothing(path: Path) -> None:
    workers, each = 8, 10
    env = {**os.environ, "BENTO_KEYRING": str(path)}
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(w), str(each)], env=env, stderr=subprocess.PIPE)
        for w in range(workers)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()
    ring = Keyring(path)
    kept = {f"f-{w}-{i}" for w in range(workers) for i in range(0, each, 2)}
    assert set(ring.functions) == kept
    assert set(ring.gone) == {f"f-{w}-{i}" for w in range(workers) for i in range(1, each, 2)}
    assert len(ring.sessions) == workers * each
    assert sorted(p.name for p in path.parent.iterdir()) == ["keyring.json", "keyring.json.lock"]


def test_it_remembers_the_newest_sessions_only(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyring, "SESSIONS_KEPT", 3)
    ring = _filled(path)  # s1, s2, s3
    ring.add_session("s4", "f2")
    assert list(Keyring(path).sessions) == ["s2", "s3", "s4"]
