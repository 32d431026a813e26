"""The ``bento`` command."""

from bento.cli.main import main

__all__ = ["main"]
