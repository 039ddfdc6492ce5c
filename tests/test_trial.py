import json
from pathlib import Path

import pytest
from test_train import VARIANT

from signbart.config import (
    ExperimentConfig,
    QATConfig,
    TrainConfig,
    build_experiment,
    load_variant,
)
from signbart.errors import ConfigError
from signbart.tflite import ModelCard
from signbart.trial import expected_rows, run_trial

ROOT = Path(__file__).resolve().parents[1]


def test_experiment_is_built_once_and_parsed_as_data():
    variant = load_variant(ROOT / "configs/arabic-asl-42kpts-hands.yaml")
    cfg = build_experiment("d", variant, "user01", quant=["fp32", "qat"],
                           search={"params": {"train.lr": 1e-3, "model.dropout": 0.1}},
                           ablation="drop", augment={"hand_drop": 0.3},
                           settings={"train.lr": 2e-3, "qat.epochs": 3})
    assert cfg.name == "user01-s42-arabic-asl-42kpts-hands-drop" and cfg.quant == ("fp32", "qat")
    assert (cfg.train.lr, cfg.qat.epochs, cfg.variant.model["dropout"]) == (2e-3, 3, 0.1)
    assert cfg.train.augment.hand_drop == 0.3 and cfg.train.augment.prob == 0.4
    assert ExperimentConfig.parse(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"trial config\.variant: expected a mapping"):
        ExperimentConfig.parse({**cfg.to_dict(), "variant": "configs/arabic-asl-65kpts.yaml"})
    with pytest.raises(ConfigError, match="quant: 'fp16' is not one of"):
        build_experiment("d", VARIANT, "u", quant=["fp16"])
    with pytest.raises(ConfigError, match=r"signbart train\.train\.epochs: expected an integer"):
        build_experiment("d", VARIANT, "u", settings={"train.epochs": 1.5},
                         where="signbart train")
    with pytest.raises(ConfigError, match="holdout: expected train.<field>"):
        build_experiment("d", VARIANT, "u", settings={"holdout": "x"})


@pytest.mark.slow
def test_trial_trains_once_and_writes_one_evaluated_row_per_quant_mode(synth_dataset, tmp_path):
    epochs_seen = []
    cfg = build_experiment(str(synth_dataset), VARIANT, "user03", seed=1,
                           quant=["fp32", "ptq", "qat"], sweep="t",
                           train=TrainConfig(epochs=3, batch_size=8),
                           qat=QATConfig(epochs=1, batch_size=8))
    rows = run_trial(cfg, tmp_path, report=lambda m: epochs_seen.append((m["epoch"],
                                                                          m.get("qat"))))
    # FP32 trained exactly once, then QAT's epoch; both reported live
    assert epochs_seen == [(1, None), (2, None), (3, None), (1, 1)]
    kinds = [(r["model_kind"], r["quant"], r["status"]) for r in rows]
    assert kinds == [("signbart", "fp32", "ok"), ("signbart", "ptq", "ok"),
                     ("signbart", "qat", "ok"), ("baseline", "fp32", "ok")]
    fp32, ptq, qat, base = rows
    assert fp32["fp32_model_path"] == ptq["fp32_model_path"] == qat["fp32_model_path"]
    assert ptq["model_bytes"] < fp32["model_bytes"]   # the 35 % bound is tested at full size
    assert [Path(r["model_path"]).name for r in rows[:3]] == [
        "model_fp32.tflite", "model_ptq_int8.tflite", "model_qat_int8.tflite"]
    for r in (fp32, ptq, qat):
        assert r["n_test"] == 30 and r["holdout"] == "user03" and "user03" not in r["val_signers"]
        assert 0.0 <= r["top1"] <= r["top5"] <= 1.0
        assert len(r["confusion"]) == 10 and sum(map(sum, r["confusion"])) == 30
        assert r["params"] > 0 and r["flops"] > 0 and r["latency_ms_p50"] > 0
        assert r["epochs_run"] == 3 and 1 <= r["best_epoch"] <= 3     # FP32's, on every row
        card, _ = ModelCard.read(r["model_path"])
        assert list(card.labels) == r["labels"] and card.quant == r["quant"] and card.synthetic
        assert card.config_hash == r["config_hash"]
    assert qat["qat_epochs"] == 1 and fp32["qat_epochs"] is None
    assert json.loads(fp32["config"]) == cfg.to_dict() and fp32["ablation"] is None
    assert base["params"] > 0 and base["top1"] is not None
    assert all(r["synthetic"] is True for r in rows)   # dataset.json of synth data says so


