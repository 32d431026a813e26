"""The instance side: ``python -m bento.runtime FD`` speaking frames over a socket pair.

Run as the server runs it (src/bento/sandbox/command.py) minus the sandbox: isolated mode,
one inherited socket, the code directory as working directory, a bare environment.
"""

from __future__ import annotations

import ctypes
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bento.protocol.frames import HEADER, MAX_PAYLOAD, Frame, decode_header, encode, encode_json
from bento.protocol.policy import Needs
from bento.sandbox.host import _encoded_filter
from bento.sandbox.spec import Spec

MODULE = """
from bento.runtime import api

def hello(name, *, times=1):
    for _ in range(times):
        api.send(f"hello {name}\\n")
    api.send(b"\\x00\\xff")
    api.send("")            # nothing to send: no frame
    return {"name": name, "times": times}

def big(size):
    api.send(bytes(size))
    return size

def fail():
    def inner():
        raise KeyError("missing thing")
    inner()

def unserialisable():
    return {1, 2, 3}

def echo():
    count = 0
    while (data := api.recv()) is not None:
        count += 1
        api.send(data[::-1])
    return [count, api.recv()]   # after EOF, recv keeps returning None

def polling():
    seen = [api.poll(0.0)]            # no input yet
    api.send("ready")
    seen.append(api.poll(10.0))       # input arrives
    seen.append(api.recv().decode())
    seen.append(api.poll(10.0))       # the client closes its input
    seen.append(api.recv())
    return seen

def impatient():
    try:
        api.recv(timeout=0.1)
    except TimeoutError as exc:
        return str(exc)
    return "no timeout"

def wait_forever():
    api.send("waiting")
    return api.recv()
"""


def _confinement() -> dict[str, Any]:
    """What the server's START frame carries for a function with default needs: its spec's
    rlimits (but RLIMIT_NPROC, which outside a user namespace would count every process of
    this uid) and its real seccomp program."""
    needs = Needs()
    spec = Spec.of(needs)
    frame = spec.start_frame(_encoded_filter(spec.syscalls))
    frame["rlimits"] = {k: v for k, v in spec.rlimits().items() if k != "RLIMIT_NPROC"}
    return frame


CONFINE = _confinement()


def _no_new_privileges() -> None:
    # bubblewrap sets it in a real sandbox; installing a seccomp filter needs it (or root).
    ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS


class Instance:
    """The server's end: a blocking socket and the instance process."""

    def __init__(self, code_dir: Path) -> None:
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-m", "bento.runtime", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            preexec_fn=_no_new_privileges,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=code_dir,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
        )
        theirs.close()
        ours.settimeout(15)
        self.sock = ours
        self.code_dir = code_dir
        ready = getattr(Frame, "READY", None)
        if ready is not None:  # the runtime announces itself before it reads START
            assert self.frame() == (ready, b"")

    def start(self, entry: str, *args: Any, **kwargs: Any) -> None:
        start = {
            "code_dir": str(self.code_dir),
            "module": "main",
            "entry": entry,
            "args": args,
            "kwargs": kwargs,
            "confine": CONFINE,
        }
        self.sock.sendall(encode_json(Frame.START, start))

    def frame(self) -> tuple[Frame, bytes] | None:
        header = self._exactly(HEADER.size)
        if header is None:
            return None
        kind, length = decode_header(header)
        payload = self._exactly(length)
        assert payload is not None, "the instance closed in the middle of a frame"
        return kind, payload

    def _exactly(self, size: int) -> bytes | None:
        data = bytearray()
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                assert not data, "truncated frame"
                return None
            data += chunk
        return bytes(data)

    def frames(self) -> list[tuple[Frame, bytes]]:
        """Every frame until the instance ends its side; then we hang up ours, as the server
        does, and it exits."""
        out = []
        while (frame := self.frame()) is not None:
            out.append(frame)
        self.sock.shutdown(socket.SHUT_WR)
        return out

    def exit_code(self) -> int:
        return self.process.wait(timeout=15)

    def close(self) -> None:
        self.sock.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        assert self.process.stderr is not None
        self.process.stderr.close()


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Instance]:
    (tmp_path / "main.py").write_text(MODULE)
    started = Instance(tmp_path)
    try:
        yield started
    finally:
        started.close()


def _final(frames: list[tuple[Frame, bytes]], kind: Frame) -> Any:
    assert frames, "no frames at all"
    last_kind, payload = frames[-1]
    assert last_kind is kind, (last_kind, payload)
    assert all(k is Frame.OUTPUT for k, _ in frames[:-1]), "only output comes before the end"
    return json.loads(payload)


def test_output_frames_then_the_result(instance: Instance) -> None:
    instance.start("hello", "bento", times=2)
    frames = instance.frames()
    assert frames == [
        (Frame.OUTPUT, b"hello bento\n"),
        (Frame.OUTPUT, b"hello bento\n"),
        (Frame.OUTPUT, b"\x00\xff"),
        (Frame.RESULT, b'{"value": {"name": "bento", "times": 2}}'),
    ]
    assert instance.exit_code() == 0


