"""The one place where broker operations are registered (see operations.py for how to add one)."""

from __future__ import annotations

from bento.server.broker import network, storage, tor
from bento.server.broker.operations import Operation, Table

OPERATIONS = Table(
    Operation(network.Resolve, network.resolve),
    Operation(network.Connect, network.connect),
    Operation(network.Listen, network.listen),
    Operation(storage.StoragePut, storage.storage),
    Operation(storage.StorageGet, storage.storage),
    Operation(storage.StorageDelete, storage.storage),
    Operation(storage.StorageList, storage.storage),
    Operation(storage.StorageUsage, storage.storage),
    Operation(tor.TorRequest, tor.tor),
)
