"""The box's identity and its signed descriptor: what a client checks before trusting a box."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bento import __version__
from bento.errors import BentoError
from bento.protocol.descriptor import FORMAT, SignedDescriptor
from bento.protocol.policy import NetworkPolicy, NodePolicy
from bento.server import descriptor, identity
from bento.server.config import ServerConfig

ENFORCED = {"namespaces": "bubblewrap", "memory": "cgroup v2"}


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    policy = NodePolicy(max_upload_bytes=12345, instances_total=7, network=NetworkPolicy(allowed=True))
    return ServerConfig(state_dir=tmp_path / "state", policy=policy)


def _build(config: ServerConfig, boot_id: str = "boot-x") -> SignedDescriptor:
    return descriptor.build(
        identity.load_or_create(config.state_dir),
        config,
        fingerprint="A" * 40,
        nickname="test",
        boot_id=boot_id,
        enforced=ENFORCED,
        python="3.11.2",
    )


def test_the_identity_is_kept_so_the_onion_address_survives_restarts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = identity.load_or_create(state)
    assert stat.S_IMODE((state / identity.KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    again = identity.load_or_create(state)
    assert again.onion == first.onion
    assert identity.load_or_create(tmp_path / "elsewhere").onion != first.onion


def test_a_damaged_identity_key_is_not_silently_replaced(tmp_path: Path) -> None:
    (tmp_path / identity.KEY_FILE).write_bytes(b"short")
    with pytest.raises(ValueError, match="not a Bento identity key"):
        identity.load_or_create(tmp_path)
    assert (tmp_path / identity.KEY_FILE).read_bytes() == b"short"


def test_a_built_descriptor_verifies_and_says_what_the_box_is(config: ServerConfig) -> None:
    signed = _build(config, boot_id="boot-1")
    described = signed.verify()
    assert described.format == FORMAT
    assert described.onion == identity.load_or_create(config.state_dir).onion
    assert (described.relay_fingerprint, described.relay_nickname) == ("A" * 40, "test")
    assert described.boot_id == "boot-1"
    assert described.server_version == __version__
    assert described.policy == config.policy, "the node policy in force, published whole"
    assert described.policy.max_upload_bytes == 12345
    assert described.policy.network.allowed is True
    assert described.policy.tor.circuits is False
    assert described.runtime.language == "python"
    assert described.runtime.python == "3.11.2"
    assert described.runtime.isolation == ENFORCED, "how this host enforces each limit"
    assert described.runtime.sgx is False


def test_it_verifies_after_a_trip_over_the_wire(config: ServerConfig) -> None:
    signed = _build(config)
    wire = json.loads(signed.model_dump_json())
    reordered = {
        "signature": wire["signature"],
        "descriptor": dict(reversed(list(wire["descriptor"].items()))),
    }
    for text in (signed.model_dump_json(), json.dumps(reordered, indent=4)):
        assert SignedDescriptor.model_validate_json(text).verify() == signed.descriptor


def test_a_restart_changes_the_boot_id_not_the_onion(config: ServerConfig) -> None:
    before, after = _build(config, "boot-1").verify(), _build(config, "boot-2").verify()
    assert before.onion == after.onion
    assert before.boot_id != after.boot_id


def _other_onion(tmp_path: Path) -> str:
    return identity.load_or_create(tmp_path / "other").onion


TAMPERING: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "format": lambda d, _: d.update(format="bento-descriptor-2"),
    "relay_fingerprint": lambda d, _: d.update(relay_fingerprint="B" * 40),
    "relay_nickname": lambda d, _: d.update(relay_nickname="impostor"),
    "onion (another valid one)": lambda d, tmp: d.update(onion=_other_onion(tmp)),
    "server_version": lambda d, _: d.update(server_version="9.9.9"),
    "boot_id": lambda d, _: d.update(boot_id="boot-y"),
    "published": lambda d, _: d.update(published=d["published"] + 1),
    "policy limit": lambda d, _: d["policy"]["instance"].update(
        memory_mb=d["policy"]["instance"]["memory_mb"] * 2
    ),
    "policy permission": lambda d, _: d["policy"]["tor"].update(circuits=True),
    "policy profiles": lambda d, _: d["policy"].update(syscall_profiles=["compute", "network"]),
    "runtime sgx": lambda d, _: d["runtime"].update(sgx=True),
    "runtime isolation": lambda d, _: d["runtime"]["isolation"].update(memory="not enforced"),
}


@pytest.mark.parametrize("field", TAMPERING)
def test_any_changed_field_breaks_the_signature(config: ServerConfig, tmp_path: Path, field: str) -> None:
    wire = json.loads(_build(config).model_dump_json())
    TAMPERING[field](wire["descriptor"], tmp_path)
    tampered = SignedDescriptor.model_validate(wire)
    with pytest.raises(BentoError, match="signature does not match") as refused:
        tampered.verify()
    assert refused.value.fix and "do not use it" in refused.value.fix


def test_a_signature_by_another_key_fails(config: ServerConfig, tmp_path: Path) -> None:
    signed = _build(config)
    impostor = identity.load_or_create(tmp_path / "impostor")
    forged = signed.model_copy(
        update={"signature": base64.b64encode(impostor.sign(signed.descriptor.signed_bytes())).decode()}
    )
    with pytest.raises(BentoError):
        forged.verify()
    # Nor can the impostor claim its own onion while keeping our signature.
    claimed = signed.descriptor.model_copy(update={"onion": impostor.onion})
    with pytest.raises(BentoError):
        SignedDescriptor(descriptor=claimed, signature=signed.signature).verify()


@pytest.mark.parametrize("signature", ["", "not base64!", "QUJD", base64.b64encode(b"\0" * 64).decode(), "é"])
def test_malformed_signatures_fail_cleanly(config: ServerConfig, signature: str) -> None:
    signed = _build(config).model_copy(update={"signature": signature})
    with pytest.raises(BentoError):
        signed.verify()


def test_a_descriptor_naming_an_invalid_onion_fails_cleanly(config: ServerConfig) -> None:
    signed = _build(config)
    broken = signed.descriptor.model_copy(update={"onion": "x" * 56})
    with pytest.raises(BentoError, match="not a valid v3 onion address"):
        SignedDescriptor(descriptor=broken, signature=signed.signature).verify()


@pytest.mark.parametrize("where", ["descriptor", "policy"])
def test_unknown_fields_are_refused(config: ServerConfig, where: str) -> None:
    wire = json.loads(_build(config).model_dump_json())
    target = wire["descriptor"] if where == "descriptor" else wire["descriptor"]["policy"]
    target["trusted"] = True
    with pytest.raises(ValueError, match="trusted"):
        SignedDescriptor.model_validate(wire)
