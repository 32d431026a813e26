"""The server's process cannot be dumped or traced by its own user once it protects itself."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys

from bento.server import keyvault, undumpable

PROBE = """
import json, resource
from bento.server import undumpable
before = undumpable.dumpable()
undumpable.protect()
print(json.dumps({"before": before, "after": undumpable.dumpable(),
                  "core": resource.getrlimit(resource.RLIMIT_CORE)}))
"""


def test_a_protected_process_is_not_dumpable_and_writes_no_core() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(done.stdout)
    assert seen["before"] is True and seen["after"] is False
    assert seen["core"] == [0, 0]


def test_the_modules_examples_run() -> None:
    for module in (undumpable, keyvault):
        assert doctest.testmod(module).failed == 0, module.__name__
