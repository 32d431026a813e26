"""The local keyring: the tokens of the functions you deployed, so you need not paste them.

One JSON file, mode 0600, at ``$BENTO_KEYRING`` or ``$XDG_CONFIG_HOME/bento/keyring.json``.
Whoever can read it can use and shut down your functions: it is a wallet of
capabilities, and is written atomically so a crash never leaves half of it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bento.errors import BentoError


def default_path() -> Path:
    if env := os.environ.get("BENTO_KEYRING"):
        return Path(env)
    config_home = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config_home) / "bento" / "keyring.json"


@dataclass
class Deployment:
    function_id: str
    name: str
    onion: str
    relay_fingerprint: str
    relay_nickname: str
    invocation_token: str
    shutdown_token: str
    boot_id: str
    entry_points: list[str]
    deployed_at: float
    token_keys: dict[str, str] = field(default_factory=dict)  # right -> key id of its blinded tokens

    def __repr__(self) -> str:  # tokens never reach logs or tracebacks
        return f"Deployment({self.function_id}, {self.name!r} on {self.relay_nickname})"


class Keyring:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self.functions: dict[str, Deployment] = {}
        self.sessions: dict[str, str] = {}  # session id -> function id
        self._load()

    def _load(self) -> None:
        try:
            raw: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise BentoError(f"cannot read the keyring {self.path}: {exc}") from None
        self.functions = {k: Deployment(**v) for k, v in raw.get("functions", {}).items()}
        self.sessions = dict(raw.get("sessions", {}))

    def save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = {"functions": {k: asdict(v) for k, v in self.functions.items()}, "sessions": self.sessions}
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2)
        os.replace(tmp, self.path)

    def function(self, name: str) -> Deployment:
        """A function by id, or by name if exactly one deployed function has it."""
        if name in self.functions:
            return self.functions[name]
        named = [f for f in self.functions.values() if f.name == name]
        if len(named) == 1:
            return named[0]
        if named:
            ids = ", ".join(f.function_id for f in named)
            raise BentoError(f"several functions are called {name!r}: {ids}", fix="name one by its id")
        raise BentoError(
            f"no function {name!r} in the keyring {self.path}",
            fix="`bento deploy` one first, or check BENTO_KEYRING",
        )

    def function_of_session(self, session_id: str) -> Deployment:
        if session_id not in self.sessions:
            raise BentoError(
                f"no session {session_id} in the keyring {self.path}",
                fix="use the session id that `bento invoke` printed",
            )
        return self.function(self.sessions[session_id])

    def forget(self, function_id: str) -> None:
        self.functions.pop(function_id, None)
        self.sessions = {s: f for s, f in self.sessions.items() if f != function_id}
