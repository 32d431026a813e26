"""Fetch a URL through a tor client and report the circuit the request took."""

from __future__ import annotations

import asyncio
import threading

import httpx
import stem.control
from stem.response.events import StreamEvent

from bento.tor import control


async def fetch_via_socks(socks_address: str, url: str) -> bytes:
    """GET ``url`` through the SOCKS port at ``socks_address``; names resolve at the exit."""
    async with httpx.AsyncClient(proxy=f"socks5://{socks_address}", timeout=60.0) as http:
        response = await http.get(url)
        response.raise_for_status()
        return response.content


async def fetch_with_path(control_address: str, socks_address: str, url: str) -> tuple[bytes, list[str]]:
    """GET ``url`` through tor; returns the body and the nicknames of the circuit's relays."""
    port = httpx.URL(url).port
    circuits: list[str] = []
    seen = threading.Event()  # set from Stem's event thread

    def on_stream(event: StreamEvent) -> None:
        if event.status == stem.StreamStatus.SUCCEEDED and event.target_port == port:
            circuits.append(event.circ_id)
            seen.set()

    ctl = await asyncio.to_thread(control.connect, control_address)
    try:
        await asyncio.to_thread(ctl.add_event_listener, on_stream, stem.control.EventType.STREAM)
        body = await fetch_via_socks(socks_address, url)
        await asyncio.to_thread(seen.wait, 10)
        path: list[str] = []
        if circuits:
            circuit = await asyncio.to_thread(ctl.get_circuit, circuits[0], None)
            if circuit is not None:
                path = [nickname or fingerprint[:8] for fingerprint, nickname in circuit.path]
        return body, path
    finally:
        await asyncio.to_thread(ctl.close)
