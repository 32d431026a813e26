"""Functions' streams in the functions' tor: opened for one instance, attached to its
circuit, and failed as soon as tor gives up on them.

A function's stream is a SOCKS connection to the functions' tor, made by the server with
the instance's private SOCKS user name. Tor attaches no stream itself
(``__LeaveStreamsUnattached``): when it announces the new stream (STREAM NEW, naming the
user and the target), the server attaches it to that instance's circuit (or, for an
onion address, lets tor build the rendezvous circuit, isolated per instance by that
same user name). Any other stream is closed.

Tor answers the SOCKS request once the stream is connected. When it gives up first, it
says so on the control port, and not always on the SOCKS connection:

- the stream's circuit failed or closed (CIRC FAILED or CLOSED);
- the exit refused, or did not answer within tor's 10-15 s (STREAM DETACHED): tor leaves
  such a stream to its controller, unattached, until its SocksTimeout (2 minutes), and
  tells the SOCKS client nothing meanwhile;
- it failed for good (STREAM FAILED or CLOSED).

Each fails the function's request at once, with tor's reason, and the stream is closed:
a function no longer waits :data:`STREAM_TIMEOUT` for a stream tor has already given up.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import stem
from python_socks import ProxyError, ProxyTimeoutError
from python_socks.async_.asyncio import Proxy

from bento.errors import BentoError
from bento.server.broker.budgets import Hold
from bento.server.broker.tor.answers import answer, let_go
from bento.server.broker.tor.books import Owner, PendingStream
from bento.tor.client_tor import ClientTor

STREAM_TIMEOUT = 60.0  # seconds a stream may take to connect, at most
Job = Callable[[Coroutine[Any, Any, None]], None]  # runs a short control-port job the service owns
_GAVE_UP = (stem.StreamStatus.DETACHED, stem.StreamStatus.FAILED, stem.StreamStatus.CLOSED)


class FunctionStreams:
    """The streams being opened for instances, and the open ones' budget units."""

    def __init__(self, owners: dict[str, Owner], own: Job) -> None:
        self.tor: ClientTor | None = None
        self._owners = owners  # the service's instances, by tag
        self._own = own
        self._pending: dict[str, list[PendingStream]] = {}  # instance tag -> its streams being opened
        self._open: dict[str, Hold] = {}  # stream id -> its function's unit, until tor closes it

    async def open(
        self, owner: Owner, circuit_id: str, host: str, port: int, hold: Hold, within: float = STREAM_TIMEOUT
    ) -> socket.socket:
        """A SOCKS connection through the functions' tor whose stream tor attaches to
        ``circuit_id`` ("0": tor's choice, for onion addresses), connected within ``within``
        seconds. Raises BentoError, at once when tor gives the stream up. ``hold`` (the
        function's unit of its streams budget) is kept until tor closes the stream.

        Tor's STREAM event names the SOCKS user (the instance) and the target, not the
        connection, so an instance's streams being opened at once must differ by target or
        not matter: streams to onion addresses may go at once (tor builds their circuits;
        two to one address are interchangeable), while an instance's streams over its own
        circuits are opened one after the other, each surely attached to its circuit."""
        assert self.tor is not None
        if circuit_id != "0":  # until tor has announced the one before (then it is told apart)
            while ahead := [p.attached for p in self._pending.get(owner.tag, ()) if p.over_a_circuit]:
                await asyncio.wait(ahead)
        loop = asyncio.get_running_loop()
        mine = self._pending.setdefault(owner.tag, [])
        pending = PendingStream(circuit_id, host, loop.create_future(), hold, loop.create_future())
        mine.append(pending)
        proxy = Proxy.from_url(f"socks5://{owner.tag}:x@{self.tor.socks[0]}:{self.tor.socks[1]}", rdns=True)
        connecting = asyncio.ensure_future(proxy.connect(host, port, timeout=min(within, STREAM_TIMEOUT)))
        try:
            await asyncio.wait((connecting, pending.given_up), return_when=asyncio.FIRST_COMPLETED)
            if pending.given_up.done():
                if connecting.done() and not connecting.cancelled() and connecting.exception() is None:
                    connecting.result().close()
                if pending.stream:  # tor may hold it unattached: it must not stay
                    self._own(self._close(pending.stream))
                raise BentoError(f"the stream to {host}:{port} failed: {pending.given_up.result()}")
            try:
                sock = connecting.result()
            except (ProxyError, ProxyTimeoutError, OSError) as exc:
                raise BentoError(f"the stream to {host}:{port} failed: {exc}") from None
        finally:
            if not connecting.done():
                connecting.cancel()
            mine.remove(pending)
            if not mine and self._pending.get(owner.tag) is mine:
                del self._pending[owner.tag]
            if not pending.attached.done():
                pending.attached.cancel()
        if pending.attached.done() and not pending.attached.cancelled():
            stream_id = pending.attached.result()
        elif pending.stream and not pending.closed:
            # Connected before our attach call returned (tor's SOCKS reply can overtake its
            # control reply, seen in CI): tor attached it, so it is ours until tor closes it.
            stream_id = pending.stream
            self._open[stream_id] = hold
        else:
            stream_id = ""
        if stream_id:
            owner.streams.add(stream_id)
        else:  # tor named no stream we know of: nothing will tell us it ends
            hold.release()
        return sock

    def circuit_ended(self, owner_tag: str, circuit_id: str, why: str) -> None:
        """Tor failed or closed an instance's circuit: its streams being opened fail now."""
        for pending in self._pending.get(owner_tag, ()):
            if pending.circuit == circuit_id:
                pending.give_up(f"its circuit {circuit_id} {why}")

    def on_event(self, stream_id: str, status: str, user: str, target: str, reason: str) -> None:
        """Tor's STREAM event, on the event loop."""
        if status == stem.StreamStatus.CLOSED:
            for owner in self._owners.values():
                owner.streams.discard(stream_id)
            held = self._open.pop(stream_id, None)
            if held is not None:
                held.release()
        if status in (*_GAVE_UP, stem.StreamStatus.SUCCEEDED):
            for pending in self._pending.get(user, ()):
                if pending.stream != stream_id:
                    continue
                pending.closed = pending.closed or status == stem.StreamStatus.CLOSED
                if status == stem.StreamStatus.SUCCEEDED:
                    pending.connected = True  # whatever tor says of it later is the function's to read
                else:
                    pending.give_up(f"tor reported it {status} ({reason or 'no reason given'})")
            return
        if status not in (stem.StreamStatus.NEW, stem.StreamStatus.NEWRESOLVE):
            return
        waiting = [p for p in self._pending.get(user, ()) if not p.stream]
        # The one it names; else the only one waiting (tor spelt the target its own way).
        chosen = [p for p in waiting if p.wants(target)] or (waiting if len(waiting) == 1 else [])
        if not chosen:
            self._own(self._close(stream_id))  # nobody's: tor must not carry it
            return
        chosen[0].stream = stream_id
        self._own(self._attach(stream_id, chosen[0]))

    async def _attach(self, stream_id: str, pending: PendingStream) -> None:
        assert self.tor is not None
        try:
            # The stream's own function's thread: its unit of streams says whose it is.
            attaching = pending.hold.ledger.in_thread(
                self.tor.controller.attach_stream, stream_id, pending.circuit
            )
            await answer(f"ATTACHSTREAM {stream_id}", attaching)
        except (stem.ControllerError, BentoError) as exc:  # Exhausted and TorSilent are BentoErrors
            pending.give_up(f"tor would not attach it: {exc}")
            if not pending.attached.done():
                pending.attached.cancel()  # announced, not attached: the next may go
            await self._close(stream_id)
            return
        if not pending.attached.done():
            self._open[stream_id] = pending.hold  # before tor can announce its end
            pending.attached.set_result(stream_id)

    async def _close(self, stream_id: str) -> None:
        if self.tor is not None:
            await let_go(
                f"CLOSESTREAM {stream_id}", asyncio.to_thread(self.tor.controller.close_stream, stream_id)
            )
