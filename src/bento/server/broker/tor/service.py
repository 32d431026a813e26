"""Tor for functions: circuits, streams and onion services that belong to one function.

The server starts a client-only tor for its functions (bento.tor.client_tor) and is its
only controller. This module keeps the books: which circuit, stream and onion service
belongs to which instance, and it is the only code that acts on that tor.

- A circuit is built with purpose ``controller``, so tor never uses it for anything
  else, and it is recorded against the one instance that asked: two functions never
  share a circuit, and an instance can only see, use and close its own.
- Tor attaches no stream itself (``__LeaveStreamsUnattached``). The server opens the
  SOCKS connection for a function's stream with the instance's private SOCKS user
  name; when tor announces the new stream, the server attaches it to that instance's
  circuit (or, for an onion address, lets tor build the rendezvous circuit, isolated
  per instance by that same user name). Any other stream is closed. A stream tor gives
  up (its circuit closed, the exit refused) fails at once (bento.server.broker.tor.streams).
- An onion service leads to a listener the function holds (``api.listen``); the server
  keeps its own copy of that listening socket while the service exists, so the port
  cannot pass to someone else, and of the function's few most recent listeners (its
  ``listeners`` budget), which it may still publish. Services are removed when the
  function's last instance ends or the function is shut down.
- Every circuit, stream, onion service and kept listener is held under one unit of its
  function's budget (bento.server.broker.budgets), given back when it goes.

Every Stem call blocks, so each runs in a thread: one a function's request makes in the
threads of its function's budget (``Ledger.in_thread``), so a function cannot take the
threads its neighbours' calls need; the server's own (start-up, and the calls that give a
circuit, stream or onion service back, which must never be refused) with
``asyncio.to_thread``. Each wait for tor's answer is bounded (bento.server.broker.tor.answers):
a silent tor fails a request with a clear error instead of holding it. Stem's events arrive
on its own thread and are handed to the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import stem
import stem.control

from bento.errors import BentoError
from bento.server.broker.budgets import Hold, Ledger
from bento.server.broker.tor.answers import answer, let_go
from bento.server.broker.tor.books import Circuit, FunctionOnions, Kept, Owner, TorDenied
from bento.server.broker.tor.streams import STREAM_TIMEOUT, FunctionStreams
from bento.tor.client_tor import ClientTor
from bento.tor.consensus import Directory

log = logging.getLogger("bento.tor_for_functions")
DIRECTORY_MAX_AGE = 60.0
READY_TIMEOUT = 60.0
FIRST_CIRCUIT_TIMEOUT = 60.0


class TorForFunctions:
    """The box's client-only tor, shared by every function, and who owns what in it."""

    def __init__(self, state_dir: Path) -> None:
        self.data_dir = state_dir / "function-tor"
        self.tor: ClientTor | None = None
        self.ready = asyncio.Event()
        self.failure: str | None = None
        self.circuits: dict[str, Circuit] = {}
        self.owners: dict[str, Owner] = {}
        self.functions: dict[str, FunctionOnions] = {}
        self._directory: tuple[float, Directory] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self.streams = FunctionStreams(self.owners, self._own)

    # --- the tor process ----------------------------------------------------------------

    async def start(self, directory_lines: list[str]) -> None:
        """Start tor and follow its events; BentoError if it does not start."""
        self._loop = asyncio.get_running_loop()
        self.tor = await ClientTor.start(self.data_dir, directory_lines)
        ctl = self.tor.controller
        try:
            circuits = asyncio.to_thread(
                ctl.add_event_listener, self._circ_event, stem.control.EventType.CIRC
            )
            await answer("SETEVENTS CIRC", circuits)
            streams = asyncio.to_thread(
                ctl.add_event_listener, self._stream_event, stem.control.EventType.STREAM
            )
            await answer("SETEVENTS STREAM", streams)
        except (stem.ControllerError, stem.SocketError, BentoError) as exc:
            await self.tor.stop()
            raise BentoError(f"the functions' tor refused events: {exc}") from None

    async def serve(self) -> None:
        """Wait for tor to bootstrap, then keep it until cancelled (owned by the daemon)."""
        assert self.tor is not None
        try:
            try:
                await self.tor.wait_bootstrapped()
            except BentoError as exc:
                self.failure = exc.message
                log.warning("functions get no Tor: %s", exc.message)
                return
            self.ready.set()
            log.info("the functions' tor is ready (SOCKS %s:%d)", *self.tor.socks)
            await asyncio.Event().wait()
        finally:
            self.ready.clear()
            for job in list(self._jobs):
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
            await self.tor.stop()

    def listeners(self) -> set[tuple[str, int]]:
        return self.tor.listeners() if self.tor is not None else set()

    async def controller(self) -> stem.control.Controller:
        """The controller once tor is bootstrapped (waiting up to READY_TIMEOUT); BentoError if not."""
        if self.failure is None and not self.ready.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(READY_TIMEOUT):
                    await self.ready.wait()
        if self.tor is None or not self.ready.is_set():
            raise BentoError(
                "this box's Tor for functions is not available"
                + (f": {self.failure}" if self.failure else " yet (still bootstrapping)")
            )
        return self.tor.controller

    async def directory(self, owner: Owner) -> Directory:
        """The consensus, read again (by the instance that asks) once it is DIRECTORY_MAX_AGE old."""
        if self._directory is None or time.monotonic() - self._directory[0] > DIRECTORY_MAX_AGE:
            ctl = await self.controller()
            read = await answer("the consensus", owner.ledger.in_thread(Directory.read, ctl))
            self._directory = (time.monotonic(), read)
        return self._directory[1]

    # --- owners -------------------------------------------------------------------------

    def enter(self, function_id: str, ledger: Ledger) -> Owner:
        owner = Owner(tag=secrets.token_hex(16), function_id=function_id, ledger=ledger)
        self.owners[owner.tag] = owner
        self.functions.setdefault(function_id, FunctionOnions()).instances += 1
        return owner

    async def leave(self, owner: Owner) -> None:
        """An instance ended: close its circuits; after the function's last, its onions."""
        self.owners.pop(owner.tag, None)
        for circuit_id in list(owner.circuits):
            await self.close_circuit(owner, circuit_id)
        onions = self.functions.get(owner.function_id)
        if onions is None:
            return
        onions.instances -= 1
        if onions.instances <= 0:
            del self.functions[owner.function_id]
            for service_id, kept in list(onions.services.items()):
                kept.release()
                await self._remove_service(service_id)
            for kept in onions.listeners.values():
                kept.release()
            onions.listeners.clear()

    def keep_listener(self, function_id: str, sock: socket.socket, ledger: Ledger) -> None:
        """Keep a copy of a listener the broker made for this function, under its budget."""
        onions = self.functions.get(function_id)
        if onions is not None:
            onions.keep(sock, ledger)

    # --- circuits -----------------------------------------------------------------------

    async def build(self, owner: Owner, path: list[str], hold: Hold) -> Circuit:
        ctl = await self.controller()
        try:
            circuit_id = await answer(
                "EXTENDCIRCUIT", owner.ledger.in_thread(ctl.extend_circuit, "0", path, "controller")
            )
        except stem.ControllerError as exc:
            raise BentoError(f"tor refused to build the circuit: {exc}") from None
        circuit = Circuit(id=str(circuit_id), owner=owner.tag, path=path, hold=hold)
        self.circuits[circuit.id] = circuit
        owner.circuits.add(circuit.id)
        # Events that came before we knew the id were ignored: read its state once.
        status = await answer(
            "GETINFO circuit-status", owner.ledger.in_thread(ctl.get_circuit, circuit.id, None)
        )
        if status is None:
            self._settle(circuit, "failed", "tor closed it at once")
        elif status.status == stem.CircStatus.BUILT:
            self._settle(circuit, "built")
        return circuit

    async def close_circuit(self, owner: Owner, circuit_id: str) -> None:
        circuit = self.circuits.pop(circuit_id, None)
        owner.circuits.discard(circuit_id)
        if circuit is None:
            return
        if circuit.hold is not None:
            circuit.hold.release()
        if circuit.state in ("building", "built") and self.tor is not None:
            await let_go(
                f"CLOSECIRCUIT {circuit_id}", asyncio.to_thread(self.tor.controller.close_circuit, circuit_id)
            )
        self._settle(circuit, "closed", circuit.reason or "closed by the function")

    def _settle(self, circuit: Circuit, state: str, reason: str = "") -> None:
        if circuit.state in ("failed", "closed") or circuit.state == state:
            return
        circuit.state, circuit.reason = state, reason
        if state == "built":
            circuit.built_seconds = round(time.monotonic() - circuit.launched, 3)
        circuit.settled.set()
        owner = self.owners.get(circuit.owner)
        if owner is not None:
            owner.tell({"event": "circuit", **circuit.as_json()})

    def _circ_event(self, event: Any) -> None:  # Stem's thread
        assert self._loop is not None
        why = (event.reason, event.remote_reason)
        self._loop.call_soon_threadsafe(self._on_circ, event.id, event.status, *why)

    def _on_circ(self, circuit_id: str, status: str, reason: str | None, remote: str | None) -> None:
        circuit = self.circuits.get(circuit_id)
        if circuit is None:
            return
        why = "; ".join(str(r) for r in (reason, remote) if r)
        if status == stem.CircStatus.BUILT:
            self._settle(circuit, "built")
        elif status in (stem.CircStatus.FAILED, stem.CircStatus.CLOSED):
            self._settle(circuit, status.lower(), why or status.lower())
            self.streams.circuit_ended(
                circuit.owner, circuit.id, f"{status.lower()} ({why or 'no reason given'})"
            )

    # --- streams ------------------------------------------------------------------------

    async def open_stream(
        self, owner: Owner, circuit_id: str, host: str, port: int, hold: Hold, within: float = STREAM_TIMEOUT
    ) -> socket.socket:
        """A stream over ``circuit_id`` ("0": an onion address's, tor's choice): see
        :meth:`FunctionStreams.open`. Raises BentoError."""
        await self.controller()
        self.streams.tor = self.tor
        return await self.streams.open(owner, circuit_id, host, port, hold, within)

    def _stream_event(self, event: Any) -> None:  # Stem's thread
        assert self._loop is not None
        if event.purpose not in (None, stem.StreamPurpose.USER, stem.StreamPurpose.DNS_REQUEST):
            return  # tor's own directory streams: tor attaches those
        user = str(event.keyword_args.get("SOCKS_USERNAME", "")).strip('"')
        target = str(event.target_address or "")
        why = "; ".join(str(r) for r in (event.reason, event.remote_reason) if r)
        self._loop.call_soon_threadsafe(self.streams.on_event, event.id, event.status, user, target, why)

    def _own(self, coroutine: Any) -> None:
        """Run a short control-port job; :meth:`serve` cancels what is left when it ends."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    # --- onion services -----------------------------------------------------------------

    async def publish(
        self,
        owner: Owner,
        port: int,
        virtual_port: int,
        key_blob: str | None,
        client_auth: str | None,
        wait: bool,
        hold: Hold,
    ) -> str:
        onions = self.functions.get(owner.function_id)
        if onions is None or port not in onions.listeners:
            raise TorDenied(f"port {port} is not a listener of this function (open it with api.listen first)")
        ctl = await self.controller()
        await self._complete_a_circuit(ctl, owner.ledger)
        key_type, key_content = key_blob.split(":", 1) if key_blob else ("NEW", "ED25519-V3")
        try:
            adding = owner.ledger.in_thread(
                ctl.create_ephemeral_hidden_service,
                {virtual_port: f"127.0.0.1:{port}"},
                key_type=key_type,
                key_content=key_content,
                discard_key=True,
                # Detached: the operator can list it (GETINFO onions/detached); it still
                # dies with this tor, which dies with the server.
                detached=True,
                await_publication=wait,
                timeout=120 if wait else None,
                client_auth_v3=client_auth,
            )
            # Waiting for publication, Stem gives up after its own 120 s: a moment more here.
            response = await answer("ADD_ONION", adding, 130 if wait else None)
        except (stem.ControllerError, stem.Timeout) as exc:
            raise BentoError(f"tor did not publish the onion service: {exc}") from None
        service_id = str(response.service_id)
        if owner.function_id not in self.functions:  # its last instance ended meanwhile
            await self._remove_service(service_id)
            raise BentoError("the function ended while its onion service was published")
        onions.services[service_id] = Kept(hold, port)
        return service_id

    async def _complete_a_circuit(self, ctl: stem.control.Controller, ledger: Ledger) -> None:
        """Tor builds an onion service's introduction circuits and uploads its descriptor
        only once it has completed a circuit, which ``__DisablePredictedCircuits`` stops it
        from doing by itself: a function's first ``publish`` on a tor that has carried
        nothing yet would wait forever. So one circuit of tor's choosing is built (and
        closed) first; it carries no stream."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FIRST_CIRCUIT_TIMEOUT
        while True:
            try:
                established = await answer(
                    "GETINFO", ledger.in_thread(ctl.get_info, "status/circuit-established")
                )
                if established.strip() == "1":
                    return
                # A tor still fetching the consensus or descriptors refuses to extend (551):
                # that is a wait, not a failure, within the deadline.
                if (
                    await answer("GETINFO", ledger.in_thread(ctl.get_info, "status/enough-dir-info"))
                ).strip() == "1":
                    left = max(1.0, deadline - loop.time())
                    circuit_id = await ledger.in_thread(ctl.new_circuit, await_build=True, timeout=left)
                    break
                problem: Exception = stem.Timeout("it has not enough directory information yet")
            except (stem.ControllerError, stem.Timeout) as exc:
                problem = exc
            if loop.time() >= deadline:
                raise BentoError(f"the functions' tor could not build a first circuit: {problem}")
            await asyncio.sleep(0.5)  # polling tor's state; nothing to wait on but time
        await let_go(f"CLOSECIRCUIT {circuit_id}", ledger.in_thread(ctl.close_circuit, circuit_id))

    async def remove(self, owner: Owner, address: str) -> None:
        onions = self.functions.get(owner.function_id)
        service_id = address.lower().removesuffix(".onion")
        kept = onions.services.pop(service_id, None) if onions is not None else None
        if onions is None or kept is None:
            raise TorDenied(f"{address[:70]} is not an onion service of this function")
        kept.release()  # the listener's copy stays: it may be published again, or make way
        await self._remove_service(service_id)

    async def _remove_service(self, service_id: str) -> None:
        if self.tor is not None:
            removing = asyncio.to_thread(self.tor.controller.remove_ephemeral_hidden_service, service_id)
            await let_go("DEL_ONION", removing)
