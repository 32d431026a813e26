"""The box's side of narrowed invocation tokens: the function's root key, its caveats, its counts.

At deploy the box makes an Ed25519 key pair for the function, signs the owner's invocation
token with it (a Biscuit whose authority block names the function) and drops the private
key: from then on it holds only the public key. No token can be minted or widened by anyone,
the box included, and there is no per-token secret to keep or to leak. The owner narrows the
token offline (:func:`bento.protocol.attenuation.narrow`), and so can anyone who holds a
narrowed one; the box verifies every caveat of every block before anything starts.

A narrowed token stands for invocations only: never a shutdown, never blinded tokens, and
its session listing shows only the sessions whose rights its holder names (the ones it
opened). Uses are counted per block that limits them, by the block's revocation id, and
taken in one synchronous step with the check: N invocations at once of a one-use token start
one session (:class:`UseHold`, given back if the instance never starts).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import biscuit_auth

from bento.protocol import attenuation
from bento.protocol.errors import ErrorCode
from bento.server.refusal import BoxError

MAX_COUNTED = 10_000  # blocks whose uses one function counts: bounds the memory tokens can take
CHECK_TIME = timedelta(milliseconds=50)  # Biscuit's default, 1 ms, fails under a loaded host's jitter
_FAILED = re.compile(r"Check n°\d+ in (?:block n°\d+|authorizer): (?:check if|check all|reject if) ?(\w*)")
_REASONS = {
    "entry": "it does not allow that entry point",
    "use": "its uses are spent",
    "time": "it has expired (by the box's clock)",
    "arg": "it is bound to other arguments",
    "arg_count": "it is bound to other arguments",
    "kwarg_count": "it is bound to other arguments",
    "function": "it is another function's token",
}


@dataclass
class _Count:
    spent: int = 0
    held: int = 0  # uses that invocations in progress hold: spent once their instance exists


class UseHold:
    """One use of each counting block, set aside for one invocation: spent once its instance
    exists, given back if it never does (a payment, as ``Session.payment`` takes)."""

    def __init__(self, counts: Sequence[_Count]) -> None:
        self._counts, self._settled = tuple(counts), False
        for count in self._counts:
            count.held += 1

    def spend(self) -> None:
        if not self._settled:
            self._settled = True
            for count in self._counts:
                count.held -= 1
                count.spent += 1

    def release(self) -> None:
        if not self._settled:
            self._settled = True
            for count in self._counts:
                count.held -= 1


class Narrowing:
    """A function's root public key, and the uses of its narrowed tokens so far."""

    def __init__(self, function_id: str, root: biscuit_auth.PublicKey) -> None:
        self.function_id = function_id
        self._root = root
        self._counts: dict[str, _Count] = {}  # revocation id of a counting block -> its uses

    @classmethod
    def mint(cls, function_id: str) -> tuple[Narrowing, str]:
        """A new function's narrowing, and its root invocation token (handed out once)."""
        pair = biscuit_auth.KeyPair()
        root = biscuit_auth.BiscuitBuilder("function({id})", {"id": function_id}).build(pair.private_key)
        return cls(function_id, pair.public_key), attenuation.encode(pair.public_key, root)
        # ``pair`` goes out of scope here: the private key is never stored.

    def verify(self, wire: str) -> biscuit_auth.Biscuit:
        """The token, if the function's root key signed its chain; else a ``wrong-token`` refusal."""
        try:
            return attenuation.parse(wire, self._root)
        except attenuation.AttenuationError as exc:
            raise BoxError(
                ErrorCode.WRONG_TOKEN,
                f"that is not the invocation token of function {self.function_id}, "
                f"nor one narrowed from it: {exc}",
                "send the token exactly as its owner (or `bento tokens narrow`) gave it",
            ) from None

    def admit(
        self, wire: str, entry: str, args: list[Any], kwargs: dict[str, Any], now: datetime | None = None
    ) -> UseHold:
        """Check every caveat of ``wire`` against this invocation, and hold one use of each
        counting block; a ``caveat-refused`` refusal says which caveats failed, never the token."""
        token = self.verify(wire)
        counted = [token.revocation_ids[i] for i in attenuation.counted_blocks(token)]
        fresh = [block for block in counted if block not in self._counts]
        if len(self._counts) + len(fresh) > MAX_COUNTED:
            raise BoxError(
                ErrorCode.CAVEAT_REFUSED,
                f"this box counts the uses of at most {MAX_COUNTED} narrowed tokens per function",
                "ask the function's owner to deploy it again",
            )
        counts = [self._counts.get(block) or _Count() for block in counted]
        authorizer = self._facts(entry, args, kwargs, now or datetime.now(UTC))
        for index, count in zip(attenuation.counted_blocks(token), counts, strict=True):
            authorizer.add_fact(
                biscuit_auth.Fact("use({i}, {n})", {"i": index, "n": count.spent + count.held + 1})
            )
        try:
            authorizer.build(token).authorize()
        except (biscuit_auth.AuthorizationError, biscuit_auth.DataLogError) as exc:
            raise _refused(str(exc), entry) from None
        for block, count in zip(counted, counts, strict=True):
            self._counts.setdefault(block, count)
        return UseHold(counts)

    def _facts(
        self, entry: str, args: list[Any], kwargs: dict[str, Any], now: datetime
    ) -> biscuit_auth.AuthorizerBuilder:
        authorizer = biscuit_auth.AuthorizerBuilder(
            "entry({entry}); time({now}); arg_count({args}); kwarg_count({kwargs});"
            "check if function({id}); allow if true;",
            {"entry": entry, "now": now, "args": len(args), "kwargs": len(kwargs), "id": self.function_id},
        )
        for position, value in enumerate(args):
            authorizer.add_fact(
                biscuit_auth.Fact("arg({i}, {v})", {"i": position, "v": attenuation.as_text(value)})
            )
        # biscuit-python 0.4's stubs lack the builder's limits, which its build has.
        limits = authorizer.limits()  # type: ignore[attr-defined]
        limits.max_time = CHECK_TIME
        authorizer.set_limits(limits)  # type: ignore[attr-defined]
        return authorizer


def _refused(detail: str, entry: str) -> BoxError:
    """Why the caveats refused, in words; the checks' own text (which may hold argument values)
    is not repeated. A failure this box cannot name is a caveat it does not understand."""
    reasons = {
        _REASONS.get(name, "it has a caveat this box does not understand") for name in _FAILED.findall(detail)
    }
    if not reasons:
        reasons = {
            "its caveats could not be checked in time"
            if "limit" in detail.lower()
            else "its caveats refuse it"
        }
    return BoxError(
        ErrorCode.CAVEAT_REFUSED,
        f"the narrowed token does not allow invoking {entry!r} so: " + "; ".join(sorted(reasons)),
        "a narrowed token allows only what its caveats say and can never be widened: "
        "ask whoever gave it to you for one that allows this invocation",
    )
