"""The storage operations: a function's own encrypted key-value store (bento.server.store).

Values travel over a socket of their own that the reply grants, so a large value never
passes through the broker socket. Keys and sizes are bounded here; the store checks the
quota, and the function's budgets (storage transfers and their bytes) are taken before
the store reads or writes anything.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from bento.server.broker.gate import Denied
from bento.server.broker.operations import Context, Granted, Operation, Request
from bento.server.store import MAX_KEY_BYTES, StorageChannel, StorageRefused

# Characters, not bytes: the store checks the UTF-8 length (at most MAX_KEY_BYTES) itself.
Key = Annotated[str, StringConstraints(min_length=1, max_length=MAX_KEY_BYTES)]
MAX_VALUE = 1 << 40  # a bound on what a size may say; the quota is the real limit


class StoragePut(Request):
    op: Literal["storage.put"]
    key: Key
    size: int = Field(ge=0, le=MAX_VALUE, description="bytes the function then sends on the granted socket")
    exclusive: bool = Field(False, description="create only: no socket, created false, if the key is taken")


class StorageGet(Request):
    op: Literal["storage.get"]
    key: Key


class StorageDelete(Request):
    op: Literal["storage.delete"]
    key: Key


class StorageList(Request):
    op: Literal["storage.list"]
    prefix: Annotated[str, StringConstraints(max_length=MAX_KEY_BYTES)] = ""


class StorageUsage(Request):
    op: Literal["storage.usage"]


def _channel(context: Context) -> StorageChannel:
    if not isinstance(context.storage, StorageChannel):
        raise Denied("storage is not in this function's manifest (needs.storage_mb)")
    return context.storage


async def put(context: Context, request: StoragePut) -> Granted:
    try:
        sock = _channel(context).put(request.key, request.size, exclusive=request.exclusive)
    except StorageRefused as exc:
        raise Denied(str(exc)) from None
    return Granted({"created": sock is not None}, sock)


async def get(context: Context, request: StorageGet) -> Granted:
    try:
        found = await _channel(context).get(request.key)
    except StorageRefused as exc:
        raise Denied(str(exc)) from None
    if found is None:
        return Granted({"found": False})
    size, sock = found
    return Granted({"found": True, "size": size}, sock)


async def delete(context: Context, request: StorageDelete) -> Granted:
    try:
        return Granted({"existed": await _channel(context).delete(request.key)})
    except StorageRefused as exc:
        raise Denied(str(exc)) from None


async def list_keys(context: Context, request: StorageList) -> Granted:
    try:
        size, sock = _channel(context).list(request.prefix)
    except StorageRefused as exc:
        raise Denied(str(exc)) from None
    return Granted({"found": True, "size": size}, sock)


async def usage(context: Context, _: StorageUsage) -> Granted:
    try:
        return Granted(_channel(context).usage())
    except StorageRefused as exc:
        raise Denied(str(exc)) from None


OPERATIONS: tuple[Operation[Any], ...] = (
    Operation(StoragePut, put),
    Operation(StorageGet, get),
    Operation(StorageDelete, delete),
    Operation(StorageList, list_keys),
    Operation(StorageUsage, usage),
)
