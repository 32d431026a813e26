"""Functions that attack their box: each is stopped, with a clear reason, and the box keeps serving.

Every attack is a real function uploaded over Tor to a testnet box. Throughout, a
well-behaved function on the same box answers pings; its latency is reported (the 2x
target is measured by bench/hostile_latency.py, not asserted here).
"""

from __future__ import annotations

import asyncio
import io
import statistics
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from functions import HELLO
from hostile import HOSTILE, PING, ping_round_trips
from support import TIMEOUT, bento_cli, run

from bento.client.box import Box
from bento.client.keyring import Deployment
from bento.protocol.manifest import Manifest
from bento.protocol.messages import EndCause, SessionState
from bento.protocol.policy import Needs, SyscallProfile
from bento.sandbox.host import work_dir_of
from bento.testnet import Node, Role, Testnet
from bento.testnet.boxes import server_status
from bento.testnet.site import LocalSite

pytestmark = [pytest.mark.testnet, pytest.mark.timeout(TIMEOUT * 3)]

NEEDS = Needs(
    memory_mb=64, cpu_seconds=3, wall_seconds=8, processes=8, open_files=64, scratch_mb=4, output_mb=1,
    network=True, instances=4,
)  # fmt: skip


@pytest.fixture
def box_node(each_box: Node) -> Node:
    """Each test here runs on the first box and on the box of a dedicated user (conftest)."""
    return each_box


@pytest.fixture
async def hostile(box: Box) -> AsyncIterator[Deployment]:
    deployment = await box.deploy(HOSTILE.encode(), Manifest(name="hostile", needs=NEEDS))
    yield deployment
    await box.shutdown(deployment)


async def test_hostile_functions_are_stopped_and_the_box_keeps_serving(
    testnet: Testnet, box: Box, box_node: Node, hostile: Deployment, tmp_path: Path
) -> None:
    # As long as the box allows: the attacks can take minutes on a busy host.
    ping = await box.deploy(PING.encode(), Manifest(name="ping", needs=Needs(wall_seconds=600)))
    session_id = await box.invoke(ping, "ping")
    async with await box.attach(ping, session_id) as stream:
        idle = await ping_round_trips(stream, 10)
        stop = asyncio.Event()

        async def keep_pinging() -> list[float]:
            seen: list[float] = []
            while not stop.is_set():
                seen += await ping_round_trips(stream, 1, pause=0.2)
            return seen

        background = asyncio.ensure_future(keep_pinging())
        try:
            await _attacks(testnet, box, box_node, hostile)
        finally:
            stop.set()
            busy = await background
    print(f"\nping latency: idle median {statistics.median(idle):.0f} ms, "
          f"under attack median {statistics.median(busy):.0f} ms, max {max(busy):.0f} ms "
          f"({len(busy)} pings)")  # fmt: skip
    assert busy, "the well-behaved function must keep answering during the attacks"
    await box.shutdown(ping)


