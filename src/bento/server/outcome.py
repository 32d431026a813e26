"""What a session came to: why it ended, and what it used.

The cause weighs what the box decided while the session ran (a kill, a limit, the
function's answer) against what the kernel reports at its exit (an OOM kill, SIGXCPU, an
exit status); the usage adds to the kernel's figures the counts the box keeps elsewhere
(output, logs, the broker's grants and budgets, Tor's circuits).
"""

from __future__ import annotations

import contextlib
import signal

from bento.protocol.messages import EndCause, ResourceUsage
from bento.sandbox.instance import Exited, Instance
from bento.server.broker.service import Broker
from bento.server.buffer import OutputBuffer
from bento.server.logs import LogBuffer


def verdict(
    exited: Exited, decided: tuple[EndCause, str] | None, cpu_limit: int, stderr_tail: bytes
) -> tuple[EndCause, str]:
    """Why the session ended, from what we ``decided`` and what the kernel reports."""
    if exited.oom_killed and (decided is None or decided[0] is not EndCause.COMPLETED):
        return (EndCause.MEMORY, "killed: over its memory limit")
    if decided is not None:
        return decided
    if exited.usage.cpu_seconds >= cpu_limit - 0.05 or _signalled(exited.returncode, signal.SIGXCPU):
        return (EndCause.CPU, f"killed: over its CPU-time limit of {cpu_limit} s")
    tail = stderr_tail.decode(errors="replace").strip()
    last = f"; its last words: {tail[-1000:]}" if tail else ""
    return (
        EndCause.ERROR,
        f"the function's process ended with {_describe(exited.returncode)} before returning{last}",
    )


def usage_so_far(
    usage: ResourceUsage,
    output: OutputBuffer,
    logs: LogBuffer,
    broker: Broker | None,
    running: Instance | None,
) -> ResourceUsage:
    """Usage so far: the kernel's (at exit in ``usage``, or now from the ``running`` instance),
    plus the counts kept elsewhere."""
    live: dict[str, object] = {"bytes_out": output.end, "log_bytes": logs.total}
    if broker is not None:
        live |= {"network_granted": broker.granted, "network_denied": broker.denied}
        ledger = broker.context.ledger
        live |= {"held": ledger.usage(), "budgets": ledger.limits()}
        if (tor := broker.context.tor) is not None:
            live |= {"circuits": tor.circuits_built, "onion_services": tor.onions_published}
    if running is not None:  # the kernel's figures so far
        group = running.group  # else the watchdog's last reading of /proc
        cpu = (group.cpu_seconds() if group else None) or running.cpu_seen
        peak = (group.peak_memory() if group else None) or running.peak_resident
        live |= {"cpu_seconds": round(cpu, 3), "peak_memory_bytes": peak}
    return usage.model_copy(update=live)


def _signalled(returncode: int, sig: signal.Signals) -> bool:
    # bubblewrap reports a child killed by a signal as 128 + the signal's number.
    return returncode in (-sig, 128 + sig)


def _describe(returncode: int) -> str:
    for code in (-returncode, returncode - 128):
        if 0 < code < 65:
            with contextlib.suppress(ValueError):
                return f"signal {signal.Signals(code).name}"
    return f"exit status {returncode}"
