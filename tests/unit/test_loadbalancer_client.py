"""``bento loadbalance``: what it refuses before touching the network, and the replica's upload."""

from __future__ import annotations

import gzip
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bento.errors import BentoError
from bento.functions.loadbalancer import client as lb

SERVICE = "def handle(conn):\n    conn.sendall(conn.recv(100))\n"


def bento(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BENTO_KEYRING": str(tmp_path / "keyring.json"), "BENTO_CONTROL": "127.0.0.1:1"}
    return subprocess.run(
        [sys.executable, "-m", "bento", "loadbalance", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.fixture
def service(tmp_path: Path) -> Path:
    path = tmp_path / "echo.py"
    path.write_text(SERVICE)
    return path


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max", "1000"], "argument --max: 1000 replicas: give 1 to 64"),
        (["--min", "0"], "argument --min: 0 replicas: give 1 to 64"),
        (["--max", "lots"], "'lots' is not a whole number"),
        (["--up-after", "-3"], "give more than 0"),
        (["--concurrency", "0"], "argument --concurrency"),
    ],
)
def test_absurd_numbers_are_refused_by_the_parser(
    tmp_path: Path, service: Path, options: list[str], message: str
) -> None:
    done = bento(tmp_path, str(service), "--box", "exit0", "--boxes", "exit1", *options)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_inconsistent_settings_and_bad_services_are_refused_before_any_network(
    tmp_path: Path, service: Path
) -> None:
    # BENTO_CONTROL points nowhere: each of these must fail before it is asked.
    done = bento(tmp_path, str(service), "--box", "e0", "--boxes", "e1", "--min", "5", "--max", "2", "--json")
    assert (
        done.returncode == 1 and "--min 5 is more than --max 2" in json.loads(done.stdout)["error"]["message"]
    )
    done = bento(tmp_path, str(service), "--box", "e0", "--boxes", "e1", "--low", "3", "--high", "2")
    assert done.returncode == 1 and "--low < --high" in done.stderr
    no_handler = tmp_path / "nothing.py"
    no_handler.write_text("def serve(conn):\n    pass\n")
    done = bento(tmp_path, str(no_handler), "--box", "e0", "--boxes", "e1")
    assert done.returncode == 1 and "has no top-level function handle(conn)" in done.stderr
    assert "--entry" in done.stderr  # the fix
    broken = tmp_path / "broken.py"
    broken.write_text("def handle(conn):\n    return (\n")
    done = bento(tmp_path, str(broken), "--box", "e0", "--boxes", "e1")
    assert done.returncode == 1 and "is not valid Python" in done.stderr
    done = bento(tmp_path, str(tmp_path / "missing.py"), "--box", "e0", "--boxes", "e1")
    assert done.returncode == 1 and "cannot read the service function" in done.stderr


def test_the_replica_upload_holds_the_service_and_the_wrapper(service: Path) -> None:
    code = lb.replica_code(service)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(code))) as archive:
        names = archive.getnames()
        source = archive.extractfile("bento_lb_service.py")
        assert source is not None and source.read().decode() == SERVICE
    assert sorted(names) == [
        "bento_lb_replica/__init__.py",
        "bento_lb_replica/replica.py",
        "bento_lb_service.py",
    ]
    assert lb.replica_code(service) == code  # reproducible: the same service, the same upload
    with pytest.raises(BentoError, match="no top-level function serve"):
        lb.replica_code(service, entry="serve")


def test_the_balancer_carries_broker_calls_on_no_more_threads_than_its_box_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Threads count as processes: a box that lowered the manifest's processes (fit) must not
    see the balancer fail to start a thread under load."""
    from bento.functions.loadbalancer import function

    for allowed, threads in ((resource.RLIM_INFINITY, 64), (73, 64), (33, 25), (9, 1), (3, 1)):
        monkeypatch.setattr(resource, "getrlimit", lambda _which, allowed=allowed: (allowed, allowed))
        assert function.broker_threads() == threads, allowed
    assert lb.manifest("svc", 600, 60).needs.processes == function.BROKER_THREADS + function.OTHER_THREADS
