"""The shape of a testnet and the torrc of each of its nodes.

Timings follow the usual recipe for private Tor networks: votes every 10 seconds,
flags voted by fiat (TestingDirAuthVote*) rather than earned by uptime and bandwidth,
and reachability assumed. Exits accept only loopback destinations and resolve names
through the testnet's own nameserver, so nothing leaves this machine.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from bento.protocol.policy import NodePolicy
from bento.testnet.errors import TestnetError
from bento.testnet.state import Node, Role
from bento.tor import advert


@dataclass(frozen=True)
class TestnetConfig:
    __test__ = False  # not a pytest test class

    directory: Path
    authorities: int = 3
    relays: int = 5
    exits: int = 3
    bento_boxes: int = 0
    bootstrap_timeout: float = 120.0
    # The test corpus served on loopback and named by the testnet's nameserver (0: none;
    # the nameserver runs regardless, so that no name is ever resolved off the machine).
    corpus_sites: int = 100
    corpus_seed: int = 0
    # Emulated wide-area latency, one way, in milliseconds (see latency.py): on every
    # link to a relay, and between an exit and the corpus's web server.
    hop_delay_ms: float = 0.0
    web_delay_ms: float = 0.0
    # If set, every tor exits when this process does (tor's __OwningControllerProcess):
    # a test session that is killed still leaves nothing behind.
    owner_pid: int | None = None
    # If set (and we are root), the last box's Bento server runs as this existing user,
    # the way operators run it: unprivileged, beside a relay.
    box_user: str | None = None
    # How long each consensus stays valid once the testnet is up, in seconds (the live
    # network: 3 hours). A client fetches a new consensus, over its guard link, at a random
    # time before its current one expires: with the quick default that is every 10-20 s,
    # which fills the evaluation's traces with directory fetches. The interval between
    # votes stays 10 s: onion services' time periods and shared randomness are counted in
    # voting intervals, so changing it under running services makes them unreachable.
    consensus_lifetime: int = 20
    # Network parameters the authorities vote for (tor's ConsensusParams, "name=integer"), for
    # experiments: e.g. "cc_alg=0" turns congestion control off and fixed windows back on.
    consensus_params: tuple[str, ...] = ()
    # The node policy of every Bento box (None: the testnet's own, see box_policy.py).
    box_policy: NodePolicy | None = None

    def validate(self) -> None:
        if self.authorities < 3:
            raise TestnetError("a testnet needs at least 3 directory authorities")
        if self.relays < 3:
            raise TestnetError("a testnet needs at least 3 relays, or no circuit can be built")
        if not 1 <= self.exits <= self.relays:
            raise TestnetError(f"--exits must be between 1 and the number of relays ({self.relays})")
        if not (0 <= self.hop_delay_ms <= 5000 and 0 <= self.web_delay_ms <= 5000):
            raise TestnetError("delays must be between 0 and 5000 ms")
        if not (20 <= self.consensus_lifetime <= 3600 and self.consensus_lifetime % VOTING_INTERVAL == 0):
            raise TestnetError(
                f"--consensus-lifetime must be 20 to 3600 seconds, a multiple of {VOTING_INTERVAL}"
            )
        if not 0 <= self.corpus_sites <= 999:
            raise TestnetError("--corpus-sites must be between 0 and 999")
        for param in self.consensus_params:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=-?[0-9]{1,10}", param):
                raise TestnetError(f"consensus parameter {param!r}: write it as name=integer, e.g. cc_alg=0")
        if self.bento_boxes < 0 or self.bento_boxes > self.relays:
            raise TestnetError(f"--bento-boxes must be between 0 and the number of relays ({self.relays})")


VOTING_INTERVAL = 10  # seconds; see V3AuthVotingInterval below

# Shared by every node.
_COMMON = """\
TestingTorNetwork 1
DataDirectory {data_dir}
Nickname {nickname}
PidFile {data_dir}/pid
Log notice file {data_dir}/notice.log
SafeLogging 0
LogTimeGranularity 1
ControlPort 127.0.0.1:{control_port}
CookieAuthentication 1
ShutdownWaitLength 0
AssumeReachable 1
PathsNeededToBuildCircuits 0.67
# Full descriptors instead of microdescriptors: a microdescriptor's exit-policy summary
# only describes public addresses, so clients would never pick a loopback-only exit.
UseMicrodescriptors 0
# A fixed circuit build timeout, not a learned one: on loopback circuits build in
# milliseconds, tor learns a timeout of that order, and a busy moment of the host (a
# 2-core CI machine running the suite) then times out circuits in bursts until tor
# resets it ("Resetting timeout to 60000ms after 18 timeouts"): requests to a box hang
# or fail meanwhile. Tor's own initial value, a minute, as the functions' tor has.
LearnCircuitBuildTimeout 0
CircuitBuildTimeout 60
# No vanguards-lite: each tor picks its onion-service circuits' second hops (layer 2) once,
# for days, and one that picks them while it knows few relays' descriptors (the first
# consensuses) kept failing every such circuit ("Could not find a node that matches the
# configured _HSLayer2Nodes set"): a box's relay could not answer its clients for minutes.
# A guard-discovery defence has nothing to defend on a private network of 8 relays.
VanguardsLiteEnabled 0
"""

_RELAY = """\
Address 127.0.0.1
{or_port_lines}ContactInfo {contact}
SocksPort 0
# Names are resolved by the testnet's own nameserver, never by the host's resolver.
ServerDNSResolvConfFile {resolv_conf}
# Its lookups of random names to detect a lying resolver would only ask ours anyway.
ServerDNSDetectHijacking 0
"""

_AUTHORITY = """\
DirPort 127.0.0.1:{dir_port}
AuthoritativeDirectory 1
V3AuthoritativeDirectory 1
ExitPolicy reject *:*
TestingV3AuthInitialVotingInterval 10
TestingV3AuthInitialVoteDelay 2
TestingV3AuthInitialDistDelay 2
V3AuthVotingInterval 10
V3AuthVoteDelay 2
V3AuthDistDelay 2
V3AuthNIntervalsValid 2
TestingDirAuthVoteGuard *
TestingDirAuthVoteHSDir *
TestingMinExitFlagThreshold 0
"""

# IPv4 without 127.0.0.0/8, as the few prefixes an exit policy can say it with.
_NOT_LOOPBACK = sorted(
    ipaddress.IPv4Network("0.0.0.0/0").address_exclude(ipaddress.IPv4Network("127.0.0.0/8"))
)

_EXIT = (
    """\
