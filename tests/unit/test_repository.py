"""The repository as a reader finds it: no half-finished merge in any text it ships."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKERS = ("<<<<<<< ", ">>>>>>> ")


def test_no_file_holds_merge_conflict_markers() -> None:
    # A merge once committed its conflict into README.md and three docs; tests of the code
    # could not see it. Files git tracks, plus new ones it does not ignore.
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    conflicted = []
    for name in listed:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".toml", ".sh", ".json", ".txt", ".yml", ".cfg"}:
            continue
        if path.is_file() and any(
            line.startswith(MARKERS) for line in path.read_text(errors="replace").splitlines()
        ):
            conflicted.append(name)
    assert conflicted == [], f"merge conflict markers in {conflicted}"


# The layers of src/bento, as the README's layout draws them: each package may import only
# those named here (lazy imports inside functions included). A new arrow is a decision about
# the architecture, to be made here, in review, not by accident in a module.
MAY_IMPORT = {
    "errors": {"protocol"},  # the one exception hierarchy carries the protocol's error codes
    "protocol": {"errors"},  # onion addresses and descriptors refuse a bad key with a BentoError and its fix
    "tor": {"errors"},
    "runtime": {"protocol"},  # what runs inside the sandbox: nothing of the server's
    "sandbox": {"protocol"},
    "client": {"errors", "protocol", "runtime", "tor"},  # runtime: the transport inside a function
    "server": {"client", "errors", "protocol", "sandbox", "tor"},  # client: local_box() hands one out
    "functions": {"client", "errors", "protocol", "runtime"},
    "testnet": {"client", "errors", "protocol", "sandbox", "server", "tor"},
    "eval": {"client", "errors", "functions", "testnet", "tor"},
    "cli": {"client", "errors", "eval", "functions", "protocol", "server", "testnet", "tor"},
    "__main__": {"cli"},
}
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted((ROOT / "src" / "bento").rglob("*.py"))


def test_no_package_imports_a_layer_above_it() -> None:
    import ast

    crossings = []
    for path in _modules():
        parts = path.relative_to(ROOT / "src" / "bento").parts
        layer = parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if not name.startswith("bento."):
                    continue
                target = name.split(".")[1]
                if target != layer and target not in MAY_IMPORT.get(layer, set()):
                    crossings.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert crossings == []


def test_no_module_is_over_400_lines() -> None:
    long = [
        f"{p.relative_to(ROOT)}: {n}"
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert long == []


def test_every_docstring_example_is_collected() -> None:
    # Examples rot where nothing runs them: every module with one lies under pyproject's
    # testpaths (pytest runs them with --doctest-modules). Once 14 modules' never ran.
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    paths = config["tool"]["pytest"]["ini_options"]["testpaths"]
    uncollected = [
        str(module.relative_to(ROOT))
        for module in sorted((ROOT / "src").rglob("*.py"))
        if ">>> " in module.read_text() and not any(module.is_relative_to(ROOT / path) for path in paths)
    ]
    assert uncollected == [], f"add these to pyproject's testpaths: {uncollected}"
