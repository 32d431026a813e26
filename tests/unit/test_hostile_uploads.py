"""Hostile archives: each is refused with a clear reason before anything is written, and
nothing outside the upload's own fresh directory can be reached, on the box's real layout."""

from __future__ import annotations

import doctest
import gzip
import io
import tarfile
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from localbox import LocalBox, upload_body

from bento.client.upload import archive
from bento.errors import BentoError
from bento.protocol import code_archive
from bento.protocol.code_archive import Entry
from bento.protocol.manifest import Manifest
from bento.protocol.messages import CodeKind
from bento.server import code
from bento.server.code import CodeError
from properties import examples

LIMIT = 1 << 20
MAIN = ("main.py", b"def f(): pass\n")
Member = tuple[tarfile.TarInfo, bytes | None]


def _member(name: str, data: bytes | None = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    if kind == tarfile.DIRTYPE:
        data, info.mode = None, 0o755
    if data is not None:
        info.size = len(data)
    return info, data


def _tar(*members: Member) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _install(target: Path, raw: bytes, limit: int = LIMIT) -> list[str]:
    return code.install(raw, CodeKind.TAR_GZ, Manifest(name="t"), target, limit)


@pytest.fixture
def box_root(tmp_path: Path) -> Path:
    """The layout of a box's work directory: the runtime, and a neighbour's function code."""
    (tmp_path / "runtime" / "bento" / "runtime").mkdir(parents=True)
    (tmp_path / "runtime" / "bento" / "runtime" / "api.py").write_text("# the runtime\n")
    _install(tmp_path / "functions" / "neighbour" / "code", _tar(_member(*MAIN)))
    return tmp_path


def _untouched(box_root: Path) -> None:
    files = sorted(str(p.relative_to(box_root)) for p in box_root.rglob("*") if p.is_file() or p.is_symlink())
    assert files == ["functions/neighbour/code/main.py", "runtime/bento/runtime/api.py"]
    assert (box_root / "functions" / "neighbour" / "code" / "main.py").read_bytes() == MAIN[1]
    assert (box_root / "runtime" / "bento" / "runtime" / "api.py").read_text() == "# the runtime\n"


def test_the_issue_s_link_chain_writes_nothing_into_a_neighbour_or_the_runtime(box_root: Path) -> None:
    """Issue 18's exploit: `esc -> l2/l2/../..` is checked before `l2 -> .` exists; through both,
    `esc/` is the functions directory and `top/runtime` the runtime, ahead of the standard library
    in every sandbox: a json.py there ran in every function of the box."""
    raw = _tar(
        _member(*MAIN),
        _member("esc", None, tarfile.SYMTYPE, "l2/l2/../.."),
        _member("top", None, tarfile.SYMTYPE, "l2/l2/l2/../../.."),
        _member("l2", None, tarfile.SYMTYPE, "."),
        _member("esc/neighbour/code/planted.py", b"planted = True\n"),
        _member("top/runtime/json.py", b"planted = True\n"),
    )
    target = box_root / "functions" / "attacker" / "code"
    with pytest.raises(
        CodeError, match="'esc' is a symbolic link: an upload holds only regular files"
    ) as refused:
        _install(target, raw)
    assert "regular files and directories" in refused.value.fix
    assert not target.exists(), "nothing of a refused upload is written"
    _untouched(box_root)


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_member("alias.py", None, tarfile.SYMTYPE, "main.py"), "'alias.py' is a symbolic link"),
        (_member("evil", None, tarfile.SYMTYPE, "/etc/passwd"), "'evil' is a symbolic link"),
        (_member("evil", None, tarfile.LNKTYPE, "main.py"), "'evil' is a hard link"),
        (_member("evil", None, tarfile.LNKTYPE, "/etc/shadow"), "'evil' is a hard link"),
        (_member("null", None, tarfile.CHRTYPE), "'null' is a character device"),
        (_member("sda", None, tarfile.BLKTYPE), "'sda' is a block device"),
        (_member("pipe", None, tarfile.FIFOTYPE), "'pipe' is a FIFO"),
        (_member("/tmp/absolute.py"), "'/tmp/absolute.py' is an absolute name"),
        (_member("../escape.py"), r"'../escape.py' names a place outside the archive \(\.\.\)"),
        (_member("pkg/../../escape.py"), "outside the archive"),
        (_member("main.py", b"x = 2\n"), "'main.py' is in the archive twice"),
        (_member("main.py", kind=tarfile.DIRTYPE), "'main.py' is in the archive twice"),
        (_member("main.py/inner.py"), "which the archive has as a file"),
        (_member("a" * 256 + ".py"), "too long a name"),
        (_member("/".join(["d" * 100] * 11)), "too long a name"),
        (_member("/".join(["d"] * 40)), "nested deeper than 32"),
        (_member("new\nline.py"), "control character"),
    ],
    ids=[
        "symlink-inside", "symlink-absolute", "hardlink-inside", "hardlink-absolute", "char-device",
        "block-device", "fifo", "absolute", "dotdot", "nested-dotdot", "duplicate-file",
        "file-then-directory", "under-a-file", "long-part", "long-name", "deep", "control-character",
    ],
)  # fmt: skip
def test_each_hostile_member_is_refused_by_name(box_root: Path, member: Member, reason: str) -> None:
    target = box_root / "functions" / "attacker" / "code"
    with pytest.raises(CodeError, match=reason):
        _install(target, _tar(_member(*MAIN), member))
    assert not target.exists()
    _untouched(box_root)


