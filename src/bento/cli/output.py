"""How the ``bento`` command talks to people and to scripts.

Human output goes through rich (tables, colours, progress); ``--json`` prints one JSON
document on stdout and nothing else there, so scripts can parse it, errors included.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bento.errors import BentoError, Refused

# soft_wrap: long lines (paths, errors) stay whole for copying and for scripts.
# Wide enough for a relay fingerprint in a table when output is not a terminal.
_width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 140
console = Console(highlight=False, soft_wrap=True, width=_width)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

WIDE = 1000  # columns for --wide: every table row on one line, however long


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def step(message: str) -> None:
    """A progress line on stderr, so stdout stays clean for --json."""
    errors.print(f"[dim]…[/dim] {message}")


def table(columns: Sequence[str], *, title: str | None = None, wide: bool = False) -> Table:
    """A table whose cells are never cut: a long id or onion address wraps onto more lines
    (``overflow="fold"``) unless ``wide``, where every row stays on one line."""
    rows = Table(title=title)
    for column in columns:
        rows.add_column(column, overflow="fold", no_wrap=wide)
    return rows


def print_table(rows: Table, *, wide: bool = False) -> None:
    (Console(highlight=False, width=WIDE) if wide else console).print(rows)


def fail(error: BentoError, *, as_json: bool = False) -> int:
    """Report ``error``: on stderr for people; with ``--json``, as JSON on stdout. Returns the
    exit status its kind calls for."""
    if as_json:
        report: dict[str, Any] = {"error": {"message": error.message, "fix": error.fix}}
        if isinstance(error, Refused):  # the box's own words for programs
            report["error"].update(code=str(error.code), status=error.status)
        emit_json(report)
        return int(error.exit_status)
    errors.print(f"[bold red]error:[/bold red] {escape(error.message)}")  # a message's [needs] is text
    if error.fix:
        errors.print(f"[bold]fix:[/bold] {escape(error.fix)}")
    return int(error.exit_status)
