"""The storage operations: a function's own encrypted key-value store (bento.server.store).

Values travel over a socket of their own that the reply grants, so a large value never
passes through the broker socket; the store checks keys, sizes and the quota.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from bento.server.broker.gate import Denied
from bento.server.broker.operations import Context, Granted, Request
from bento.server.store import StorageRefused

Key = str


class StoragePut(Request):
    op: Literal["storage.put"]
    key: Key
    size: int = Field(ge=0, description="bytes the function then sends on the granted socket")


class StorageGet(Request):
    op: Literal["storage.get"]
    key: Key


class StorageDelete(Request):
    op: Literal["storage.delete"]
    key: Key


class StorageList(Request):
    op: Literal["storage.list"]
    prefix: str = ""


class StorageUsage(Request):
    op: Literal["storage.usage"]


async def storage(context: Context, request: Any) -> Granted:
    """Every storage operation: the store's channel answers, once the manifest allows it."""
    if context.storage is None:
        raise Denied("storage is not in this function's manifest (needs.storage_mb)")
    try:
        reply, sock = await context.storage.answer(request.op, request.model_dump(exclude={"op"}))
    except StorageRefused as exc:
        raise Denied(str(exc)) from None
    reply.pop("ok", None)
    return Granted(reply, sock)