def test_a_directory_then_a_file_of_its_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CodeError, match="'pkg' is in the archive as a directory and as a file"):
        _install(tmp_path / "code", _tar(_member(*MAIN), _member("pkg/x.py"), _member("pkg")))
    assert not (tmp_path / "code").exists()


def test_too_many_entries_are_refused(tmp_path: Path) -> None:
    members = [_member(*MAIN), *(_member(f"data/{i}.txt") for i in range(code_archive.MAX_ENTRIES))]
    with pytest.raises(CodeError, match=f"more than {code_archive.MAX_ENTRIES} entries"):
        _install(tmp_path / "code", _tar(*members))
    assert not (tmp_path / "code").exists()


def test_an_archive_that_unpacks_past_the_limit_is_refused(tmp_path: Path) -> None:
    limit = 1000
    bomb = _tar(_member(*MAIN), _member("zeros", bytes(limit * code.EXPANSION + 1)))
    assert len(bomb) < limit, "it compresses well: the unpacked size is what counts"
    with pytest.raises(CodeError, match=f"unpacks to more than {limit * code.EXPANSION} bytes"):
        _install(tmp_path / "code", bomb, limit=limit)
    assert not (tmp_path / "code").exists()


def _snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_mode, None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


async def test_the_box_refuses_the_link_chain_and_its_runtime_and_neighbour_are_untouched(
    box: LocalBox,
) -> None:
    """Through the real API and sandboxes: a 422 with a fix; the neighbour's code and the runtime
    are as they were, the runtime writable by nobody, and the neighbour keeps answering."""
    neighbour = await box.upload("def main():\n    return 'still here'\n", name="neighbour")
    registry = box.registry
    runtime, neighbour_code = registry.sandbox.runtime_dir, registry.functions[neighbour.function_id].code_dir
    before = (_snapshot(runtime), _snapshot(neighbour_code), sorted(registry.root.iterdir()))
    assert not [name for name, (mode, _) in before[0].items() if mode & 0o222], "the runtime is read-only"
    raw = _tar(
        _member(*MAIN),
        _member("esc", None, tarfile.SYMTYPE, "l2/l2/../.."),
        _member("top", None, tarfile.SYMTYPE, "l2/l2/l2/../../.."),
        _member("l2", None, tarfile.SYMTYPE, "."),
        _member(f"esc/{neighbour.function_id}/code/planted.py", b"planted = True\n"),
        _member("top/runtime/json.py", b"planted = True\n"),
    )
    response = await box.http.post("/v1/functions", json=upload_body(raw, name="attacker", kind="tar.gz"))
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == "bad-code" and "'esc' is a symbolic link" in error["error"], error
    assert "regular files and directories" in error["fix"]
    assert (_snapshot(runtime), _snapshot(neighbour_code), sorted(registry.root.iterdir())) == before
    session_id = await box.invoke(neighbour, "main")
    assert (await box.wait_state(neighbour, session_id, timeout=60))["state"] == "completed"
    assert registry.sessions[session_id].result == "still here"


