"""`bento testnet up/run` take the boxes' size limits, or a whole node policy file, and
the box's server reads exactly that policy from the config the testnet writes for it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bento.cli.main import build_parser
from bento.cli.testnet import _config
from bento.protocol.policy import NodePolicy
from bento.server.config import ServerConfig
from bento.testnet import TestnetError
from bento.testnet.box_policy import box_policy, default_policy, server_config


def _policy_of(argv: list[str], tmp_path: Path) -> NodePolicy | None:
    args = build_parser(["testnet"]).parse_args(["testnet", *argv, "--dir", str(tmp_path / "net")])
    return _config(args).box_policy


def _as_the_server_reads_it(policy: NodePolicy, tmp_path: Path, *, privileged: bool = True) -> ServerConfig:
    path = tmp_path / "server.toml"
    path.write_text(server_config(policy, privileged=privileged))
    return ServerConfig.load(path, {})


@pytest.mark.parametrize("command", ["up", "run"])
def test_the_size_limits_given_on_the_command_line_reach_the_box(command: str, tmp_path: Path) -> None:
    policy = _policy_of([command, "--instances-total", "500", "--instances-per-function", "250"], tmp_path)
    assert policy is not None
    loaded = _as_the_server_reads_it(policy, tmp_path).policy
    assert (loaded.instances_total, loaded.instances_per_function) == (500, 250)
    # Everything else stays the testnet's.
    assert (
        loaded.model_copy(update={"instances_total": 128, "instances_per_function": 64}) == default_policy()
    )


def test_without_options_the_boxes_keep_the_testnets_policy(tmp_path: Path) -> None:
    assert _policy_of(["up"], tmp_path) is None
    loaded = _as_the_server_reads_it(default_policy(), tmp_path, privileged=False)
    assert loaded.policy == default_policy()
    assert loaded.accept_unenforced == ["cpu_share"], "a box of a dedicated user may lack cgroups"


def test_a_policy_file_replaces_the_testnets_and_the_options_still_apply(tmp_path: Path) -> None:
    file = tmp_path / "policy.toml"
    file.write_text("instances_total = 300\ntotal_memory_mb = 9000\n[instance]\nmemory_mb = 64\n")
    policy = _policy_of(["up", "--policy", str(file), "--instances-per-function", "150"], tmp_path)
    assert policy is not None
    loaded = _as_the_server_reads_it(policy, tmp_path).policy
    assert (loaded.instances_total, loaded.instances_per_function) == (300, 150)
    assert (loaded.total_memory_mb, loaded.instance.memory_mb) == (9000, 64)
    assert loaded.network.allowed is False, "a field the file leaves out has the policy's default"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("instances_totl = 3\n", "instances_totl"),
        ("instances_total = 0\n", "instances_total"),
        ("instances_total = [\n", "cannot read"),
    ],
)
def test_a_bad_policy_file_is_refused_with_what_is_wrong(text: str, says: str, tmp_path: Path) -> None:
    file = tmp_path / "policy.toml"
    file.write_text(text)
    with pytest.raises(TestnetError, match=says):
        box_policy(file)


def test_a_bad_limit_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(TestnetError, match="instances_total"):
        _policy_of(["up", "--instances-total", "0"], tmp_path)
    assert not (tmp_path / "net").exists()


def test_the_written_config_is_toml_with_the_policy_and_nothing_else(tmp_path: Path) -> None:
    text = server_config(default_policy(), privileged=True)
    assert set(tomllib.loads(text)) == {"policy"}
