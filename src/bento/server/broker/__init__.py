"""The broker: the only way an instance reaches the network (or, later, tor and storage).

An instance has no network interface but its own loopback. It asks the broker, over a
``SOCK_SEQPACKET`` Unix socket inherited from the server, to resolve a name, connect,
or listen. The broker checks each request against the function's manifest, the node
policy, and the relay's *current* exit policy (read from tor), never lets a function
reach the box's own services (tor's control, OR and SOCKS ports, the Bento API), does
the work, and passes the resulting socket into the sandbox (SCM_RIGHTS). The function
then holds a real socket, and every byte it sends leaves with the exit policy's blessing.

- ``gate``: the checks (address normalisation, own services, exit policy);
- ``operations``: typed requests, handlers and the table that dispatches them;
- ``table``: the one place operations are registered;
- ``network``: resolve, connect, listen;
- ``service``: the socket loop (:class:`Broker`).
"""

from bento.server.broker.gate import Denied, Gatekeeper, closed_gate, normalise, refresh
from bento.server.broker.operations import Context, Granted, Operation, Request, Table
from bento.server.broker.service import MAX_REQUEST, Broker

__all__ = [
    "MAX_REQUEST",
    "Broker",
    "Context",
    "Denied",
    "Gatekeeper",
    "Granted",
    "Operation",
    "Request",
    "Table",
    "closed_gate",
    "normalise",
    "refresh",
]
