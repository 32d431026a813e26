"""The ``bento`` command as a user runs it: a subprocess, its output and exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bento import __version__
from bento.cli.main import COMMANDS, build_parser

# What a fast start must not load: the server, the testnet and their libraries.
HEAVY = ("uvicorn", "starlette", "stem", "httpx", "pydantic", "rich", "bento.server", "bento.testnet")


def bento(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bento", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("argv", [["--version"], ["--help"], []])
def test_version_and_help_load_no_command_module(argv: list[str]) -> None:
    probe = (
        "import sys\n"
        "from bento.cli.main import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m in {HEAVY!r}"
        " or m.startswith(('bento.server', 'bento.testnet', 'bento.client'))))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.splitlines()[-1] == "[]", result.stdout


def test_version() -> None:
    result = bento("--version")
    assert result.returncode == 0 and result.stdout == f"bento {__version__}\n"


def test_help_lists_every_command() -> None:
    result = bento("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert f"    {name}" in result.stdout


def test_every_command_declares_its_options_and_a_handler() -> None:
    parser = build_parser()  # imports every command module
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert choices is not None and set(choices) == set(COMMANDS)
    for name in COMMANDS:
        sub = choices[name]
        assert sub.get_default("handler") is not None or any(a.dest.endswith("command") for a in sub._actions)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name: str) -> None:
    result = bento(name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: bento {name}")


def test_an_error_names_the_fix_and_with_json_is_json(tmp_path: Path) -> None:
    env = {"BENTO_KEYRING": str(tmp_path / "keyring.json")}
    human = bento("sessions", "nothing", env=env)
    assert human.returncode == 1 and human.stdout == ""
    assert "error: no function 'nothing' in the keyring" in human.stderr
    assert "fix:" in human.stderr and "Traceback" not in human.stderr
    scripted = bento("sessions", "nothing", "--json", env=env)
    assert scripted.returncode == 1, scripted.stderr
    error = json.loads(scripted.stdout)["error"]
    assert error["message"].startswith("no function 'nothing' in the keyring")
    assert error["fix"]
