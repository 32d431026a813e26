"""Per-function storage: a small key-value store whose disk only ever holds ciphertext.

A function's objects are shared by all its instances and sessions and kept until the
function is shut down. Each object is one file, ``storage/<function id>/<object id>``,
holding a random 96-bit nonce and the AES-256-GCM encryption of the value, with the
function id, the object id and the key name as associated data: a file moved to another
name, another function or an older version of the same key fails authentication. Object
ids are random and the index (key name -> object) lives only in memory, so key names
never reach the disk either; what the disk shows is the number and size of objects.

The key of each function is random and exists only in the server's memory (see
bento.server.keyvault). Shutting a function down deletes its files and destroys its key
(crypto-shredding: a copy of the files taken earlier stays unreadable). A server restart
loses every key, so every function's storage: by design, as functions themselves do not
survive a restart.

Functions reach their store through the broker (:class:`StorageChannel`); values travel
over a socket pair made for each transfer, so the broker's own messages stay small.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bento.protocol.descriptor import StorageOffer
from bento.server.broker.budgets import Exhausted, Hold, Ledger
from bento.server.keyvault import KeyHandle, KeyVault
from bento.server.storage_offer import storage_offer

MAGIC = b"BST1"
NONCE_BYTES = 12
MAX_KEY_BYTES = 256
MAX_OBJECTS = 10_000
TRANSFER_TIMEOUT = 120.0  # seconds a function may take to send or read a value
_CHUNK = 1 << 16


class StorageRefused(Exception):
    """A storage request the box refuses; the message goes back to the function."""


@dataclass
class _Object:
    object_id: str
    size: int


@dataclass
class Reservation:
    """Quota held for a write under way; released once, however the write ends."""

    store: FunctionStore
    size: int
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.store.reserved -= self.size


@dataclass
class FunctionStore:
    """One function's objects, its quota and the handle of its key."""

    function_id: str
    directory: Path
    quota: int  # bytes: values plus key names
    vault: KeyVault
    key_handle: KeyHandle
    objects: dict[str, _Object] = field(default_factory=dict)
    reserved: int = 0  # bytes of writes under way
    creating: set[str] = field(default_factory=set)  # keys of exclusive writes under way
    shredded: bool = False

    @property
    def used(self) -> int:
        return sum(obj.size + len(name.encode()) for name, obj in self.objects.items())

    def usage(self) -> dict[str, int]:
        return {"used": self.used, "quota": self.quota, "objects": len(self.objects)}

    def _live(self) -> None:
        if self.shredded:
            raise StorageRefused("the function was shut down; its storage is gone")

    def reserve(self, key: str, size: int) -> Reservation:
        """Count a write of ``size`` bytes against the quota before it is sent."""
        self._live()
        check_key(key)
        if size < 0:
            raise StorageRefused("a value's size cannot be negative")
        if key not in self.objects and len(self.objects) >= MAX_OBJECTS:
            raise StorageRefused(f"the store holds {MAX_OBJECTS} objects, the most it may; delete some")
        replaced = self.objects.get(key)
        charge = size + len(key.encode())
        free = self.quota - self.used - self.reserved + (replaced.size + len(key.encode()) if replaced else 0)
        if charge > free:
            raise StorageRefused(
                f"storage quota exceeded: writing {key!r} needs {charge} bytes, {max(free, 0)} of "
                f"{self.quota} are free (the manifest's needs.storage_mb); delete objects or ask for more"
            )
        self.reserved += charge
        return Reservation(self, charge)

    async def put(self, key: str, value: bytes, reservation: Reservation, ledger: Ledger) -> None:
        """Encrypt and write ``value`` (reserved with :meth:`reserve`), replacing any older one.
        The disk and the cipher run in the threads of the function's ``ledger``, as in
        :meth:`get` and :meth:`delete`."""
        try:
            self._live()
            object_id = os.urandom(16).hex()
            sealed = await ledger.in_thread(self._seal, object_id, key, value)
            path = self.directory / object_id
            try:
                await ledger.in_thread(_write_new, path, sealed)
                self._live()  # shut down while we wrote: leave nothing behind
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            old = self.objects.get(key)
            self.objects[key] = _Object(object_id, len(value))
        finally:
            reservation.release()
        if old is not None:
            await ledger.in_thread((self.directory / old.object_id).unlink, True)

    async def get(self, key: str, ledger: Ledger) -> bytes:
        self._live()
        check_key(key)
        obj = self.objects.get(key)
        if obj is None:
            raise KeyError(key)
        try:
            blob = await ledger.in_thread((self.directory / obj.object_id).read_bytes)
        except FileNotFoundError:
            raise StorageRefused(f"the object {key!r} vanished from the box's disk") from None
        self._live()  # the key may have been destroyed while we read
        return await ledger.in_thread(self._open, obj.object_id, key, blob)

    async def delete(self, key: str, ledger: Ledger) -> bool:
        self._live()
        check_key(key)
        obj = self.objects.pop(key, None)
        if obj is not None:
            await ledger.in_thread((self.directory / obj.object_id).unlink, True)
        return obj is not None

    def keys(self, prefix: str = "") -> list[str]:
        self._live()
        return sorted(name for name in self.objects if name.startswith(prefix))

    def _associated(self, object_id: str, key: str) -> bytes:
        return b"\0".join((b"bento-storage-1", self.function_id.encode(), object_id.encode(), key.encode()))

    def _seal(self, object_id: str, key: str, value: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        cipher = AESGCM(self.vault.key(self.key_handle))
        return MAGIC + nonce + cipher.encrypt(nonce, value, self._associated(object_id, key))

    def _open(self, object_id: str, key: str, blob: bytes) -> bytes:
        if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + NONCE_BYTES + 16:
            raise StorageRefused(f"the object {key!r} is damaged on the box's disk")
        nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
        cipher = AESGCM(self.vault.key(self.key_handle))
        try:
            return cipher.decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES :], self._associated(object_id, key))
        except InvalidTag:
            raise StorageRefused(
                f"the object {key!r} failed authentication: it was altered on the box's disk"
            ) from None