ExitRelay 1
# Every node bootstraps at once, so an exit's consensus can lag the client's by a
# voting round; by default it would refuse streams from middles it does not know yet.
RefuseUnknownExits 0
ExitPolicyRejectPrivate 0
ExitPolicy accept 127.0.0.0/8:*
"""
    + "".join(f"ExitPolicy reject {net}:*\n" for net in _NOT_LOOPBACK)
    + """\
# Every IPv4 address but loopback is rejected above, so this accepts loopback only; but
# a client asked for a *name* cannot know its address, and tor's client skips exits whose
# policy would reject an unknown address outright: without this line no exit would
# carry a stream to a corpus name. (IPv6 is not exited: IPv6Exit is off.)
ExitPolicy accept *4:*
ExitPolicy reject *:*
"""
)

_NON_EXIT = """\
ExitRelay 0
ExitPolicy reject *:*
"""

_CLIENT = """\
SocksPort 127.0.0.1:{socks_port}
"""


def render_torrc(
    node: Node, nodes: list[Node], owner_pid: int | None, consensus_params: tuple[str, ...] = ()
) -> str:
    """The torrc for ``node`` in a network made of ``nodes``."""
    values = {
        "data_dir": node.data_dir,
        "nickname": node.nickname,
        "control_port": node.control_port,
        "or_port": node.or_port,
        "or_port_lines": _or_ports(node),
        "dir_port": node.dir_port,
        "socks_port": node.socks_port,
        # Beside every node's data directory: see services.write_resolv_conf.
        "resolv_conf": Path(node.data_dir).parent / "resolv.conf",
        # A box is advertised from the first descriptor on, so clients find it without
        # waiting for the relay to republish (its server would add the same item).
        "contact": advert.with_onion(f"{node.nickname}@testnet.invalid", node.bento_onion)
        if node.bento_onion
        else f"{node.nickname}@testnet.invalid",
    }
    parts = [_COMMON]
    if node.role is Role.CLIENT:
        parts.append(_CLIENT)
    else:
        parts.append(_RELAY)
        parts.append({Role.AUTHORITY: _AUTHORITY, Role.EXIT: _EXIT, Role.RELAY: _NON_EXIT}[node.role])
    if node.role is Role.AUTHORITY:
        # Exit is voted for exactly the relays configured as exits: their loopback-only
        # policies would otherwise not earn the flag.
        exits = ",".join(f"${n.fingerprint}" for n in nodes if n.role is Role.EXIT)
        parts.append(f"TestingDirAuthVoteExit {exits}\n")
        if consensus_params:
            parts.append(f"ConsensusParams {' '.join(consensus_params)}\n")
    if owner_pid is not None:
        parts.append(f"__OwningControllerProcess {owner_pid}\n")
    if node.bento_user is not None:  # where that user can read it (its group is set on start)
        parts.append(f"CookieAuthFile {node.control_cookie}\nCookieAuthFileGroupReadable 1\n")
    parts.extend(dir_authority_line(a) for a in nodes if a.role is Role.AUTHORITY)
    return "".join(parts).format(**values)


def _or_ports(node: Node) -> str:
    if node.or_listen_port is None:
        return f"ORPort 127.0.0.1:{node.or_port}\n"
    # Latency emulated: the advertised port is the delaying link's; tor's own is not advertised.
    return f"ORPort 127.0.0.1:{node.or_port} NoListen\nORPort 127.0.0.1:{node.or_listen_port} NoAdvertise\n"


def dir_authority_line(auth: Node) -> str:
    return (
        f"DirAuthority {auth.nickname} orport={auth.or_port} no-v2 "
        f"v3ident={auth.v3_identity} 127.0.0.1:{auth.dir_port} {auth.fingerprint}\n"
    )


def write_torrc(
    node: Node, nodes: list[Node], owner_pid: int | None, consensus_params: tuple[str, ...] = ()
) -> Path:
    path = Path(node.data_dir) / "torrc"
    path.write_text(render_torrc(node, nodes, owner_pid, consensus_params))
    return path
