"""The shard manifest: 0600 from birth, never overwritten, sealed with a passphrase; and
where the shards go (apart, and shared only when boxes are too few)."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bento.client.discovery import BoxInfo
from bento.errors import BentoError
from bento.functions.shard import manifest as manifests
from bento.functions.shard.manifest import ShardManifest, ShardRecord
from bento.functions.shard.placement import place

CAPABILITY = ":".join(("bento-dropbox", "o" * 56, "f00d", "i" * 64, "cd" * 16, "ab" * 32, "k" * 43, "-"))


def sample() -> ShardManifest:
    return ShardManifest(
        name="notes.txt", length=5, sha256="0" * 64, n=1, k=1, symbol=64, file_id="1" * 32,
        key="2" * 64, created=1.0, expires=2.0,
        shards=[ShardRecord(index=0, box="exit0", fingerprint="A" * 40, capability=CAPABILITY, bytes=96)],
    )  # fmt: skip


def test_written_0600_from_the_start_and_never_over_another(tmp_path: Path) -> None:
    path = tmp_path / "notes.shard"
    old = os.umask(0)  # a permissive umask must not matter: the mode is given at creation
    try:
        manifests.write(path, manifests.encode(sample()))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert manifests.decode(manifests.read(path)) == sample()
    with pytest.raises(BentoError, match="exists already"):
        manifests.write(path, b"another")
    assert manifests.decode(path.read_bytes()) == sample()
    assert [p.name for p in tmp_path.iterdir()] == ["notes.shard"]  # no temporary file left


def test_no_secret_in_its_repr() -> None:
    shown = repr(sample()) + str(sample())
    assert "2" * 64 not in shown and "ab" * 32 not in shown and "i" * 64 not in shown


def test_sealed_with_a_passphrase(tmp_path: Path) -> None:
    raw = manifests.encode(sample(), "correct horse")
    assert manifests.is_sealed(raw) and not manifests.is_sealed(manifests.encode(sample()))
    assert b"2" * 64 not in raw and b"ab" * 32 not in raw and b"exit0" not in raw
    assert manifests.decode(raw, "correct horse") == sample()
    with pytest.raises(BentoError, match="wrong passphrase") as wrong:
        manifests.decode(raw, "battery staple")
    assert wrong.value.fix and "passphrase" in wrong.value.fix
    with pytest.raises(BentoError, match="sealed with a passphrase"):
        manifests.decode(raw)
    altered = json.loads(raw)
    altered["sealed"]["ciphertext"] = altered["sealed"]["ciphertext"][::-1]
    with pytest.raises(BentoError, match="wrong passphrase|damaged"):
        manifests.decode(json.dumps(altered).encode(), "correct horse")


@pytest.mark.parametrize(
    "raw",
    [b"", b"[]", b"{}", b'{"kind": "bento-shard-manifest", "version": 9}', b"\xff" * 10, b"x" * (2 << 20)],
)
def test_what_is_not_a_manifest_is_said_plainly(raw: bytes) -> None:
    with pytest.raises(BentoError, match="not a Bento shard manifest|version 9"):
        manifests.decode(raw)


def test_the_command_says_a_wrong_passphrase_plainly(tmp_path: Path) -> None:
    path = tmp_path / "m.shard"
    manifests.write(path, manifests.encode(sample(), "right"))
    env = {**os.environ, "BENTO_PASSPHRASE": "wrong", "BENTO_KEYRING": str(tmp_path / "k.json")}
    for extra in ([], ["--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "bento", "shard", "get", str(path), *extra],
            env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 1 and "Traceback" not in done.stderr
        said = json.loads(done.stdout)["error"]["message"] if extra else done.stderr
        assert "wrong passphrase" in said and "right" not in said


def box(name: str, address: str, family: tuple[str, ...] = ()) -> BoxInfo:
    fingerprint = (name.upper() * 40)[:40]
    return BoxInfo(name, fingerprint, ("Running",), name * 56, f"{address}:9001", family)


def test_boxes_apart_first_then_others_then_shared_loudly() -> None:
    a, b, c = box("a", "10.1.0.1"), box("b", "10.1.9.9"), box("c", "10.2.0.1")
    d = box("d", "10.3.0.1", family=("$" + "A" * 40,))  # declares a's family
    for seed in range(20):
        chosen, warnings = place([a, b, c, d], 2, random.Random(seed))
        assert len(set(chosen)) == 2 and warnings == []
        assert {a, b} != set(chosen) and {a, d} != set(chosen)
    chosen, warnings = place([a, b], 2, random.Random(1))
    assert set(chosen) == {a, b} and "distinct /16s and families" in warnings[0]
    chosen, warnings = place([a, c], 3, random.Random(1))
    assert set(chosen) == {a, c} and len(chosen) == 3
    assert any("SEVERAL SHARDS PER BOX" in w for w in warnings)
    with pytest.raises(BentoError, match="no Bento box"):
        place([], 3)


async def test_no_box_answering_is_a_clear_error_for_put_and_get(tmp_path: Path) -> None:
    from bento.client.keyring import Keyring
    from bento.functions.shard import client as shard

    closed = "127.0.0.1:1"  # no Tor there: every box is unreachable at once
    boxes = [box("a", "10.1.0.1"), box("b", "10.2.0.1")]
    with pytest.raises(BentoError, match="could not be stored") as refused:
        await shard.put(
            b"data", name="f", boxes=boxes, n=2, k=1, socks=closed, keyring=Keyring(tmp_path / "k.json")
        )
    assert "a:" in refused.value.message or "b:" in refused.value.message
    with pytest.raises(BentoError, match=r"only 0 shard\(s\) of the 1 needed") as failed:
        await shard.get(sample(), socks=closed)
    assert "ab" * 32 not in str(failed.value) and "2" * 64 not in str(failed.value)


async def test_a_file_whose_shards_no_dropbox_holds_is_refused_before_sending(tmp_path: Path) -> None:
    from bento.client.keyring import Keyring
    from bento.functions.shard import client as shard

    boxes = [box("a", "10.1.0.1"), box("b", "10.2.0.1")]
    with pytest.raises(BentoError, match="more than a Dropbox holds") as refused:
        await shard.put(
            os.urandom(40 << 20), name="f", boxes=boxes, n=2, k=1, socks="127.0.0.1:1",
            keyring=Keyring(tmp_path / "k.json"),
        )  # fmt: skip
    assert refused.value.fix and "--k" in refused.value.fix
