"""What protects a function from the box itself, on this host: the honest answer.

Bento's design (DESIGN.md, "Conclave") runs functions in an SGX enclave where the hardware
allows, so that even the box's operator cannot look inside, and proves it with remote
attestation. This module finds out what the host has, so that the descriptor can say
exactly what a function gets here, and a client can refuse a box that lacks what it needs
(``bento deploy --require-sgx``).

Bento does not run functions in enclaves yet: the descriptor says ``enclave: none`` on every
host, and says why (no SGX; SGX without Gramine; or SGX and Gramine present but no enclave
runtime in this Bento). See docs/operator.md, "Conclaves".

    >>> host = probe()
    >>> host.enclave_runtime          # no Bento release runs functions in enclaves yet
    'none'
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

# Device nodes of the SGX drivers: the upstream kernel's, then the older out-of-tree ones.
SGX_DEVICES = ("dev/sgx_enclave", "dev/sgx/enclave", "dev/isgx")
AESM_SOCKET = "var/run/aesmd/aesm.socket"  # the platform's quoting service, for attestation


@dataclass(frozen=True)
class HostEnclaves:
    cpu_sgx: bool  # the CPU advertises SGX (the `sgx` flag in /proc/cpuinfo)
    device: str | None  # the SGX device node, if a driver exposes one
    aesm: bool  # the attestation service's socket exists
    gramine: str | None  # path of `gramine-sgx`, if installed
    enclave_runtime: str = "none"  # what Bento runs functions in: only "none" exists today

    @property
    def sgx_usable(self) -> bool:
        return self.cpu_sgx and self.device is not None

    def summary(self) -> str:
        """One sentence on what this host has, for the descriptor and the operator."""
        if not self.cpu_sgx:
            return "this host has no SGX (no sgx flag in /proc/cpuinfo)"
        if self.device is None:
            return "the CPU has SGX but no SGX driver is loaded (no /dev/sgx_enclave)"
        if self.gramine is None:
            return f"SGX is usable ({self.device}) but Gramine-SGX is not installed"
        missing = "" if self.aesm else "; the attestation service (aesmd) is not running"
        return (
            f"SGX is usable ({self.device}) and Gramine-SGX is installed ({self.gramine}){missing}, "
            "but this Bento release runs no functions in enclaves"
        )


def probe(root: Path = Path("/")) -> HostEnclaves:
    """What the host under ``root`` offers (``root`` is for tests)."""
    try:
        cpuinfo = (root / "proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    flags = {word for line in cpuinfo.splitlines() if line.startswith("flags") for word in line.split()}
    device = next((f"/{d}" for d in SGX_DEVICES if (root / d).exists()), None)
    gramine = shutil.which("gramine-sgx") if root == Path("/") else None
    return HostEnclaves(
        cpu_sgx="sgx" in flags,
        device=device,
        aesm=(root / AESM_SOCKET).exists(),
        gramine=gramine,
    )
