"""Bento run as the dedicated test user instead of root, as operators and most users run it.

One way to drop to that user, for the unit and the end-to-end tests alike:

    user = plain_user()
    if isinstance(user, str):
        pytest.skip(user)
    subprocess.run(user.command("-m", "bento", "boxes"), env=user.environment(home))
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import subprocess
import sys
from pathlib import Path

from bento.testnet import boxes

PLAIN_USER = "bento-e2e"  # tests/conftest.py makes it, for the testnet's box of a dedicated user


@dataclasses.dataclass(frozen=True)
class PlainUser:
    name: str
    uid: int
    gid: int
    python: str  # an interpreter with which this user can import Bento from this checkout

    def command(self, *args: str) -> list[str]:
        """``python ARGS`` run as this user: its uid, its gid and its groups (setpriv)."""
        drop = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--"]
        return [*drop, self.python, *args]

    def environment(self, home: Path | str) -> dict[str, str]:
        """Our environment with this user's HOME, and our import path (this checkout's Bento)."""
        path = os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())
        return {**os.environ, "HOME": str(home), "PYTHONPATH": path}


def make_plain_user(name: str = PLAIN_USER) -> None:
    """Make the system user ``name`` where we are root and it is missing (tests/conftest.py,
    once a run, before any test: the unit tests that act as it run beside the end-to-end ones)."""
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", name],
            check=True, timeout=30,
        )  # fmt: skip


def plain_user(name: str = PLAIN_USER) -> PlainUser | str:
    """The user ``name`` to run Bento as, or why this host has none (a reason to skip)."""
    if os.geteuid() != 0:
        return "needs root, to run Bento as another user"
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        return f"no user {name} (tests/conftest.py makes it, as root)"
    python = boxes.interpreter_for(account.pw_uid)
    if python is None:
        return f"{name} cannot import Bento from this checkout"
    return PlainUser(name, account.pw_uid, account.pw_gid, python)
