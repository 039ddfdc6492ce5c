import json
from pathlib import Path

import pytest
from test_train import VARIANT

from signbart.config import to_dict
from signbart.errors import ConfigError
from signbart.trial import ExperimentConfig, run_trial


def test_experiment_config_validates_quant_and_loads_variant_files():
    root = Path(__file__).resolve().parents[1]
    cfg = ExperimentConfig.parse({"data": "d", "variant": str(root / "configs/arabic-asl-42kpts-hands.yaml"),
                                  "quant": ["fp32", "qat"]})
    assert cfg.variant.name == "arabic-asl-42kpts-hands" and cfg.quant == ("fp32", "qat")
    assert cfg.name == "none-s42-arabic-asl-42kpts-hands"
    with pytest.raises(ConfigError, match="quant: 'fp16' is not one of"):
        ExperimentConfig.parse({"data": "d", "variant": to_dict(VARIANT), "quant": ["fp16"]})
    with pytest.raises(ConfigError, match=r"trial config.train.epochs: expected an integer"):
        ExperimentConfig.parse({"data": "d", "variant": to_dict(VARIANT), "train": {"epochs": 1.5}})


@pytest.mark.slow
def test_trial_trains_once_and_writes_one_evaluated_row_per_quant_mode(synth_dataset, tmp_path):
    epochs_seen = []
    rows = run_trial({"data": str(synth_dataset), "variant": to_dict(VARIANT), "holdout": "user03",
                      "seed": 1, "quant": ["fp32", "ptq", "qat"], "out_dir": str(tmp_path),
                      "sweep": "t", "train": {"epochs": 3, "batch_size": 8},
                      "qat": {"epochs": 1, "batch_size": 8}},
                     report=lambda m: epochs_seen.append(m["epoch"]))
    assert epochs_seen == [1, 2, 3]       # FP32 trained exactly once, epochs reported live
    kinds = [(r["model_kind"], r["quant"], r["status"]) for r in rows]
    assert kinds == [("signbart", "fp32", "ok"), ("signbart", "ptq", "ok"),
                     ("signbart", "qat", "ok"), ("baseline", "fp32", "ok")]
    fp32, ptq, qat, base = rows
    assert fp32["fp32_model_path"] == ptq["fp32_model_path"] == qat["fp32_model_path"]
    assert ptq["model_bytes"] < fp32["model_bytes"]   # the 35 % bound is tested at full size
    for r in (fp32, ptq, qat):
        assert r["n_test"] == 30 and r["holdout"] == "user03" and "user03" not in r["val_signers"]
        assert 0.0 <= r["top1"] <= r["top5"] <= 1.0
        assert len(r["confusion"]) == 10 and sum(map(sum, r["confusion"])) == 30
        assert r["params"] > 0 and r["flops"] > 0 and r["latency_ms_p50"] > 0
        sidecar = json.loads(Path(r["model_path"]).with_suffix(".json").read_text())
        assert sidecar["labels"] == r["labels"] and sidecar["quant"] == r["quant"]
    assert json.loads(fp32["config"])["holdout"] == "user03" and fp32["config_hash"]
    assert base["params"] > 0 and base["top1"] is not None
    assert all(r["synthetic"] is True for r in rows)   # dataset.json of synth data says so


@pytest.mark.slow
def test_refit_and_ensemble_rows(synth_dataset, tmp_path):
    reports = []
    rows = run_trial({"data": str(synth_dataset), "variant": to_dict(VARIANT), "holdout": "user03",
                      "seed": 1, "quant": ["fp32", "ptq"], "out_dir": str(tmp_path), "sweep": "t",
                      "ensemble": True,
                      "train": {"epochs": 4, "batch_size": 8, "val_signers": 1, "refit": True,
                                "schedule": "cosine", "warmup_epochs": 1}},
                     report=reports.append)
    kinds = [(r["model_kind"], r["quant"], r["status"]) for r in rows]
    assert kinds == [("signbart", "fp32", "ok"), ("signbart", "ptq", "ok"),
                     ("ensemble", "fp32", "ok"), ("ensemble", "ptq", "ok"),
                     ("signbart-keepbest", "fp32", "ok"), ("baseline", "fp32", "ok")]
    best = rows[0]["best_epoch"]
    # the inner run (4 epochs on the inner signer), then a refit on 3 signers for its best epoch
    assert [m["epoch"] for m in reports if not m.get("refit")] == [1, 2, 3, 4]
    assert [m["epoch"] for m in reports if m.get("refit")] == list(range(1, max(best, 2) + 1))
    assert rows[0]["epochs_run"] == max(best, 2) and rows[0]["n_train"] == 90
    ens = rows[2]
    assert 0.0 <= ens["ensemble_weight"] <= 1.0 and ens["params"] > rows[0]["params"]
    assert rows[3]["model_bytes"] < ens["model_bytes"]
    keep = rows[4]     # the inner run's own checkpoint, for the refit-vs-keep-best ablation
    assert keep["n_train"] == 60 and keep["epochs_run"] == best and keep["top1"] is not None
    assert 0.0 <= rows[0]["inner_val_accuracy"] <= 1.0
    card = json.loads(Path(ens["model_path"]).with_suffix(".json").read_text())
    assert card["model_kind"] == "ensemble" and card["ensemble_weight"] == ens["ensemble_weight"]
