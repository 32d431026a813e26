"""A box that systemd starts with ``Delegate=yes`` on cgroup v2 caps its instances: it moves
itself into a leaf of the service's group before it makes its own groups there (the kernel's
no-internal-processes rule), and never moves processes that are not its own.

The cgroup tree is a directory laid out as /sys/fs/cgroup is; the kernel's interface files
that a new group gets are made by the test where the kernel would make them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bento.sandbox import cgroups

SERVICE = "system.slice/bento-box.service"


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cgroup v2 tree whose service group systemd delegated to us, with us in it."""
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    service = tmp_path / SERVICE
    _make_group(service)
    (service / "cgroup.procs").write_text(f"{os.getpid()}\n")
    monkeypatch.setattr(cgroups, "ROOT", tmp_path)
    monkeypatch.setattr(cgroups, "_own_paths", lambda: {"": f"/{SERVICE}"})
    return service


def _make_group(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cgroup.controllers").write_text("cpu memory pids\n")
    (directory / "cgroup.subtree_control").write_text("")
    (directory / "cgroup.procs").write_text("")


def test_the_box_moves_into_a_leaf_then_hands_controllers_to_its_groups(tree: Path) -> None:
    _make_group(tree / cgroups.LEAF)
    _make_group(tree / "bento-1-0")
    group = cgroups.bento_group("bento-1-0")
    assert group is not None and group.version == 2
    assert group.dirs["unified"] == tree / "bento-1-0", "beside the leaf, not inside it"
    assert (tree / cgroups.LEAF / "cgroup.procs").read_text() == str(os.getpid())
    assert (tree / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert (tree / "bento-1-0" / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    # Its instances' groups are children of Bento's, with the caps written there.
    instance = group.child("instance-1")
    _make_group(instance.dirs["unified"])
    instance.limit(memory_bytes=64 << 20, pids=16, cpus=0.5)
    assert (tree / "bento-1-0" / "instance-1" / "memory.max").read_text() == str(64 << 20)
    assert (tree / "bento-1-0" / "instance-1" / "cpu.max").read_text() == "50000 100000"


def test_a_second_box_in_the_same_process_makes_its_group_beside_the_first(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make_group(tree / cgroups.LEAF)
    _make_group(tree / "bento-1-0")
    _make_group(tree / "bento-1-1")
    assert cgroups.bento_group("bento-1-0") is not None
    # The kernel now places us in the leaf; as it would, the group we left lists nobody.
    (tree / "cgroup.procs").write_text("")
    monkeypatch.setattr(cgroups, "_own_paths", lambda: {"": f"/{SERVICE}/{cgroups.LEAF}"})
    second = cgroups.bento_group("bento-1-1")
    assert second is not None and second.dirs["unified"] == tree / "bento-1-1", "not nested in the leaf"
    assert not (tree / cgroups.LEAF / cgroups.LEAF).exists()


def test_processes_that_are_not_ours_stay_and_the_box_goes_without(tree: Path) -> None:
    (tree / "cgroup.procs").write_text(f"{os.getpid()}\n1\n")  # a shell's session, say
    assert cgroups.bento_group("bento-1-0") is None
    assert not (tree / cgroups.LEAF).exists(), "we moved nobody, ourselves included"
    assert (tree / "cgroup.subtree_control").read_text() == ""


def test_a_group_that_already_hands_controllers_down_is_used_as_it_is(tree: Path) -> None:
    (tree / "cgroup.procs").write_text("")  # started in a leaf already (DelegateSubgroup=)
    (tree / "cgroup.subtree_control").write_text("cpu memory pids\n")
    _make_group(tree / "bento-1-0")
    group = cgroups.bento_group("bento-1-0")
    assert group is not None and group.dirs["unified"] == tree / "bento-1-0"
    assert not (tree / cgroups.LEAF).exists()
    assert (tree / "cgroup.subtree_control").read_text() == "cpu memory pids\n"


def test_a_box_in_the_root_group_moves_nowhere(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = cgroups.ROOT
    (root / "cgroup.procs").write_text(f"1\n{os.getpid()}\n")  # the root group may hold processes
    (root / "cgroup.subtree_control").write_text("")
    _make_group(root / "bento-1-0")
    monkeypatch.setattr(cgroups, "_own_paths", lambda: {"": "/"})
    group = cgroups.bento_group("bento-1-0")
    assert group is not None and group.dirs["unified"] == root / "bento-1-0"
    assert not (root / cgroups.LEAF).exists()