async def _attacks(testnet: Testnet, box: Box, node: Node, hostile: Deployment) -> None:
    tor_dir = Path(node.data_dir)
    status = server_status(node)

    async def attack(entry: str, *args: object) -> tuple[bytes, object]:
        output, ended = await run(box, hostile, entry, *args)
        return output, ended

    # Files outside the sandbox: server state, tor's keys, the host's secrets.
    secrets = [f"{node.bento_dir}/identity.key", str(tor_dir / "keys" / "secret_id_key"), "/etc/shadow",
               "/root/.bashrc", str(tor_dir / "torrc")]  # fmt: skip
    _, ended = await attack("read_files", secrets)
    assert ended.state is SessionState.COMPLETED
    for path, outcome in ended.result.items():
        assert outcome.startswith(("FileNotFoundError", "PermissionError")), (path, outcome)

    _, ended = await attack("write_files", ["/function/x.py", "/usr/x", "/x", "/opt/bento/x", "/tmp/ok"])
    result = ended.result
    assert result.pop("/tmp/ok") == "ALLOWED: 1", "scratch space must be writable"
    for path, outcome in result.items():
        assert outcome.startswith(("OSError", "PermissionError", "FileNotFoundError")), (path, outcome)

    _, ended = await attack("fill_scratch")
    assert ended.result["error"] in ("ENOSPC", "EFBIG") and ended.result["written"] <= NEEDS.scratch_mb << 20

    _, ended = await attack("memory_bomb")
    assert ended.state is not SessionState.COMPLETED and ended.cause is EndCause.MEMORY, ended.reason
    # Its memory, its threads' stacks and the interpreter's own pages: nowhere near the policy's.
    assert ended.usage.peak_memory_bytes <= (NEEDS.memory_mb + NEEDS.processes + 24) << 20, ended.usage

    # Its own wall limit, far off: on a busy host (CI shares 2 cores) 3 CPU seconds can
    # take longer than the 8 s of wall time the others get, and the wall must not win.
    spinner = await box.deploy(
        HOSTILE.encode(), Manifest(name="spinner", needs=NEEDS.model_copy(update={"wall_seconds": 120}))
    )
    _, ended = await run(box, spinner, "spin")
    assert ended.cause is EndCause.CPU, ended.reason
    assert ended.usage.cpu_seconds >= NEEDS.cpu_seconds - 0.5
    await box.shutdown(spinner)

    started = time.monotonic()
    _, ended = await attack("sleep_forever")
    assert ended.cause is EndCause.WALL, ended.reason
    assert time.monotonic() - started < NEEDS.wall_seconds + 30

    output, ended = await attack("flood")
    assert ended.cause is EndCause.OUTPUT, ended.reason
    assert len(output) <= NEEDS.output_mb << 20

    _, ended = await attack("sockets")
    for kind in ("packet", "raw", "netlink"):
        assert ended.result[kind].startswith("PermissionError"), ended.result
    assert ended.result["interfaces"] == ["lo"]

    control = (node.control_port, "tor's control port")
    api_port = int(str(status["api"]).rsplit(":", 1)[1])
    targets = [("127.0.0.1", node.control_port), ("127.0.0.1", node.or_port), ("127.0.0.1", api_port),
               ("192.0.2.1", 80)]  # fmt: skip
    _, ended = await attack("reach", targets)
    for target, outcome in ended.result.items():
        assert not outcome.startswith("ALLOWED"), (target, outcome, control)
        if target.startswith("broker"):
            assert outcome.startswith("PermissionError: Bento broker"), (target, outcome)
    assert "own services" in ended.result[f"broker 127.0.0.1:{node.control_port}"]
    assert "exit policy" in ended.result["broker 192.0.2.1:80"]
    assert ended.usage.network_denied == 4

    async with LocalSite({"/": b"fetched through the broker"}) as site:
        _, ended = await attack("fetch", site.url)
    assert ended.result == "fetched through the broker", ended.reason
    assert ended.usage.network_granted == 1

    server_pid = int(str(status["pid"]))
    _, ended = await attack("privileges", server_pid)
    result = ended.result
    assert result.pop("uid") == 65534
    for action, outcome in result.items():
        assert outcome.startswith(("PermissionError", "ProcessLookupError", "OSError: [Errno 1]")), (
            action,
            outcome,
        )

    _, ended = await attack("devices")
    assert ended.result.pop("/dev/null") == "ALLOWED: b''"
    for device, outcome in ended.result.items():
        assert outcome.startswith(("FileNotFoundError", "PermissionError")), (device, outcome)

    _, ended = await attack("proc_root")
    assert not {"root", "home", "work", "var", "srv"} & set(ended.result["listing"]), ended.result
    assert ended.result["shadow"].startswith("FileNotFoundError")
    assert len(ended.result["pids"]) <= 3, "the instance sees only its own processes"

    _, ended = await attack("descriptors")
    links = ended.result
    assert len(links) <= 6, links  # stdin, stdout, stderr, the channel, the broker, the listing itself
    for fd, target in links.items():
        assert not any(word in target for word in ("bento-", "testnet", "identity", ".key")), (fd, target)

    _, ended = await attack("open_files")
    assert ended.result["error"] == "EMFILE" and ended.result["opened"] <= NEEDS.open_files

    procs = await box.deploy(
        HOSTILE.encode(),
        Manifest(name="forker", needs=NEEDS.model_copy(update={"syscall_profiles": [SyscallProfile.COMPUTE,
                                                                                    SyscallProfile.PROCESSES]})),
    )  # fmt: skip
    _, ended = await run(box, procs, "fork_bomb")
    assert ended.state is SessionState.COMPLETED, ended.reason
    assert ended.result["error"] == "EAGAIN" and ended.result["children"] < NEEDS.processes, ended.result
    _, ended = await run(box, hostile, "fork_bomb")  # without the processes profile: no fork at all
    assert ended.result["children"] == 0 and ended.result["error"] == "EPERM", ended.result
    await box.shutdown(procs)

    # Every limit held; the descriptor says how, and that nothing it admits is unenforced.
    isolation = (await box.descriptor()).runtime.isolation
    assert isolation["processes"].startswith("RLIMIT_NPROC per user namespace"), isolation
    if node.bento_user is not None:
        assert isolation["uid"].startswith("the server's uid"), isolation
        assert isolation["cpu_share"] == "not enforced", "accepted by name in its server.toml"
    assert [k for k, v in isolation.items() if v == "not enforced"] in ([], ["cpu_share"]), isolation

    # After all that, the server is the same process, and serves.
    assert server_status(node)["pid"] == status["pid"]
    assert node.bento_alive() and node.role is Role.EXIT
    assert (await box.descriptor()).boot_id
    del testnet


