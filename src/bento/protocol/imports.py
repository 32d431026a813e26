"""What Python code imports, found statically (``ast``): never by running it.

Used on both sides: ``bento deploy`` warns about imports that neither the upload nor the
box provides, and a box works out which distributions its own client library needs
before offering it to functions. Imports inside ``try: ... except ImportError`` and under
``if TYPE_CHECKING:`` are optional by construction and are not reported; relative
imports stay inside the package and are not reported either.
"""

from __future__ import annotations

import ast
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

_OPTIONAL = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def imports_of(source: bytes, name: str = "<upload>") -> set[str]:
    """The top-level modules ``source`` imports unconditionally (empty if it does not parse)."""
    try:
        tree = ast.parse(source, name)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    found: set[str] = set()
    _walk(tree, found)
    return found


def _walk(node: ast.AST, found: set[str]) -> None:
    if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
        for child in (*node.handlers, *node.orelse, *node.finalbody):
            _walk(child, found)
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.orelse:
            _walk(child, found)
        return
    if isinstance(node, ast.Import):
        found.update(_top(alias.name) for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module == "bento":
            found.update(_top(f"bento.{alias.name}") for alias in node.names)
        else:
            found.add(_top(node.module))
    for child in ast.iter_child_nodes(node):
        _walk(child, found)


def _top(module: str) -> str:
    # bento is special: its runtime is in every sandbox, the rest only where the box offers it.
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "bento" and len(parts) > 1 else parts[0]


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type
    if kinds is None:
        return True
    names = kinds.elts if isinstance(kinds, ast.Tuple) else [kinds]
    return any(isinstance(n, ast.Name) and n.id in _OPTIONAL for n in names)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of_tree(root: Path, *, skip: Iterable[str] = ()) -> dict[str, list[str]]:
    """Every module imported by the .py files under ``root`` -> the files importing it."""
    skipped = set(skip)
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if skipped & set(relative.parts[:1]):
            continue
        for module in imports_of(path.read_bytes(), str(relative)):
            found.setdefault(module, []).append(str(relative))
    return found


def provided_by_upload(root: Path) -> set[str]:
    """The top-level modules an upload directory makes importable: its own, vendor/, wheels."""
    provided: set[str] = set()
    for directory in (root, root / "vendor"):
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            if entry.suffix == ".py":
                provided.add(entry.stem)
            elif entry.is_dir() and any(entry.rglob("*.py")):
                provided.add(entry.name)
            elif entry.suffix == ".whl":
                provided.update(_wheel_modules(entry))
    return provided


def _wheel_modules(wheel: Path) -> set[str]:
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return set()
    tops = {n.split("/")[0] for n in names}
    return {t.removesuffix(".py") for t in tops if not t.endswith((".dist-info", ".data"))}


def missing(root: Path, offered: Iterable[str]) -> dict[str, list[str]]:
    """Imports of the upload in ``root`` that neither it, the standard library nor the box provide."""
    offered = set(offered)
    available = provided_by_upload(root) | offered | set(sys.stdlib_module_names) | {"bento", "bento.runtime"}

    def provided(module: str) -> bool:
        return module in available or (module.startswith("bento.") and "bento" in offered)

    imported = imports_of_tree(root, skip=("vendor",))
    return {module: files for module, files in sorted(imported.items()) if not provided(module)}
