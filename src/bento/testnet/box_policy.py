"""The node policy of a testnet's Bento boxes: the testnet's own, or one the user gives.

Testnet boxes let functions do everything a test may want to try, within modest limits;
``bento testnet up --policy FILE`` replaces that policy with a node policy file (the
``[policy]`` table of a server config, written without its ``policy.`` prefix), and
``--instances-total N`` / ``--instances-per-function N`` change its size limits, so that
anyone can try a bigger box without editing code.

>>> policy = box_policy(None, instances_total=500, instances_per_function=250)
>>> policy.instances_total, policy.instances_per_function
(500, 250)
>>> print(*[line for line in server_config(policy, privileged=True).splitlines() if "instances" in line])
instances_per_function = 250 instances_total = 500
"""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bento.errors import describe_validation
from bento.protocol.policy import NodePolicy
from bento.sandbox import watch
from bento.sandbox.spec import CHROMIUM_BINARY
from bento.testnet.errors import TestnetError

_TESTNET_POLICY = """\
syscall_profiles = ["compute", "processes", "network"{chromium_profile}]
packages = ["bento", "selectolax"{chromium_package}]  # selectolax: Browser's HTML parser
total_memory_mb = 6144
total_cpu_share = 1.5
instances_total = 128

[instance]
memory_mb = {memory_mb}
cpu_seconds = {cpu_seconds}
wall_seconds = 600
processes = {processes}
scratch_mb = {scratch_mb}

[network]
allowed = true
listen = true
private_destinations = true  # the testnet's relays and web servers are all on loopback

[tor]
circuits = true
onion_services = true
max_onion_services = 64  # counted per function: LoadBalancer's replicas share a box
call_boxes = true

[storage]
allowed = true
max_mb = 64

[cover]  # link cover of session streams (bento browse --cover)
max_rate = 2000
max_total_rate = 8000
"""


def default_policy() -> NodePolicy:
    """The testnet's own. Where this host has Debian's chromium and Playwright, boxes offer
    the chromium profile (Browser's --engine chromium) and the larger instances it needs."""
    chromium = Path(CHROMIUM_BINARY).exists() and importlib.util.find_spec("playwright") is not None
    text = _TESTNET_POLICY.format(
        chromium_profile=', "chromium"' if chromium else "",
        chromium_package=', "playwright"' if chromium else "",
        memory_mb=1024 if chromium else 256,
        cpu_seconds=120 if chromium else 60,
        processes=256 if chromium else 32,
        scratch_mb=256 if chromium else 32,
    )
    return NodePolicy.model_validate(tomllib.loads(text))


def box_policy(
    path: Path | None, *, instances_total: int | None = None, instances_per_function: int | None = None
) -> NodePolicy:
    """The policy from ``path`` (else the testnet's), with the size limits given; a clear
    TestnetError for a file that cannot be read or is not a node policy."""
    if path is None:
        data = default_policy().model_dump(mode="json")
    else:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise TestnetError(f"cannot read the box policy {path}: {exc}") from None
    limits = {"instances_total": instances_total, "instances_per_function": instances_per_function}
    data.update({name: value for name, value in limits.items() if value is not None})
    try:
        return NodePolicy.model_validate(data)
    except ValidationError as exc:
        where = f"the box policy {path}" if path else "the box policy"
        raise TestnetError(
            f"{where} is not valid: {describe_validation(exc)}",
            fix="see docs/operator.md for the node policy's fields",
        ) from None


def server_config(policy: NodePolicy, *, privileged: bool) -> str:
    """A box's server config with ``policy``. A box not run by root (a dedicated user, or a
    testnet run by a plain user) may have no cgroup to cap what its instances use: the
    testnet accepts what such a box cannot enforce by name (:func:`accepted_unenforced`),
    and the descriptor says so."""
    head = "" if privileged else f"accept_unenforced = {json.dumps(accepted_unenforced())}\n\n"
    lines = _toml_lines(policy.model_dump(mode="json"), "")
    return "# Written by `bento testnet`: the policy of a testnet Bento box.\n" + head + "[policy]\n" + lines


def accepted_unenforced() -> list[str]:
    """What an unprivileged box may be unable to enforce, accepted for the testnet: the CPU
    share of all its instances (a cgroup's quota), and, where the kernel does not count
    processes per user namespace, the processes of an instance (a cgroup's pids limit)."""
    return ["cpu_share"] + ([] if watch.userns_nproc() else ["processes"])


def _toml_lines(table: dict[str, Any], prefix: str) -> str:
    """``table`` as TOML dotted keys: JSON's numbers, booleans, strings and arrays of them are
    TOML's too (a policy's numbers are finite); None is an absent key."""
    text = ""
    for key, value in table.items():
        if isinstance(value, dict):
            text += _toml_lines(value, f"{prefix}{key}.")
        elif value is not None:
            text += f"{prefix}{key} = {json.dumps(value)}\n"
    return text
