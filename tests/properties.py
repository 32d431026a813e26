"""How many examples a Hypothesis property runs: its own count where a person runs the suite
(fresh examples each run), a quarter of it (at least 25) in CI (``CI=true``), where the whole
suite has 15 minutes on two cores. There Hypothesis loads its own ``ci`` profile, which
derandomizes: CI runs the same examples each time, so that a failure there reproduces.

>>> examples(200) in (200, 50)
True
"""

from __future__ import annotations

import os


def examples(count: int) -> int:
    """``count``, or in CI a quarter of it (at least 25, and never more than ``count``)."""
    if os.environ.get("CI") == "true":
        return min(count, max(25, count // 4))
    return count
