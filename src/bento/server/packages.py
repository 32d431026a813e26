"""Packages the operator offers to functions, installed read-only into the sandbox's runtime.

The node policy names distributions (``packages = ["bento"]``); at start the server
copies each one, with its dependencies, from its own environment into the runtime
directory that every sandbox sees read-only at /opt/bento (``site/`` goes on a
function's ``sys.path``, after the function's own code and vendored packages). The
descriptor lists what was installed, with versions and importable module names.

"bento" is the Bento library itself with the client's dependencies, so that functions
can call other boxes (``bento.client``). Sandboxes run the host's ``/usr/bin/python3``,
which need not be the Python the server runs on: a distribution with compiled parts is
offered only if each extension module is built for the sandbox's Python (its extension
suffixes, e.g. ``.cpython-311-x86_64-linux-gnu.so`` or ``.abi3.so``); otherwise the
server refuses to start and says which package to rebuild or drop. Bytecode is copied
along and completed with the sandbox's Python, so imports in a function do not compile.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import bento
from bento.errors import BentoError
from bento.protocol.descriptor import OfferedPackage
from bento.protocol.imports import imports_of
from bento.sandbox.command import PYTHON, byte_compile

BENTO = "bento"
# The parts of Bento a function may use (the client, and what it builds on); what they
# import is found by scanning them, so the offer follows the code.
CLIENT_PARTS = ("__init__.py", "errors.py", "client", "protocol", "tor")
# Imported only at run time, when the client reaches Tor's SOCKS port (httpx[socks]).
CLIENT_LAZY = ("socksio",)
SITE = "site"  # under the runtime directory: /opt/bento/site in the sandbox
_COMPILED = (".so", ".pyd")


def sandbox_extension_suffixes() -> list[str]:
    """The file suffixes of extension modules that the sandbox's Python loads."""
    code = "import importlib.machinery as m, json; print(json.dumps(m.EXTENSION_SUFFIXES))"
    argv = [PYTHON, "-I", "-S", "-c", code]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    suffixes: list[str] = json.loads(out.stdout)
    return suffixes


def install(runtime_dir: Path, names: list[str]) -> list[OfferedPackage]:
    """Copy the distributions ``names`` (and what they require) under ``runtime_dir``."""
    if not names:
        return []
    site = runtime_dir / SITE
    site.mkdir(exist_ok=True)
    suffixes = sandbox_extension_suffixes()
    offered: list[OfferedPackage] = []
    wanted = list(names)
    if BENTO in wanted:
        wanted.remove(BENTO)
        # The whole library over the runtime's own subset (the same files, and the rest).
        shutil.copytree(Path(bento.__file__).parent, runtime_dir / BENTO, dirs_exist_ok=True)
        offered.append(OfferedPackage(name=BENTO, version=bento.__version__, modules=[BENTO]))
        wanted.extend(client_dependencies())
    for dist in _closure(wanted):
        offered.append(_copy(dist, site, suffixes))
    byte_compile(runtime_dir)  # what came without bytecode, for the sandbox's Python
    return sorted(offered, key=lambda p: p.name)


def client_dependencies() -> list[str]:
    """The distributions that Bento's client library imports (found with ``ast``)."""
    package = Path(bento.__file__).parent
    modules: set[str] = set()
    for part in CLIENT_PARTS:
        path = package / part
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            modules |= imports_of(file.read_bytes(), str(file))
    owners = metadata.packages_distributions()
    return sorted(
        {dist for module in modules - set(sys.stdlib_module_names) for dist in owners.get(module, [])}
    )


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(names: list[str]) -> list[metadata.Distribution]:
    """The distributions and, recursively, what they require (extras aside)."""
    found: dict[str, metadata.Distribution] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        if _key(name) in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if name in names:
                raise BentoError(
                    f"the policy offers the package {name!r}, which is not installed beside the server",
                    fix=f"install it in the server's environment (pip install {name}) or drop it from "
                    "policy.packages",
                ) from None
            continue  # a requirement for another platform or Python: not needed here
        found[_key(name)] = dist
        for requirement in dist.requires or []:
            if "extra ==" not in requirement:
                match = re.match(r"[A-Za-z0-9._-]+", requirement)
                if match:
                    pending.append(match.group(0))
    return list(found.values())


def _copy(dist: metadata.Distribution, site: Path, suffixes: list[str]) -> OfferedPackage:
    name = dist.metadata["Name"]
    files = [f for f in dist.files or [] if ".." not in f.parts and not f.is_absolute()]
    for file in files:
        if file.name.endswith(_COMPILED) and not file.name.endswith(tuple(suffixes)):
            raise BentoError(
                f"the offered package {name} {dist.version} has a compiled part ({file}) that the "
                f"sandbox's Python ({PYTHON}) cannot load: it loads {', '.join(suffixes)}",
                fix=f"install a build of {name} for that Python, or drop it from policy.packages",
            )
    modules: set[str] = set()
    for file in files:
        source = Path(str(dist.locate_file(file)))
        if not source.is_file():
            continue
        target = site / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        top = file.parts[0]
        if len(file.parts) == 1:
            if top.endswith((".py", *_COMPILED)):
                modules.add(top.split(".")[0])
        elif not top.endswith((".dist-info", ".data")):
            modules.add(top)
    return OfferedPackage(name=name, version=dist.version, modules=sorted(modules))