def _link_chain(neighbour_id: str) -> bytes:
    """Issue 18's archive: `esc -> l2/l2/../..` checked before `l2 -> .` exists, so that `esc/` is
    the functions directory and `top/` the directory of the runtime every sandbox imports."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, link in (("esc", "l2/l2/../.."), ("top", "l2/l2/l2/../../.."), ("l2", ".")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, link
            archive.addfile(info)
        for name, data in (("main.py", HELLO), (f"esc/{neighbour_id}/code/planted.py", "planted = True\n"),
                           ("top/runtime/json.py", "planted = True\n")):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data.encode())
            archive.addfile(info, io.BytesIO(data.encode()))
    return out.getvalue()


def _snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_mode, None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


async def test_a_hostile_archive_deployed_with_the_cli_is_refused_and_touches_nothing(
    testnet: Testnet, box: Box, box_node: Node, tmp_path: Path
) -> None:
    neighbour = await box.deploy(HELLO.encode(), Manifest(name="neighbour"))
    assert box_node.bento_dir is not None
    work = work_dir_of(Path(box_node.bento_dir))
    runtime, neighbour_code = work / "runtime", work / "functions" / neighbour.function_id / "code"
    before = (_snapshot(runtime), _snapshot(neighbour_code), sorted((work / "functions").iterdir()))
    writable = [name for name, (mode, _) in before[0].items() if mode & 0o222]
    assert before[0] and not writable, f"the runtime is read-only to the server's user: {writable}"

    hostile = tmp_path / "hostile.tar.gz"
    hostile.write_bytes(_link_chain(neighbour.function_id))
    status, _, stderr = await bento_cli(
        testnet, tmp_path / "keyring.json", "deploy", str(hostile), "--box", box_node.nickname
    )
    assert status != 0 and "'esc' is a symbolic link: an upload holds only regular files" in stderr, stderr
    assert "bento deploy DIRECTORY" in stderr, "the refusal says what to do"

    after = (_snapshot(runtime), _snapshot(neighbour_code), sorted((work / "functions").iterdir()))
    assert after == before, "nothing of the refused upload is written, anywhere"
    output, ended = await run(box, neighbour, "main", "neighbour")
    assert output == b"hello neighbour\n" and ended.state is SessionState.COMPLETED
    await box.shutdown(neighbour)


def test_the_box_s_server_writes_no_core_and_its_own_user_cannot_trace_it(box_node: Node) -> None:
    pid = int(str(server_status(box_node)["pid"]))
    core = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines() if "core" in line)
    assert core.split()[4:6] == ["0", "0"], core
    status = Path(f"/proc/{pid}/status")
    uid = int(next(line for line in status.read_text().splitlines() if line.startswith("Uid:")).split()[1])
    if uid != 0:  # the box of a dedicated user (as root, /proc/<pid> is root's anyway)
        assert status.stat().st_uid == 0, "an undumpable process's /proc entries are root's, not its user's"
