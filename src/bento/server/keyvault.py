"""Where the storage keys live: locked pages of the server's memory, never on disk.

Each function's storage key is 32 random bytes in a slot of an anonymous memory page
that is locked in RAM (``mlock``: never written to swap) and left out of core dumps
(``MADV_DONTDUMP``). Destroying a key overwrites its slot with zeros. Both protections
are best effort and reported as they are (:attr:`KeyVault.protections`): an operator
who lowers RLIMIT_MEMLOCK or runs on a kernel without MADV_DONTDUMP gets a vault that
says so, in the log and in the descriptor.

What this does not hold: whoever can read the server's memory (root on the box, a
debugger attached to it) can read the keys. Each cipher operation also copies its key
briefly into the AEAD context of the ``cryptography`` library, on the ordinary heap.
Only an enclave (SGX) would keep the operator out; see docs/operator.md, "Storage".
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
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
        libc = ctypes.CDLL(None, use_errno=True)
        self.locked = libc.mlock(ctypes.c_void_p(ctypes.addressof(self._view)), mmap.PAGESIZE) == 0
        self.undumpable = True
        try:
            self.memory.madvise(mmap.MADV_DONTDUMP)
        except (AttributeError, OSError):
            self.undumpable = False
        self.free = list(range(mmap.PAGESIZE // KEY_BYTES))


class KeyVault:
    """Random keys by handle; each exists only in a locked page until destroyed."""

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

    def create(self) -> tuple[int, int]:
        """A new random key; returns its handle."""
        self.protections  # noqa: B018 (makes the first page and records what it gets)
        number = next((n for n, page in enumerate(self._pages) if page.free), None)
        if number is None:
            self._pages.append(_Page())
            number = len(self._pages) - 1
        page = self._pages[number]
        slot = page.free.pop()
        start = slot * KEY_BYTES
        page.memory[start : start + KEY_BYTES] = os.urandom(KEY_BYTES)
        return number, slot

    def key(self, handle: tuple[int, int]) -> bytes:
        """The key's bytes, for one cipher operation (the copy is not kept)."""
        page, start = self._pages[handle[0]], handle[1] * KEY_BYTES
        if handle[1] in page.free:
            raise KeyError("that key was destroyed")
        return page.memory[start : start + KEY_BYTES]

    def destroy(self, handle: tuple[int, int]) -> None:
        """Overwrite the key with zeros: what it encrypted can never be read again."""
        page, start = self._pages[handle[0]], handle[1] * KEY_BYTES
        page.memory[start : start + KEY_BYTES] = bytes(KEY_BYTES)
        if handle[1] not in page.free:
            page.free.append(handle[1])
