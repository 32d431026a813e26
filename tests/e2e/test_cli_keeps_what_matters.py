"""The ``bento`` command on the testnet loses nothing without asking: a replaced function's
storage, a live function's tokens, a session's input; and attach does not repeat logs."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import stem
from support import CLI, TIMEOUT, ok

from bento.client.keyring import Keyring
from bento.testnet import Testnet

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 3)]

COUNTER = """
from bento.runtime import api

def count():
    n = int(api.storage.get("n") or b"0") + 1
    api.storage.put("n", str(n).encode())
    return n
"""

TALKER = """
from bento.runtime import api

def talk():
    print("log one", flush=True)
    api.send("ready\\n")
    line = api.recv()
    print("log two", flush=True)
    api.send(b"got " + line)
    while api.recv() is not None:
        pass
    return "done"
"""


def _count(cli: CLI) -> int:
    result: int = json.loads(ok(cli("invoke", "counter", "count", "--json")).stdout)["result"]
    return result


def test_replace_keeps_the_storage_and_forget_refuses_a_live_function(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "counter.py").write_text(COUNTER)
    (tmp_path / "manifest.toml").write_text('name = "counter"\n[needs]\nstorage_mb = 1\n')
    deployed = ok(cli("deploy", "counter.py", "--box", "exit0"))
    assert "using the manifest manifest.toml" in deployed.stderr and "warning" not in deployed.stderr
    assert [_count(cli), _count(cli)] == [1, 2]

    (tmp_path / "counter.py").write_text(COUNTER.replace("+ 1", "+ 10"))
    replaced = json.loads(ok(cli("deploy", "counter.py", "--box", "exit0", "--replace", "--json")).stdout)
    assert replaced["storage_taken_over"]["storage_objects"] == 1
    assert _count(cli) == 12, "the new function counts on from the old one's storage"

    refused = cli("forget", "counter")
    assert refused.returncode == 1 and "still running on its box" in refused.stderr
    assert "bento shutdown" in refused.stderr and "--force" in refused.stderr
    assert Keyring(tmp_path / "keyring.json").named("counter"), "nothing was forgotten"

    fresh = ok(cli("deploy", "counter.py", "--box", "exit0", "--replace", "--fresh-storage"))
    assert "shredded" in fresh.stdout
    assert _count(cli) == 10
    ok(cli("shutdown", "counter"))


def test_attach_resumes_the_logs_and_leaves_the_input_open(
    cli: CLI, cli_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "talker.py").write_text(TALKER)
    ok(cli("deploy", "talker.py", "--box", "exit0"))
    session = ok(cli("invoke", "talker", "talk", "--detach")).stdout.strip()

    pipe = subprocess.PIPE
    command = [sys.executable, "-m", "bento", "attach", session]
    # No input at all (/dev/null, as in a script): the function's input must stay open.
    attach = subprocess.Popen(
        command, env=cli_env, stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe, text=True
    )
    try:
        assert attach.stdout is not None and attach.stderr is not None
        assert attach.stdout.readline() == "ready\n"
        shown = next((line for line in iter(attach.stderr.readline, "") if "log one" in line), "")
        assert "log one" in shown
        attach.send_signal(signal.SIGINT)
        attach.communicate(timeout=TIMEOUT)
    finally:
        attach.kill()
    assert attach.returncode == 130
    (listed,) = json.loads(ok(cli("sessions", "talker", "--json")).stdout)["sessions"]
    assert listed["state"] == "running", "an empty standard input did not close the function's input"

    again = json.loads(ok(cli("attach", session, "--json", stdin="bye\n")).stdout)
    assert again["result"] == "done" and again["output"].endswith("got bye\n")
    assert [log["text"] for log in again["logs"]] == ["log two\n"], "log one is not repeated"
    ok(cli("shutdown", "talker"))


def test_a_traceback_names_the_file_deployed(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "boom.py").write_text("def main():\n    raise ValueError('boom')\n")
    ok(cli("deploy", "boom.py", "--box", "exit0"))
    failed = cli("invoke", "boom", "main")
    assert failed.returncode == 1
    assert f'File "{tmp_path / "boom.py"}", line 2, in main' in failed.stderr
    assert "/function/" not in failed.stderr
    ok(cli("shutdown", "boom"))


ECHO = """
def handle(conn):
    conn.sendall(b"hello " + conn.recv(100))
