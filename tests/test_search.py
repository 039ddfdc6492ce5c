"""The nested hyper-parameter search: its spec, how choices apply, and that it never touches
the held-out signer (as a plain function, and inside a real sweep on a local Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from signbart.config import (
    TrainConfig,
    apply_settings,
    build_experiment,
    load_variant,
    variant_from_dict,
)
from signbart.data import Dataset
from signbart.errors import ConfigError
from signbart.results import read_rows
from signbart.search import SearchSpec, choose, search_trial
from signbart.sweep import run_sweep
from signbart.sweepspec import Grid, load_spec

REPO = Path(__file__).resolve().parents[1]
TINY = {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
        "decoder_attention_heads": 2, "encoder_ffn_dim": 16, "decoder_ffn_dim": 16}


@pytest.fixture(scope="module")
def tiny_variant(tmp_path_factory) -> Path:
    base = yaml.safe_load((REPO / "configs/arabic-asl-65kpts.yaml").read_text())
    path = tmp_path_factory.mktemp("v") / "tiny.yaml"
    path.write_text(yaml.safe_dump({**base, "name": "tiny", "model": TINY}))
    return path


def _spec(tmp_path, data, variant, **over) -> Path:
    fields = {"name": "s", "data": str(data), "holdouts": ["user01"], "seeds": [3],
              "variants": [str(variant)], "quant": ["fp32"], "baseline": False, "retries": 0,
              "train": {"epochs": 2, "batch_size": 8, "max_frames": 32, "n_val_signers": 1},
              "search": {"num_samples": 1,
                         "space": {"train.lr": {"grid": [1.0e-3, 3.0e-3]}}}, **over}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def test_search_spec_errors_name_the_file_and_field(tmp_path, synth_dataset, tiny_variant):
    cases = [({"space": {}}, r"s\.yaml\.search: space: must map"),
             ({"space": {"lr": {"grid": [1]}}}, r"space: 'lr' must be <section>\.<field>"),
             ({"space": {"train.lr": {"normal": [0, 1]}}}, r"space\.train\.lr: expected one of"),
             ({"space": {"train.lr": {"uniform": [0.1, 0.01]}}}, r"low must be < high"),
             ({"space": {"train.lr": {"loguniform": [0, 1]}}}, r"low must be > 0"),
             ({"space": {"train.epochs": {"randint": [1.5, 3]}}}, r"expected integers"),
             ({"space": {"train.lr": {"grid": [1e-3]}}, "scheduler": "hyperband"},
              r"scheduler must be one of fifo, asha")]
    for search, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_spec(_spec(tmp_path, synth_dataset, tiny_variant, search=search))
    # settings that parse but do not exist / are out of range fail when the grid is built
    for space, message in [({"train.lr_max": {"grid": [1e-3]}}, r"unknown key 'lr_max'"),
                           ({"model.dropout": {"uniform": [0.1, 1.5]}}, r"dropout must be in"),
                           ({"model.heads": {"choice": [2]}}, r"unknown key 'heads'")]:
        spec = load_spec(_spec(tmp_path, synth_dataset, tiny_variant, search={"space": space}))
        with pytest.raises(ConfigError, match=message):
            Grid.of(spec)
    spec = load_spec(_spec(tmp_path, synth_dataset, tiny_variant,
                           train={"epochs": 2, "n_val_signers": 0}))
    with pytest.raises(ConfigError, match="search needs train.n_val_signers >= 1"):
        Grid.of(spec)


def test_apply_sets_dotted_settings_without_touching_its_inputs():
    train, qat = {"lr": 1e-4, "augment": {"prob": 0.4}}, {"epochs": 2}
    variant = {"name": "v", "model": {"dropout": 0.3}}
    t, q, v = apply_settings({"train.lr": np.float64(2e-3), "train.augment.hand_drop": 0.5,
                              "qat.epochs": np.int64(4), "model.dropout": 0.1}, train, qat,
                             variant)
    assert t == {"lr": 2e-3, "augment": {"prob": 0.4, "hand_drop": 0.5}}
    assert type(t["lr"]) is float and q == {"epochs": 4} and type(q["epochs"]) is int
    assert v == {"name": "v", "model": {"dropout": 0.1}}
    assert variant_from_dict(v).model_config().dropout == 0.1
    assert train["lr"] == 1e-4 and variant["model"]["dropout"] == 0.3 and "hand_drop" not in \
        train["augment"]


def test_candidates_and_choice():
    spec = SearchSpec(space={"train.lr": {"grid": [1e-3, 2e-3, 3e-3]},
                             "model.dropout": {"grid": [0.1, 0.2]},
                             "train.epochs": {"randint": [5, 9]}}, num_samples=2)
    assert spec.candidates() == 12
    best = choose([{"index": 0, "best_val_accuracy": 0.5}, {"index": 1, "best_val_accuracy": 0.7},
                   {"index": 2, "best_val_accuracy": 0.7}, {"index": 3, "best_val_accuracy": None}])
    assert best["index"] == 1                                  # ties go to the earliest
    with pytest.raises(RuntimeError, match="no candidate finished"):
        choose([{"index": 0, "best_val_accuracy": None}])


def _experiment(data, variant_path, **train) -> dict:
    """The hold-out's experiment as the sweep driver hands it to a search candidate."""
    return build_experiment(str(data), load_variant(variant_path), "user02", seed=5, threads=1,
                            train=TrainConfig(epochs=2, batch_size=8, max_frames=32,
                                              n_val_signers=1, **train)).to_dict()


