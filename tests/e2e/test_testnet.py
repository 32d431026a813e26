"""The testnet is a real Tor network: pages, exits, onion services, clean teardown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from bento.testnet import Role, Testnet
from bento.testnet.site import LocalSite
from bento.testnet.trace import fetch_via_socks, fetch_with_path
from bento.tor import control
from plain_user import PlainUser, plain_user

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(900)]


def test_status_lists_every_node_alive_with_its_flags(testnet: Testnet) -> None:
    status = testnet.status()
    assert status["running"]
    roles = [n["role"] for n in status["nodes"]]
    assert roles.count("authority") == 3 and roles.count("client") == 1
    assert roles.count("exit") == 3 and roles.count("relay") == 2
    for node in status["nodes"]:
        assert node["alive"], node
        if node["role"] == "exit":
            assert "Exit" in node["flags"]
        if node["role"] == "authority":
            assert "Authority" in node["flags"]
        if node["role"] == "relay":
            assert "Exit" not in node["flags"]


async def test_a_local_page_is_fetched_through_an_exit(testnet: Testnet) -> None:
    page = os.urandom(20_000)
    async with LocalSite({"/page": page}, content_type="application/octet-stream") as site:
        body, path = await fetch_with_path(testnet.control_address, testnet.socks_address, site.url + "page")
        assert body == page
        assert site.requests == 1
    exits = {n.nickname for n in testnet.nodes if n.role is Role.EXIT}
    assert len(path) >= 3, path  # tor may extend a pre-built circuit by one hop
    assert path[-1] in exits, f"the last hop {path[-1]} is not an exit"


async def test_an_onion_service_made_through_a_relay_control_port_is_reachable(testnet: Testnet) -> None:
    relay = next(n for n in testnet.nodes if n.role is Role.RELAY)
    async with LocalSite({"/": b"behind an onion"}) as site:
        with control.connect(relay.control_address) as ctl:
            service = ctl.create_ephemeral_hidden_service(
                {80: site.port},
                key_type="NEW",
                key_content="ED25519-V3",
                await_publication=True,
                timeout=90,
            )
            try:
                body = await fetch_via_socks(testnet.socks_address, f"http://{service.service_id}.onion/")
            finally:
                ctl.remove_ephemeral_hidden_service(service.service_id)
    assert body == b"behind an onion"


# What the command of the `run` below reports, from inside the testnet it was given.
PROBE = """
import asyncio, json, os, subprocess, sys, time
from pathlib import Path
from bento.testnet import Testnet
from bento.testnet.trace import fetch_via_socks

