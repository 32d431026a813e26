"""The ``bento`` command as a user runs it: a subprocess, its output and exit status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bento import __version__
from bento.cli import arguments
from bento.cli.main import COMMANDS, build_parser
from bento.client.keyring import Deployment, Keyring
from bento.errors import BentoError

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


# --- arguments of an entry point -------------------------------------------------------


def test_arguments_are_json_or_plain_strings_with_str() -> None:
    assert arguments.parse(["3", '"x"', '{"k": [1]}', "null"], ["n=2", 'who="me"'], strings=False) == (
        [3, "x", {"k": [1]}, None],
        {"n": 2, "who": "me"},
    )
    assert arguments.parse(["3", "[1, 2"], ["a=b=c"], strings=True) == (["3", "[1, 2"], {"a": "b=c"})


@pytest.mark.parametrize(
    ("values", "keywords", "message"),
    [
        (["[1, 2"], [], r"argument 1 is not valid JSON: '\[1, 2'"),
        (["1", "hello"], [], "argument 2 is not valid JSON: 'hello'"),
        ([], ["n=hello"], "--kw n is not valid JSON"),
        ([], ["novalue"], "--kw 'novalue' is not NAME=VALUE"),
        ([], ["1x=2"], "is not NAME=VALUE"),
        ([], ["n=1", "n=2"], "--kw n is given twice"),
    ],
)
def test_bad_arguments_are_errors_with_the_fix(values: list[str], keywords: list[str], message: str) -> None:
    with pytest.raises(BentoError, match=message) as error:
        arguments.parse(values, keywords, strings=False)
    assert error.value.fix


def test_invoke_refuses_an_argument_that_is_not_json_before_anything_else(tmp_path: Path) -> None:
    result = bento("invoke", "f", "main", "hello", env={"BENTO_KEYRING": str(tmp_path / "k.json")})
    assert result.returncode == 1
    assert "argument 1 is not valid JSON: 'hello'" in result.stderr and "--str" in result.stderr


# --- code checked before an upload -------------------------------------------------------


def deploy_error(tmp_path: Path, target: Path, *extra: str) -> str:
    env = {"BENTO_KEYRING": str(tmp_path / "keyring.json"), "BENTO_CONTROL": "127.0.0.1:1"}
    result = bento("deploy", str(target), "--box", "nowhere", *extra, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_a_syntax_error_names_the_user_s_file_and_line(tmp_path: Path) -> None:
    source = tmp_path / "hello.py"
    source.write_text("def main():\n    return (1\n\nx = 2\n")
    error = deploy_error(tmp_path, source)
    assert f"syntax error in {source}, line 2" in error and "py_compile" in error


def test_a_module_without_entry_point_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "lib.py"
    source.write_text("def _private():\n    pass\n\nVALUE = 1\n")
    error = deploy_error(tmp_path, source)
    assert f"{source} has no entry point" in error and "def main():" in error


def test_a_directory_without_the_manifest_s_module_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "app"
    directory.mkdir()
    (directory / "server.py").write_text("def main():\n    pass\n")
    error = deploy_error(tmp_path, directory)
    assert f"{directory} has no module 'main'" in error and "(it has server)" in error
    assert 'module = "server"' in error
    (directory / "main.py").write_text("from helper import x\ndef main():\n    pass\n")
    (directory / "helper.py").write_text("x = [\n")
    assert f"syntax error in {directory / 'helper.py'}" in deploy_error(tmp_path, directory)


def test_a_name_already_in_the_keyring_needs_replace_or_as(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "keyring.json")
    ring.add(Deployment("f1", "hello", "a" * 56, "A" * 40, "exit0", "t", "t", "b", ["main"], 0.0))
    source = tmp_path / "hello.py"
    source.write_text("def main():\n    pass\n")
    error = deploy_error(tmp_path, source)
    assert "a function called 'hello' is already in the keyring: hello@exit0 (f1)" in error
    assert "--replace" in error and "--as NEW" in error
    # --as picks another name: the deploy gets past the keyring, to the (absent) Tor client.
    assert "already in the keyring" not in deploy_error(tmp_path, source, "--as", "hello2")


# --- the keyring's commands ----------------------------------------------------------------


def test_functions_offline_lists_the_keyring_without_tokens_and_forget_drops(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    ring = Keyring(path)
    onion = "q" * 56
    ring.add(Deployment("F" * 43, "hello", onion, "A" * 40, "exit0", "SECRET1", "SECRET2", "b", [], 0.0))
    ring.add_session("S1", "F" * 43)
    env = {"BENTO_KEYRING": str(path), "COLUMNS": "60", "BENTO_SOCKS": "127.0.0.1:9"}  # no Tor: box gone
    listed = bento("functions", "--offline", env=env)
    assert listed.returncode == 0, listed.stderr
    # A narrow table wraps ids onto more lines; it never cuts them.
    assert "…" not in listed.stdout and listed.stdout.count("F") == 43 and listed.stdout.count("q") == 56
    assert "SECRET" not in listed.stdout
    wide = bento("functions", "--offline", "--wide", env=env)
    assert "F" * 43 in wide.stdout and f"{onion}.onion" in wide.stdout
    as_json = json.loads(bento("functions", "--offline", "--json", env=env).stdout)
    assert [(f["name"], f["status"], f["box"]) for f in as_json] == [("hello", "unchecked", "exit0")]
    assert "SECRET" not in json.dumps(as_json)

    forgot = bento("forget", "hello", "--json", env=env)
    assert forgot.returncode == 0 and json.loads(forgot.stdout)["forgotten"] == ["F" * 43]
    assert json.loads(bento("functions", "--offline", "--json", env=env).stdout) == []
    attach = bento("attach", "S1", env=env)
    assert attach.returncode == 1 and f"session S1 belonged to function {'F' * 43}" in attach.stderr
    assert "forgotten" in attach.stderr
    again = bento("forget", "F" * 43, "--json", env=env)
    assert again.returncode == 1 and "was forgotten" in json.loads(again.stdout)["error"]["message"]


# --- shell completion --------------------------------------------------------------------


def complete(shell: str, line: str) -> list[str]:
    """What the generated script completes at the end of ``line`` (a trailing space: a new word)."""
    script = bento("completion", shell).stdout
    setup = "emulate -L sh; setopt kshglob noshglob braceexpand;" if shell == "zsh" else ""  # as bashcompinit
    probe = (
        f"{setup} COMP_WORDS=({line}); [[ {line!r} == *' ' ]] && COMP_WORDS+=('');"
        ' COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _bento; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    result = subprocess.run([shell, "-c", f"{script}\n{probe}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [w for w in result.stdout.splitlines() if w]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("bento dep", ["deploy"]),
        ("bento testnet u", ["up"]),
        ("bento testnet up --bento", ["--bento-boxes"]),
        ("bento invoke hello main --d", ["--detach"]),
        ("bento tokens hello --right ", ["invoke", "shutdown"]),
        ("bento completion ", ["bash", "zsh", "-h", "--help"]),
    ],
)
def test_bash_completes_commands_actions_options_and_choices(line: str, expected: list[str]) -> None:
    assert complete("bash", line) == expected


def test_bash_completes_file_names_where_no_word_fits(tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_text("")
    assert complete("bash", f"bento deploy {tmp_path}/hel") == [f"{tmp_path}/hello.py"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_runs_the_same_completion() -> None:
    # zsh's own completion filters by prefix: the function offers every word that fits the place.
    assert "up" in complete("zsh", "bento testnet u")
    assert complete("zsh", "bento tokens hello --right ") == ["invoke", "shutdown"]


def test_testnet_status_never_cuts_an_onion_address() -> None:
    node = {
        "role": "relay", "nickname": "exit0", "fingerprint": "F" * 40, "or_port": 1, "dir_port": 0,
        "socks_port": 0, "control_port": 2, "flags": ["Exit"], "alive": True, "pid": 7,
        "bento": {"onion": "q" * 56, "alive": True},
    }  # fmt: skip
    status = {"directory": "/tmp/net", "nodes": [node], "socks": "s", "control": "c"}
    probe = f"from bento.cli.testnet import print_status; print_status({status!r})"
    shown = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "70"},
    )
    assert shown.returncode == 0, shown.stderr
    assert "…" not in shown.stdout and shown.stdout.count("q") == 56 and shown.stdout.count("F") == 40