def test_search_trial_scores_on_inner_signers_and_never_reads_the_holdout(
        synth_dataset, tiny_variant, monkeypatch):
    read = []
    original = Dataset.keypoints

    def spy(self, i):
        read.append(self.manifest.iloc[int(i)]["signer"])
        return original(self, i)

    monkeypatch.setattr(Dataset, "keypoints", spy)
    reports = []
    config = {"experiment": _experiment(synth_dataset, tiny_variant), "params": {"train.lr": 2e-3}}
    best = search_trial(config, reports.append)
    assert [r["epoch"] for r in reports] == [1, 2]
    assert best == max(r["val_accuracy"] for r in reports) == reports[-1]["best_val_accuracy"]
    assert read and "user02" not in read                      # the held-out signer: untouched
    inner = Dataset(synth_dataset).fold("user02", 1, 5).val_signers
    assert set(inner) <= set(read)


def test_search_rotation_scores_the_mean_over_disjoint_inner_signers(synth_dataset, tiny_variant):
    reports = []
    config = {"experiment": _experiment(synth_dataset, tiny_variant, refit=True),
              "rotations": 2, "params": {"train.lr": 2e-3}}
    score = search_trial(config, reports.append)
    assert [(r["rotation"], r["epoch"]) for r in reports] == [(0, 1), (0, 2), (1, 3), (1, 4)]
    per_fold = [max(r["val_accuracy"] for r in reports if r["rotation"] == i) for i in (0, 1)]
    assert score == pytest.approx(sum(per_fold) / 2) == reports[-1]["best_val_accuracy"]
    with pytest.raises(ValueError, match="rotations > 1 needs scheduler: fifo"):
        SearchSpec(space={"train.lr": {"grid": [1e-3]}}, rotations=2, scheduler="asha")


@pytest.mark.slow
def test_sweep_searches_each_holdout_then_runs_its_choice(tmp_path, synth_dataset, tiny_variant):
    spec = _spec(tmp_path, synth_dataset, tiny_variant, holdouts=["user01", "user02"])
    summary = run_sweep(spec, address="local", storage=str(tmp_path / "store"))
    assert summary.exit_code == 0 and summary.cells_ok == 2
    for holdout in ("user01", "user02"):
        choice = json.loads((tmp_path / f"store/s/search/{holdout}-tiny.json").read_text())
        assert holdout not in choice["val_signers"] and len(choice["candidates"]) == 2
        assert {c["params"]["train.lr"] for c in choice["candidates"]} == {1e-3, 3e-3}
        assert choice["val_accuracy"] == max(c["best_val_accuracy"] for c in choice["candidates"])
        row, = read_rows([str(tmp_path / f"store/s/results/{holdout}-s3-tiny.parquet")]).to_pylist()
        recorded = json.loads(row["search"])
        assert recorded["params"] == choice["params"]
        assert json.loads(row["config"])["train"]["lr"] == choice["params"]["train.lr"]
        assert row["val_signers"] == choice["val_signers"]
    # a second run reuses the stored choices instead of searching again
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "store/s/search").iterdir()}
    run_sweep(spec, address="local", storage=str(tmp_path / "store"))
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "store/s/search").iterdir()}
