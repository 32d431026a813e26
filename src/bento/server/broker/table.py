"""The one place where broker operations are registered (see operations.py for how to add one)."""

from __future__ import annotations

from bento.server.broker import network, storage
from bento.server.broker.operations import Operation, Table
from bento.server.broker.tor import operations as tor

OPERATIONS = Table(
    Operation(network.Resolve, network.resolve),
    Operation(network.Connect, network.connect),
    Operation(network.Listen, network.listen),
    *storage.OPERATIONS,
    *tor.OPERATIONS,
)
