import subprocess
import sys
from collections import Counter

import pytest

from embedding_assets.lib.sharding import shard_index, shard_key, shard_keys, shard_of


def test_shard_is_stable_across_processes_with_different_hash_seeds():
    ids = [f"doc-{i}" for i in range(50)] + ["ünïcode-ид-文書", ""]
    here = [shard_of(d, 16) for d in ids]
    code = (
        "import json,sys; from embedding_assets.lib.sharding import shard_of; "
        "print(json.dumps([shard_of(d, 16) for d in json.loads(sys.argv[1])]))"
    )
    import json

    for seed in ("1", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(ids)],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert json.loads(out) == here


def test_shards_are_roughly_uniform():
    counts = Counter(shard_of(f"doc-{i:07d}", 16) for i in range(64_000))
    assert set(counts) == set(range(16))
    assert max(counts.values()) < 4_000 * 1.1
    assert min(counts.values()) > 4_000 * 0.9


def test_shard_in_range_for_any_count():
    for n in (1, 2, 7, 16, 100):
        assert all(0 <= shard_of(f"x{i}", n) < n for i in range(200))


def test_rejects_zero_shards():
    with pytest.raises(ValueError):
        shard_of("a", 0)


def test_keys_sort_in_shard_order_and_round_trip():
    keys = shard_keys(120)
    assert keys == sorted(keys)
    assert [shard_index(k) for k in keys] == list(range(120))
    assert shard_key(3, 16) == "shard-03"
    with pytest.raises(ValueError):
        shard_index("3")
