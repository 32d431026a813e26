"""The descriptor says exactly what protects a function from the box, host by host."""

from __future__ import annotations

from pathlib import Path

import pytest
from localbox import LocalBox

from bento.errors import BentoError
from bento.protocol.descriptor import SignedDescriptor
from bento.protocol.manifest import Manifest
from bento.sandbox.conclave import HostEnclaves, probe


def _host(tmp_path: Path, *, flag: bool, device: str | None = None, aesm: bool = False) -> Path:
    (tmp_path / "proc").mkdir()
    flags = "fpu vme sse2" + (" sgx sgx_lc" if flag else "")
    (tmp_path / "proc/cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    if device:
        (tmp_path / device).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / device).touch()
    if aesm:
        (tmp_path / "var/run/aesmd").mkdir(parents=True)
        (tmp_path / "var/run/aesmd/aesm.socket").touch()
    return tmp_path


def test_a_host_without_sgx_says_so(tmp_path: Path) -> None:
    host = probe(_host(tmp_path, flag=False))
    assert not host.sgx_usable
    assert host.summary() == "this host has no SGX (no sgx flag in /proc/cpuinfo)"


def test_sgx_without_a_driver_is_not_usable(tmp_path: Path) -> None:
    host = probe(_host(tmp_path, flag=True))
    assert host.cpu_sgx and not host.sgx_usable
    assert "no SGX driver" in host.summary()


def test_sgx_with_a_driver_but_no_gramine(tmp_path: Path) -> None:
    host = probe(_host(tmp_path, flag=True, device="dev/sgx_enclave", aesm=True))
    assert host.sgx_usable and host.device == "/dev/sgx_enclave" and host.aesm
    assert "Gramine-SGX is not installed" in host.summary()


def test_even_with_sgx_and_gramine_bento_claims_no_enclave() -> None:
    host = HostEnclaves(cpu_sgx=True, device="/dev/sgx_enclave", aesm=True, gramine="/usr/bin/gramine-sgx")
    assert host.enclave_runtime == "none"
    assert "runs no functions in enclaves" in host.summary()


async def test_the_descriptor_states_what_does_and_does_not_protect(box: LocalBox) -> None:
    signed = SignedDescriptor.model_validate_json((await box.http.get("/v1/descriptor")).content)
    runtime = signed.verify().runtime
    assert runtime.sgx is False
    assert runtime.conclave is not None and runtime.conclave.enclave == "none"
    assert runtime.conclave.attestation is None
    assert runtime.conclave.host == probe().summary()
    assert any("operator" in item for item in runtime.conclave.does_not_protect_against)


@pytest.mark.parametrize("box_limits", [{"policy": {"storage": {"allowed": True}}}])
async def test_with_storage_the_disk_is_named_among_what_it_protects(box: LocalBox) -> None:
    signed = SignedDescriptor.model_validate_json((await box.http.get("/v1/descriptor")).content)
    conclave = signed.verify().runtime.conclave
    assert conclave is not None
    assert any("disk" in item for item in conclave.protects_against)


async def test_deploy_with_require_sgx_refuses_a_box_without_an_enclave(box: LocalBox) -> None:
    manifest = Manifest(name="secret")
    with pytest.raises(BentoError, match="no SGX enclave") as refused:
        await box.client.deploy(b"def main():\n    return 1\n", manifest, require_sgx=True)
    assert "--require-sgx" in (refused.value.fix or "")
    assert box.registry.functions == {}  # nothing was uploaded
    deployed = await box.client.deploy(b"def main():\n    return 1\n", manifest)
    assert deployed.function_id in box.registry.functions
