"""The arguments of an entry point, from the command line: JSON values, never evaluated.

``bento invoke FUNCTION ENTRY 3 '"text"' '{"k": 1}' --kw limit=10 --kw name='"x"'``: each
positional ARG and each ``--kw NAME=VALUE`` value is JSON; with ``--str`` every one of them
is taken as a plain string instead. A value that is not JSON is an error, not a guess: a
typo such as ``[1, 2`` must not quietly reach the function as the string ``"[1, 2"``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bento.errors import BentoError


def parse(
    values: Sequence[str], keywords: Sequence[str], *, strings: bool
) -> tuple[list[Any], dict[str, Any]]:
    """``(args, kwargs)`` for the entry point."""
    args = [value if strings else _json(value, f"argument {i + 1}") for i, value in enumerate(values)]
    kwargs: dict[str, Any] = {}
    for item in keywords:
        name, equals, value = item.partition("=")
        if not equals or not name.isidentifier():
            raise BentoError(
                f"--kw {item!r} is not NAME=VALUE",
                fix="write --kw limit=10, or --kw name='\"text\"' (NAME a Python identifier, VALUE JSON)",
            )
        if name in kwargs:
            raise BentoError(f"--kw {name} is given twice", fix="give each keyword argument once")
        kwargs[name] = value if strings else _json(value, f"--kw {name}")
    return args, kwargs


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BentoError(
            f"{what} is not valid JSON: {text!r} ({exc})",
            fix=f"quote a string as JSON ('\"{text}\"'), or pass every argument as a string with --str",
        ) from None
