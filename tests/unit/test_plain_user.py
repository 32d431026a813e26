"""Bento run by a plain user: the testnet's boxes accept what they cannot enforce (said
once), the server says a configuration problem in a line with its fix (no traceback), and
``bento testnet env`` refuses a network that is not running."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from bento.server.config import ServerConfig
from bento.testnet import boxes
from bento.testnet.box_policy import default_policy, server_config
from bento.testnet.state import Node, Role, TestnetState
from plain_user import PLAIN_USER, plain_user


def _as_plain_user(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``bento ARGS`` run by the plain user (skipped where this host has none to run it as)."""
    user = plain_user()
    if isinstance(user, str):
        pytest.skip(user)
    os.chown(cwd, user.uid, user.gid)
    return subprocess.run(
        user.command("-m", "bento", *args),
        capture_output=True, text=True, timeout=120, cwd=cwd, env=user.environment(cwd),
    )  # fmt: skip


def test_an_unprivileged_box_accepts_what_it_cannot_enforce() -> None:
    plain = ServerConfig(**tomllib.loads(server_config(default_policy(), privileged=False)))
    assert "cpu_share" in plain.accept_unenforced
    assert (
        ServerConfig(**tomllib.loads(server_config(default_policy(), privileged=True))).accept_unenforced
        == []
    )
    node = Node(Role.EXIT, "exit0", "/nonexistent", 1, bento_dir="/nonexistent")
    assert boxes.privileged(node) == (os.geteuid() == 0)
    assert not boxes.privileged(Node(Role.EXIT, "exit1", "/x", 1, bento_dir="/x", bento_user=PLAIN_USER))


@pytest.fixture
def plain_dir() -> Iterator[Path]:
    """A directory the plain user can reach (pytest's own are private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="bento-plain-user-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_the_server_says_a_configuration_problem_in_a_line_with_its_fix(plain_dir: Path) -> None:
    tmp_path = plain_dir
    refused = _as_plain_user("server", "--state-dir", str(tmp_path), "--no-onion", cwd=tmp_path)
    if refused.returncode == 1 and "cannot reach tor's control port" in refused.stderr:
        pytest.skip(f"{PLAIN_USER} has a cgroup here: every limit is enforced, nothing to refuse")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    error, fix = refused.stderr.strip().splitlines()
    assert error.startswith("error: the box cannot start: this host cannot enforce: cpu_share")
    assert fix.startswith("fix: to run anyway, set accept_unenforced")

    (tmp_path / "server.toml").write_text(server_config(default_policy(), privileged=False))
    started = _as_plain_user(
        "server", "--config", str(tmp_path / "server.toml"), "--state-dir", str(tmp_path / "state"),
        "--control", "127.0.0.1:9", "--no-onion", cwd=tmp_path,
    )  # fmt: skip
    assert started.returncode == 1 and "Traceback" not in started.stderr
    assert "error: cannot reach tor's control port at 127.0.0.1:9" in started.stderr, "past the sandbox"


def test_testnet_env_refuses_a_network_that_is_not_running(tmp_path: Path) -> None:
    client = Node(Role.CLIENT, "client", str(tmp_path / "client"), 9, socks_port=9, pid=None)
    relay = Node(Role.EXIT, "exit0", str(tmp_path / "exit0"), 9, or_port=9, pid=None, bento_dir=str(tmp_path))
    TestnetState(str(tmp_path), nodes=[relay, client]).save()
    result = subprocess.run(
        [sys.executable, "-m", "bento", "testnet", "env", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1 and result.stdout == ""
    message = " ".join(result.stderr.split())
    assert f"the testnet in {tmp_path} is not running: exit0, client, exit0-bento (3 of its 3" in message
    assert "bento testnet down --dir" in message and "Traceback" not in message
