"""Prometheus metrics of a box: off by default, on loopback when on (``--metrics``).

Figures are read from the registry at each scrape (no second set of counters to drift):
box-wide ones as ``bento_*``, per function as ``bento_function_*`` labelled with the
function's id and name. Counters count since the server started.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn
from prometheus_client import make_asgi_app
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from bento.errors import BentoError
from bento.server.admin.address import check_metrics_address
from bento.server.admin.controls import PAUSABLE
from bento.server.admin.ledger import Ledger
from bento.server.admin.models import Figures
from bento.server.admin.view import OperatorView
from bento.server.embedded_uvicorn import EmbeddedUvicorn, serving
from bento.server.refusal import BoxError
from bento.server.registry import Registry


class BoxCollector(Collector):
    """The box's figures, as Prometheus metric families, read at each scrape."""

    def __init__(self, registry: Registry) -> None:
        self.view = OperatorView(registry)

    def collect(self) -> Iterator[Metric]:
        usage = self.view.usage()
        yield from _figures("bento", "all of Bento on this box", usage.box, [])
        yield _gauge("bento_functions", "functions deployed", len(usage.functions))
        yield _gauge("bento_memory_limit_bytes", "memory all instances together may be promised",
                     usage.memory_limit_bytes)  # fmt: skip
        yield _gauge("bento_instances_limit", "instances the box runs at most", usage.instances_limit)
        refusals = CounterMetricFamily(
            "bento_refusals",
            "requests refused, by error code (the broker's: broker-<reason>)",
            labels=["code"],
        )
        for code, count in sorted(usage.refusals.items()):
            refusals.add_metric([code], count)
        yield refusals
        paused = GaugeMetricFamily("bento_paused", "1 while the operator pauses it", labels=["what"])
        for what in PAUSABLE:
            paused.add_metric([what], 1 if what in usage.paused else 0)
        yield paused
        families = list(_figures("bento_function", "per function", None, ["function_id", "name"]))
        refused = CounterMetricFamily(
            "bento_function_refusals",
            "requests of its instances the broker refused, by reason (per function)",
            labels=["function_id", "name", "reason"],
        )
        for function in usage.functions:
            for family, value in zip(families, _values(function), strict=True):
                family.add_metric([function.function_id, function.name], value)
            for reason, count in sorted(function.refusals.items()):
                refused.add_metric([function.function_id, function.name, reason], count)
        yield from families
        yield refused


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


_FIGURES = [  # (suffix, kind, help): in the order of _values
    ("instances", "gauge", "instances running now"),
    ("sessions", "counter", "sessions started"),
    ("cpu_seconds", "counter", "CPU time of sessions (running ones: as far as measured)"),
    ("input_bytes", "counter", "bytes clients sent to functions"),
    ("output_bytes", "counter", "bytes functions sent to clients"),
    ("memory_promised_bytes", "gauge", "memory promised to running instances by their manifests"),
    ("storage_used_bytes", "gauge", "bytes of function storage used"),
]


def _values(figures: Figures) -> list[float]:
    return [
        figures.instances,
        figures.sessions_total,
        figures.cpu_seconds_total,
        figures.bytes_in_total,
        figures.bytes_out_total,
        figures.memory_bytes,
        figures.storage_bytes,
    ]


def _figures(
    prefix: str, scope: str, figures: Figures | None, labels: list[str]
) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """One family per figure: with its value (box-wide), or empty with ``labels`` to add to."""
    values = _values(figures) if figures is not None else [None] * len(_FIGURES)
    for (suffix, kind, documentation), value in zip(_FIGURES, values, strict=True):
        family = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
        if value is None:
            yield family(f"{prefix}_{suffix}", f"{documentation} ({scope})", labels=labels)
        else:
            yield family(f"{prefix}_{suffix}", f"{documentation} ({scope})", value=value)


def bind_metrics(address: str, *, any_address: bool) -> socket.socket:
    try:
        host, port = check_metrics_address(address, any_address=any_address)
    except ValueError as exc:
        raise BentoError(str(exc)) from None
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BentoError(f"cannot serve metrics on {address}: {exc}", fix="pick a free port") from None
    sock.listen(16)
    sock.setblocking(False)
    return sock


def count_refusals(app: Starlette, ledger: Ledger) -> None:
    """Book every refusal the public API answers over HTTP, by its code, before it is answered."""
    answer = app.exception_handlers[BoxError]

    async def counted(request: Request, exc: Exception) -> Response:
        if isinstance(exc, BoxError):
            ledger.refused(exc.code.value)
        response: Response = await answer(request, exc)
        return response

    app.add_exception_handler(BoxError, counted)


@contextlib.asynccontextmanager
async def metrics_endpoint(registry: Registry, sock: socket.socket) -> AsyncIterator[None]:
    """Serve ``/metrics`` on ``sock`` inside this block."""
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(BoxCollector(registry))
    app = make_asgi_app(registry=collectors)
    server = EmbeddedUvicorn(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    try:
        async with serving(server, [sock]):
            yield
    finally:
        sock.close()
