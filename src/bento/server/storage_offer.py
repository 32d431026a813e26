"""What a function's storage protects against, as the box's descriptor says it (bento.server.store).

The text a user reads before trusting a box with data: honest about the operator, and
about what this box's memory protections really are.
"""

from __future__ import annotations

from bento.protocol.descriptor import StorageOffer
from bento.server.keyvault import Protections


def storage_offer(held: Protections) -> StorageOffer:
    """The offer of a store whose keys are held with the protections ``held``."""
    return StorageOffer(
        cipher="AES-256-GCM, a random nonce per object; function id, object id and key name "
        "authenticated with each value",
        keys="one random key per function, only in the Bento server's memory "
        f"(locked against swap: {'yes' if held.locked else 'no'}; "
        f"left out of core dumps: {'yes' if held.undumpable else 'no'}); never on disk",
        lifetime="until the function is shut down (key destroyed, ciphertext deleted) or the server "
        "restarts (keys lost, so the data is lost: by design)",
        protects_against=[
            "anyone who reads the box's disk, its backups or a stolen drive: only ciphertext, "
            "random object names and sizes are there",
            "tampering with, swapping or rolling back stored objects on disk: detected, the read fails",
            "recovering data of a function after its shutdown, even from an earlier disk copy",
        ],
        does_not_protect_against=[
            "the box's operator or root reading the server's memory (keys) or the function's memory "
            "(values in use): without SGX the operator is trusted with what functions handle",
            "the number, sizes and timing of writes, which the disk shows",
            "loss of the data when the server restarts",
            # Bento runs no enclave yet (runtime.sgx is false): say what one would change.
            "this box has no SGX: with SGX the keys and the function would live in an attested "
            "enclave, out of the operator's reach; the disk would still show sizes and timing",
        ],
    )
