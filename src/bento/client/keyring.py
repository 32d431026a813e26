"""The local keyring: the tokens of the functions you deployed, so you need not paste them.

One JSON file, mode 0600, at ``$BENTO_KEYRING`` or ``$XDG_CONFIG_HOME/bento/keyring.json``.
Whoever can read it can use and shut down your functions: it is a wallet of
capabilities.

Several ``bento`` processes use it at once (two terminals, a script invoking in
parallel), so every change is a read-modify-write under an exclusive ``flock`` on a lock
file beside it: the file is re-read under the lock, changed, and written to a temporary
file of its own (``mkstemp``) that atomically replaces it. No change is lost to a
concurrent writer, and a crash never leaves half a keyring. Readers need no lock: they
always see a whole file, old or new.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bento.client.names import box_name
from bento.errors import BentoError

LOCK_WAIT = 60.0  # seconds to wait for other bento processes' changes (each takes milliseconds)
GONE_KEPT = 200  # functions remembered after they are shut down, so `attach` can say what happened
SESSIONS_KEPT = 5000  # session ids remembered for `attach`; boxes retain ended sessions for minutes


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
    session_rights: dict[str, str] = field(default_factory=dict)  # session id -> its right (session_rights)
    storage_mb: int | None = None  # its manifest's needs.storage_mb; None: deployed before it was kept
    source: str = ""  # the file or directory deployed, so tracebacks name it instead of box_path
    box_path: str = ""  # where the box runs it: /function/<module>.py for a file, /function/ for a tree

    def __repr__(self) -> str:  # tokens never reach logs or tracebacks
        return f"Deployment({self.function_id}, {self.name!r} on {self.box})"

    @property
    def box(self) -> str:
        """Its box, as every message names one (``discovery.box_name``)."""
        return box_name(self.relay_nickname, self.onion)

    @property
    def address(self) -> str:
        """``name@box``: unique where names are not (a standard function on several boxes)."""
        return f"{self.name}@{self.box}"

    def local_paths(self, traceback: str) -> str:
        """``traceback`` with the box's paths of the code replaced by the files deployed.

        >>> d = Deployment("f", "n", "q" * 56, "", "", "", "", "", [], 0.0, source="/src/app.py",
        ...                box_path="/function/main.py")
        >>> d.local_paths('File "/function/main.py", line 3')
        'File "/src/app.py", line 3'
        """
        if not self.source or not self.box_path:
            return traceback
        if self.box_path.endswith("/"):  # a directory: every file under it
            return traceback.replace(f'File "{self.box_path}', f'File "{self.source.rstrip("/")}/')
        return traceback.replace(f'File "{self.box_path}"', f'File "{self.source}"')

    def on(self, box: str) -> bool:
        """Whether ``box`` (a nickname, fingerprint, or onion address or its start) names its box."""
        key = box.strip().removeprefix("$").lower().removesuffix(".onion")
        names = (self.relay_nickname.lower(), self.relay_fingerprint.lower())
        return bool(key) and (key in names or self.onion.startswith(key))


@dataclass
class Gone:
    """A function the keyring no longer holds tokens for: no secret is kept."""

    function_id: str
    name: str
    relay_nickname: str
    how: str  # "shut down", "forgotten", "replaced"
    at: float


class Keyring:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self.functions: dict[str, Deployment] = {}
        self.sessions: dict[str, str] = {}  # session id -> function id
        self.logs_seen: dict[str, int] = {}  # session id -> log bytes shown, so attach resumes there
        self.gone: dict[str, Gone] = {}  # function id -> how it left
        self._load()

    # --- reading and writing ------------------------------------------------------------

    def _load(self) -> None:
        try:
            raw: dict[str, Any] = json.loads(self.path.read_text())
            known = {f.name for f in fields(Deployment)}  # a newer bento's fields are left to it
            functions = {
                k: Deployment(**{n: x for n, x in v.items() if n in known})
                for k, v in raw.get("functions", {}).items()
            }
            gone = {k: Gone(**v) for k, v in raw.get("gone", {}).items()}
            sessions = {str(k): str(v) for k, v in raw.get("sessions", {}).items()}
            seen = {str(k): int(v) for k, v in raw.get("logs_seen", {}).items()}
        except FileNotFoundError:
            functions, gone, sessions, seen = {}, {}, {}, {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise BentoError(
                f"cannot read the keyring {self.path}: {exc}",
                fix="restore it from a backup, or move it away to start an empty one",
            ) from None
        self.functions, self.sessions, self.gone, self.logs_seen = functions, sessions, gone, seen

    @contextlib.contextmanager
    def update(self) -> Iterator[Keyring]:
        """Change the keyring: locked, re-read, changed by the caller, written back.

        Hold it for local work only (never across a request to a box): other ``bento``
        processes wait for it. An exception inside leaves the file as it was.
        """
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self._lock(lock)
            self._load()
            yield self
            self._write()
        finally:
            os.close(lock)  # releases the lock

    def _lock(self, fd: int) -> None:
        # Polled rather than blocking, so that a stopped `bento` holding the lock (Ctrl-Z)
        # gives an error instead of a hang; the backoff grows so that waiters stay cheap.
        deadline = time.monotonic() + LOCK_WAIT
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BentoError(
                        f"the keyring {self.path} stayed locked by another bento process "
                        f"for {LOCK_WAIT:.0f} s",
                        fix="wait for it to finish (a stopped `bento` holds it: resume or end it)",
                    ) from None
                time.sleep(pause * (1 + random.random()))  # lock backoff, jittered: changes take ms
                pause = min(pause * 2, 0.05)

    def _write(self) -> None:
        data = {
            "functions": {k: asdict(v) for k, v in self.functions.items()},
            "sessions": self.sessions,
            "logs_seen": {s: n for s, n in self.logs_seen.items() if s in self.sessions},
            "gone": {k: asdict(v) for k, v in self.gone.items()},
        }
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as out:  # mkstemp made it 0600
                json.dump(data, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # --- changes (each one locked) ------------------------------------------------------

    def add(self, deployment: Deployment) -> None:
        with self.update():
            self.functions[deployment.function_id] = deployment
            self.gone.pop(deployment.function_id, None)

    def add_session(self, session_id: str, function_id: str, right: str | None = None) -> None:
        """Remember a session, and its session right (``bento attach`` needs it) if it is ours."""
        with self.update():
            self.sessions[session_id] = function_id
            for old in list(self.sessions)[:-SESSIONS_KEPT]:  # the oldest first (insertion order)
                del self.sessions[old]
            if right is not None and (current := self.functions.get(function_id)) is not None:
                current.session_rights[session_id] = right
                current.session_rights = {
                    s: r for s, r in current.session_rights.items() if s in self.sessions
                }

    def record_logs_seen(self, session_id: str, offset: int) -> None:
        """Remember that the logs of ``session_id`` were shown up to ``offset`` bytes."""
        with self.update():
            if session_id in self.sessions:
                self.logs_seen[session_id] = max(offset, self.logs_seen.get(session_id, 0))

    def record_token_keys(self, deployment: Deployment) -> None:
        """Keep the blinded-token key ids ``deployment`` has learnt (key consistency)."""
        with self.update():
            if (current := self.functions.get(deployment.function_id)) is not None:
                current.token_keys.update(deployment.token_keys)

    def forget(self, function_id: str, *, how: str = "forgotten") -> Deployment | None:
        """Drop a function's tokens; its sessions are remembered as belonging to a gone function."""
        with self.update():
            deployment = self.functions.pop(function_id, None)
            if deployment is not None:
                self.gone[function_id] = Gone(
                    function_id, deployment.name, deployment.relay_nickname, how, time.time()
                )
                for old in sorted(self.gone, key=lambda k: self.gone[k].at)[:-GONE_KEPT]:
                    del self.gone[old]
            kept = set(self.functions) | set(self.gone)
            self.sessions = {s: f for s, f in self.sessions.items() if f in kept}
            self.logs_seen = {
                s: n for s, n in self.logs_seen.items() if self.sessions.get(s) in self.functions
            }
            return deployment

    # --- lookups ------------------------------------------------------------------------

    def function(self, name: str) -> Deployment:
        """A function by id, by name if exactly one deployed function has it, or by
        ``name@box`` (box: its relay's nickname or fingerprint, or its onion address)."""
        if name in self.functions:
            return self.functions[name]
        named = [f for f in self.functions.values() if f.name == name]
        base, at, box = name.rpartition("@")
        if not named and at:
            named = [f for f in self.functions.values() if f.name == base and f.on(box)]
        if len(named) == 1:
            return named[0]
        if named:
            listed = ", ".join(f"{f.address} ({f.function_id})" for f in named)
            unique = len({f.address for f in named}) == len(named)
            raise BentoError(
                f"several functions are called {name!r}: {listed}",
                fix=f"name one as {named[0].address}" if unique else "name one by its id",
            )
        if name in self.gone:
            raise self._gone_error(self.gone[name], f"function {name}")
        raise BentoError(
            f"no function {name!r} in the keyring {self.path}",
            fix="`bento functions` lists what it holds; `bento deploy` one first, or check BENTO_KEYRING",
        )

    def named(self, name: str) -> list[Deployment]:
        return [f for f in self.functions.values() if f.name == name]

    def function_of_session(self, session_id: str) -> Deployment:
        function_id = self.sessions.get(session_id)
        if function_id is None:
            raise BentoError(
                f"no session {session_id} in the keyring {self.path}",
                fix="use the session id that `bento invoke` printed; `bento sessions FUNCTION` lists them",
            )
        if function_id in self.gone:
            raise self._gone_error(self.gone[function_id], f"session {session_id}")
        return self.function(function_id)

    def _gone_error(self, gone: Gone, what: str) -> BentoError:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(gone.at))
        function = f"function {gone.function_id} ({gone.name!r} on {gone.relay_nickname})"
        subject = function if what.startswith("function") else f"{what} belonged to {function}, which"
        if gone.how == "forgotten":
            return BentoError(
                f"{subject} was forgotten at {when}: the keyring no longer holds its tokens",
                fix="without its tokens nothing can reach it; deploy it again to run it anew",
            )
        return BentoError(
            f"{subject} was {gone.how} at {when}: its sessions and their output went with it",
            fix="nothing is left to attach to; deploy it again to run it anew",
        )