@pytest.mark.slow
def test_refit_and_ensemble_rows(synth_dataset, tmp_path):
    reports = []
    cfg = build_experiment(str(synth_dataset), VARIANT, "user03", seed=1, quant=["fp32", "ptq"],
                           sweep="t", ensemble=True, ensemble_gate=True,
                           train=TrainConfig(epochs=4, batch_size=8, n_val_signers=1, refit=True,
                                             schedule="cosine", warmup_epochs=1))
    rows = run_trial(cfg, tmp_path, report=reports.append)
    kinds = [(r["model_kind"], r["quant"], r["status"]) for r in rows]
    assert kinds == [("signbart", "fp32", "ok"), ("signbart", "ptq", "ok"),
                     ("ensemble", "fp32", "ok"), ("ensemble", "ptq", "ok"),
                     ("signbart-keepbest", "fp32", "ok"), ("baseline", "fp32", "ok")]
    assert [(r["quant"], r["model_kind"]) for r in rows] == expected_rows(cfg)
    best = rows[0]["best_epoch"]
    # the inner run (4 epochs on the inner signer), then a refit on 3 signers for its best epoch
    assert [m["epoch"] for m in reports if not m.get("refit")] == [1, 2, 3, 4]
    assert [m["epoch"] for m in reports if m.get("refit")] == list(range(1, max(best, 2) + 1))
    assert rows[0]["epochs_run"] == max(best, 2) and rows[0]["n_train"] == 90
    # no early stopping: the inner run trains every epoch (on every row SignBART is part of)
    assert [r["inner_epochs"] for r in rows] == [4] * 5 + [None]
    ens = rows[2]
    assert 0.0 <= ens["ensemble_weight"] <= 1.0 and ens["params"] > rows[0]["params"]
    assert rows[3]["model_bytes"] < ens["model_bytes"]
    keep = rows[4]     # the inner run's own checkpoint, for the refit-vs-keep-best ablation
    assert keep["n_train"] == 60 and keep["epochs_run"] == best and keep["top1"] is not None
    assert 0.0 <= rows[0]["inner_val_accuracy"] <= 1.0
    # every kind carries its own inner figure; the mix is fitted once (by inner likelihood) and
    # its accuracy there is the same on both of its files
    assert 0.0 <= rows[5]["inner_val_accuracy"] <= 1.0
    assert 0.0 <= ens["inner_val_accuracy"] <= 1.0
    fitted = ("ensemble_weight", "ensemble_mode", "ensemble_temperatures", "ensemble_gate",
              "inner_val_accuracy")
    assert [rows[2][k] for k in fitted] == [rows[3][k] for k in fitted]
    assert ens["ensemble_mode"] == "arithmetic"  # the default pool: bounded against a wrong member
    assert len(ens["ensemble_temperatures"]) == 2 and min(ens["ensemble_temperatures"]) > 0
    card = json.loads(Path(ens["model_path"]).with_suffix(".json").read_text())
    assert card["model_kind"] == "ensemble" and card["ensemble_weight"] == ens["ensemble_weight"]
    assert (card["ensemble_mode"], card["ensemble_temperatures"]) == (
        ens["ensemble_mode"], list(ens["ensemble_temperatures"]))
    assert ens["ensemble_gate"] > 0 and card["ensemble_gate"] == ens["ensemble_gate"]
