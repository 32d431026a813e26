"""Bento servers on testnet relays (``bento testnet up --bento-boxes M``).

Each box gets its identity before its relay starts, so the relay's very first
descriptor already advertises ``bento=<onion>``; the server is started once the network
is usable, and is ready when its onion service answers through the testnet's client.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path

import stem

from bento.errors import BentoError
from bento.protocol.policy import NodePolicy
from bento.server import identity
from bento.server.daemon import STATUS_FILE
from bento.testnet.box_policy import accepted_unenforced, default_policy, server_config
from bento.testnet.services import RESOLV_CONF
from bento.testnet.state import Node, TestnetState
from bento.testnet.uploads import DescriptorUploads
from bento.tor import control
from bento.tor.process import log_tail, spawn_detached
from bento.tor.resolver import read_resolv_conf

POLICY_FILE = "testnet-policy.json"  # in the box's state directory, written once by prepare()


def prepare(node: Node, directory: Path, user: str | None = None, policy: NodePolicy | None = None) -> None:
    """Make the box's state directory, identity and policy (default: the testnet's, see
    box_policy.py); its onion goes into the relay's torrc.

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
    (state_dir / POLICY_FILE).write_text((policy or default_policy()).model_dump_json())
    if node.bento_user is not None:
        for path in [state_dir, *state_dir.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)


def privileged(node: Node) -> bool:
    """Whether ``node``'s server runs as root (every limit enforced, or it refuses to start)."""
    return node.bento_user is None and os.geteuid() == 0


def start(node: Node) -> None:
    """Start the Bento server beside ``node``'s tor, detached like the tor processes."""
    assert node.bento_dir is not None
    state_dir = Path(node.bento_dir)
    (state_dir / STATUS_FILE).unlink(missing_ok=True)
    config = state_dir / "server.toml"
    # The testnet's directory holds every relay's data directory (a box run by its own
    # user keeps its state elsewhere).
    policy = NodePolicy.model_validate_json((state_dir / POLICY_FILE).read_text())
    base = server_config(policy, privileged=privileged(node))
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


_INTERPRETERS: dict[int, str] = {}  # uid -> the Python found to import Bento as that user


def interpreter_for(uid: int) -> str | None:
    """Our interpreter if ``uid`` may run it, else the system's Python of our minor version
    (ours may be installed under /root), with our packages on its path; None if neither can
    import Bento as that user (our packages may be out of its reach too).

    The answer found is kept for the process: finding it imports the server as that user
    (0.8 s on a quiet host, more on a loaded one), which every restart of the box paid
    before its server even started."""
    if (known := _INTERPRETERS.get(uid)) is not None:
        return known
    found = _find_interpreter(uid)
    if found is not None:
        _INTERPRETERS[uid] = found
    return found


def _find_interpreter(uid: int) -> str | None:
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


def wait_published(node: Node, deadline: float, uploads: DescriptorUploads | None = None) -> None:
    """Wait until the server has published its onion service (it writes server.json then),
    keeping its relay building circuits meanwhile (``uploads``, see its keep_building)."""
    assert node.bento_dir is not None
    status = Path(node.bento_dir) / STATUS_FILE
    while not status.exists():
        if uploads is not None:
            uploads.keep_building()
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
                    # A timeout's str() is empty: name what was tried and how it failed.
                    how = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    failures[node.nickname] = (
                        f"the box on {node.nickname} is not reachable over Tor "
                        f"(fetching its descriptor through the client failed: {how})"
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
    over Tor, restarting a box that does not publish or answer within ``ATTEMPT_SECONDS``.

    Each box's relay is watched for its uploads (tor's HS_DESC events): a box that fails
    says what tor said, and once the HSDirs have a box's new descriptor the client is told
    to fetch it from them, so that it never keeps an older one of a server started before.
    """
    pending = list(state.boxes if only is None else only)
    if only is None and not all(privileged(n) for n in pending):
        say(
            f"the Bento boxes run without root, so they may be unable to cap their functions' "
            f"{' and '.join(accepted_unenforced())} (no cgroup): the testnet accepts that "
            "(accept_unenforced; each box's descriptor says how every limit is enforced); "
            "run it as root for every limit"
        )
    with ExitStack() as watching:
        uploads = {
            n.nickname: watching.enter_context(DescriptorUploads(n.control_address, n.bento_onion or ""))
            for n in pending
        }
        for node in pending:
            start(node)
        state.save()
        for attempt in range(1, ATTEMPTS + 1):
            attempt_deadline = min(deadline, time.monotonic() + ATTEMPT_SECONDS)
            failures: dict[str, str] = {}
            for node in pending:
                try:
                    wait_published(node, attempt_deadline, uploads[node.nickname])
                except BentoError as exc:
                    failures[node.nickname] = f"{exc}: {uploads[node.nickname].explain()}"
            published = [n for n in pending if n.nickname not in failures]
            settle_by = min(attempt_deadline, time.monotonic() + SETTLE_SECONDS)  # all boxes at once
            for node in published:
                _fetch_where_published(state, uploads[node.nickname], settle_by)
            for nickname, why in unreachable(published, socks, attempt_deadline).items():
                failures[nickname] = f"{why}; {uploads[nickname].explain()}"
            if not failures:
                return
            pending = [n for n in pending if n.nickname in failures]
            if attempt == ATTEMPTS or time.monotonic() >= deadline:
                raise BentoError(
                    "; ".join(failures.values()),
                    fix=f"see {pending[0].bento_dir}/server.log and its relay's {pending[0].log}, "
                    "or raise --timeout",
                )
            for node in pending:
                say(
                    f"restarting the Bento server of {node.nickname} "
                    f"(attempt {attempt + 1}): {failures[node.nickname]}"
                )
                stop(node)
                uploads[node.nickname].forget()
                start(node)
            state.save()


SETTLE_SECONDS = 10.0  # after a box published, for the rest of its HSDirs' answers


def _fetch_where_published(state: TestnetState, uploads: DescriptorUploads, settle_by: float) -> None:
    """Have the client fetch a box's new descriptor from the HSDirs that took it (HSFETCH).

    A client that asks an HSDir the new descriptor has not reached yet, or keeps the
    descriptor of a server started before (its introduction points are gone), asks no
    HSDir again for 15 minutes: the box would stay unreachable for it that long. The
    fetched descriptor replaces any older one (it has a higher revision counter). Waiting
    for the other HSDirs' answers first (up to ``settle_by``) means that whichever the
    client asks later has it too.
    """
    uploads.wait_settled(settle_by)
    accepted = uploads.accepted()
    if not accepted:
        return  # the probe that follows asks tor's own way, and says why it failed
    servers = " ".join(f"SERVER=${fingerprint}" for fingerprint in accepted)
    # A refusal (an HSDir the client's consensus does not list yet, say) leaves the
    # client to fetch its own way: the probe that follows says whether it reaches the box.
    with (
        suppress(BentoError, stem.ControllerError, stem.SocketError),
        control.connect(state.client.control_address) as ctl,
    ):
        ctl.msg(f"HSFETCH {uploads.onion} {servers}")