net = Testnet.attach(Path(os.environ["BENTO_TESTNET_DIR"]))
described = subprocess.run(
    [sys.executable, "-m", "bento", "descriptor", "exit0", "--json"],
    capture_output=True, text=True, timeout=180,
)
assert described.returncode == 0, described.stderr
started = time.monotonic()
page = asyncio.run(asyncio.wait_for(
    fetch_via_socks(os.environ["BENTO_SOCKS"], net.corpus.sites[0].url(net.corpus_port)), 180
))
print(json.dumps({
    "env": {k: v for k, v in os.environ.items() if k.startswith("BENTO_")},
    "status": net.status(),
    "descriptor": json.loads(described.stdout),
    "page_seconds": time.monotonic() - started,
    "page": page[:15].decode(),
}))
sys.exit(7)
"""


def test_testnet_run_as_a_plain_user_with_limits_and_latency_serves_and_leaves_nothing_behind() -> None:
    """One second testnet beside the session's (each costs a bootstrap): `bento testnet run`
    with a box, its size limits, and 100 ms on every link to a relay and to the web server,
    run by a plain user (not root), as most people run things. Its command gets the network
    (BENTO_*), exits 7, and `run` exits 7; after it, every process is gone, the state too.

    - The box accepts what it cannot enforce without a cgroup, says so once, and serves:
      its signed descriptor, read over Tor, says how each limit is enforced.
    - The box publishes the size limits given on the command line.
    - A page needs at least BEGIN to the exit and CONNECTED back (three delayed links each
      way), then the request and its answer (all four links each way): 1.4 s at least.
      (The links delay bytes, not TCP handshakes: see latency.py.)
    """
    user = plain_user()
    home = Path(tempfile.mkdtemp(prefix="bento-plain-testnet-"))  # where that user may write
    probe = home / "probe.py"
    probe.write_text(PROBE)
    if isinstance(user, PlainUser):
        os.chown(home, user.uid, user.gid)
        python, command, env = user.python, user.command, user.environment(home)
    else:  # as ourselves: a plain user already, or root where no plain user can import Bento
        python, env = sys.executable, {**os.environ, "HOME": str(home)}

        def command(*args: str) -> list[str]:
            return [sys.executable, *args]

    for name in ("BENTO_SOCKS", "BENTO_CONTROL", "BENTO_TESTNET_DIR"):
        env.pop(name, None)
    directory = home / "net"
    run = [
        "-m", "bento", "testnet", "run", "--dir", str(directory), "--relays", "3", "--bento-boxes", "1",
        "--corpus-sites", "1", "--hop-delay", "100", "--web-delay", "100", "--timeout", "240",
        "--instances-total", "300", "--instances-per-function", "150",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command(*run, "--", python, str(probe)),
            capture_output=True,
            text=True,
            timeout=600,
            cwd=home,
            env=env,
        )
        assert result.returncode == 7, f"stdout: {result.stdout}\nstderr: {result.stderr[-4000:]}"
        assert "Traceback" not in result.stderr, result.stderr
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        status = seen["status"]
        assert seen["env"]["BENTO_SOCKS"] == status["socks"]
        assert seen["env"]["BENTO_CONTROL"] == status["control"]
        assert Path(seen["env"]["BENTO_TESTNET_DIR"]) == directory.resolve()
        assert status["running"] and len(status["nodes"]) == 3 + 3 + 1
        # After teardown: every process gone, the state removed.
        for node in status["nodes"]:
            assert not _running(node["pid"]), f"{node['nickname']} (pid {node['pid']}) survived"
        assert not directory.exists()
        down = subprocess.run(command("-m", "bento", "testnet", "down", "--dir", str(directory)),
                              capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
        assert down.returncode == 0 and "nothing to do" in down.stdout
    finally:
        shutil.rmtree(home, ignore_errors=True)

    policy, isolation = seen["descriptor"]["policy"], seen["descriptor"]["runtime"]["isolation"]
    assert (policy["instances_total"], policy["instances_per_function"]) == (300, 150)
    assert policy["network"]["allowed"], "the rest is the testnet's own policy"
    if os.geteuid() != 0 or isinstance(user, PlainUser):
        said = [line for line in result.stderr.splitlines() if "run without root" in line]
        assert len(said) == 1, result.stderr
        assert "cpu_share" in isolation, isolation  # how each limit is enforced: said, not hidden
    assert status["latency_ms"] == {"hop": 100, "web": 100}
    assert seen["page"].startswith("<!doctype html>") and seen["page_seconds"] >= 1.4


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def test_two_runs_without_dir_proceed_at_once_and_a_killed_run_takes_its_command_along(
    tmp_path: Path,
) -> None:
    """Each `run` gets a directory of its own; SIGKILL on `run` kills the command and the tors."""
    bento = Path(sys.executable).with_name("bento")
    probe = (
        "import json, os, sys, time;"
        "open(sys.argv[1] + '.tmp', 'w').write(json.dumps("
        "{'pid': os.getpid(), 'dir': os.environ['BENTO_TESTNET_DIR']}));"
        "os.rename(sys.argv[1] + '.tmp', sys.argv[1]);"
        "time.sleep(600)"
    )
    runs = []
    for name in ("a", "b"):
        # Its stderr goes to a file, read if it exits early: a pipe nobody reads would also
        # block `run` once full.
        log = (tmp_path / f"{name}.log").open("wb")
        runs.append(
            subprocess.Popen(
                [
                    bento,
                    "testnet",
                    "run",
                    "--relays",
                    "3",
                    "--",
                    sys.executable,
                    "-c",
                    probe,
                    tmp_path / name,
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env={k: v for k, v in os.environ.items() if k != "BENTO_TESTNET_DIR"},
            )
        )
        log.close()  # the child holds its own copy
    try:
        seen = [_await_json(tmp_path / name, run, timeout=300) for name, run in zip("ab", runs, strict=True)]
        assert seen[0]["dir"] != seen[1]["dir"]
        statuses = [json.loads((Path(s["dir"]) / "testnet.json").read_text()) for s in seen]

        runs[0].kill()  # SIGKILL: no handler of `run` gets to forward anything
        runs[0].wait(timeout=10)
        assert _gone(seen[0]["pid"], timeout=10), "the command of a killed `run` survived it"
        for node in statuses[0]["nodes"]:
            # Each tor learns at once that its owner is gone ("Owning controller connection
            # has closed -- exiting now."); on a loaded machine its clean exit was seen to take
            # over a minute, so the wait is generous and a failure quotes the log.
            log = Path(node["data_dir"]) / "notice.log"
            if not _gone(node["pid"], timeout=180):
                cmd = Path(f"/proc/{node['pid']}/cmdline").read_bytes()
                raise AssertionError(
                    f"{node['nickname']} survived the killed `run` ({cmd!r}):\n{log.read_text()}"
                )
        assert runs[1].poll() is None, "the second run was disturbed by the first"

        runs[1].terminate()  # forwarded to the command; the testnet comes down in order
        assert runs[1].wait(timeout=60) != 0
        assert _gone(seen[1]["pid"], timeout=10)
        assert not Path(seen[1]["dir"]).exists()
    finally:
        for run in runs:
            run.kill()
            run.wait()
        for status in statuses if "statuses" in locals() else []:
            subprocess.run([bento, "testnet", "down", "--dir", status["directory"]], capture_output=True)


def _await_json(path: Path, run: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if run.poll() is not None:
            log = path.with_suffix(".log").read_text(errors="replace")
            raise AssertionError(f"`bento testnet run` exited early:\n{log}")
        assert time.monotonic() < deadline, f"no testnet came up for {path.name} in {timeout} s"
        time.sleep(0.2)
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_policy_that_is_not_valid_is_refused_before_anything_starts(tmp_path: Path) -> None:
    bento = Path(sys.executable).with_name("bento")
    file = tmp_path / "policy.toml"
    file.write_text("instances_total = 10\nno_such_limit = 1\n")
    result = subprocess.run(
        [bento, "testnet", "run", "--dir", str(tmp_path / "net"), "--policy", str(file), "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "no_such_limit" in result.stderr and str(file) in result.stderr
    assert not (tmp_path / "net").exists() or not any((tmp_path / "net").iterdir())
