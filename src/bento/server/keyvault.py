"""Where the storage keys live: locked pages of the server's memory, never on disk.

Each function's storage key is 32 random bytes in a slot of an anonymous memory page
that is locked in RAM (``mlock``: never written to swap) and left out of core dumps
(``MADV_DONTDUMP``). Destroying a key overwrites its slot with zeros. Both protections
are best effort and reported as they are (:attr:`KeyVault.protections`): an operator
who lowers RLIMIT_MEMLOCK or runs on a kernel without MADV_DONTDUMP gets a vault that
says so, in the log and in the descriptor.

A key is made in its slot (``getrandom`` writes straight into the page) and handed out
as a view of the slot, never as a copy. A handle names its slot and the slot's
*generation*: destroying a key bumps it, so a stale handle of a destroyed key can neither
read nor wipe the key of whichever function the slot holds next.

``cryptography``'s ``AESGCM(view)`` copies the key into OpenSSL's cipher context (the
expanded key schedule, on OpenSSL's heap) and keeps no reference to the view; OpenSSL
wipes that context when the object is freed. So a cipher is made per operation and
dropped with it (bento.server.store does), and no second copy outlives the operation.

What this does not hold: root on the box can read the server's memory, keys included.
The server is not dumpable (bento.server.undumpable), so no core file and no debugger of
its own user gets them. Only an enclave (SGX) would keep the operator out; see
docs/operator.md, "Storage".
"""

from __future__ import annotations

import ctypes
import logging
import mmap
from dataclasses import dataclass

log = logging.getLogger("bento.keyvault")
KEY_BYTES = 32


@dataclass(frozen=True)
class Protections:
    locked: bool  # the key pages cannot be swapped out
    undumpable: bool  # the key pages are not in core dumps


class _Page:
    def __init__(self) -> None:
        self.memory = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        # The page's address, for mlock; the ctypes view pins the mapping while we hold it.
        self._view = ctypes.c_char.from_buffer(self.memory)
        self.address = ctypes.addressof(self._view)
        self.locked = _LIBC.mlock(ctypes.c_void_p(self.address), mmap.PAGESIZE) == 0
        self.undumpable = True
        try:
            self.memory.madvise(mmap.MADV_DONTDUMP)
        except (AttributeError, OSError):
            self.undumpable = False
        self.free = list(range(mmap.PAGESIZE // KEY_BYTES))
        self.generations = [0] * (mmap.PAGESIZE // KEY_BYTES)


_LIBC = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class KeyHandle:
    """Names one key: its page, its slot, and the slot's generation when the key was made."""

    page: int
    slot: int
    generation: int


class KeyVault:
    """Random keys by handle; each exists only in a locked page until destroyed.

    >>> vault = KeyVault()
    >>> handle = vault.create()
    >>> with vault.key(handle) as key:
    ...     len(key), type(key).__name__
    (32, 'memoryview')
    >>> vault.destroy(handle)
    >>> vault.key(handle)
    Traceback (most recent call last):
    ...
    KeyError: 'that key was destroyed'
    """

    def __init__(self) -> None:
        self._pages: list[_Page] = []
        self._protections: Protections | None = None

    @property
    def protections(self) -> Protections:
        """What the vault's pages get on this host (tries a page if none is used yet)."""
        if self._protections is None:
            page = _Page()
            self._pages.append(page)
            self._protections = Protections(page.locked, page.undumpable)
            if not (page.locked and page.undumpable):
                log.warning(
                    "storage keys: mlock %s, excluded from core dumps %s (raise RLIMIT_MEMLOCK?)",
                    "works" if page.locked else "failed",
                    "yes" if page.undumpable else "no",
                )
        return self._protections

    def create(self) -> KeyHandle:
        """A new random key, made in its slot; returns its handle."""
        self.protections  # noqa: B018 (makes the first page and records what it gets)
        number = next((n for n, page in enumerate(self._pages) if page.free), None)
        if number is None:
            self._pages.append(_Page())
            number = len(self._pages) - 1
        page = self._pages[number]
        slot = page.free.pop()
        # Straight into the slot: os.urandom would leave a copy of the key on the heap.
        made = _LIBC.getrandom(ctypes.c_void_p(page.address + slot * KEY_BYTES), KEY_BYTES, 0)
        if made != KEY_BYTES:
            page.free.append(slot)
            raise OSError(ctypes.get_errno(), "getrandom gave no key")
        return KeyHandle(number, slot, page.generations[slot])

    def key(self, handle: KeyHandle) -> memoryview:
        """A view of the key's bytes in the locked page, for one cipher operation.

        Not a copy: release it (``with vault.key(h) as key:``) or drop it once used; a view
        kept past :meth:`destroy` would see the slot's next key.
        """
        page = self._live(handle)
        start = handle.slot * KEY_BYTES
        return memoryview(page.memory)[start : start + KEY_BYTES]

    def destroy(self, handle: KeyHandle) -> None:
        """Overwrite the key with zeros: what it encrypted can never be read again.

        A stale handle (its key destroyed already) destroys nothing: the slot may hold
        another function's key by now.
        """
        try:
            page = self._live(handle)
        except KeyError:
            return
        start = handle.slot * KEY_BYTES
        page.memory[start : start + KEY_BYTES] = bytes(KEY_BYTES)
        page.generations[handle.slot] += 1
        page.free.append(handle.slot)

    def _live(self, handle: KeyHandle) -> _Page:
        page = self._pages[handle.page]
        if handle.slot in page.free or page.generations[handle.slot] != handle.generation:
            raise KeyError("that key was destroyed")
        return page
