"""Narrowed invocation tokens: hand someone a right that does only what you mean.

A function's invocation token (the one ``deploy`` returns) lets its holder invoke any entry
point, any number of times, for as long as the function lives. :func:`narrow` derives from
it, offline, a token that allows less: some entry points, a number of uses, until a time,
exactly some arguments. The box checks each caveat before anything starts; the narrowed token
can be narrowed again by whoever holds it, but never widened, and it never shuts the function
down, asks for blinded tokens or reaches a session it did not open.

    >>> from datetime import datetime, timedelta, timezone
    >>> from bento.server.attenuation import Narrowing
    >>> _, token = Narrowing.mint("fn")                   # what a deploy hands its owner
    >>> soon = datetime.now(timezone.utc) + timedelta(hours=2)
    >>> ticket = narrow(token, entries=["get"], uses=1, until=soon)
    >>> try:
    ...     narrow(ticket, entries=[])
    ... except NarrowingRefused as exc:
    ...     print(exc.message)
    cannot narrow that token: name at least one entry point
    >>> try:
    ...     narrow("not-a-token", uses=1)
    ... except UnreadableToken as exc:
    ...     print(exc.fix)
    narrow a function's invocation token (or a narrowed one), as deploy or a capability gave it

Hand it over as a capability (``bento:invoke:ONION:FUNCTION:TOKEN``, see
:mod:`bento.client.capability`); ``bento tokens narrow`` does both from the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bento.errors import NarrowingRefused, UnreadableToken
from bento.protocol import attenuation


def narrow(
    token: str,
    *,
    entries: Sequence[str] | None = None,
    uses: int | None = None,
    until: datetime | None = None,
    args: Sequence[Any] | None = None,
) -> str:
    """``token`` narrowed to these entry points, at most ``uses`` invocations, none after
    ``until`` (a time-zone-aware datetime, by the box's clock), and exactly these positional
    arguments; what is left ``None`` stays as ``token`` allowed it. Nothing is sent anywhere.

    Raises :class:`UnreadableToken` for a token that cannot be narrowed (a blinded one, a
    plain one of a box from before narrowing, one altered), :class:`NarrowingRefused` for a
    caveat that cannot be written; both are :class:`BentoError`."""
    try:
        return attenuation.narrow(token, entries=entries, uses=uses, until=until, args=args)
    except attenuation.UnreadableToken as exc:
        raise UnreadableToken(
            f"cannot narrow that token: {exc}",
            fix="narrow a function's invocation token (or a narrowed one), as deploy or a capability gave it",
        ) from None
    except (TypeError, ValueError) as exc:  # a caveat that cannot be written, an argument not JSON
        raise NarrowingRefused(f"cannot narrow that token: {exc}") from None
