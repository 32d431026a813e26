"""Checking a function's code before it is uploaded, so mistakes name the user's own file.

The box checks again (it trusts nothing), but it only sees the upload: a single file
arrives there as ``<module>.py``, and a missing entry point would show only at invoke.
Here the error names the file on disk, its line, and the fix.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

from bento.errors import BentoError
from bento.protocol.manifest import Manifest
from bento.protocol.policy import Needs


class Capability(NamedTuple):
    """A capability code can use (``api.storage``), the need that grants it, and the fix."""

    uses: str
    granted: str  # the needs, in words
    fix: str  # the lines to add under [needs]


CAPABILITIES: dict[str, Capability] = {
    "storage": Capability("api.storage", "storage", "storage_mb = 1"),
    "tor": Capability(
        "api.tor", "Tor (circuits or onion services)", "tor_circuits = 1 (or onion_services = 1)"
    ),
    "connect": Capability("api.connect", "network access", "network = true"),
    "listen": Capability("api.listen", "listening sockets", "listen = true"),
    "bento.client": Capability(
        "bento.client", "calls to other boxes", "call_boxes = true and tor_circuits = 1"
    ),
}


def _granted(name: str, needs: Needs) -> bool:
    return {
        "storage": needs.storage_mb > 0,
        "tor": bool(needs.tor_circuits or needs.onion_services),
        "connect": needs.network,
        "listen": needs.listen,
        "bento.client": needs.call_boxes,
    }[name]


# Where each capability lives, by the dotted path code reaches it by, however imported.
CAPABILITY_PATHS: dict[str, str] = {
    "bento.runtime.api.storage": "storage",
    "bento.runtime.storage": "storage",
    "bento.runtime.api.tor": "tor",
    "bento.runtime.tor": "tor",
    "bento.runtime.api.connect": "connect",
    "bento.runtime.net.connect": "connect",
    "bento.runtime.api.listen": "listen",
    "bento.runtime.net.listen": "listen",
    "bento.client": "bento.client",
}


def unasked_capabilities(path: Path, manifest: Manifest) -> list[str]:
    """One warning per capability the code uses (found statically, never by running it)
    that the manifest does not ask for: the box would refuse it at run time."""
    used: dict[str, str] = {}  # capability -> where it is first used
    for source in _sources(path):
        for name, line in capabilities_used(_parse(source)).items():
            used.setdefault(name, f"{source.name}, line {line}")
    warnings = []
    for name, where in used.items():
        if not _granted(name, manifest.needs):
            capability = CAPABILITIES[name]
            warnings.append(
                f"{where} uses {capability.uses}, but the manifest asks for no {capability.granted}: "
                f"add {capability.fix} under [needs], or the call fails at run time"
            )
    return warnings


def capabilities_used(tree: ast.Module) -> dict[str, int]:
    r"""The capabilities a module uses, each with the first line that does, however it
    imports the runtime: ``api`` or an alias of it, the module by its dotted name, a name
    imported from it, or the runtime's own submodules.

    >>> code = "import bento.runtime.api as b\ndef f():\n    b.storage.put('k', b'v')\n"
    >>> capabilities_used(ast.parse(code))
    {'storage': 3}
    >>> capabilities_used(ast.parse("from bento.runtime.net import listen as serve\n"))
    {'listen': 1}
    """
    bound = _bindings(tree)  # local name -> the dotted path it stands for
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            paths = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            paths = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, (ast.Name, ast.Attribute)):
            paths = [path] if (path := _dotted(node, bound)) is not None else []
        else:
            continue
        for path in paths:
            for prefix, capability in CAPABILITY_PATHS.items():
                if path == prefix or path.startswith(prefix + "."):
                    found[capability] = min(found.get(capability, node.lineno), node.lineno)
    return dict(sorted(found.items(), key=lambda item: item[1]))


def _bindings(tree: ast.Module) -> dict[str, str]:
    """What each name an import binds stands for: ``import a.b`` binds ``a`` to ``a``,
    ``import a.b as x`` binds ``x`` to ``a.b``, ``from a import b as x`` binds ``x`` to ``a.b``
    (a name ``*`` brings from the runtime's api: each of its capabilities)."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    bound[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if alias.name == "*":
                    for path in CAPABILITY_PATHS:
                        if path.startswith(node.module + ".") and "." not in path[len(node.module) + 1 :]:
                            bound[path.rsplit(".", 1)[1]] = path
                else:
                    bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def _dotted(node: ast.expr, bound: dict[str, str]) -> str | None:
    """The dotted path an expression like ``x.storage.put`` names, through ``bound``."""
    if isinstance(node, ast.Name):
        return bound.get(node.id)
    if isinstance(node, ast.Attribute) and (base := _dotted(node.value, bound)) is not None:
        return f"{base}.{node.attr}"
    return None


def _sources(path: Path) -> list[Path]:
    if path.name.endswith((".tar.gz", ".tgz")):
        return []  # an archive is checked by the box, which unpacks it
    if path.is_dir():
        return [p for p in sorted(path.rglob("*.py")) if p.relative_to(path).parts[0] != "vendor"]
    return [path]


def check(path: Path, manifest: Manifest) -> None:
    """Refuse code that the box would refuse, or that has nothing to invoke."""
    if path.name.endswith((".tar.gz", ".tgz")):
        return  # an archive is checked by the box, which unpacks it
    if path.is_dir():
        module = _module_file(path, manifest.module)
        for source in _sources(path):  # vendor/ is third-party: the box skips it too
            _parse(source)
    else:
        module = path
    _entry_points(module, _parse(module))


def _module_file(directory: Path, module: str) -> Path:
    parts = module.split(".")
    candidates = (directory.joinpath(*parts).with_suffix(".py"), directory.joinpath(*parts, "__init__.py"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    found = sorted(p.stem for p in directory.glob("*.py"))
    hint = f" (it has {', '.join(found)})" if found else " (it has no .py file at its top)"
    raise BentoError(
        f"{directory} has no module {module!r}: neither {candidates[0]} nor {candidates[1]} exists{hint}",
        fix=f'name the module in a manifest (`module = "{found[0] if found else "NAME"}"`, --manifest FILE), '
        f"or add {candidates[0].name} to {directory}",
    )


def _parse(source: Path) -> ast.Module:
    try:
        text = source.read_bytes()
    except OSError as exc:
        raise BentoError(f"cannot read {source}: {exc.strerror}") from None
    try:
        return ast.parse(text, filename=str(source))
    except SyntaxError as exc:
        where = f"{source}, line {exc.lineno}" if exc.lineno else str(source)
        shown = f": {exc.text.strip()}" if exc.text and exc.text.strip() else ""
        raise BentoError(
            f"syntax error in {where}: {exc.msg}{shown}",
            fix=f"correct {source.name} (`python3 -m py_compile {source}` shows the same error)",
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise BentoError(f"{source} is not Python source the box can compile: {exc}") from None


def _entry_points(module: Path, tree: ast.Module) -> None:
    public = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    if not public:
        raise BentoError(
            f"{module} has no entry point: no top-level `def` whose name does not start with `_`",
            fix=f"add a function to invoke at the top level of {module.name}, e.g. `def main():`",
        )
