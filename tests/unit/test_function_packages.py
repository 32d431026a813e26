"""A function's imports: its vendored packages and wheels, the box's offered packages,
and libraries that open their own sockets, all in real sandboxes of an in-process box."""

from __future__ import annotations

import base64
import io
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from localbox import LocalBox

from bento.protocol.manifest import Manifest

MAIN = """
import asyncio, socket, sys
from bento.runtime import api

def imports():
    import greeting, tinywheel
    return [greeting.hello(), tinywheel.NAME, tinywheel.__file__.split("/")[-3], sys.path]

def _outcome(action):
    try:
        action()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "connected"

def sockets():
    def plain():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(("192.0.2.1", 80))
    def plain_ex():
        code = socket.socket().connect_ex(("192.0.2.1", 80))
        raise OSError(code, "connect_ex")
    def streams():
        asyncio.run(asyncio.wait_for(asyncio.open_connection("192.0.2.1", 80), 10))
    return {"plain": _outcome(plain), "streams": _outcome(streams), "ex": _outcome(plain_ex)}

def offered():
    import bento.client, httpx, pydantic, pydantic_core, cryptography
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    Ed25519PrivateKey.generate()
    return {"httpx": httpx.__version__, "pydantic": pydantic.VERSION, "client": bento.client.__name__}
"""


def _wheel(files: dict[str, str], compiled: bool = False) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
        if compiled:
            wheel.writestr("fast/_speed.cpython-311-x86_64-linux-gnu.so", b"\x7fELF")
    return out.getvalue()


def _archive(files: dict[str, bytes | str]) -> str:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(raw), 0o644
            archive.addfile(info, io.BytesIO(raw))
    return base64.b64encode(out.getvalue()).decode()


TINY_WHEEL = _wheel(
    {
        "tinywheel/__init__.py": "NAME = 'from a wheel'\n",
        "tinywheel-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinywheel\nVersion: 1.0\n",
    }
)
FILES: dict[str, bytes | str] = {
    "main.py": MAIN,
    "vendor/greeting/__init__.py": "def hello():\n    return 'hello from vendor/'\n",
    "vendor/greeting/py2_only.py": "print 'never imported'\n",  # third-party leftovers are not checked
    "vendor/tinywheel-1.0-py3-none-any.whl": TINY_WHEEL,
}
NETWORK = {"policy": {"network": {"allowed": True}, "syscall_profiles": ["compute", "network"]}}


async def _upload(box: LocalBox, files: dict[str, bytes | str], needs: dict[str, Any]) -> Any:
    body = {"manifest": {"name": "pkgs", "needs": needs}, "kind": "tar.gz", "code": _archive(files)}
    return await box.http.post("/v1/functions", json=body)


async def _call(
    box: LocalBox, needs: dict[str, Any], entry: str, files: dict[str, bytes | str] = FILES
) -> Any:
    """Deploy ``files`` as a directory, with the real client, and run ``entry`` to its end."""
    with tempfile.TemporaryDirectory() as scratch:
        for name, data in files.items():
            path = Path(scratch) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data.encode() if isinstance(data, str) else data)
        manifest = Manifest.model_validate({"name": "pkgs", "needs": needs})
        function = await box.client.deploy(Path(scratch), manifest)
    session_id = await box.invoke(function, entry)
    info = await box.wait_state(function, session_id, timeout=60)
    error = box.registry.sessions[session_id].error
    assert info["state"] == "completed", error.traceback if error else info["reason"]
    return box.registry.sessions[session_id].result


async def test_vendored_packages_and_wheels_are_importable(box: LocalBox) -> None:
    greeting, wheel_name, wheel_file, path = await _call(box, {}, "imports")
    assert (greeting, wheel_name) == ("hello from vendor/", "from a wheel")
    assert wheel_file == "tinywheel-1.0-py3-none-any.whl", "imported from the wheel in place"
    assert path[:3] == ["/function", "/function/vendor", "/function/vendor/tinywheel-1.0-py3-none-any.whl"]
    # The runtime comes after the standard library: nothing in it can stand in for a module of Python's.
    standard = [i for i, entry in enumerate(path) if entry.startswith("/usr/lib/python3")]
    assert standard and path.index("/opt/bento") > max(standard), path


@pytest.mark.parametrize("box_limits", [NETWORK])
async def test_libraries_own_sockets_go_through_the_broker(box: LocalBox) -> None:
    needs = {"network": True, "syscall_profiles": ["compute", "network"]}
    result = await _call(box, needs, "sockets")
    # This box's broker has no exit policy from tor (closed gate): the refusal is the broker's,
    # not the sandbox's empty network namespace answering "Connection refused".
    assert result["plain"].startswith("PermissionError: Bento broker: the relay's exit policy"), result
    assert result["streams"].startswith("PermissionError: Bento broker: the relay's exit policy"), result
    assert result["ex"] == "PermissionError: [Errno 13] connect_ex", result


@pytest.mark.parametrize("box_limits", [NETWORK])
async def test_a_socket_without_the_network_profile_says_what_to_declare(box: LocalBox) -> None:
    result = await _call(box, {"network": True}, "sockets")
    assert "needs.syscall_profiles" in result["plain"] and result["plain"].startswith("PermissionError"), (
        result
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"vendor/fast-1.0-cp311-cp311-linux_x86_64.whl": _wheel({}, compiled=True)}, "compiled parts"),
        ({"vendor/broken.whl": b"not a zip"}, "not a wheel"),
        ({"vendor/speed.cpython-311-x86_64-linux-gnu.so": b"\x7fELF"}, "compiled code"),
        ({"helper.py": "def broken(:\n"}, "syntax error in helper.py"),
    ],
)
async def test_uploads_with_unusable_packages_are_refused(
    box: LocalBox, extra: dict[str, bytes], message: str
) -> None:
    response = await _upload(box, {**FILES, **extra}, {})
    assert response.status_code == 422 and message in response.text, response.text


@pytest.mark.parametrize("box_limits", [{"policy": {"packages": ["bento"]}}])
async def test_offered_packages_are_importable_and_in_the_descriptor(box: LocalBox) -> None:
    result = await _call(box, {"memory_mb": 256}, "offered")
    assert result["client"] == "bento.client"
    descriptor = (await box.http.get("/v1/descriptor")).json()["descriptor"]
    offered = {p["name"].lower().replace("_", "-"): p for p in descriptor["runtime"]["packages"]}
    assert offered["httpx"]["version"] == result["httpx"]
    assert offered["pydantic"]["version"] == result["pydantic"]
    assert "pydantic_core" in offered["pydantic-core"]["modules"]
    assert offered["bento"]["modules"] == ["bento"]