def test_large_sends_are_split_into_bounded_frames(instance: Instance) -> None:
    size = 2 * MAX_PAYLOAD + 10
    instance.start("big", size)
    frames = instance.frames()
    assert _final(frames, Frame.RESULT) == {"value": size}
    outputs = [payload for _, payload in frames[:-1]]
    assert [len(p) for p in outputs] == [MAX_PAYLOAD, MAX_PAYLOAD, 10]
    assert b"".join(outputs) == bytes(size)


def test_an_exception_is_reported_with_its_traceback(instance: Instance) -> None:
    instance.start("fail")
    error = _final(instance.frames(), Frame.ERROR)
    assert error["type"] == "KeyError"
    assert error["message"] == "'missing thing'"
    assert 'raise KeyError("missing thing")' in error["traceback"]
    assert "main.py" in error["traceback"] and "in inner" in error["traceback"]
    assert instance.exit_code() == 0


def test_a_value_that_is_not_json_is_a_type_error(instance: Instance) -> None:
    instance.start("unserialisable")
    error = _final(instance.frames(), Frame.ERROR)
    assert error["type"] == "TypeError"
    assert "not JSON-serialisable" in error["message"]


@pytest.mark.parametrize(
    ("entry", "args", "kind"),
    [("missing", [], "AttributeError"), ("hello", [], "TypeError"), ("hello", [1, 2], "TypeError")],
)
def test_bad_calls_are_errors_not_crashes(instance: Instance, entry: str, args: list[Any], kind: str) -> None:
    instance.start(entry, *args)
    assert _final(instance.frames(), Frame.ERROR)["type"] == kind


def test_a_missing_module_is_an_error(tmp_path: Path) -> None:
    started = Instance(tmp_path)  # no main.py here
    try:
        started.start("anything")
        assert _final(started.frames(), Frame.ERROR)["type"] == "ModuleNotFoundError"
    finally:
        started.close()


def test_input_until_eof_then_recv_returns_none(instance: Instance) -> None:
    instance.start("echo")
    for chunk in (b"abc", b"", b"\x00\x01"):
        instance.sock.sendall(encode(Frame.INPUT, chunk))
    instance.sock.sendall(encode(Frame.EOF))
    frames = instance.frames()
    assert frames[:-1] == [
        (Frame.OUTPUT, b"cba"),
        (Frame.OUTPUT, b"\x01\x00"),
    ]  # an empty reverse sends nothing
    assert _final(frames, Frame.RESULT) == {"value": [3, None]}


def test_poll_sees_pending_input_and_eof(instance: Instance) -> None:
    instance.start("polling")
    assert instance.frame() == (Frame.OUTPUT, b"ready")
    instance.sock.sendall(encode(Frame.INPUT, b"data"))
    instance.sock.sendall(encode(Frame.EOF))
    assert _final(instance.frames(), Frame.RESULT) == {"value": [False, True, "data", True, None]}


def test_recv_with_a_timeout_raises_timeout_error(instance: Instance) -> None:
    instance.start("impatient")
    assert _final(instance.frames(), Frame.RESULT) == {"value": "no input from the client in time"}


def test_the_instance_exits_quietly_when_the_server_goes_away(instance: Instance) -> None:
    instance.start("wait_forever")
    assert instance.frame() == (Frame.OUTPUT, b"waiting")
    instance.sock.close()
    assert instance.exit_code() == 0
    assert instance.process.stderr is not None
    assert instance.process.stderr.read() == b"", "no traceback: nobody is left to read it"


def test_the_first_frame_must_be_start(instance: Instance) -> None:
    instance.sock.sendall(encode(Frame.INPUT, b"hello"))
    assert instance.frames() == []
    assert instance.exit_code() != 0


def test_the_api_outside_a_function_says_so() -> None:
    from bento.runtime import api

    with pytest.raises(RuntimeError, match="only usable inside a running Bento function"):
        api.send("x")


def test_the_channel_waits_on_a_descriptor_past_1023() -> None:
    """The server's descriptor numbers pass into the sandbox: on a box of hundreds of
    instances they are past 1023, where select() fails (every session of a 500 burst did)."""
    import os

    from bento.runtime.channel import Channel

    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    ours, theirs = socket.socketpair()
    try:
        assert theirs.fileno() >= 1024
        channel = Channel(theirs)
        assert channel.read_frame(timeout=0.05) is None  # nothing yet: it waited, and timed out
        ours.sendall(encode(Frame.READY))
        assert channel.read_frame(timeout=5) == (Frame.READY, b"")
    finally:
        ours.close()
        theirs.close()
        for fd in filler:
            os.close(fd)
