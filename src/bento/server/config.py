"""Server configuration: a TOML file, overridden by command-line flags.

# /etc/bento/server.toml
control = "127.0.0.1:9051"      # the relay's control port
state_dir = "/var/lib/bento"
listen = "203.0.113.5:8080"     # optional: also reachable by circuits exiting here

[policy]                        # the node policy: see docs/operator.md
total_memory_mb = 2048
[policy.instance]
memory_mb = 256
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from bento.errors import BentoError, describe_validation
from bento.protocol.policy import NodePolicy
from bento.server.admin.address import check_metrics_address
from bento.tor.resolver import parse_nameserver


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    control: str = Field(default="127.0.0.1:9051", description="host:port of the relay's control port")
    state_dir: Path = Field(default=Path("/var/lib/bento"), description="keys and function code")
    onion: bool = Field(default=True, description="publish the API as a v3 onion service")
    advertise: bool = Field(default=True, description="add bento=<onion> to the relay's ContactInfo")
    api_port: int = Field(default=0, ge=0, le=65535, description="local port behind the onion; 0 picks one")
    listen: str | None = Field(default=None, description="also serve the API on this host:port")
    resolver: str | None = Field(
        default=None,
        description="nameserver (IP or IP:PORT) that resolves names for functions; "
        "default: as the relay resolves (its ServerDNSResolvConfFile, else the system's resolver)",
    )
    pool_size: int = Field(
        default=2, ge=0, le=64, description="sandboxes kept started and waiting, for fast invocations"
    )
    pool_max: int | None = Field(
        default=None,
        ge=0,
        description="the most the pool grows to after a burst of sessions asked for that many at once "
        "(it shrinks back to pool_size within minutes without one; each waiting sandbox holds about "
        "5 MiB and an instance slot); default: the policy's instances_total",
    )
    policy: NodePolicy = Field(default_factory=NodePolicy, description="what functions may do here")
    accept_unenforced: list[str] = Field(
        default_factory=list,
        description="limits this host cannot enforce that the operator accepts (e.g. cpu_share without "
        "cgroups); the server refuses to start while any other is unenforceable",
    )
    session_buffer_bytes: int = Field(
        default=4 << 20, gt=0, description="output held per session for a slow or absent client"
    )
    session_retention_seconds: float = Field(
        default=600, gt=0, description="how long an ended session can still be attached to"
    )
    retained_sessions: int = Field(
        default=4096, gt=0, description="ended sessions kept at most; the oldest is forgotten first"
    )
    retained_output_bytes: int = Field(
        default=64 << 20,
        ge=0,
        description="unacknowledged output of ended sessions kept, all together; the oldest is dropped first",
    )

    metrics_any_address: bool = Field(default=False, description="allow a metrics address off loopback")
    metrics: str | None = Field(default=None, description="serve Prometheus metrics on IP:PORT (loopback)")

    @property
    def pool_most(self) -> int:
        """The most sandboxes the pool may hold: ``pool_max``, never below ``pool_size``."""
        most = self.policy.instances_total if self.pool_max is None else self.pool_max
        return max(self.pool_size, most)

    @field_validator("metrics")
    @classmethod
    def _metrics_address(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:  # ValueError: pydantic reports it with the field's name
            check_metrics_address(value, any_address=info.data.get("metrics_any_address", False))
        return value

    @field_validator("resolver")
    @classmethod
    def _nameserver(cls, value: str | None) -> str | None:
        if value is not None:
            parse_nameserver(value)  # ValueError: pydantic reports it with the field's name
        return value

    @classmethod
    def load(cls, path: Path | None, overrides: dict[str, Any]) -> ServerConfig:
        data: dict[str, Any] = {}
        if path is not None:
            try:
                data = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise BentoError(f"cannot read the server config {path}: {exc}") from None
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except ValidationError as exc:
            raise BentoError(f"invalid server config: {describe_validation(exc)}") from None
