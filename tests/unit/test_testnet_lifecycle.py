"""What `up` does over an earlier testnet, and how a slow box is retried (no tor started)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bento.errors import BentoError
from bento.server.daemon import STATUS_FILE
from bento.testnet import Node, Role, Testnet, TestnetConfig, TestnetError, TestnetState, boxes, keys
from bento.testnet.plan import port_claim
from bento.tor.process import ProcessRecord, spawn_detached, wait_for_exec


@pytest.fixture
def leftover(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A testnet state whose relays are dead but one of whose processes still runs."""
    directory = tmp_path / "net"
    nodes = []
    for role, nickname in ((Role.AUTHORITY, "auth0"), (Role.RELAY, "relay0"), (Role.CLIENT, "client")):
        data = directory / nickname
        data.mkdir(parents=True)
        (data / "torrc").write_text("")
        nodes.append(Node(role, nickname, str(data), 1))
    # relay0 "runs": a process with relay0's torrc on its command line, as tor would have.
    survivor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(nodes[1].torrc)])
    wait_for_exec(survivor.pid, sys.executable)
    nodes[1].pid = survivor.pid
    nodes[0].pid = 999_999_999  # long gone
    TestnetState(directory=str(directory), nodes=nodes).save()
    try:
        yield directory, survivor
    finally:
        survivor.kill()
        survivor.wait()


def test_up_refuses_while_any_process_of_the_old_testnet_lives(
    leftover: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    directory, survivor = leftover
    with pytest.raises(TestnetError, match=r"still has live processes \(relay0\)") as caught:
        Testnet.start(TestnetConfig(directory=directory))
    assert "--force" in str(caught.value)
    assert survivor.poll() is None  # nothing was touched
    assert TestnetState.load(directory) is not None


def test_up_force_stops_the_old_testnet_first(
    leftover: tuple[Path, subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, survivor = leftover

    def no_keys(_nodes: list[Node]) -> None:
        raise TestnetError("stop here: the old testnet's fate is what is tested")

    monkeypatch.setattr(keys, "generate", no_keys)
    with pytest.raises(TestnetError, match="stop here"):
        Testnet.start(TestnetConfig(directory=directory), force=True)
    # Stopped (and reaped, as our child, by the testnet's own bookkeeping).
    assert not Path(f"/proc/{survivor.pid}").exists()


def test_a_box_that_does_not_publish_is_restarted_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first start of the box's server dies without publishing; the second publishes."""
    state_dir = tmp_path / "exit0-bento"
    state_dir.mkdir()
    node = Node(Role.EXIT, "exit0", str(tmp_path / "exit0"), 1, bento_dir=str(state_dir), bento_onion="x")
    state = TestnetState(directory=str(tmp_path), nodes=[node])
    starts: list[int] = []

    def fake_start(n: Node) -> None:
        # Stands in for the Bento server: the first one fails, the next writes server.json.
        starts.append(1)
        code = "import sys; sys.exit(3)" if len(starts) == 1 else _publisher(state_dir)
        n.bento_pid = spawn_detached(
            [sys.executable, "-c", code, str(state_dir)], log=state_dir / "server.log", cwd=state_dir
        )

    monkeypatch.setattr(boxes, "start", fake_start)
    monkeypatch.setattr(boxes, "unreachable", lambda nodes, socks, deadline: {})
    said: list[str] = []
    try:
        boxes.start_all(state, "127.0.0.1:9", deadline=time.monotonic() + 60, say=said.append)
    finally:
        if (proc := node.bento_process) is not None:
            proc.stop()
    assert len(starts) == 2
    assert any("restarting the Bento server of exit0" in line for line in said), said
    assert json.loads((state_dir / STATUS_FILE).read_text())["onion"] == "x"


def test_a_box_that_never_publishes_fails_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "exit0-bento"
    state_dir.mkdir()
    node = Node(Role.EXIT, "exit0", str(tmp_path / "exit0"), 1, bento_dir=str(state_dir), bento_onion="x")

    def dies(n: Node) -> None:
        n.bento_pid = spawn_detached(
            [sys.executable, "-c", "print('no HSDir took it')", str(state_dir)],
            log=state_dir / "server.log",
            cwd=state_dir,
        )

    monkeypatch.setattr(boxes, "start", dies)
    with pytest.raises(BentoError, match=r"(?s)exit0 exited during start-up.*no HSDir took it"):
        boxes.start_all(
            TestnetState(directory=str(tmp_path), nodes=[node]),
            "127.0.0.1:9",
            deadline=time.monotonic() + 60,
            say=lambda _msg: None,
        )
    assert not ProcessRecord(node.bento_pid or 0, str(state_dir)).alive()


def _publisher(state_dir: Path) -> str:
    status = json.dumps({"onion": "x"})
    return (
        "import pathlib, time;"
        f"pathlib.Path({str(state_dir / STATUS_FILE)!r}).write_text({status!r});"
        "time.sleep(60)"
    )


@pytest.mark.parametrize("start", ["nameserver", "latency"])
def test_the_testnets_servers_stop_when_their_owner_ends(tmp_path: Path, start: str) -> None:
    """A test session or bench killed outright (SIGKILL: no clean-up of its own) leaves no
    nameserver or delaying link behind: they follow their owner, as the tors do."""
    import os
    import select
    import signal

    from bento.testnet import services

    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        if start == "nameserver":
            service = services.start_nameserver(tmp_path, None, owner=owner.pid)
        else:
            service = services.start_latency(tmp_path, [], 25.0, owner=owner.pid)
        services.wait_ready(service, time.monotonic() + 30)
        assert service.pid is not None and service.alive()
        exited = os.pidfd_open(service.pid)
        try:
            owner.send_signal(signal.SIGKILL)
            owner.wait(10)
            readable, _, _ = select.select([exited], [], [], 30)  # readable once it has exited
            assert readable, f"the {start} outlived its owner"
        finally:
            os.close(exited)
    finally:
        owner.kill()
        owner.wait()
        if service.pid is not None:  # reaped (and first killed, should it have outlived its owner)
            with contextlib.suppress(ProcessLookupError):
                os.kill(service.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(service.pid, 0)


def test_two_testnets_do_not_draw_ports_while_the_other_binds_its_own() -> None:
    """One claim on new ports per host: a second start waits for it, up to its deadline."""
    with port_claim(time.monotonic() + 120):  # another testnet of the suite may hold it a moment
        with (
            pytest.raises(TestnetError, match="held the claim on new ports") as raised,
            port_claim(time.monotonic() + 0.3),
        ):
            pass
        assert "run this one again" in str(raised.value.fix)
    with port_claim(time.monotonic() + 120):  # let go at the end of the first
        pass


def test_a_program_that_execs_another_at_once_counts_as_started() -> None:
    """setpriv (a box run by a dedicated user) execs Python at once, so its own name never
    shows in /proc: the wait returns once the child runs anything but its parent's code."""
    wrapper = subprocess.Popen(["env", sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # Once env has exec'd Python its name is gone from /proc for good, as setpriv's is.
        deadline = time.monotonic() + 30
        while not Path(f"/proc/{wrapper.pid}/cmdline").read_bytes().startswith(sys.executable.encode()):
            assert time.monotonic() < deadline, "env never ran Python"
            time.sleep(0.002)
        wait_for_exec(wrapper.pid, "env", patience=120)  # before: all of it, the child long gone
        assert wrapper.poll() is None, "the wait returned while the program still runs"
    finally:
        wrapper.kill()
        wrapper.wait()
