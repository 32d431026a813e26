"""The testnet's own servers beside its tor processes: the nameserver and the corpus's web server.

Each is a detached Python process like the Bento boxes, recorded in the state file by
pid and marker (its ready file, on its command line), and ready once it has written the
port it listens on to that file. Given an owner (a test session, a bench), it stops when
that process ends, as the testnet's tors do.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bento.testnet.corpus import Corpus
from bento.testnet.errors import TestnetError
from bento.testnet.state import Node, Service
from bento.tor.process import log_tail, owned_env, spawn_detached

RESOLV_CONF = "resolv.conf"  # in the testnet's directory: the exits' ServerDNSResolvConfFile
ZONE = "zone.json"  # the nameserver's names
LATENCY = "latency.json"  # the delaying links' spec


def start_nameserver(directory: Path, corpus: Corpus | None, owner: int | None = None) -> Service:
    """Start the nameserver for ``corpus``'s names (none: it answers NXDOMAIN to all)."""
    zone = directory / ZONE
    zone.write_text(json.dumps({} if corpus is None else corpus.addresses, indent=1))
    service = Service("nameserver", str(directory / "nameserver.ready"))
    _spawn(service, ["-m", "bento.testnet.nameserver", str(zone), "127.0.0.1:0"], directory, owner)
    return service


def start_corpus(directory: Path, corpus: Corpus, delay_ms: float = 0.0, owner: int | None = None) -> Service:
    service = Service("corpus", str(directory / "corpus.ready"))
    argv = ["-m", "bento.testnet.corpus.serve", str(corpus.seed), str(len(corpus.sites))]
    _spawn(service, argv, directory, owner, str(delay_ms))
    return service


def start_latency(directory: Path, nodes: list[Node], delay_ms: float, owner: int | None = None) -> Service:
    """Delaying links in front of every relay's ORPort (see ``latency``)."""
    spec = directory / LATENCY
    links = [
        ["127.0.0.1", n.or_port, "127.0.0.1", n.or_listen_port, delay_ms]
        for n in nodes
        if n.or_listen_port is not None
    ]
    spec.write_text(json.dumps(links))
    service = Service("latency", str(directory / "latency.ready"))
    _spawn(service, ["-m", "bento.testnet.latency", str(spec)], directory, owner)
    return service


def _spawn(service: Service, args: list[str], directory: Path, owner: int | None, *after: str) -> None:
    Path(service.ready_file).unlink(missing_ok=True)
    service.pid = spawn_detached(
        [sys.executable, *args, service.ready_file, *after],
        log=service.log,
        cwd=directory,
        env=owned_env(owner),
    )


def wait_ready(service: Service, deadline: float) -> None:
    """Wait for the service's port; an error with its log if it exits or takes too long."""
    ready = Path(service.ready_file)
    while not ready.exists():
        if not service.alive():
            raise TestnetError(
                f"the testnet's {service.name} exited during start-up; "
                f"the end of its log ({service.log}):\n{log_tail(service.log)}"
            )
        if time.monotonic() > deadline:
            raise TestnetError(f"the testnet's {service.name} did not start in time")
        time.sleep(0.05)
    text = ready.read_text()
    service.port = int(text) if text.isdigit() else None


def write_resolv_conf(directory: Path, nameserver: Service) -> Path:
    """A resolv.conf naming only the nameserver. libevent (tor's eventdns) reads
    ``nameserver IP:PORT``, so the nameserver needs no privileged port 53."""
    path = directory / RESOLV_CONF
    path.write_text(f"# Written by `bento testnet`.\nnameserver 127.0.0.1:{nameserver.port}\n")
    return path
