"""The testnet's shape, torrcs and bookkeeping, without starting the network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import stem.exit_policy

from bento.testnet import Node, Role, Testnet, TestnetConfig, TestnetError, TestnetState
from bento.testnet.config import render_torrc
from bento.tor.process import ProcessRecord, wait_for_exec


def _nodes() -> list[Node]:
    auth = Node(
        Role.AUTHORITY,
        "auth0",
        "/d/auth0",
        1,
        or_port=2,
        dir_port=3,
        fingerprint="A" * 40,
        v3_identity="B" * 40,
    )
    exit_ = Node(Role.EXIT, "exit0", "/d/exit0", 4, or_port=5, fingerprint="C" * 40)
    relay = Node(Role.RELAY, "relay0", "/d/relay0", 6, or_port=7, fingerprint="D" * 40)
    client = Node(Role.CLIENT, "client", "/d/client", 8, socks_port=9)
    return [auth, exit_, relay, client]


def test_exits_reach_loopback_only_and_other_relays_nothing() -> None:
    _auth, exit_, relay, _client = _nodes()
    exit_rc = render_torrc(exit_, _nodes(), None)
    rules = [line.split(None, 1)[1] for line in exit_rc.splitlines() if line.startswith("ExitPolicy ")]
    policy = stem.exit_policy.ExitPolicy(*rules)
    for address in ("127.0.0.1", "127.20.3.4", "127.255.255.254"):
        assert policy.can_exit_to(address, 80), address
    for address in ("0.0.0.1", "10.0.0.1", "126.255.255.255", "128.0.0.0", "192.168.1.1", "8.8.8.8"):
        assert not policy.can_exit_to(address, 443), address
    assert not policy.can_exit_to("2001:db8::1", 80)
    # A client asked for a name (address unknown) must still find this exit usable.
    assert policy.can_exit_to(port=80, strict=False)
    assert "ExitPolicyRejectPrivate 0" in exit_rc
    assert f"ServerDNSResolvConfFile {Path('/d/resolv.conf')}" in exit_rc
    assert "ExitPolicy reject *:*" in render_torrc(relay, _nodes(), None)
    assert "accept" not in render_torrc(relay, _nodes(), None)


def test_every_node_knows_the_authorities_and_authorities_vote_exit_for_exits() -> None:
    nodes = _nodes()
    line = f"DirAuthority auth0 orport=2 no-v2 v3ident={'B' * 40} 127.0.0.1:3 {'A' * 40}"
    for node in nodes:
        assert line in render_torrc(node, nodes, None)
    assert f"TestingDirAuthVoteExit ${'C' * 40}\n" in render_torrc(nodes[0], nodes, None)
    client_rc = render_torrc(nodes[3], nodes, 4242)
    assert "SocksPort 127.0.0.1:9" in client_rc
    assert "__OwningControllerProcess 4242" in client_rc
    assert "ORPort" not in client_rc


def test_no_node_learns_a_circuit_build_timeout_from_loopback() -> None:
    # A timeout learned from millisecond builds fails circuits in bursts on a busy host.
    nodes = _nodes()
    for node in nodes:
        torrc = render_torrc(node, nodes, None)
        assert "LearnCircuitBuildTimeout 0\nCircuitBuildTimeout 60\n" in torrc, node.nickname


def test_only_the_authorities_vote_for_the_consensus_parameters_asked_for() -> None:
    nodes = _nodes()
    assert "ConsensusParams" not in render_torrc(nodes[0], nodes, None)
    for node in nodes:
        voted = render_torrc(node, nodes, None, ("cc_alg=0", "circwindow=500"))
        assert ("ConsensusParams cc_alg=0 circwindow=500\n" in voted) is (node.role is Role.AUTHORITY)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"authorities": 2}, "3 directory authorities"),
        ({"relays": 2}, "at least 3 relays"),
        ({"exits": 0}, "--exits"),
        ({"relays": 3, "exits": 4}, "--exits"),
        ({"bento_boxes": 9}, "--bento-boxes"),
        ({"consensus_lifetime": 10}, "--consensus-lifetime"),
        ({"consensus_lifetime": 7200}, "--consensus-lifetime"),
        ({"consensus_lifetime": 25}, "a multiple of 10"),
        ({"consensus_params": ("cc_alg",)}, "name=integer"),
        ({"consensus_params": ("cc_alg=0\nExitRelay 1",)}, "name=integer"),
    ],
)
def test_impossible_shapes_are_refused_with_the_reason(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(TestnetError, match=message):
        TestnetConfig(directory=Path("/nonexistent"), **kwargs).validate()  # type: ignore[arg-type]


def test_down_without_a_testnet_is_harmless_and_touches_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert Testnet.down(tmp_path) is False
    (tmp_path / "testnet.json").write_text("{not json")
    assert TestnetState.load(tmp_path) is None
    assert (tmp_path / "keep.txt").read_text() == "mine"
    with pytest.raises(TestnetError, match="no testnet"):
        Testnet.attach(tmp_path)


def test_a_process_is_only_signalled_while_its_marker_is_on_its_command_line() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "marker-one"])
    wait_for_exec(sleeper.pid, sys.executable)
    try:
        assert ProcessRecord(sleeper.pid, "marker-one").alive()
        stranger = ProcessRecord(sleeper.pid, "some-other-torrc")
        assert not stranger.alive()
        stranger.stop()  # a recycled pid: must not be killed
        assert sleeper.poll() is None
        ProcessRecord(sleeper.pid, "marker-one").stop()
        assert not ProcessRecord(sleeper.pid, "marker-one").alive()
        assert not Path(f"/proc/{sleeper.pid}").exists()  # stopped and reaped
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_tor_that_fails_to_start_is_named_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bento.testnet import config as config_module

    real = config_module.render_torrc

    def broken(node: Node, nodes: list[Node], owner: int | None, params: tuple[str, ...]) -> str:
        text = real(node, nodes, owner, params)
        return text + "ThisIsNotATorOption 1\n" if node.nickname == "relay1" else text

    monkeypatch.setattr(config_module, "render_torrc", broken)
    with pytest.raises(TestnetError) as caught:
        Testnet.start(TestnetConfig(directory=tmp_path / "net", bootstrap_timeout=60))
    text = str(caught.value)
    assert "relay1" in text and "ThisIsNotATorOption" in text
    state = TestnetState.load(tmp_path / "net")
    assert state is not None and not any(n.alive() for n in state.nodes)
    assert Testnet.down(tmp_path / "net")
