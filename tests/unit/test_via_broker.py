"""The client's transport inside a function: httpx over streams the broker opens."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from bento.client.via_broker import BrokerTransport, inside_a_function
from bento.runtime import net


class FakeBroker:
    """The broker's side of the instance's socket: answers tor.stream with a socket to a
    one-shot HTTP server, or refuses; records every request."""

    def __init__(self, refuse: str | None = None) -> None:
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.refuse = refuse
        self.requests: list[dict[str, object]] = []
        self.seen = b""
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while data := self.ours.recv(4096):
            tag, body = data[:4], data[4:]  # the runtime tags each request; the reply carries it
            self.requests.append(json.loads(body))
            if self.refuse:
                reply = {"ok": False, "error": self.refuse, "denied": True}
                self.ours.sendall(tag + json.dumps(reply).encode())
                continue
            server, function = socket.socketpair()
            socket.send_fds(self.ours, [tag + json.dumps({"ok": True}).encode()], [function.fileno()])
            function.close()
            with server:
                while b"\r\n\r\n" not in self.seen:
                    self.seen += server.recv(4096)
                server.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def close(self) -> None:
        self.theirs.close()
        self._thread.join(5)
        self.ours.close()


@pytest.fixture
def broker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBroker]:
    fake = FakeBroker(refuse=getattr(request, "param", None))
    monkeypatch.setattr(net, "_broker", fake.theirs)
    yield fake
    fake.close()


async def test_requests_travel_on_streams_the_broker_opened(broker: FakeBroker) -> None:
    assert inside_a_function()
    onion = "b" * 56 + ".onion"
    async with httpx.AsyncClient(transport=BrokerTransport(), timeout=10) as client:
        response = await client.get(f"http://{onion}/v1/descriptor")
    assert response.status_code == 200 and response.text == "ok"
    assert broker.requests == [{"op": "tor.stream", "host": onion, "port": 80}]
    assert broker.seen.startswith(b"GET /v1/descriptor HTTP/1.1\r\n")


@pytest.mark.parametrize("broker", ["x.onion is not a Bento box in the consensus"], indirect=True)
async def test_a_refusal_is_a_connect_error_with_the_brokers_reason(broker: FakeBroker) -> None:
    async with httpx.AsyncClient(transport=BrokerTransport(), timeout=10) as client:
        with pytest.raises(httpx.ConnectError, match="not a Bento box in the consensus"):
            await client.get("http://x.onion/")


def test_outside_a_function_there_is_no_broker() -> None:
    assert not inside_a_function()
