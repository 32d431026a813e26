"""The box descriptor: what a box is, signed by the box's long-term key.

The signing key is the Ed25519 key behind the box's onion address, so a client that
found the onion address in the relay's own descriptor can verify this one with nothing
else, and checks that ``relay_fingerprint`` is the relay that advertised it.
"""

from __future__ import annotations

import base64
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bento.protocol import onion
from bento.protocol.policy import NodePolicy

FORMAT = "bento-descriptor-1"


class StorageOffer(BaseModel):
    """What a box's function storage protects, in plain words (see docs/operator.md, "Storage")."""

    model_config = ConfigDict(extra="forbid")

    cipher: str = Field(description="the AEAD every stored object is sealed with")
    keys: str = Field(description="where the per-function keys live, and what protects them there")
    lifetime: str = Field(description="how long stored data lives")
    protects_against: list[str]
    does_not_protect_against: list[str]


class OfferedPackage(BaseModel):
    """A distribution the box installs read-only for functions to import."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    modules: list[str] = Field(description="the top-level modules it makes importable")


class Conclave(BaseModel):
    """What protects a function from this box itself (see docs/operator.md, "Conclaves")."""

    model_config = ConfigDict(extra="forbid")

    enclave: Literal["none", "gramine-sgx"] = Field(
        description="what functions run in: 'none' is an ordinary sandboxed process the operator can inspect"
    )
    host: str = Field(description="what this host offers for enclaves, in one sentence")
    attestation: str | None = Field(
        default=None, description="the enclave's attestation (an SGX quote, base64); only with an enclave"
    )
    protects_against: list[str]
    does_not_protect_against: list[str]


class Runtime(BaseModel):
    model_config = ConfigDict(extra="forbid")

    language: str = "python"
    python: str = Field(description="the Python version functions run on")
    isolation: dict[str, str] = Field(description="each limit, and how this host enforces it (or not)")
    sgx: bool = Field(
        default=False, description="whether functions run in an SGX enclave here (see conclave)"
    )
    conclave: Conclave | None = Field(default=None, description="what protects functions from the box itself")
    packages: list[OfferedPackage] = Field(
        default_factory=list, description="packages functions can import beyond the standard library"
    )
    storage: StorageOffer | None = Field(default=None, description="function storage, if the policy has it")


class Descriptor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str = FORMAT
    relay_fingerprint: str
    relay_nickname: str
    onion: str = Field(description="v3 onion address of the API, without .onion")
    server_version: str
    boot_id: str = Field(description="changes at every server restart; functions do not survive one")
    published: float
    policy: NodePolicy = Field(description="the node policy: what functions may do here")
    runtime: Runtime

    def signed_bytes(self) -> bytes:
        """The canonical form that is signed: sorted keys, no spaces."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


class SignedDescriptor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    descriptor: Descriptor
    signature: str = Field(description="Ed25519 signature (base64) of the canonical descriptor")

    def verify(self) -> Descriptor:
        """The descriptor, if its signature is by the key of the onion address it names."""
        try:
            signature = base64.b64decode(self.signature, validate=True)
        except ValueError:
            signature = b""
        onion.verify(self.descriptor.onion, signature, self.descriptor.signed_bytes())
        return self.descriptor
