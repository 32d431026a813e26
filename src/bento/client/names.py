"""How messages name a box: one rule, used by the client and every command.

>>> box_name("exit0", "q" * 56), box_name(None, "q" * 56), box_name("", "q" * 56)
('exit0', 'qqqqqqqqqqqqqqqq', 'qqqqqqqqqqqqqqqq')
"""

from __future__ import annotations


def box_name(nickname: str | None, onion: str) -> str:
    """Its relay's nickname where known, else the first 16 characters of its onion address."""
    return nickname or onion[:16]
