"""Entry point of an instance: ``python -m bento.runtime FD``.

Reads the START frame from the inherited socket FD, imports the function's module,
calls the entry point, and reports its return value or its exception. Nothing of the
server is shared with this process but that socket.
"""

from __future__ import annotations

# json now, not when the function returns: what reports its result must not depend on what
# the function leaves behind (every descriptor in use, a module of its own named json).
import importlib
import json
import socket
import sys

from bento.protocol.frames import MAX_PAYLOAD, Frame, FrameError, decode_json, encode
from bento.runtime import api, confine, logs, net, packages, routing
from bento.runtime.channel import Channel

TYPE_CHECKING = False  # importing typing would cost the sandbox ~3 ms of start-up
if TYPE_CHECKING:
    from typing import Any


def _error(exc: BaseException) -> dict[str, Any]:
    import traceback  # only when there is one to format: it is slow to import

    text = "".join(traceback.format_exception(exc))
    return {"type": type(exc).__name__, "message": str(exc), "traceback": text}


def run(channel: Channel) -> None:
    channel.send(Frame.READY)
    first = channel.read_frame()
    if first is None or first[0] is not Frame.START:
        raise FrameError("the first frame must be START")
    start = decode_json(first[1])
    api._bind(channel)
    # Before anything of the function runs: from here on, only what it declared.
    confine.apply(start["confine"])
    packages.setup(start["code_dir"])
    logs.capture(channel)
    try:
        module = importlib.import_module(start["module"])
        entry = getattr(module, start["entry"], None)
        if not callable(entry):
            raise AttributeError(f"the module {start['module']!r} has no function {start['entry']!r}")
        value = entry(*start["args"], **start["kwargs"])
        try:
            encoded = json.dumps({"value": value}).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the return value is not JSON-serialisable: {exc}") from None
        if len(encoded) > MAX_PAYLOAD:
            raise ValueError(f"the return value is over {MAX_PAYLOAD} bytes; stream it with api.send()")
    except Exception as exc:
        logs.flush()
        channel.send_json(Frame.ERROR, _error(exc))
        return
    logs.flush()
    channel.send_frame(encode(Frame.RESULT, encoded))


# Seconds the server has to take our last frames and hang up: it reads them as fast as the
# client takes output, and kills us at the wall-clock limit in any case.
HANG_UP_GRACE = 30.0


def hang_up(sock: socket.socket) -> None:
    """End the channel so that the server reads our last frames to their end.

    Closing a socket with input still unread makes the kernel report a reset to the server
    instead of an end of stream, and a reset may reach it before our RESULT frame does (seen:
    a function that read the one line it wanted ended "before returning"). So we end our
    side first, then take what the server still sends until it hangs up.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(HANG_UP_GRACE)
        while sock.recv(1 << 16):
            pass
    except OSError:
        pass  # it hung up first, or took too long: we leave all the same


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    if len(sys.argv) > 2:
        net._bind(socket.socket(fileno=int(sys.argv[2])))
        routing.install()
    try:
        run(Channel(sock))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the server went away: nobody is left to tell
    finally:
        hang_up(sock)
        sock.close()


if __name__ == "__main__":
    main()