def check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise StorageRefused("a storage key is a non-empty string")
    if len(key.encode()) > MAX_KEY_BYTES or "\0" in key:
        raise StorageRefused(f"a storage key has at most {MAX_KEY_BYTES} UTF-8 bytes and no NUL")


def _release(held: tuple[Hold | Reservation, ...]) -> None:
    for hold in held:
        hold.release()


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


class Store:
    """Every function's store on this box, under ``root`` (in the server's state directory)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.vault = KeyVault()
        self._functions: dict[str, FunctionStore] = {}

    def reset(self) -> None:
        """Delete what an earlier server left: its keys died with it, so it is noise."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(mode=0o700, parents=True)

    def of(self, function_id: str, quota_mb: int) -> FunctionStore:
        """The store of ``function_id``, made (with a new key) at its first use."""
        store = self._functions.get(function_id)
        if store is None:
            directory = self.root / function_id
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            store = FunctionStore(function_id, directory, quota_mb << 20, self.vault, self.vault.create())
            self._functions[function_id] = store
        return store

    def existing(self, function_id: str) -> FunctionStore | None:
        """The store of ``function_id`` if it has one (unlike :meth:`of`, makes none)."""
        return self._functions.get(function_id)

    def hand_over(self, function_id: str, heir_id: str, quota_mb: int) -> None:
        """Give ``function_id``'s objects and key to ``heir_id``, the function replacing it.
        The store keeps its first function's id in each object's associated data, so
        nothing is re-encrypted; its quota becomes the heir's."""
        store = self._functions.pop(function_id, None)
        if store is not None:
            store.quota = quota_mb << 20
            self._functions[heir_id] = store

    async def shred(self, function_id: str) -> None:
        """Destroy the function's key, then delete its ciphertext."""
        store = self._functions.pop(function_id, None)
        if store is None:
            return
        store.shredded = True
        self.vault.destroy(store.key_handle)
        store.objects.clear()
        await asyncio.to_thread(shutil.rmtree, store.directory, True)

    async def aclose(self) -> None:
        for function_id in list(self._functions):
            await self.shred(function_id)

    def offer(self) -> StorageOffer:
        """What this store protects, for the descriptor: honest about the operator."""
        return storage_offer(self.vault.protections)