def _gzip_bomb(size: int) -> bytes:
    """A .tar.gz of one file of ``size`` zero bytes, made without holding them."""
    info = tarfile.TarInfo("zeros")
    info.size = size
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [packer.compress(info.tobuf(format=tarfile.PAX_FORMAT))]
    block = bytes(1 << 20)
    for _ in range(size // len(block)):
        out.append(packer.compress(block))
    out.append(packer.compress(bytes(2 * tarfile.BLOCKSIZE)) + packer.flush())
    return b"".join(out)


def test_a_compression_bomb_is_stopped_at_the_ratio_without_being_inflated(tmp_path: Path) -> None:
    bomb = _gzip_bomb(256 << 20)
    assert len(bomb) < LIMIT, "the upload itself is small"
    tracemalloc.start()
    try:
        with pytest.raises(CodeError, match=f"inflates more than {code_archive.MAX_RATIO}-fold"):
            _install(tmp_path / "code", bomb, limit=64 << 20)  # the total alone would allow 512 MiB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * code_archive.MAX_RATIO * len(bomb) + (8 << 20), f"held {peak} bytes"
    assert not (tmp_path / "code").exists()


def test_a_vendored_wheel_that_is_a_zip_bomb_is_refused(tmp_path: Path) -> None:
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb/__init__.py", bytes(16 << 20))
    raw = _tar(_member(*MAIN), _member("vendor/bomb-1.0-py3-none-any.whl", wheel.getvalue()))
    with pytest.raises(CodeError, match=r"vendor/bomb-1.0-py3-none-any.whl inflates to 16777216 bytes"):
        _install(tmp_path / "code", raw)
    assert not (tmp_path / "code").exists()


def test_writing_makes_only_a_fresh_directory_and_leaves_nothing_when_it_fails(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").symlink_to(elsewhere)
    files = [Entry(("main.py",), b"x = 1\n")]
    with pytest.raises(FileExistsError):
        code.write(files, tmp_path / "link")  # a link where the directory should go is not followed
    assert list(elsewhere.iterdir()) == []
    # A failure half-way (here, a name twice, which the archive reader never lets through).
    twice = [Entry(("pkg",), None), Entry(("pkg", "a.py"), b""), Entry(("pkg", "a.py"), b"")]
    with pytest.raises(FileExistsError):
        code.write(twice, tmp_path / "half")
    assert not (tmp_path / "half").exists()


def test_a_tree_of_many_directories_is_written_whole(tmp_path: Path) -> None:
    members = [_member(*MAIN)] + [
        _member(f"{a}/{b}/{c}/m.py") for a in "abcdefgh" for b in "abcdefgh" for c in "abcdefgh"[:4]
    ]
    _install(tmp_path / "code", _tar(*members))
    assert len(list((tmp_path / "code").rglob("m.py"))) == 256


def test_the_client_packs_links_inside_a_directory_as_files_and_refuses_links_out(tmp_path: Path) -> None:
    code_dir = tmp_path / "function"
    (code_dir / "lib").mkdir(parents=True)
    (code_dir / "main.py").write_bytes(MAIN[1])
    (code_dir / "lib" / "alias.py").symlink_to("../main.py")
    entries = code_archive.read(archive(code_dir), max_bytes=LIMIT)
    assert [(e.name, e.data) for e in entries] == [("lib", None), ("lib/alias.py", MAIN[1]), MAIN]
    (tmp_path / "secret").write_text("not for the box")
    (code_dir / "key").symlink_to(tmp_path / "secret")
    with pytest.raises(BentoError, match="key is a link to .*secret, outside"):
        archive(code_dir)


def test_the_archive_reader_s_examples_run() -> None:
    assert doctest.testmod(code_archive).failed == 0


_SAMPLE = gzip.decompress(
    _tar(
        _member(*MAIN),
        _member("pkg", kind=tarfile.DIRTYPE),
        _member("pkg/" + "long" * 40 + ".py", b"x = 1\n"),
    )
)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_SAMPLE) - 1), st.integers(0, 255)), min_size=1, max_size=12))
def test_a_damaged_archive_is_refused_with_an_archive_error_and_nothing_else(
    changes: list[tuple[int, int]],
) -> None:
    damaged = bytearray(_SAMPLE)
    for where, value in changes:
        damaged[where] = value
    try:
        entries = code_archive.read(gzip.compress(bytes(damaged)), max_bytes=LIMIT)
    except code_archive.ArchiveError:
        return
    assert all(".." not in e.parts and e.parts and all(e.parts) for e in entries)
