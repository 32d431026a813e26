"""A function that attacks the box through its broker, one entry point per attack (issue 18).

Each entry point reports what happened, so that tests/e2e/test_hostile_broker.py can assert
on it, and measures nothing of the server itself: the test reads the server's descriptors
and memory from outside.
"""

BROKER_HOSTILE = r'''
import time

from bento.runtime import api, net


def _outcome(action):
    try:
        value = action()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"ALLOWED: {value!r}"[:300]


def nan_timeout():
    """Non-finite waits, through the runtime and raw; then a short wait must still end."""
    outcomes = {
        "events NaN": _outcome(lambda: api.tor.events(timeout=float("nan"))),
        "events inf": _outcome(lambda: api.tor.events(timeout=float("inf"))),
        "raw NaN": _outcome(lambda: net._ask({"op": "tor.events", "timeout": float("nan")})),
    }
    started = time.monotonic()
    api.tor.events(timeout=0.3)
    outcomes["short wait"] = round(time.monotonic() - started, 2)
    return outcomes


def short_waits(count):
    """A neighbour: ``count`` waits of 0.3 s, each timed."""
    seconds = []
    for _ in range(count):
        started = time.monotonic()
        api.tor.events(timeout=0.3)
        seconds.append(round(time.monotonic() - started, 2))
    return seconds


def fill_storage(size):
    api.storage.put("big", bytes(size))
    return api.storage.usage()


def many_reads(count):
    """``count`` reads of the big value, none of them read by the function: each granted one
    leaves its value waiting in the server until this end reads it."""
    held, outcomes = [], []
    for _ in range(count):
        try:
            reply, sock = net._ask({"op": "storage.get", "key": "big"})
        except Exception as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
            continue
        held.append(sock)
        outcomes.append("granted")
    api.send(b"reads asked\n")
    api.recv()  # the test measures the server now
    for sock in held:
        sock.close()
    return {"granted": outcomes.count("granted"), "refused": sorted({o for o in outcomes if o != "granted"})}


def listen_cycles(count):
    ports = set()
    for _ in range(count):
        listener = api.listen()
        ports.add(listener.getsockname()[1])
        listener.close()
    api.send(b"cycled\n")
    api.recv()  # the test counts the server's descriptors now
    return len(ports)


def listen_on(ports):
    outcomes = {str(port): _outcome(lambda port=port: api.listen(port).getsockname()[1]) for port in ports}
    outcomes["ephemeral"] = api.listen().getsockname()[1]
    return outcomes


def stream_to(targets):
    """Tor streams over a circuit of this function's to each ``[host, port]``."""
    circuit = api.tor.circuit(length=3).wait(60)
    try:
        return {f"{h}:{p}": _outcome(lambda h=h, p=p: circuit.connect(h, p).close()) for h, p in targets}
    finally:
        circuit.close()


def publish(count):
    """Publish ``count`` onion services (not waiting for their descriptors), then stay."""
    listener = api.listen()
    outcomes = [_outcome(lambda: api.tor.publish(listener, wait=False).address) for _ in range(count)]
    api.send(b"published\n")
    api.recv()
    return outcomes


def publish_one_and_leave():
    listener = api.listen()
    return _outcome(lambda: api.tor.publish(listener, wait=False).address)


def build_circuits(count):
    """Build and close circuits as fast as the box answers; the first refusal ends it."""
    built = 0
    for _ in range(count):
        try:
            circuit = api.tor.circuit(length=1)
        except PermissionError as exc:
            return {"built": built, "refused": str(exc)}
        circuit.close()
        built += 1
    return {"built": built, "refused": None}
'''
