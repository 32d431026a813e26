"""Building and signing this box's descriptor."""

from __future__ import annotations

import base64
import platform
import time
from typing import Any

from bento import __version__
from bento.protocol.descriptor import Descriptor, Runtime, SignedDescriptor
from bento.server.config import ServerConfig
from bento.server.identity import Identity

ISOLATION = "separate process per instance (no OS sandbox yet)"


def default_policy(config: ServerConfig) -> dict[str, Any]:
    """The node policy as published. It grows with the sandbox; today it states the limits in force."""
    return {
        "max_upload_bytes": config.max_upload_bytes,
        "max_sessions": config.max_sessions,
        "session_wall_seconds": config.session_wall_seconds,
        "session_buffer_bytes": config.session_buffer_bytes,
        "network": False,
        "storage": False,
        "tor": {"circuits": False, "onion_services": False},
    }


def build(
    identity: Identity, config: ServerConfig, *, fingerprint: str, nickname: str, boot_id: str
) -> SignedDescriptor:
    descriptor = Descriptor(
        relay_fingerprint=fingerprint,
        relay_nickname=nickname,
        onion=identity.onion,
        server_version=__version__,
        boot_id=boot_id,
        published=time.time(),
        policy=default_policy(config),
        runtime=Runtime(python=platform.python_version(), isolation=ISOLATION),
    )
    signature = base64.b64encode(identity.sign(descriptor.signed_bytes())).decode()
    return SignedDescriptor(descriptor=descriptor, signature=signature)