"""


def _ask(testnet: Testnet, address: str, tries: int = 1) -> bytes | str:
    """One request to the service through the client's tor, each try on circuits of its own
    (a SOCKS user name of its own: tor isolates streams by it); why tor refused, if it did."""
    from python_socks import ProxyError
    from python_socks.sync import Proxy

    from bento.tor import control

    why = ""
    for attempt in range(tries):
        if attempt:  # forget the HSDirs tried for it: tor asks one again only after 15 minutes
            with control.connect(testnet.control_address) as ctl:
                ctl.signal(stem.Signal.NEWNYM)
        proxy = Proxy.from_url(f"socks5://{os.urandom(8).hex()}:x@{testnet.socks_address}", rdns=True)
        try:
            sock = proxy.connect(f"{address}.onion", 80, timeout=120)
        except ProxyError as exc:
            why = f"refused: {exc}"
            continue
        with sock:
            sock.settimeout(TIMEOUT)
            sock.sendall(b"you")
            if answer := sock.recv(100):
                return answer
            why = "closed without an answer"
    return why


def test_loadbalance_lets_in_only_the_client_it_authorised(
    cli_env: dict[str, str], cli: CLI, testnet: Testnet, tmp_path: Path
) -> None:
    from bento.tor import control
    from bento.tor.client_auth import ClientKey

    (tmp_path / "echo.py").write_text(ECHO)
    command = [
        sys.executable, "-m", "bento", "loadbalance", "echo.py", "--box", "exit0", "--boxes", "exit1",
        "--max", "1", "--client-auth", "echo.auth_private", "--json",
    ]  # fmt: skip
    pipe = subprocess.PIPE
    follow = subprocess.Popen(
        command, env=cli_env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=pipe, text=True
    )
    try:
        assert follow.stdout is not None
        summary = ""  # the summary (indented JSON), then one event a line
        for line in iter(follow.stdout.readline, ""):
            summary += line
            if line.startswith("}"):
                break
        started = json.loads(summary or "{}")
        assert "address" in started, "no summary: the LoadBalancer did not start"
        events = (json.loads(line) for line in iter(follow.stdout.readline, ""))
        up = next((e for e in events if e.get("event") == "up"), None)
        assert up is not None and up["address"].endswith(".onion"), "the up event shows the replica's address"
    finally:
        follow.send_signal(signal.SIGINT)  # detaches: the LoadBalancer goes on at its box
        follow.communicate(timeout=TIMEOUT)
    address = started["address"].removesuffix(".onion")
    key, named = ClientKey.parse((tmp_path / "echo.auth_private").read_text())
    assert named == address
    assert (tmp_path / "echo.auth_private").stat().st_mode & 0o077 == 0
    secret = base64.b64encode(key.private).decode()
    try:
        with control.connect(testnet.control_address) as ctl:
            assert ctl.msg(f"ONION_CLIENT_AUTH_ADD {address} x25519:{secret}").is_ok()
        assert _ask(testnet, address, tries=3) == b"hello you", "the client with the key is let in"
        with control.connect(testnet.control_address) as ctl:
            assert ctl.msg(f"ONION_CLIENT_AUTH_REMOVE {address}").is_ok()
            ctl.signal(stem.Signal.NEWNYM)  # and it forgets the descriptor it read with the key
        refused = _ask(testnet, address)
        assert isinstance(refused, str), "a client without the key is not let in"
    finally:
        with control.connect(testnet.control_address) as ctl:
            ctl.msg(f"ONION_CLIENT_AUTH_REMOVE {address}")
        ok(cli("shutdown", started["function"] + "@exit0"))
