"""What a running testnet looks like on disk: ``DIR/testnet.json``.

The state file is the only link between ``bento testnet up`` and a later ``status`` or
``down`` run by another process, so it records everything needed to find each node.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from bento.tor.process import ProcessRecord

STATE_FILE = "testnet.json"


class Role(StrEnum):
    AUTHORITY = "authority"
    RELAY = "relay"
    EXIT = "exit"
    CLIENT = "client"


@dataclass
class Node:
    """One tor process of the testnet."""

    role: Role
    nickname: str
    data_dir: str
    control_port: int
    or_port: int | None = None
    dir_port: int | None = None
    socks_port: int | None = None
    fingerprint: str | None = None
    v3_identity: str | None = None  # authorities only: their v3 signing identity
    # With latency emulated: where tor really listens; or_port is then the delaying link's.
    or_listen_port: int | None = None
    pid: int | None = None
    # Relays that are Bento boxes: the Bento server beside them.
    bento_dir: str | None = None
    bento_onion: str | None = None
    bento_pid: int | None = None
    bento_user: str | None = None  # the user its server runs as (None: whoever runs the testnet)

    @property
    def torrc(self) -> Path:
        return Path(self.data_dir) / "torrc"

    @property
    def log(self) -> Path:
        return Path(self.data_dir) / "notice.log"

    @property
    def control_cookie(self) -> Path:
        """tor's control cookie: in its data directory, or where the box's own user can read it."""
        if self.bento_user is not None and self.bento_dir is not None:
            return Path(self.bento_dir) / "control_auth_cookie"
        return Path(self.data_dir) / "control_auth_cookie"

    @property
    def control_address(self) -> str:
        return f"127.0.0.1:{self.control_port}"

    @property
    def process(self) -> ProcessRecord | None:
        return None if self.pid is None else ProcessRecord(self.pid, str(self.torrc))

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    @property
    def bento_process(self) -> ProcessRecord | None:
        if self.bento_pid is None or self.bento_dir is None:
            return None
        return ProcessRecord(self.bento_pid, self.bento_dir)

    def bento_alive(self) -> bool:
        return self.bento_process is not None and self.bento_process.alive()

    @property
    def is_relay(self) -> bool:
        return self.role is not Role.CLIENT


@dataclass
class Service:
    """A server of the testnet's own (not tor, not Bento): see ``services``."""

    name: str  # "nameserver" or "corpus"
    ready_file: str
    pid: int | None = None
    port: int | None = None

    @property
    def process(self) -> ProcessRecord | None:
        return None if self.pid is None else ProcessRecord(self.pid, self.ready_file)

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    @property
    def log(self) -> Path:
        return Path(self.ready_file).with_suffix(".log")


@dataclass
class TestnetState:
    __test__ = False  # not a pytest test class

    directory: str
    nodes: list[Node] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    corpus_seed: int = 0
    corpus_sites: int = 0
    hop_delay_ms: float = 0.0
    web_delay_ms: float = 0.0
    started_at: float | None = None
    bootstrap_seconds: float | None = None

    @property
    def client(self) -> Node:
        return next(n for n in self.nodes if n.role is Role.CLIENT)

    @property
    def boxes(self) -> list[Node]:
        return [n for n in self.nodes if n.bento_dir is not None]

    def by_role(self, role: Role) -> list[Node]:
        return [n for n in self.nodes if n.role is role]

    def live_processes(self) -> list[str]:
        """What still runs of this testnet: tor nicknames, and ``NICK-bento`` for servers."""
        return (
            [n.nickname for n in self.nodes if n.alive()]
            + [f"{n.nickname}-bento" for n in self.boxes if n.bento_alive()]
            + [s.name for s in self.services if s.alive()]
        )

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)

    def save(self) -> None:
        path = Path(self.directory) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, directory: Path) -> TestnetState | None:
        """The saved state in ``directory``, or None if there is none (or it is unreadable)."""
        try:
            raw = json.loads((directory / STATE_FILE).read_text())
            nodes = [Node(**{**n, "role": Role(n["role"])}) for n in raw.pop("nodes")]
            services = [Service(**s) for s in raw.pop("services", [])]
            return cls(nodes=nodes, services=services, **raw)
        except (OSError, ValueError, TypeError, KeyError):
            return None
