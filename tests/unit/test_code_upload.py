"""Receiving code: syntax checked at upload, archives unpacked, entry points found.

Hostile archives (links, escapes, bombs) are tests/unit/test_hostile_uploads.py."""

from __future__ import annotations

import io
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bento.protocol.manifest import Manifest
from bento.protocol.messages import CodeKind
from bento.server import code
from bento.server.code import CodeError

LIMIT = 1 << 20


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _file(name: str, data: bytes | str, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data.encode() if isinstance(data, str) else data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _install_module(tmp_path: Path, source: str, module: str = "main") -> list[str]:
    return code.install(
        source.encode(), CodeKind.MODULE, Manifest(name="t", module=module), tmp_path / "code", LIMIT
    )


def _install_tar(tmp_path: Path, raw: bytes, module: str = "main", limit: int = LIMIT) -> list[str]:
    return code.install(raw, CodeKind.TAR_GZ, Manifest(name="t", module=module), tmp_path / "code", limit)


def test_a_single_file_is_saved_as_the_manifest_module(tmp_path: Path) -> None:
    assert _install_module(tmp_path, "def run():\n    return 1\n", module="tool") == ["run"]
    assert (tmp_path / "code" / "tool.py").read_text() == "def run():\n    return 1\n"


def test_entry_points_are_the_public_top_level_defs(tmp_path: Path) -> None:
    source = """
import os
from json import dumps

def zeta(): pass
def alpha(x, *args, **kwargs): pass
def _private(): pass

@staticmethod
def decorated(): pass

async def coroutine(): pass   # not callable synchronously: not an entry point

class Tool:
    def method(self): pass

def outer():
    def inner(): pass

lam = lambda: None
if True:
    def conditional(): pass
"""
    assert _install_module(tmp_path, source) == ["alpha", "decorated", "outer", "zeta"]


def test_syntax_errors_are_refused_with_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(CodeError, match=r"syntax error in main\.py line 3: "):
        _install_module(tmp_path, "x = 1\n\ndef broken(:\n    pass\n")

    raw = _tar(_file("main.py", "import helpers\n"), _file("helpers/util.py", "ok = 1\nbad = (\n"))
    with pytest.raises(CodeError, match=r"helpers/util\.py line 2"):
        _install_tar(tmp_path / "tar", raw)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (b"x = 1\n\xff\xfe = 2\n", "line 2"),  # not UTF-8
        (b"x = 1\x00\n", "null bytes"),
        pytest.param(
            b"x = 1\x00\n",
            "main.py",
            id="nul-names-the-file",
        ),
        (b"\tdef f():\n pass\n", "line 1"),  # indentation
    ],
)
def test_sources_that_do_not_compile_are_refused(tmp_path: Path, source: bytes, problem: str) -> None:
    with pytest.raises(CodeError, match=problem):
        code.install(source, CodeKind.MODULE, Manifest(name="t"), tmp_path / "code", LIMIT)


def test_a_single_file_needs_a_top_level_module_name(tmp_path: Path) -> None:
    with pytest.raises(CodeError, match="no dots"):
        _install_module(tmp_path, "def f(): pass\n", module="pkg.mod")


def test_archives_are_packages(tmp_path: Path) -> None:
    raw = _tar(
        _file("pkg/__init__.py", "def from_init(): pass\n"),
        _file("pkg/mod.py", "from . import helper\ndef from_mod(): pass\n"),
        _file("pkg/helper.py", "def not_this(): pass\n"),
        _file("data/table.csv", "a,b\n"),
    )
    assert _install_tar(tmp_path / "a", raw, module="pkg.mod") == ["from_mod"]
    assert _install_tar(tmp_path / "b", raw, module="pkg") == ["from_init"]
    assert (tmp_path / "a" / "code" / "data" / "table.csv").read_text() == "a,b\n"
    with pytest.raises(CodeError, match=r"no module 'main' \(looked for main\.py\)"):
        _install_tar(tmp_path / "c", raw)


def test_odd_modes_are_neutralised_and_the_owner_execute_bit_kept(tmp_path: Path) -> None:
    raw = _tar(
        _file("main.py", "def f(): pass\n", mode=0o4777),  # set-uid, world-writable
        _file("bin/tool", "#!/bin/sh\n", mode=0o700),
    )
    assert _install_tar(tmp_path, raw) == ["f"]
    main = (tmp_path / "code" / "main.py").stat().st_mode
    assert not main & (stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH)
    assert (tmp_path / "code" / "bin" / "tool").stat().st_mode & stat.S_IXUSR


def test_names_with_dot_parts_are_unpacked_as_tar_writes_them(tmp_path: Path) -> None:
    """`tar -czf code.tgz -C dir .` names every member ./NAME, and the root ./ itself."""
    root = tarfile.TarInfo(".")
    root.type = tarfile.DIRTYPE
    raw = _tar((root, None), _file("./main.py", "def f(): pass\n"), _file("./pkg//util.py", "x = 1\n"))
    assert _install_tar(tmp_path, raw) == ["f"]
    assert (tmp_path / "code" / "pkg" / "util.py").read_text() == "x = 1\n"


@pytest.mark.parametrize(
    "raw",
    [b"", b"not an archive", _tar(_file("main.py", "x = 1\n"))[:-30]],
    ids=["empty", "junk", "truncated"],
)
def test_unusable_archives_are_refused(tmp_path: Path, raw: bytes) -> None:
    with pytest.raises(CodeError, match="not a usable .tar.gz"):
        _install_tar(tmp_path, raw)


@pytest.mark.parametrize("encoded", ["not base64!", "QUJ", "ÄÖÜ", "QU JD"])
def test_decode_refuses_what_is_not_base64(encoded: str) -> None:
    with pytest.raises(CodeError, match="not valid base64"):
        code.decode(encoded)


def test_decode_round_trips() -> None:
    assert code.decode("QUJD") == b"ABC"


@pytest.mark.parametrize(
    "nested",
    [
        lambda: "x = " + "-" * 3000 + "1\n",
        lambda: "x = a" + ".b" * 100_000 + "\n",
    ],
    ids=["unary", "attributes"],
)
def test_deeply_nested_code_is_refused_not_a_crash(tmp_path: Path, nested: Callable[[], str]) -> None:
    with pytest.raises(CodeError):
        _install_module(tmp_path, nested())
