"""The box's Prometheus metrics, scraped for real over HTTP on loopback; the metrics address."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from localbox import LocalBox
from prometheus_client.parser import text_string_to_metric_families

from bento.errors import BentoError
from bento.server.admin.metrics import bind_metrics, count_refusals, metrics_endpoint
from bento.server.api import create_app
from bento.server.config import ServerConfig

SOURCE = """\
from bento.runtime import api


def forever():
    api.send("started\\n")
    while (data := api.recv()) is not None:
        api.send(data)


def quick():
    return 1


def refused():
    try:
        api.connect("192.0.2.1", 80, timeout=5)  # its manifest asks for no network
    except PermissionError:
        return "refused"
"""


@pytest.fixture
async def scrape(box: LocalBox) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the box's metrics endpoint on 127.0.0.1 (a free port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    async with (
        metrics_endpoint(box.registry, sock),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        yield client


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_are_scraped_over_http_with_box_and_function_figures(
    box: LocalBox, scrape: httpx.AsyncClient
) -> None:
    function = await box.upload(SOURCE, name="echo", needs={"memory_mb": 64})
    done = await box.invoke(function, "quick")
    await box.wait_state(function, done)
    running = await box.invoke(function, "forever")
    await box.wait_state(function, running, ended=False)
    session = box.registry.sessions[running]
    await session.send_input(b"hello")
    await session.output.read(len(b"started\n"))

    response = await scrape.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    assert samples[("bento_instances", ())] == 1
    assert samples[("bento_sessions_total", ())] == 2
    assert samples[("bento_cpu_seconds_total", ())] > 0
    assert samples[("bento_input_bytes_total", ())] == 5
    assert samples[("bento_output_bytes_total", ())] == len(b"started\nhello")
    assert samples[("bento_memory_promised_bytes", ())] == 64 << 20
    assert samples[("bento_functions", ())] == 1
    assert samples[("bento_paused", (("what", "uploads"),))] == 0
    labels = (("function_id", function.function_id), ("name", "echo"))
    assert samples[("bento_function_instances", labels)] == 1
    assert samples[("bento_function_sessions_total", labels)] == 2
    assert samples[("bento_function_input_bytes_total", labels)] == 5
    assert samples[("bento_function_storage_used_bytes", labels)] == 0
    assert function.invocation_token not in response.text and function.shutdown_token not in response.text

    box.registry.controls.pause({"uploads"})
    killed = await box.http.delete(f"/v1/sessions/{running}", headers=function.session_auth(running))
    assert killed.status_code == 200, killed.text
    after = _samples((await scrape.get("/metrics")).text)
    assert after[("bento_instances", ())] == 0 and after[("bento_paused", (("what", "uploads"),))] == 1
    assert after[("bento_input_bytes_total", ())] == 5, "a counter keeps what ended sessions used"


async def test_refusals_are_counted_by_code(box: LocalBox, scrape: httpx.AsyncClient) -> None:
    app = create_app(box.registry, lambda: box.signed)
    count_refusals(app, box.registry.ledger)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://box") as public:
        for _ in range(2):
            refused = await public.post(f"/v1/functions/{'0' * 32}/sessions", json={"entry": "main"})
            assert refused.status_code == 404 and refused.json()["code"] == "unknown-function", (
                "answered as before"
            )
        await public.post("/v1/functions", content=b"{")
    samples = _samples((await scrape.get("/metrics")).text)
    assert samples[("bento_refusals_total", (("code", "unknown-function"),))] == 2
    assert samples[("bento_refusals_total", (("code", "invalid-request"),))] == 1


async def test_the_brokers_refusals_are_counted_by_function_and_reason(
    box: LocalBox, scrape: httpx.AsyncClient
) -> None:
    function = await box.upload(SOURCE, name="asks-too-much")
    for _ in range(2):
        session_id = await box.invoke(function, "refused")
        assert (await box.wait_state(function, session_id))["state"] == "completed"
        assert box.registry.sessions[session_id].result == "refused"
    samples = _samples((await scrape.get("/metrics")).text)
    labels = (("function_id", function.function_id), ("name", "asks-too-much"), ("reason", "denied"))
    assert samples[("bento_function_refusals_total", labels)] == 2
    assert samples[("bento_refusals_total", (("code", "broker-denied"),))] == 2
    assert "192.0.2.1" not in str(samples), "a label names the reason, never what was asked"


def test_metrics_are_off_by_default_and_on_loopback_only_unless_allowed() -> None:
    assert ServerConfig().metrics is None
    assert ServerConfig(metrics="127.0.0.1:9135").metrics == "127.0.0.1:9135"
    assert ServerConfig(metrics="[::1]:9135").metrics == "[::1]:9135"
    for address in ("0.0.0.0:9135", "192.0.2.7:9135"):
        with pytest.raises(BentoError, match="not loopback"):
            ServerConfig.load(None, {"metrics": address})
        assert ServerConfig(metrics=address, metrics_any_address=True).metrics == address
    for wrong in ("localhost:9135", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000"):
        with pytest.raises(BentoError, match="is not IP:PORT"):
            ServerConfig.load(None, {"metrics": wrong})


def test_a_taken_metrics_port_is_a_clear_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(BentoError, match=f"cannot serve metrics on {address}") as caught:
            bind_metrics(address, any_address=False).close()
        assert caught.value.fix == "pick a free port"
    finally:
        taken.close()
