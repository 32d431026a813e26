"""What a box's relay says of its onion service's descriptor: tor's HS_DESC events.

A box is reachable once its relay's tor has uploaded the service's descriptor to the
HSDirs a client asks. Tor reports each upload on its control port (``HS_DESC UPLOAD``
to a directory, then ``UPLOADED``, or ``FAILED`` with a ``REASON``), so a box that does
not publish can say why, and a client can be sent where the new descriptor already is:

>>> with DescriptorUploads(node.control_address, node.bento_onion) as uploads:  # doctest: +SKIP
...     boxes.start(node)
...     uploads.wait_settled(deadline)
...     uploads.accepted()  # the HSDirs that took it: where a client fetches it
['5D4A2F...', ...]
>>> uploads.explain()  # doctest: +SKIP
'its relay uploaded the descriptor to 0 of 6 HSDirs; 6 failed ($5D4A2F...: UPLOAD_REJECTED, ...)'

(The testnet's boxes run it: tests/e2e/test_testnet.py and every restart_box.)
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

import stem
import stem.control
from stem.response.events import HSDescEvent

from bento.errors import BentoError
from bento.tor import control

UPLOAD, UPLOADED, FAILED = "UPLOAD", "UPLOADED", "FAILED"
NUDGE_SECONDS = 5.0  # between two looks at whether the relay has completed a circuit


class DescriptorUploads:
    """Follows the uploads of ``onion``'s descriptors by the tor at ``control_address``
    from entering the context on; every method may be called from any thread."""

    def __init__(self, control_address: str, onion: str) -> None:
        self.control_address = control_address
        self.onion = onion.removesuffix(".onion")
        self._outcomes: dict[str, tuple[str, str]] = {}  # HSDir fingerprint -> (action, reason)
        self._changed = threading.Condition()
        self._controller: stem.control.Controller | None = None
        self.unwatched = ""  # why the events could not be followed, if they could not
        self._nudged_at = 0.0
        self.nudges = 0  # circuits we asked the relay to build (see keep_building)

    def __enter__(self) -> DescriptorUploads:
        try:
            self._controller = control.connect(self.control_address)
            self._controller.add_event_listener(self._on_event, stem.control.EventType.HS_DESC)
        except (BentoError, stem.ControllerError, stem.SocketError) as exc:  # a help, never a new failure
            self.unwatched = f"{type(exc).__name__}: {exc}"
            self.__exit__(None, None, None)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._controller is not None:
            self._controller.close()
            self._controller = None

    def _on_event(self, event: HSDescEvent) -> None:
        if event.address != self.onion or not event.directory_fingerprint:
            return
        action = str(event.action)
        if action not in (UPLOAD, UPLOADED, FAILED):
            return  # fetches (the relay's own client side) say nothing of our uploads
        with self._changed:
            self._outcomes[event.directory_fingerprint] = (action, str(event.reason or ""))
            self._changed.notify_all()

    def forget(self) -> None:
        """Drop what was seen so far (a new server is about to publish the same onion)."""
        with self._changed:
            self._outcomes.clear()

    def accepted(self) -> list[str]:
        """The fingerprints of the HSDirs that took the latest upload sent to them."""
        with self._changed:
            return [fp for fp, (action, _) in self._outcomes.items() if action == UPLOADED]

    def settled(self) -> bool:
        """Whether some HSDir took the descriptor and every upload sent has its answer."""
        with self._changed:
            outcomes = [action for action, _ in self._outcomes.values()]
        return UPLOADED in outcomes and UPLOAD not in outcomes

    def wait_settled(self, deadline: float) -> bool:
        """Wait until :meth:`settled`, or ``deadline`` (``time.monotonic()``); say which."""
        if self._controller is None:
            return False  # no events will come
        with self._changed:
            return self._changed.wait_for(self.settled, timeout=max(0.0, deadline - time.monotonic()))

    def keep_building(self) -> None:
        """Have the relay build a circuit if it has none it could complete (every few seconds).

        A relay's onion service builds its introduction circuits only once tor has
        completed a circuit since it last lacked directory information, and a relay that
        lost it for a moment while the testnet's first consensuses settled then waits for
        some other need of a circuit: on a busy machine its box did not publish for minutes.
        """
        if self._controller is None or time.monotonic() - self._nudged_at < NUDGE_SECONDS:
            return
        self._nudged_at = time.monotonic()
        try:
            if self._controller.get_info("status/circuit-established") == "0":
                self._controller.new_circuit(await_build=False)
                self.nudges += 1
        except (stem.ControllerError, stem.SocketError):
            pass  # not enough directory information yet: the next call asks again

    def explain(self) -> str:
        """What tor said of the uploads so far, for an error message."""
        if self.unwatched:
            return f"its relay's upload events could not be followed ({self.unwatched})"
        with self._changed:
            outcomes = dict(self._outcomes)
        if not outcomes:
            return (
                "its relay has not tried to upload the descriptor (no HS_DESC UPLOAD event: tor "
                "uploads once it has completed a circuit and built its introduction points; "
                f"{self._relay_state()})"
            )
        took = [fp for fp, (action, _) in outcomes.items() if action == UPLOADED]
        refused = [
            f"${fp}: {reason or 'no reason'}" for fp, (action, reason) in outcomes.items() if action == FAILED
        ]
        waiting = [fp for fp, (action, _) in outcomes.items() if action == UPLOAD]
        said = f"its relay uploaded the descriptor to {len(took)} of {len(outcomes)} HSDirs"
        if refused:
            said += f"; {len(refused)} failed ({', '.join(refused)})"
        if waiting:
            said += f"; {len(waiting)} not answered yet"
        return said

    def _relay_state(self) -> str:
        asked = {
            "status/circuit-established": "has completed a circuit",
            "status/enough-dir-info": "has enough directory information",
        }
        if self._controller is None:
            return "its state is unknown"
        said = []
        for key, meaning in asked.items():
            try:
                value = self._controller.get_info(key)
            except (stem.ControllerError, stem.SocketError) as exc:
                value = f"? ({type(exc).__name__})"
            said.append(f"{meaning}: {'yes' if value == '1' else 'no' if value == '0' else value}")
        if self.nudges:
            said.append(f"we asked it to build {self.nudges} circuit(s)")
        return "; ".join(said)
