"""Starting, inspecting and stopping a testnet."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import stem
import stem.control

from bento.errors import BentoError
from bento.sandbox import uids
from bento.testnet import boxes, keys, readiness, services
from bento.testnet.config import VOTING_INTERVAL, TestnetConfig, write_torrc
from bento.testnet.corpus import Corpus
from bento.testnet.errors import TestnetError
from bento.testnet.plan import box_nodes, default_directory, plan, port_claim
from bento.testnet.readiness import Progress
from bento.testnet.state import STATE_FILE, Node, Role, TestnetState
from bento.tor import control
from bento.tor.process import spawn_detached

__all__ = ["Testnet", "TestnetError", "default_directory"]
_log = logging.getLogger("bento.testnet")


class Testnet:
    """A running testnet. ``Testnet.start`` makes one; ``Testnet.attach`` finds one on disk.

    Used as a context manager it is stopped (every process, its state removed) on exit.
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, state: TestnetState) -> None:
        self.state = state
        # Control connections that own our tor processes (see control.take_ownership).
        self._leases: list[socket.socket] = []

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def start(
        cls, config: TestnetConfig, progress: Progress | None = None, *, force: bool = False
    ) -> Testnet:
        """Start a testnet in ``config.directory`` and return once a circuit can be built.

        What a crash left in that directory is cleaned up first. If any process of an
        earlier testnet there still runs (a box with its functions, say), that is an error
        unless ``force`` is given: then those processes are stopped and their state removed.
        """
        say = progress or (lambda _msg: None)
        config.validate()
        directory = config.directory.resolve()
        old = TestnetState.load(directory)
        if old is not None:
            if (alive := old.live_processes()) and not force:
                raise TestnetError(
                    f"a testnet in {directory} still has live processes ({', '.join(alive)})",
                    fix="stop it with `bento testnet down`, replace it with `bento testnet up --force`, "
                    "or use --dir for a second one",
                )
            say("stopping and removing the previous testnet" if alive else "cleaning up a dead testnet")
            cls.down(directory)
        directory.mkdir(parents=True, exist_ok=True)

        started = time.monotonic()
        deadline = started + config.bootstrap_timeout
        state = TestnetState(
            directory=str(directory),
            started_at=time.time(),
            corpus_seed=config.corpus_seed,
            corpus_sites=config.corpus_sites,
            hop_delay_ms=config.hop_delay_ms,
            web_delay_ms=config.web_delay_ms,
        )
        # Held from drawing the ports until every tor has bound its own (see port_claim).
        claim = ExitStack()
        claim.enter_context(port_claim(deadline))
        state.nodes = plan(directory, config)
        net = cls(state)
        try:
            corpus = net.corpus
            say("starting the nameserver" + (f" and {len(corpus.sites)} corpus sites" if corpus else ""))
            owner = config.owner_pid  # the servers go when it goes, as the tors do
            state.services.append(services.start_nameserver(directory, corpus, owner))
            if corpus is not None:
                state.services.append(services.start_corpus(directory, corpus, config.web_delay_ms, owner))
            if config.hop_delay_ms > 0:
                say(f"emulating {config.hop_delay_ms:g} ms one way on every link to a relay")
                state.services.append(
                    services.start_latency(directory, state.nodes, config.hop_delay_ms, owner)
                )
            state.save()
            for service in state.services:
                services.wait_ready(service, deadline)
            services.write_resolv_conf(directory, state.services[0])
            say(f"generating keys for {len(state.nodes) - 1} relays and authorities")
            keys.generate(state.nodes)
            boxed = box_nodes(state.nodes, config.bento_boxes)
            for node in boxed:  # the last one's server runs as config.box_user, if any
                user = config.box_user if node is boxed[-1] else None
                boxes.prepare(node, directory, user=user, policy=config.box_policy)
            for node in state.nodes:
                write_torrc(node, state.nodes, config.owner_pid, config.consensus_params)
            say(f"starting {len(state.nodes)} tor processes")
            for node in state.nodes:
                node.pid = spawn_detached(
                    [keys.TOR, "-f", str(node.torrc), "--defaults-torrc", os.devnull],
                    log=Path(node.data_dir) / "stdout.log",
                    cwd=Path(node.data_dir),
                )
            state.save()
            readiness.wait_listening(state, deadline=deadline)
            claim.close()
            if config.owner_pid == os.getpid():
                net._take_ownership(deadline=deadline)
            readiness.wait_ready(state, deadline=deadline, say=say)
            if state.boxes:
                say(f"starting {len(state.boxes)} Bento server(s)")
                boxes.start_all(state, net.socks_address, deadline=deadline, say=say)
                say("every Bento box answers over Tor")
            if config.consensus_lifetime != 2 * VOTING_INTERVAL:
                say(f"consensuses stay valid for {config.consensus_lifetime} s from now on")
                _lengthen_consensuses(state, config.consensus_lifetime)
        except BaseException:
            claim.close()
            net._release()
            net._kill_all()
            raise
        state.bootstrap_seconds = round(time.monotonic() - started, 2)
        state.save()
        return net

    @classmethod
    def attach(cls, directory: Path) -> Testnet:
        """The testnet whose state is in ``directory``."""
        state = TestnetState.load(directory.resolve())
        if state is None:
            raise TestnetError(
                f"no testnet in {directory}",
                fix="start one with `bento testnet up` (or pass the --dir it was started with)",
            )
        return cls(state)

    def stop(self) -> None:
        """Stop every process of this testnet and remove its state."""
        self._release()
        self.down(Path(self.state.directory))

    def _take_ownership(self, *, deadline: float) -> None:
        for node in self.state.nodes:
            while True:
                readiness.check_alive(self.state)
                try:
                    lease = control.take_ownership(node.control_address, node.control_cookie)
                except (OSError, BentoError):
                    if time.monotonic() > deadline:
                        raise TestnetError(f"{node.nickname}'s control port never opened") from None
                    time.sleep(0.1)
                    continue
                self._leases.append(lease)
                break

    def _release(self) -> None:
        """Close the owning connections: each tor exits at once."""
        for lease in self._leases:
            lease.close()
        self._leases.clear()

    @staticmethod
    def down(directory: Path) -> bool:
        """Stop the testnet in ``directory`` and remove what it created.

        Harmless when there is none (returns False). Only processes recorded in the state
        file, and still running the recorded torrc, are signalled; only the node
        directories and the state file are removed, never the rest of ``directory``.
        """
        directory = directory.resolve()
        state = TestnetState.load(directory)
        if state is None:
            return False
        Testnet(state)._kill_all()
        for node in state.nodes:
            shutil.rmtree(node.data_dir, ignore_errors=True)
            if node.bento_dir is not None:
                shutil.rmtree(node.bento_dir, ignore_errors=True)
        leftovers = [
            directory / name for name in (STATE_FILE, services.ZONE, services.RESOLV_CONF, services.LATENCY)
        ]
        for service in state.services:
            ready = Path(service.ready_file)
            leftovers += [ready, ready.with_suffix(".tmp"), service.log]
        for path in leftovers:
            path.unlink(missing_ok=True)
        uids.clean_stale()  # the uid blocks of Bento servers that died without releasing them
        with suppress(OSError):
            directory.rmdir()  # only if we left it empty
        return True

    def _kill_all(self) -> None:
        for node in self.state.boxes:  # first, so that each can withdraw from its tor
            boxes.stop(node)
        for node in self.state.nodes:
            if (proc := node.process) is not None:
                proc.stop()
        for service in self.state.services:
            if (proc := service.process) is not None:
                proc.stop()

    def restart_box(self, nickname: str, timeout: float = 120.0, progress: Progress | None = None) -> None:
        """Stop the Bento server beside relay ``nickname`` and start it again.

        What goes wrong on the way (a new server that did not publish, or was not reached,
        and so was started again) is said to ``progress``, by default logged as a warning:
        a test that fails after a restart shows it.
        """
        node = next((n for n in self.state.boxes if n.nickname == nickname), None)
        if node is None:
            raise TestnetError(f"{nickname} is not a Bento box of this testnet")
        deadline = time.monotonic() + timeout
        boxes.stop(node)
        # The client forgets what it knew of the box's onion service (its descriptor, with the
        # old instance's introduction points, and which HSDirs it asked lately: tor asks one
        # again only after 15 minutes), as a fresh client would, or it may try those stale
        # points and HSDirs until the next time period and find the new instance unreachable.
        with control.connect(self.control_address) as ctl:
            ctl.signal(stem.Signal.NEWNYM)
        say = progress or _log.warning
        boxes.start_all(self.state, self.socks_address, deadline=deadline, say=say, only=[node])
        # Answering over Tor is not enough for the tests that follow: they find boxes by
        # name in the client's directory, which must still list this one.
        from bento.client import discovery

        while node.nickname not in {b.nickname for b in discovery.discover(self.control_address)}:
            if time.monotonic() > deadline:
                raise TestnetError(f"{nickname} answers again but the client's directory no longer lists it")
            time.sleep(0.5)

    def __enter__(self) -> Testnet:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- what users need

    @property
    def directory(self) -> Path:
        return Path(self.state.directory)

    @property
    def socks_address(self) -> str:
        return f"127.0.0.1:{self.state.client.socks_port}"

    @property
    def control_address(self) -> str:
        return self.state.client.control_address

    @property
    def nodes(self) -> list[Node]:
        return self.state.nodes

    @property
    def corpus(self) -> Corpus | None:
        """The sites this testnet serves (``corpus_port``), named by its nameserver."""
        if not self.state.corpus_sites:
            return None
        return Corpus(seed=self.state.corpus_seed, sites=self.state.corpus_sites)

    @property
    def corpus_port(self) -> int | None:
        service = self.state.service("corpus")
        return None if service is None else service.port

    @property
    def nameserver(self) -> str | None:
        """``127.0.0.1:PORT`` of the testnet's nameserver (UDP)."""
        service = self.state.service("nameserver")
        return None if service is None or service.port is None else f"127.0.0.1:{service.port}"

    def relays(self) -> list[Node]:
        """Every relay (authorities included), in start order."""
        return [n for n in self.state.nodes if n.is_relay]

    def environment(self) -> dict[str, str]:
        """The variables a command run on this testnet gets (see ``bento testnet run``)."""
        env = {
            "BENTO_SOCKS": self.socks_address,
            "BENTO_CONTROL": self.control_address,
            "BENTO_TESTNET_DIR": str(self.directory),
        }
        if self.nameserver is not None:
            env["BENTO_NAMESERVER"] = self.nameserver
        if self.corpus_port is not None:
            env["BENTO_CORPUS"] = f"{self.state.corpus_seed}:{self.state.corpus_sites}:{self.corpus_port}"
        return env

    def status(self) -> dict[str, Any]:
        """Every node with role, nickname, fingerprint, ports, flags and liveness (JSON-ready)."""
        flags = self._consensus_flags()
        nodes = [
            {
                "role": str(n.role),
                "nickname": n.nickname,
                "fingerprint": n.fingerprint,
                "or_port": n.or_port,
                "dir_port": n.dir_port,
                "control_port": n.control_port,
                "socks_port": n.socks_port,
                "pid": n.pid,
                "alive": n.alive(),
                "flags": flags.get(n.fingerprint or "", []),
                "bento": None
                if n.bento_dir is None
                else {
                    "onion": n.bento_onion,
                    "pid": n.bento_pid,
                    "alive": n.bento_alive(),
                    **boxes.server_status(n),
                },
            }
            for n in self.state.nodes
        ]
        return {
            "directory": self.state.directory,
            "running": all(n["alive"] for n in nodes)
            and all(n.bento_alive() for n in self.state.boxes)
            and all(s.alive() for s in self.state.services),
            "bootstrap_seconds": self.state.bootstrap_seconds,
            "latency_ms": {"hop": self.state.hop_delay_ms, "web": self.state.web_delay_ms},
            "socks": self.socks_address,
            "control": self.control_address,
            "nodes": nodes,
            "services": [
                {"name": s.name, "pid": s.pid, "port": s.port, "alive": s.alive()}
                for s in self.state.services
            ],
        }

    def _consensus_flags(self) -> dict[str, list[str]]:
        """Relay flags as the client sees them; empty if the client cannot be asked."""
        if not self.state.client.alive():
            return {}
        try:
            with control.connect(self.control_address) as ctl:
                return {s.fingerprint: sorted(s.flags) for s in ctl.get_network_statuses()}
        except (BentoError, stem.ControllerError, stem.SocketError):
            return {}


def _lengthen_consensuses(state: TestnetState, seconds: int) -> None:
    """Have every authority make consensuses valid for ``seconds`` (not before start-up is
    over: clients would then fetch new ones seldom, and relays join over several)."""
    for node in state.nodes:
        if node.role is Role.AUTHORITY:
            with control.connect(node.control_address) as ctl:
                ctl.set_conf("V3AuthNIntervalsValid", str(seconds // VOTING_INTERVAL))
