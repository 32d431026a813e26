"""Building and signing this box's descriptor."""

from __future__ import annotations

import base64
import time

from bento import __version__
from bento.protocol.descriptor import (
    Conclave,
    Descriptor,
    OfferedPackage,
    Runtime,
    SignedDescriptor,
    StorageOffer,
)
from bento.sandbox import conclave
from bento.server.config import ServerConfig
from bento.server.identity import Identity

TYPE_CHECKING = False
if TYPE_CHECKING:
    from bento.server.registry import Registry  # the registry is above this module


def build(
    identity: Identity,
    config: ServerConfig,
    *,
    fingerprint: str,
    nickname: str,
    boot_id: str,
    enforced: dict[str, str],
    python: str,
    storage: StorageOffer | None = None,
    packages: list[OfferedPackage] | None = None,
) -> SignedDescriptor:
    """The descriptor, signed: the node policy in force and how this host enforces it."""
    descriptor = Descriptor(
        relay_fingerprint=fingerprint,
        relay_nickname=nickname,
        onion=identity.onion,
        server_version=__version__,
        boot_id=boot_id,
        published=time.time(),
        policy=config.policy,
        runtime=Runtime(
            python=python,
            isolation=enforced,
            sgx=False,
            conclave=conclave_statement(conclave.probe(), storage),
            storage=storage,
            packages=packages or [],
        ),
    )
    signature = base64.b64encode(identity.sign(descriptor.signed_bytes())).decode()
    return SignedDescriptor(descriptor=descriptor, signature=signature)


def conclave_statement(host: conclave.HostEnclaves, storage: StorageOffer | None) -> Conclave:
    """What protects a function from this box, with no enclave: exactly, and no more."""
    protects = [
        "other functions on this box: each instance runs in a sandbox of its own (see isolation)",
        "observers of the network: clients reach the box only over Tor, and functions never learn "
        "who their client is",
    ]
    if storage is not None:
        protects.append(
            "anyone who reads the box's disk, now or later: stored data is sealed under keys held only "
            "in the server's memory and destroyed at shutdown"
        )
    return Conclave(
        enclave="none",
        host=host.summary(),
        protects_against=protects,
        does_not_protect_against=[
            "the box's operator, or anyone in control of its host: with no enclave they can read and "
            "change the function's code, its memory, its inputs and outputs, and the storage keys "
            "while it runs",
            "a box that lies about what it runs: without attestation nothing proves this descriptor's "
            "runtime is the one in use",
        ],
    )


def of_box(identity: Identity, registry: Registry, *, fingerprint: str, nickname: str) -> SignedDescriptor:
    """The descriptor of a running box: everything but the relay's names read off its registry."""
    config = registry.config
    return build(
        identity,
        config,
        fingerprint=fingerprint,
        nickname=nickname,
        boot_id=registry.boot_id,
        enforced=registry.sandbox.enforced(),
        python=registry.sandbox.python_version,
        storage=registry.store.offer() if config.policy.storage.allowed else None,
        packages=registry.offered,
    )
