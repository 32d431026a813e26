"""Shard's code: any K of N shards rebuild the file; an altered or swapped shard is refused."""

from __future__ import annotations

import doctest
import itertools
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bento.errors import BentoError
from bento.functions.shard import codec
from bento.functions.shard.placement import tolerated

KEY, FILE_ID = bytes(range(32)), bytes(range(16))


def sealed(data: bytes, n: int, k: int) -> tuple[codec.Code, list[bytes]]:
    code = codec.Code.for_file(len(data), n=n, k=k)
    return code, [codec.seal(KEY, FILE_ID, code, i, s) for i, s in enumerate(codec.encode(data, code))]


@st.composite
def shapes(draw: st.DrawFn) -> tuple[bytes, int, int, list[int]]:
    n = draw(st.integers(1, 8))
    k = draw(st.integers(1, n))
    size = draw(st.sampled_from([1, 7, 64, 65, 1000, 4096, 100_003, 2_000_000]))
    data = draw(st.binary(min_size=size, max_size=size)) if size < 5000 else os.urandom(size)
    chosen = draw(st.permutations(range(n)))[:k]
    return data, n, k, chosen


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes())
def test_any_k_of_n_shards_rebuild_the_file(shape: tuple[bytes, int, int, list[int]]) -> None:
    data, n, k, chosen = shape
    code, shards = sealed(data, n, k)
    assert len(shards) == n
    assert len({len(s) for s in shards}) == 1  # every box holds as much: sizes say nothing
    opened = {i: codec.open_shard(KEY, FILE_ID, code, i, shards[i]) for i in chosen}
    assert codec.decode(code, opened) == data


def test_every_k_subset_of_a_larger_file_decodes() -> None:
    data = os.urandom(3_000_000)
    code, shards = sealed(data, 6, 4)
    plain = [codec.open_shard(KEY, FILE_ID, code, i, s) for i, s in enumerate(shards)]
    for subset in itertools.combinations(range(6), 4):
        assert codec.decode(code, [(i, plain[i]) for i in subset]) == data
    # The cost of surviving two lost boxes: N/K and a few symbols.
    assert sum(map(len, shards)) / len(data) < 6 / 4 * 1.01


def test_a_shard_altered_by_its_box_is_refused() -> None:
    code, shards = sealed(os.urandom(10_000), 3, 2)
    for position in (0, 12, len(shards[1]) // 2, len(shards[1]) - 1):
        altered = bytearray(shards[1])
        altered[position] ^= 1
        with pytest.raises(codec.ShardError, match="shard 1 failed authentication"):
            codec.open_shard(KEY, FILE_ID, code, 1, bytes(altered))
    with pytest.raises(codec.ShardError):
        codec.open_shard(KEY, FILE_ID, code, 1, shards[1][:-1])
    with pytest.raises(codec.ShardError):
        codec.open_shard(KEY, FILE_ID, code, 1, b"")


def test_a_shard_handed_back_for_another_is_refused() -> None:
    code, shards = sealed(os.urandom(10_000), 3, 2)
    with pytest.raises(codec.ShardError, match="shard 0"):
        codec.open_shard(KEY, FILE_ID, code, 0, shards[2])  # another shard of the same file
    _, others = sealed(os.urandom(10_000), 3, 2)
    with pytest.raises(codec.ShardError):
        codec.open_shard(KEY, bytes(16), code, 0, shards[0])  # of another file id
    with pytest.raises(codec.ShardError):
        codec.open_shard(bytes(32), FILE_ID, code, 0, shards[0])  # under another key
    with pytest.raises(codec.ShardError):  # the same index, but a file of another shape
        codec.open_shard(KEY, FILE_ID, codec.Code(10_001, code.symbol, 3, 2), 0, others[0])


def test_too_few_shards_is_a_clear_error() -> None:
    code, shards = sealed(os.urandom(200_000), 4, 3)
    plain = codec.open_shard(KEY, FILE_ID, code, 0, shards[0])
    with pytest.raises(codec.ShardError, match="too few to rebuild the file"):
        codec.decode(code, {0: plain})


def test_bad_shapes_are_refused_before_any_work() -> None:
    with pytest.raises(BentoError, match="nothing to shard"):
        codec.Code.for_file(0, n=3, k=2)
    for n, k in ((3, 4), (3, 0), (256, 2)):
        with pytest.raises(BentoError, match="--k must"):
            codec.Code.for_file(10, n=n, k=k)
    for bad in (codec.Code(0, 64, 3, 2), codec.Code(10, 65, 3, 2), codec.Code(10, 1 << 17, 3, 2)):
        with pytest.raises(BentoError, match="code parameters"):
            codec.Decoder(bad)


def test_how_many_boxes_a_placement_may_lose() -> None:
    assert tolerated(["a", "b", "c"], 2) == 1
    assert tolerated(["a", "b", "c", "d", "e"], 3) == 2
    assert tolerated(["a", "a", "b", "b"], 2) == 1  # two shards per box: one box
    assert tolerated(["a", "a", "a", "b"], 2) == 0  # losing a loses three of four
    assert tolerated(["a"], 1) == 0


def test_the_examples_in_the_docstrings_run() -> None:
    from bento.functions.shard import placement

    for module in (codec, placement):
        assert doctest.testmod(module).failed == 0, module.__name__
