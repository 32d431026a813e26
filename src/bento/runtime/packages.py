"""Where a function's imports come from, in this order on ``sys.path``:

1. its own code (``/function``), then ``/function/vendor`` if it ships one;
2. pure-Python wheels it ships (``*.whl`` at the top or in ``vendor/``), imported from
   the archive as they are (zipimport);
3. the standard library, then Bento's runtime (``/opt/bento``), then the packages the
   box offers (``/opt/bento/site``, listed in the box's descriptor).

A function's own copy of a package therefore wins over the box's.
"""

from __future__ import annotations

import os
import sys

OFFERED = "/opt/bento/site"


def setup(code_dir: str) -> None:
    """Put the function's code, its vendored packages and the box's packages on sys.path."""
    sys.path[:0] = [code_dir, *vendored(code_dir)]
    if os.path.isdir(OFFERED):
        sys.path.append(OFFERED)


def vendored(code_dir: str) -> list[str]:
    """The vendor directory and the wheels of the function in ``code_dir``."""
    found = []
    vendor = os.path.join(code_dir, "vendor")
    if os.path.isdir(vendor):
        found.append(vendor)
    for directory in (code_dir, vendor):
        if os.path.isdir(directory):
            found += sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".whl"))
    return found
