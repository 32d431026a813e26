"""The ``bento`` command on the testnet: the keyring's commands, killing, detaching, refusals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from functions import HELLO
from support import CLI, TIMEOUT, ok

from bento.client.keyring import Deployment, Keyring
from bento.protocol.onion import address_of

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 3)]

WAITER = """
from bento.runtime import api

def wait():
    api.send("waiting\\n")
    while api.recv() is not None:
        pass
    return "done"
"""


def test_functions_replace_kill_and_a_gone_function(cli: CLI, tmp_path: Path) -> None:
    waiter = tmp_path / "waiter.py"
    waiter.write_text(WAITER)
    first = json.loads(ok(cli("deploy", str(waiter), "--box", "exit0", "--json")).stdout)["function_id"]
    refused = cli("deploy", str(waiter), "--box", "exit1", "--json")
    assert refused.returncode == 1 and "--replace" in json.loads(refused.stdout)["error"]["fix"]
    other = json.loads(ok(cli("deploy", str(waiter), "--box", "exit1", "--as", "waiter2", "--json")).stdout)

    session = json.loads(ok(cli("invoke", "waiter", "wait", "--detach", "--json")).stdout)["session_id"]
    listed = json.loads(ok(cli("functions", "--json")).stdout)
    assert {(f["name"], f["box"], f["status"]) for f in listed} == {
        ("waiter", "exit0", "up"), ("waiter2", "exit1", "up")
    }  # fmt: skip
    assert "1 running" in next(f["detail"] for f in listed if f["name"] == "waiter")

    killed = json.loads(ok(cli("kill", session, "--json")).stdout)
    assert (killed["state"], killed["cause"], killed["reason"]) == (
        "killed",
        "shutdown",
        "killed by its client",
    )
    table = ok(cli("sessions", "waiter", "--wide")).stdout
    assert session in table and "killed by its client" in table and "shutdown" in table
    attached = cli("attach", session, "--json")
    assert attached.returncode == 2, "a killed session's exit status"
    assert json.loads(attached.stdout)["output"] == "waiting\n", "a killed session's output stays"

    replaced = json.loads(ok(cli("deploy", str(waiter), "--box", "exit1", "--replace", "--json")).stdout)
    assert replaced["replaced"] == [first]
    gone = cli("attach", session)
    assert gone.returncode == 1 and f"belonged to function {first}" in gone.stderr
    assert "was replaced" in gone.stderr
    names = {f["name"]: f["function_id"] for f in json.loads(ok(cli("functions", "--json")).stdout)}
    assert names == {"waiter": replaced["function_id"], "waiter2": other["function_id"]}

    # A function its box no longer has (shut down behind the keyring's back): "gone", then forgotten.
    ring = Keyring(tmp_path / "keyring.json")
    twin = tmp_path / "twin.json"
    Keyring(twin).add(ring.function("waiter2"))
    ok(cli("shutdown", "waiter2", "--keyring", str(twin)))
    listed = json.loads(ok(cli("functions", "--json")).stdout)
    assert {f["name"]: f["status"] for f in listed} == {"waiter": "up", "waiter2": "gone"}
    assert "forget" in ok(cli("functions")).stdout
    ok(cli("forget", "waiter2"))

    # A function on a box that is not there at all: unreachable, within the bound asked for.
    nowhere = address_of(Ed25519PrivateKey.generate())
    ring.add(Deployment("lost", "lost", nowhere, "A" * 40, "gone-relay", "t", "t", "b", ["main"], 0.0))
    listed = json.loads(ok(cli("functions", "--json", "--timeout", "90")).stdout)
    assert {f["name"]: f["status"] for f in listed} == {"waiter": "up", "lost": "unreachable"}
    ok(cli("forget", "lost"))
    ok(cli("shutdown", "waiter"))
    assert json.loads(ok(cli("functions", "--json")).stdout) == []


def test_ctrl_c_detaches_and_names_the_attach_command(
    cli_env: dict[str, str], cli: CLI, tmp_path: Path
) -> None:
    waiter = tmp_path / "waiter.py"
    waiter.write_text(WAITER)
    ok(cli("deploy", str(waiter), "--box", "exit0"))
    pipe = subprocess.PIPE
    command = [sys.executable, "-m", "bento", "invoke", "waiter", "wait"]
    invoke = subprocess.Popen(command, env=cli_env, stdin=pipe, stdout=pipe, stderr=pipe, text=True)
    try:
        assert invoke.stdout is not None and invoke.stdout.readline() == "waiting\n"
        invoke.send_signal(signal.SIGINT)
        _, stderr = invoke.communicate(timeout=TIMEOUT)
    finally:
        invoke.kill()
    assert invoke.returncode == 130, stderr
    session = Keyring(tmp_path / "keyring.json").sessions.popitem()[0]
    assert "goes on" in stderr and f"bento attach {session}" in stderr and "Traceback" not in stderr
    again = ok(cli("attach", session, "--json", stdin="bye\n"))
    assert json.loads(again.stdout)["result"] == "done"
    ok(cli("shutdown", "waiter"))


def test_an_upload_over_the_box_s_limit_is_refused_before_it_is_sent(cli: CLI, tmp_path: Path) -> None:
    limit = json.loads(ok(cli("descriptor", "exit0", "--json")).stdout)["policy"]["max_upload_bytes"]
    big = tmp_path / "big.py"
    big.write_text("def main():\n    pass\n\n" + ("#" * 99 + "\n") * (limit // 100 + 1))
    refused = cli("deploy", str(big), "--box", "exit0", "--json")
    assert refused.returncode == 1
    error = json.loads(refused.stdout)["error"]
    assert f"accepts at most {limit}" in error["message"] and "max_upload_bytes" in error["message"]


def test_many_invocations_at_once_keep_every_session(
    cli: CLI, cli_env: dict[str, str], tmp_path: Path
) -> None:
    hello = tmp_path / "hello.py"
    hello.write_text(HELLO)
    ok(cli("deploy", str(hello), "--box", "exit0"))
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "bento", "invoke", "hello", "main", f'"n{i}"', "--json"],
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, stderr
        outputs.append(json.loads(stdout))
    assert sorted(o["output"] for o in outputs) == sorted(f"hello n{i}\n" for i in range(8))
    assert set(Keyring(tmp_path / "keyring.json").sessions) == {o["session_id"] for o in outputs}
    ok(cli("shutdown", "hello"))
