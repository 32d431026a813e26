"""The broker: the only way an instance reaches the network (or, later, tor and storage).

An instance has no network interface but its own loopback. It asks the broker, over a
``SOCK_SEQPACKET`` Unix socket inherited from the server, to resolve a name, connect,
or listen. The broker checks each request against the function's manifest, the node
policy, and the relay's *current* exit policy (read from tor), never lets a function
reach the box's own services (tor's control, OR and SOCKS ports, the Bento API), does
the work, and passes the resulting socket into the sandbox (SCM_RIGHTS). The function
then holds a real socket, and every byte it sends leaves with the exit policy's blessing.

- ``gate``: the checks (address normalisation, own services, private ranges, exit policy);
- ``operations``: the strict request model, the handlers' context and the table's parser;
- ``budgets``: what each function may hold, declared once, and the ledger that counts it;
- ``table``: the one place operations are registered;
- ``network``: resolve, connect, listen; ``storage``: the function's store; ``tor/``: Tor
  for functions;
- ``service``: the socket loop (:class:`bento.server.broker.service.Broker`), imported
  from its module: the services the table registers import this package's core.
"""

from bento.server.broker.budgets import BudgetSpec, Exhausted, Ledger
from bento.server.broker.gate import Denied, Gatekeeper, closed_gate, normalise, refresh
from bento.server.broker.operations import Context, Granted, Operation, Request, Table

__all__ = [
    "BudgetSpec",
    "Context",
    "Denied",
    "Exhausted",
    "Gatekeeper",
    "Granted",
    "Ledger",
    "Operation",
    "Request",
    "Table",
    "closed_gate",
    "normalise",
    "refresh",
]
