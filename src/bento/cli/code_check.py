"""Checking a function's code before it is uploaded, so mistakes name the user's own file.

The box checks again (it trusts nothing), but it only sees the upload: a single file
arrives there as ``<module>.py``, and a missing entry point would show only at invoke.
Here the error names the file on disk, its line, and the fix.
"""

from __future__ import annotations

import ast
from pathlib import Path

from bento.errors import BentoError
from bento.protocol.manifest import Manifest


def check(path: Path, manifest: Manifest) -> None:
    """Refuse code that the box would refuse, or that has nothing to invoke."""
    if path.name.endswith((".tar.gz", ".tgz")):
        return  # an archive is checked by the box, which unpacks it
    if path.is_dir():
        module = _module_file(path, manifest.module)
        for source in sorted(path.rglob("*.py")):
            if source.relative_to(path).parts[0] != "vendor":  # third-party: the box skips it too
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
