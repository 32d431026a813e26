"""Building and signing this box's descriptor."""

from __future__ import annotations

import base64
import time

from bento import __version__
from bento.protocol.descriptor import Descriptor, OfferedPackage, Runtime, SignedDescriptor, StorageOffer
from bento.server.config import ServerConfig
from bento.server.identity import Identity


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
        runtime=Runtime(python=python, isolation=enforced, storage=storage, packages=packages or []),
    )
    signature = base64.b64encode(identity.sign(descriptor.signed_bytes())).decode()
    return SignedDescriptor(descriptor=descriptor, signature=signature)
