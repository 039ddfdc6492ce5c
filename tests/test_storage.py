import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from signbart import storage
from signbart.errors import StorageError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_every_format_round_trips_to_a_path_or_a_uri(tmp_path, scheme):
    root = f"{scheme}{tmp_path}/deep/er"
    storage.write_bytes(storage.join(root, "b.bin"), b"\x00\x01")
    storage.write_text(storage.join(root, "t.txt"), "héllo")
    storage.write_json(storage.join(root, "j.json"), {"b": 1, "a": [1.5, None]})
    storage.write_parquet(storage.join(root, "t.parquet"), pa.table({"x": [1, 2]}))
    storage.write_parquet(storage.join(root, "d.parquet"), pd.DataFrame({"y": ["a"]}, index=[7]))
    storage.write_npy(storage.join(root, "a.npy"), np.arange(6, dtype=np.float32).reshape(2, 3))
    d = tmp_path / "deep/er"
    assert (d / "b.bin").read_bytes() == b"\x00\x01"
    assert (d / "t.txt").read_text() == "héllo"
    assert storage.read_json(storage.join(root, "j.json")) == {"a": [1.5, None], "b": 1}
    assert pq.read_table(d / "t.parquet").column("x").to_pylist() == [1, 2]
    assert pq.read_table(d / "d.parquet").column_names == ["y"]  # the index is not written
    np.testing.assert_array_equal(np.load(d / "a.npy", allow_pickle=False),
                                  np.arange(6).reshape(2, 3))
    assert sorted(p.name for p in d.iterdir()) == ["a.npy", "b.bin", "d.parquet", "j.json",
                                                   "t.parquet", "t.txt"]  # no temp files left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.npy"
    storage.write_npy(target, np.zeros(3))
    with pytest.raises(ValueError, match="allow_pickle"):  # fails after the header is written
        storage.write_npy(target, np.array([{"a": 1}], dtype=object))
    np.testing.assert_array_equal(np.load(target), np.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_exists_remove_read_json_and_rows_uri(tmp_path):
    sweep = f"file://{tmp_path}/sweep"
    uri = storage.rows_uri(sweep, "user01-s42-v")
    assert uri == f"file://{tmp_path}/sweep/results/user01-s42-v.parquet"
    assert storage.rows_uri(sweep, "t", failed=True) == f"{sweep}/results/t.failed.parquet"
    assert not storage.exists(uri) and storage.read_json(uri) is None
    storage.write_bytes(uri, b"not json")
    assert storage.exists(uri) and storage.read_json(uri) is None
    storage.remove(uri)
    storage.remove(uri)  # removing a missing file is not an error
    assert not storage.exists(uri)


def test_one_atomic_write_in_the_code():
    """Every writer goes through ``storage``: no other temp-file-then-rename exists."""
    out = subprocess.run(["grep", "-rnE", r"\.tmp\b|os\.replace|\.move\(", "signbart",
                          "benchmarks"], cwd=REPO, capture_output=True, text=True,
                         check=False).stdout
    assert {ln.split(":", 1)[0] for ln in out.splitlines()} == {"signbart/storage.py"}, out


def test_uri_paths_keep_their_scheme_and_a_missing_file_is_named(tmp_path):
    assert storage.with_suffix("s3://b/sweep/t/model_fp32.tflite", ".json") == \
        "s3://b/sweep/t/model_fp32.json"
    assert storage.with_suffix("runs/a.b/model", ".eval.json") == "runs/a.b/model.eval.json"
    assert storage.with_suffix("m.tflite", ".json") == "m.json"
    storage.write_bytes(tmp_path / "x.bin", b"abc")
    assert storage.read_bytes(f"file://{tmp_path}/x.bin") == b"abc"
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        storage.read_bytes(tmp_path / "nope.bin")
    storage.check_reachable(tmp_path / "not-yet")      # a local folder is made on first write
    with pytest.raises(StorageError, match="^nope://x: cannot open this storage"):
        storage.filesystem("nope://x")