class StorageChannel:
    """The storage operations of one instance's broker; owns the transfers it starts.

    Each transfer holds two units of the function's budgets (bento.server.broker.budgets)
    from before the store touches the disk until its socket is done: one of the transfers
    in flight, and the value's bytes, which sit in the server's memory meanwhile. So
    concurrent reads of a function hold at most its quota's worth of plaintext here."""

    def __init__(self, store: FunctionStore, ledger: Ledger) -> None:
        self.store = store
        self.ledger = ledger
        self._transfers: set[asyncio.Task[None]] = set()

    def usage(self) -> dict[str, int]:
        self.store._live()
        return self.store.usage()

    async def delete(self, key: str) -> bool:
        return await self.store.delete(key, self.ledger)

    def list(self, prefix: str) -> tuple[int, socket.socket]:
        body = json.dumps(self.store.keys(prefix)).encode()
        return len(body), self._send(body, self._take(len(body)))

    async def get(self, key: str) -> tuple[int, socket.socket] | None:
        """The value's size and the socket it comes on; None if there is no such key."""
        obj = self.store.objects.get(key)
        if obj is None:
            return None
        held = self._take(obj.size)  # before the disk read is awaited
        try:
            value = await self.store.get(key, self.ledger)
        except KeyError:
            _release(held)
            return None
        except BaseException:
            _release(held)
            raise
        return len(value), self._send(value, held)

    def put(self, key: str, size: int, *, exclusive: bool = False) -> socket.socket | None:
        """The socket the function sends ``size`` bytes of the value on. ``exclusive``: None if
        ``key`` exists or is being created so: an atomic claim (the event loop runs this whole)."""
        if exclusive and (key in self.store.objects or key in self.store.creating):
            return None
        reservation = self.store.reserve(key, size)
        try:
            held = self._take(size)
        except BaseException:
            reservation.release()
            raise
        ours, theirs = socket.socketpair()
        # Released however the transfer ends, even if it is cancelled before it starts.
        task = self._own(self._receive(ours, key, size, reservation))
        task.add_done_callback(lambda _: _release((reservation, *held)))
        if exclusive:  # taken until the object exists (or the write failed: then free again)
            self.store.creating.add(key)
            task.add_done_callback(lambda _: self.store.creating.discard(key))
        return theirs

    def _take(self, size: int) -> tuple[Hold, ...]:
        transfer = self.ledger.take("storage_transfers")
        try:
            return transfer, self.ledger.take("storage_bytes", size)
        except Exhausted:
            transfer.release()
            raise StorageRefused(
                f"values of this function's storage in flight would pass {self.ledger.spec.storage_bytes} "
                "bytes (its quota); finish reading or writing them first"
            ) from None

    def _send(self, body: bytes, held: tuple[Hold, ...]) -> socket.socket:
        ours, theirs = socket.socketpair()
        self._own(self._write(ours, body)).add_done_callback(lambda _: _release(held))
        return theirs

    async def _write(self, sock: socket.socket, body: bytes) -> None:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        with sock, contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(TRANSFER_TIMEOUT):
                await loop.sock_sendall(sock, body)

    async def _receive(self, sock: socket.socket, key: str, size: int, reservation: Reservation) -> None:
        """Read the announced value, store it, and say how that went on the same socket."""
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        with sock:
            value = bytearray()
            try:
                async with asyncio.timeout(TRANSFER_TIMEOUT):
                    while len(value) < size:
                        chunk = await loop.sock_recv(sock, min(_CHUNK, size - len(value)))
                        if not chunk:
                            break
                        value += chunk
            except (OSError, TimeoutError):
                pass
            status: dict[str, Any] = {"ok": True}
            if len(value) != size:
                reservation.release()
                status = {"ok": False, "error": f"the value ended after {len(value)} of {size} bytes"}
            else:
                try:
                    await self.store.put(key, bytes(value), reservation, self.ledger)
                except StorageRefused as exc:
                    status = {"ok": False, "error": str(exc)}
                except OSError as exc:
                    status = {"ok": False, "error": f"the box could not write the value: {exc.strerror}"}
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(TRANSFER_TIMEOUT):
                    await loop.sock_sendall(sock, json.dumps(status).encode())

    def _own(self, coroutine: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._transfers.add(task)
        task.add_done_callback(self._transfers.discard)
        return task

    async def aclose(self) -> None:
        """Stop the transfers under way (the instance is gone): nothing half-written is kept."""
        for task in self._transfers:
            task.cancel()
        for task in list(self._transfers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
