"""Bento servers on testnet relays (``bento testnet up --bento-boxes M``).

Each box gets its identity before its relay starts, so the relay's very first
descriptor already advertises ``bento=<onion>``; the server is started once the network
is usable, and is ready when its onion service answers through the testnet's client.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import pwd
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bento.errors import BentoError
from bento.sandbox.spec import CHROMIUM_BINARY
from bento.server import identity
from bento.server.daemon import STATUS_FILE
from bento.testnet.services import RESOLV_CONF
from bento.testnet.state import Node, TestnetState
from bento.tor.process import log_tail, spawn_detached
from bento.tor.resolver import read_resolv_conf


def prepare(node: Node, directory: Path, user: str | None = None) -> None:
    """Make the box's state directory and identity; its onion goes into the relay's torrc.

    A box whose server runs as ``user`` keeps its state where that user can reach it (the
    testnet's own directory is usually private): in a directory of its own under the
    temporary directory, owned by that user.
    """
    if user is not None and os.geteuid() == 0:
        account = pwd.getpwnam(user)  # KeyError: no such user, said by the caller
        state_dir = Path(tempfile.mkdtemp(prefix=f"bento-{node.nickname}-"))
        node.bento_user = user
    else:
        state_dir = directory / f"{node.nickname}-bento"
    node.bento_dir = str(state_dir)
    node.bento_onion = identity.load_or_create(state_dir).onion
    if node.bento_user is not None:
        for path in [state_dir, *state_dir.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)


# Testnet boxes let functions do everything a test may want to try, within modest limits.
SERVER_CONFIG = """\
# Written by `bento testnet`: the policy of a testnet Bento box.
[policy]
syscall_profiles = ["compute", "processes", "network"{chromium_profile}]
packages = ["bento", "selectolax"{chromium_package}]  # selectolax: Browser's HTML parser
total_memory_mb = 6144
total_cpu_share = 1.5
instances_total = 128

[policy.instance]
memory_mb = {memory_mb}
cpu_seconds = {cpu_seconds}
wall_seconds = 600
processes = {processes}
scratch_mb = {scratch_mb}

[policy.network]
allowed = true
listen = true
private_destinations = true  # the testnet's relays and web servers are all on loopback

[policy.tor]
circuits = true
onion_services = true
max_onion_services = 64  # counted per function: LoadBalancer's replicas share a box
call_boxes = true

[policy.storage]
allowed = true
max_mb = 64

[policy.cover]  # link cover of session streams (bento browse --cover)
max_rate = 2000
max_total_rate = 8000
"""


def server_config(*, privileged: bool) -> str:
    """The policy of a testnet box. Where this host has Debian's chromium and Playwright,
    boxes offer the chromium profile (Browser's --engine chromium) and the larger instances
    it needs; a box run by a dedicated user on a host that gives it no cgroup cannot cap
    the CPU share of all its instances: the operator accepts that by name, and the
    descriptor says so."""
    chromium = Path(CHROMIUM_BINARY).exists() and importlib.util.find_spec("playwright") is not None
    text = SERVER_CONFIG.format(
        chromium_profile=', "chromium"' if chromium else "",
        chromium_package=', "playwright"' if chromium else "",
        memory_mb=1024 if chromium else 256,
        cpu_seconds=120 if chromium else 60,
        processes=256 if chromium else 32,
        scratch_mb=256 if chromium else 32,
    )
    if not privileged:
        text = text.replace("[policy]\n", 'accept_unenforced = ["cpu_share"]\n\n[policy]\n', 1)
    return text


def start(node: Node) -> None:
    """Start the Bento server beside ``node``'s tor, detached like the tor processes."""
    assert node.bento_dir is not None
    state_dir = Path(node.bento_dir)
    (state_dir / STATUS_FILE).unlink(missing_ok=True)
    config = state_dir / "server.toml"
    # The testnet's directory holds every relay's data directory (a box run by its own
    # user keeps its state elsewhere).
    base = server_config(privileged=node.bento_user is None)
    config.write_text(_resolver_setting(Path(node.data_dir).parent) + base)
    prefix, env = _as_user(node)
    node.bento_pid = spawn_detached(
        [
            *prefix,
            "-m",
            "bento",
            "server",
            "--config",
            str(config),
            "--control",
            node.control_address,
            "--state-dir",
            str(state_dir),
            "--listen",
            "127.0.0.1:0",
        ],
        log=state_dir / "server.log",
        cwd=state_dir,
        env=env,
    )


def _as_user(node: Node) -> tuple[list[str], dict[str, str] | None]:
    """The start of the server's command line, and its environment (None: ours)."""
    if node.bento_user is None:
        return [sys.executable], None
    assert node.bento_dir is not None
    account = pwd.getpwnam(node.bento_user)
    config = Path(node.bento_dir) / "server.toml"
    os.chown(config, account.pw_uid, account.pw_gid)
    # tor wrote its cookie here, readable by its group: make that the user's group.
    os.chown(node.control_cookie, -1, account.pw_gid)
    drop = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", "--"]
    env = {**os.environ, "HOME": node.bento_dir}
    python = interpreter_for(account.pw_uid)
    if python is None:
        raise BentoError(f"no Python of version {sys.version.split()[0]} that {node.bento_user} may run")
    if python != sys.executable:
        env["PYTHONPATH"] = _our_path()
    return [*drop, python], env


def interpreter_for(uid: int) -> str | None:
    """Our interpreter if ``uid`` may run it, else the system's Python of our minor version
    (ours may be installed under /root), with our packages on its path; None if neither can
    import Bento as that user (our packages may be out of its reach too)."""
    if _runs_as(uid, sys.executable):
        python = sys.executable
    else:
        python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
        try:
            version = subprocess.run(
                [python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, timeout=30
            )
        except OSError:
            return None
        # The same minor version: the packages' compiled parts are built for its ABI.
        if version.stdout.split(".")[:2] != sys.version.split(".")[:2]:
            return None
    account = pwd.getpwuid(uid)
    drop = ["setpriv", f"--reuid={uid}", f"--regid={account.pw_gid}", "--init-groups", "--"]
    env = {**os.environ, "HOME": "/", "PYTHONPATH": _our_path()} if python != sys.executable else None
    try:
        tried = subprocess.run(
            [*drop, python, "-c", "import bento.server.daemon"], env=env, capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return python if tried.returncode == 0 else None


def _our_path() -> str:
    return os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())


def _runs_as(uid: int, program: str) -> bool:
    """Can ``uid`` execute ``program`` (every directory on its way searchable)?"""
    path = Path(program).resolve()
    for step in [*reversed(path.parents), path]:
        info = step.stat()
        mode = info.st_mode
        bit = 0o100 if info.st_uid == uid else 0o001  # group membership aside: a dedicated user
        if not mode & bit:
            return False
    return True


def _resolver_setting(directory: Path) -> str:
    """The testnet's nameserver as the box's resolver (the same its relay's resolv.conf names)."""
    nameservers = read_resolv_conf(directory / RESOLV_CONF)
    if not nameservers:
        return ""
    host, port = nameservers[0]
    return f'resolver = "{host}:{port}"  # the testnet\'s nameserver: no name leaves the machine\n'


def stop(node: Node) -> None:
    if (proc := node.bento_process) is not None:
        proc.stop(grace=10.0)


def wait_published(node: Node, deadline: float) -> None:
    """Wait until the server has published its onion service (it writes server.json then)."""
    assert node.bento_dir is not None
    status = Path(node.bento_dir) / STATUS_FILE
    while not status.exists():
        if not node.bento_alive():
            log = Path(node.bento_dir) / "server.log"
            raise BentoError(
                f"the Bento server of {node.nickname} exited during start-up; "
                f"the end of its log ({log}):\n{log_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise BentoError(f"the Bento server of {node.nickname} did not publish its onion service in time")
        time.sleep(0.2)


def server_status(node: Node) -> dict[str, object]:
    assert node.bento_dir is not None
    try:
        data: dict[str, object] = json.loads((Path(node.bento_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data


def unreachable(nodes: list[Node], socks: str, deadline: float) -> dict[str, str]:
    """Wait until every box's descriptor can be fetched (and verified) through the client;
    returns, by nickname, why each box that still could not be reached by ``deadline``."""
    from bento.client.box import Box  # the client depends on the testnet's users, not vice versa

    failures: dict[str, str] = {}

    async def probe(node: Node) -> None:
        assert node.bento_onion is not None
        while True:
            try:
                async with asyncio.timeout(max(1.0, min(30.0, deadline - time.monotonic()))):
                    async with Box(node.bento_onion, socks=socks) as box:
                        await box.descriptor()
                return
            except (BentoError, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    failures[node.nickname] = (
                        f"the box on {node.nickname} is not reachable over Tor ({exc or type(exc).__name__})"
                    )
                    return
                await asyncio.sleep(1.0)

    async def probe_all() -> None:
        async with asyncio.TaskGroup() as group:
            for node in nodes:
                group.create_task(probe(node))

    asyncio.run(probe_all())
    return failures


# A box's onion service is now and then slow to publish (its relay's first HSDir uploads
# fail while the consensus settles): that box is restarted, not the whole testnet failed.
ATTEMPTS = 3
ATTEMPT_SECONDS = 60.0


def start_all(
    state: TestnetState,
    socks: str,
    *,
    deadline: float,
    say: Callable[[str], None],
    only: list[Node] | None = None,
) -> None:
    """Start the Bento servers of ``state`` (or ``only`` these) and wait until each answers
    over Tor, restarting a box that does not publish or answer within ``ATTEMPT_SECONDS``."""
    pending = list(state.boxes if only is None else only)
    for node in pending:
        start(node)
    state.save()
    for attempt in range(1, ATTEMPTS + 1):
        attempt_deadline = min(deadline, time.monotonic() + ATTEMPT_SECONDS)
        failures: dict[str, str] = {}
        for node in pending:
            try:
                wait_published(node, attempt_deadline)
            except BentoError as exc:
                failures[node.nickname] = str(exc)
        published = [n for n in pending if n.nickname not in failures]
        failures |= unreachable(published, socks, attempt_deadline)
        if not failures:
            return
        pending = [n for n in pending if n.nickname in failures]
        if attempt == ATTEMPTS or time.monotonic() >= deadline:
            raise BentoError(
                "; ".join(failures.values()),
                fix=f"see server.log in {state.directory}/{pending[0].nickname}-bento, or raise --timeout",
            )
        for node in pending:
            say(
                f"restarting the Bento server of {node.nickname} "
                f"(attempt {attempt + 1}): {failures[node.nickname]}"
            )
            stop(node)
            start(node)
        state.save()
