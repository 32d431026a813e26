"""How the ``bento`` command talks to people and to scripts.

Human output goes through rich (tables, colours, progress); ``--json`` prints one JSON
document on stdout and nothing else there, so scripts can parse it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console

from bento.errors import BentoError

# soft_wrap: long lines (paths, errors) stay whole for copying and for scripts.
# Wide enough for a relay fingerprint in a table when output is not a terminal.
_width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 140
console = Console(highlight=False, soft_wrap=True, width=_width)
errors = Console(stderr=True, highlight=False, soft_wrap=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def step(message: str) -> None:
    """A progress line on stderr, so stdout stays clean for --json."""
    errors.print(f"[dim]…[/dim] {message}")


def fail(error: BentoError) -> int:
    errors.print(f"[bold red]error:[/bold red] {error.message}", markup=True)
    if error.fix:
        errors.print(f"[bold]fix:[/bold] {error.fix}")
    return 1
