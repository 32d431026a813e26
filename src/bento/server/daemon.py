"""``bento server``: the daemon that attaches to a relay and serves the Bento API over Tor.

One asyncio process. Start-up: load the identity, attach to tor's control port (Stem),
serve the API on a local port, publish it as a v3 onion service, advertise the onion
in the relay's ContactInfo. SIGTERM (or SIGINT) undoes all that in reverse: instances
killed, advertisement and onion service removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket

import stem
import stem.control
import uvicorn

from bento.errors import BentoError
from bento.protocol import onion
from bento.protocol.descriptor import SignedDescriptor
from bento.sandbox.host import SandboxHost, SandboxUnavailable
from bento.server import broker, descriptor, identity, open_files, tokens, undumpable
from bento.server.admin.metrics import bind_metrics, count_refusals
from bento.server.admin.serve import operator_view
from bento.server.api import create_app
from bento.server.broker.tor.service import TorForFunctions
from bento.server.config import ServerConfig
from bento.server.embedded_uvicorn import EmbeddedUvicorn
from bento.server.registry import Registry
from bento.tor import advert, client_tor, control
from bento.tor.control import parse_address
from bento.tor.resolver import Resolver

log = logging.getLogger("bento.server")
STATUS_FILE = "server.json"
KEEP_ALIVE_SECONDS = 30  # an idle HTTP connection to the API is kept this long


class BentoServer:
    def __init__(self, config: ServerConfig) -> None:
        undumpable.protect()  # before the first key is read
        if (short := open_files.raise_for(config.policy.instances_total)) is not None:
            log.warning(short)
        self.config = config
        self.identity = identity.load_or_create(config.state_dir)
        self.boot_id = tokens.new_id()
        try:
            self.sandbox = SandboxHost(
                config.policy, config.state_dir, accept_unenforced=config.accept_unenforced
            )
        except SandboxUnavailable as exc:  # the host, as configured, cannot confine functions
            message, _, accept = str(exc).partition("; to run anyway, ")
            raise BentoError(
                f"the box cannot start: {message}",
                fix=f"to run anyway, {accept}" if accept else "see docs/operator.md",
            ) from None
        self.gate = broker.closed_gate()
        self.registry = Registry(config, self.boot_id, self.sandbox, self.gate)
        self._fingerprint = ""
        self._nickname = ""
        self._advertised = False  # we added bento= to ContactInfo (so we take it out again)
        self._descriptor: SignedDescriptor | None = None

    def descriptor(self) -> SignedDescriptor:
        if self._descriptor is None:
            self._descriptor = descriptor.of_box(
                self.identity, self.registry, fingerprint=self._fingerprint, nickname=self._nickname
            )
        return self._descriptor

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set or SIGTERM/SIGINT arrives, then clean up."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await asyncio.to_thread(self.registry.reset_storage)
        ctl: stem.control.Controller = await asyncio.to_thread(control.connect, self.config.control)

        def on_tor_status(_controller: object, state: stem.control.State, _when: float) -> None:
            # Tor went away: a box without its relay stops. (Our own clean-up closes the
            # connection too, after a stop: that is no news.)
            if state == stem.control.State.CLOSED and not stop.is_set():
                log.warning("lost tor's control connection; stopping")
                loop.call_soon_threadsafe(stop.set)

        ctl.add_status_listener(on_tor_status)
        try:
            self._fingerprint = await asyncio.to_thread(ctl.get_info, "fingerprint")
            self._nickname = await asyncio.to_thread(ctl.get_conf, "Nickname", "")
            resolver = await asyncio.to_thread(Resolver.configured, self.config.resolver, ctl)
            self.registry.resolver = resolver.resolve
            log.info("functions resolve names through %s", resolver.describe())
        except stem.ControllerError as exc:
            ctl.close()
            raise BentoError(
                f"the tor at {self.config.control} is not a relay ({exc})",
                fix="a Bento box runs beside a relay: set ORPort in its torrc",
            ) from None
        sockets = [_bind("127.0.0.1", self.config.api_port)]
        if self.config.listen:
            sockets.append(_bind(*parse_address(self.config.listen)))
        api_port: int = sockets[0].getsockname()[1]
        app = create_app(self.registry, self.descriptor)
        count_refusals(app, self.registry.ledger)  # for the operator's metrics
        config = self.config
        metrics = (
            bind_metrics(config.metrics, any_address=config.metrics_any_address) if config.metrics else None
        )
        web = EmbeddedUvicorn(
            uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                lifespan="off",
                # Function output is mostly incompressible; deflate would burn the relay's CPU
                # and let message lengths leak what was compressed together.
                ws_per_message_deflate=False,
                ws_max_size=2 << 20,
                # Over Tor a new connection costs a stream's round trip: keep idle ones longer
                # than clients do (httpx: 5 s), so that a client always closes first and
                # never sends a request on a connection the box is closing.
                timeout_keep_alive=KEEP_ALIVE_SECONDS,
                timeout_graceful_shutdown=2,
            )
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                serving = tasks.create_task(web.serve(sockets=sockets))
                own = {(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in sockets}
                function_tor = await self._start_function_tor(ctl)
                owned_tor = None
                if function_tor is not None:
                    own |= function_tor.listeners()  # never a function's destination
                    owned_tor = tasks.create_task(function_tor.serve())
                await asyncio.to_thread(broker.refresh, self.gate, ctl, own)
                gatekeeping = tasks.create_task(self._refresh_gate_forever(ctl, own))
                pool = tasks.create_task(self.sandbox.keep_pool(self.config.pool_size, self.config.pool_most))
                watchdog = tasks.create_task(self.sandbox.watch_forever())
                try:
                    async with (
                        self.registry.running(),  # leaving it stops every session
                        operator_view(self.registry, config.state_dir, metrics),
                    ):
                        try:
                            if self.config.onion:
                                await self._publish(ctl, api_port)
                            self._write_status(api_port, sockets)
                            log.info("serving %s.onion for relay %s", self.identity.onion, self._nickname)
                            await stop.wait()
                        finally:
                            await self._withdraw(ctl)
                finally:
                    web.should_exit = True
                    gatekeeping.cancel()
                    pool.cancel()
                    watchdog.cancel()
                    if owned_tor is not None:
                        owned_tor.cancel()  # after the registry: instances give back their circuits first
                await serving
        finally:
            for sock in sockets:
                sock.close()
            ctl.close()
            await asyncio.to_thread(self.sandbox.close)  # it reaps the last orphans: a moment
            with contextlib.suppress(FileNotFoundError):
                (self.config.state_dir / STATUS_FILE).unlink()

    async def _start_function_tor(self, ctl: stem.control.Controller) -> TorForFunctions | None:
        """The client-only tor for functions' circuits, if the policy offers Tor at all."""
        policy = self.config.policy.tor
        if not (policy.circuits or policy.onion_services or policy.call_boxes):
            return None
        function_tor = TorForFunctions(self.config.state_dir)
        lines = await asyncio.to_thread(client_tor.relay_directory_lines, ctl)
        await function_tor.start(lines)
        self.registry.tor = function_tor
        return function_tor

    async def _refresh_gate_forever(self, ctl: stem.control.Controller, own: set[tuple[str, int]]) -> None:
        """Follow the relay's exit policy as the operator changes it."""
        while True:
            await asyncio.sleep(30)
            try:
                await asyncio.to_thread(broker.refresh, self.gate, ctl, own)
            except (stem.ControllerError, stem.SocketError) as exc:
                log.warning(
                    "could not re-read the exit policy or listeners (the gate denies all until it can): %s",
                    exc,
                )

    async def _publish(self, ctl: stem.control.Controller, api_port: int) -> None:
        key_type, key_content = onion.tor_key_blob(self.identity.seed).split(":", 1)
        try:
            await asyncio.to_thread(
                ctl.create_ephemeral_hidden_service,
                {80: api_port},
                key_type=key_type,
                key_content=key_content,
                await_publication=True,
                timeout=120,
            )
        except (stem.ControllerError, stem.Timeout) as exc:
            raise BentoError(f"tor did not publish the onion service: {exc}") from None
        if self.config.advertise:
            contact = await asyncio.to_thread(ctl.get_conf, "ContactInfo", "")
            wanted = advert.with_onion(contact, self.identity.onion)
            if wanted != contact:
                await asyncio.to_thread(ctl.set_conf, "ContactInfo", wanted)
                self._advertised = True

    async def _withdraw(self, ctl: stem.control.Controller) -> None:
        """Remove the advertisement and the onion service; best effort (tor may be gone).

        Only an advertisement this server added is removed: one the operator wrote in the
        torrc stays, so that restarting the server does not make the relay publish two new
        descriptors in a row (clients went on seeing the first, without the box, for minutes).
        """
        with contextlib.suppress(stem.ControllerError, stem.SocketError, OSError):
            if self._advertised and self.config.onion:
                contact = await asyncio.to_thread(ctl.get_conf, "ContactInfo", "")
                if advert.onion_in(contact) == self.identity.onion:
                    await asyncio.to_thread(ctl.set_conf, "ContactInfo", advert.without(contact) or None)
            if self.config.onion:
                await asyncio.to_thread(ctl.remove_ephemeral_hidden_service, self.identity.onion)

    def _write_status(self, api_port: int, sockets: list[socket.socket]) -> None:
        """``state_dir/server.json``: where this server listens, for tools on the same machine."""
        status = {
            "pid": os.getpid(),
            "onion": self.identity.onion if self.config.onion else None,
            "api": f"127.0.0.1:{api_port}",
            "listen": [f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in sockets[1:]],
            "fingerprint": self._fingerprint,
            "nickname": self._nickname,
            "boot_id": self.boot_id,
        }
        path = self.config.state_dir / STATUS_FILE
        path.with_suffix(".tmp").write_text(json.dumps(status))
        path.with_suffix(".tmp").replace(path)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BentoError(f"cannot listen on {host}:{port}: {exc}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock
