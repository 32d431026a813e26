"""Storage keys: only in the locked page, handed out as views, and never reachable through a
stale handle once their slot holds another function's key."""

from __future__ import annotations

import mmap

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bento.server.keyvault import KEY_BYTES, KeyVault


def test_a_key_is_a_view_of_the_locked_page_not_a_copy() -> None:
    vault = KeyVault()
    handle = vault.create()
    page = vault._pages[handle.page].memory
    start = handle.slot * KEY_BYTES
    with vault.key(handle) as key:
        assert not key.readonly and key.nbytes == KEY_BYTES
        assert bytes(key) == page[start : start + KEY_BYTES] != bytes(KEY_BYTES)
        page[start] ^= 0xFF  # a change in the page shows in the view: it is the page
        assert key[0] == page[start]


def test_a_cipher_made_from_the_view_keeps_no_hold_on_it() -> None:
    """AESGCM copies the key into OpenSSL's context: the view can be released at once, and the
    cipher, made per operation and dropped, leaves no reference to the page behind."""
    vault = KeyVault()
    handle = vault.create()
    key = vault.key(handle)
    cipher = AESGCM(key)
    key.release()  # would raise BufferError if anything still exported it
    sealed = cipher.encrypt(bytes(12), b"value", None)
    with vault.key(handle) as again:
        assert AESGCM(again).decrypt(bytes(12), sealed, None) == b"value"


def test_a_stale_handle_never_reads_or_destroys_the_slot_s_next_key() -> None:
    vault = KeyVault()
    first = vault.create()
    vault.destroy(first)
    second = vault.create()  # another function's key, in the slot the first one had
    assert (second.page, second.slot) == (first.page, first.slot)
    assert second.generation != first.generation
    with pytest.raises(KeyError, match="destroyed"):
        vault.key(first)
    vault.destroy(first)  # a second shutdown of the first function, say
    with vault.key(second) as key:
        assert bytes(key) != bytes(KEY_BYTES), "the stale handle wiped the new key"


def test_the_pages_are_locked_and_left_out_of_core_dumps() -> None:
    vault = KeyVault()
    assert vault.protections.locked, "mlock failed on this host (RLIMIT_MEMLOCK?)"
    assert vault.protections.undumpable
    assert all(len(page.memory) == mmap.PAGESIZE for page in vault._pages)
