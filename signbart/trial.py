"""One sweep cell family: train FP32 once, derive each quantized model, evaluate each as TFLite.

``run_trial(config)`` is a plain function of a config dict: Ray Tune fans it out, the CLI's
``train`` calls it directly, and tests call it with neither.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from signbart.config import (
    QATConfig,
    TrainConfig,
    VariantConfig,
    config_hash,
    from_dict,
    load_variant,
    to_dict,
)
from signbart.results import make_row

log = logging.getLogger(__name__)

QUANT_MODES = ("fp32", "ptq", "qat", "int8")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one trial needs; its dict is stored in every row and model sidecar."""

    data: str
    variant: VariantConfig
    holdout: str = "none"
    seed: int = 42
    quant: tuple[str, ...] = ("fp32",)
    train: TrainConfig = field(default_factory=TrainConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    out_dir: str = "runs/trial"
    sweep: str = ""
    trial_id: str = ""
    threads: int = 0            # TF intra/inter-op threads; 0 = leave TF's default
    baseline: bool = True       # also fit the cheap linear baseline on the same fold
    search: dict = field(default_factory=dict)   # what a nested search chose (already applied)

    def __post_init__(self):
        bad = [q for q in self.quant if q not in QUANT_MODES]
        if bad or not self.quant:
            raise ValueError(f"quant: {bad[0] if bad else 'empty'!r} is not one of "
                             f"{', '.join(QUANT_MODES)}")

    @classmethod
    def parse(cls, config: dict) -> ExperimentConfig:
        config = dict(config)
        variant = config.get("variant")
        if isinstance(variant, (str, Path)):
            config["variant"] = to_dict(load_variant(variant))
        return from_dict(cls, config, "trial config")

    def to_dict(self) -> dict:
        return to_dict(self)

    @property
    def name(self) -> str:
        return self.trial_id or f"{self.holdout}-s{self.seed}-{self.variant.name}"


def _metrics_row(cfg: ExperimentConfig, fold, dataset, quant: str, **fields) -> dict:
    d = cfg.to_dict()
    return make_row(sweep=cfg.sweep, trial_id=cfg.name, holdout=cfg.holdout, seed=cfg.seed,
                    variant=cfg.variant.name, quant=quant, n_train=len(fold.train),
                    n_val=len(fold.val), n_test=len(fold.test), val_signers=list(fold.val_signers),
                    labels=list(dataset.labels), glosses=list(dataset.glosses),
                    synthetic=dataset.synthetic,
                    augment=json.dumps(d["train"]["augment"], sort_keys=True),
                    search=json.dumps(cfg.search, sort_keys=True) if cfg.search else None,
                    config=json.dumps(d, sort_keys=True), config_hash=config_hash(d), **fields)


def _failed(cfg, fold, dataset, quant, err: BaseException, **fields) -> dict:
    log.error("%s %s failed: %s", cfg.name, quant, err)
    return _metrics_row(cfg, fold, dataset, quant, status="failed",
                        error=f"{type(err).__name__}: {err}", **fields)


def _export(cfg, trained, quant, fine_tune):
    """The TFLite bytes of one quant mode (QAT fine-tunes a copy of the FP32 model first)."""
    from signbart import quantize

    frames = cfg.train.max_frames
    if quant == "fp32":
        return quantize.to_tflite(trained.model, frames), {}
    if quant == "ptq":
        return quantize.ptq_dynamic(trained.model, frames), {}
    if quant == "int8":
        data = trained.train_data  # calibration never sees the held-out signer
        rep = ((data.x[i:i + 1], data.mask[i:i + 1]) for i in range(min(len(data), 200)))
        return quantize.full_int8(trained.model, rep, frames), {}
    qat_model, info = fine_tune()
    return quantize.qat_to_tflite(qat_model, frames), info


def run_trial(config: dict, report=None) -> list[dict]:
    """Train, quantize and evaluate one (holdout, seed, variant); one row per quant mode.

    FP32 training happens once; each quant mode starts from that model. A failing quant mode
    becomes a ``status=failed`` row with the reason; it does not sink the others.
    """
    cfg = ExperimentConfig.parse(config)
    if cfg.threads:
        from signbart.tfkeras import set_threads
        set_threads(cfg.threads)
    from signbart import evaluate, quantize, tflite
    from signbart.data import open_dataset
    from signbart.preprocess import prepare
    from signbart.results import git_sha
    from signbart.storage import write_text
    from signbart.train import make_dataset, train

    dataset = open_dataset(cfg.data)
    fold = dataset.fold(cfg.holdout, cfg.train.val_signers, cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=1))
    trained = train(cfg.train, cfg.variant, dataset, fold, out, cfg.seed, report)
    fp32_path = out / "model.keras"
    trained.model.save(fp32_path)
    flops = evaluate.count_flops(trained.model, cfg.train.max_frames)
    common = dict(params=trained.params, flops=flops, train_seconds=trained.train_seconds,
                  epochs_run=trained.epochs_run, best_epoch=trained.best_epoch,
                  fp32_model_path=str(fp32_path))

    train_prep, val_prep = trained.train_data, trained.val_data

    def fine_tune():
        qat_model = quantize.apply_qat(trained.model, cfg.qat)
        tr = make_dataset(train_prep, cfg.qat.batch_size, cfg.seed)
        va = make_dataset(val_prep, 64, cfg.seed, shuffle=False) if len(val_prep) else None
        return quantize.qat_finetune(qat_model, tr, va, cfg.qat)

    d = cfg.to_dict()
    card = dict(variant=cfg.variant, labels=tuple(dataset.labels),
                glosses=tuple(dataset.glosses), layout=dataset.layout.to_dict(),
                max_frames=cfg.train.max_frames, synthetic=dataset.synthetic,
                git_sha=git_sha(), config_hash=config_hash(d), params=trained.params,
                flops=flops)
    exported = {}
    rows = []
    for quant in cfg.quant:
        path = out / tflite.MODEL_FILES[quant]
        try:
            blob, info = _export(cfg, trained, quant, fine_tune)
            tflite.check(blob, train_prep.x[:8], train_prep.mask[:8])
            tflite.ModelCard(**card, quant=quant, tflite_sha256=tflite.sha256(blob)).write(
                path, blob)
            exported[quant] = (path, info)
        except Exception as err:  # recorded as a failed row; the other modes go on
            log.debug("%s", traceback.format_exc())
            rows.append(_failed(cfg, fold, dataset, quant, err, model_path=str(path), **common))

    # training and every export are done: the held-out signer is read once, here
    test = prepare(dataset, fold.test, cfg.variant, cfg.train.max_frames)
    for quant, (path, info) in exported.items():
        try:
            runner = tflite.Runner(str(path))
            metrics = (evaluate.evaluate(runner.predict, test.x, test.mask, test.y,
                                         len(dataset.labels)) if len(test) else {})
            latency = tflite.latency(runner)
            fields = {**common, **({"epochs_run": info["epochs_run"]} if "epochs_run" in info
                                   else {})}
            rows.append(_metrics_row(cfg, fold, dataset, quant, model_path=str(path),
                                     model_bytes=os.path.getsize(path), **metrics, **latency,
                                     **{k: v for k, v in fields.items() if k not in metrics}))
        except Exception as err:
            rows.append(_failed(cfg, fold, dataset, quant, err, model_path=str(path), **common))
    if cfg.baseline:
        rows.append(_baseline_row(cfg, dataset, fold, train_prep, test))
    order = {q: i for i, q in enumerate(cfg.quant)}
    return sorted(rows, key=lambda r: (r["model_kind"] != "signbart", order.get(r["quant"], 0)))


def _baseline_row(cfg, dataset, fold, train_prep, test) -> dict:
    from signbart import baseline, evaluate

    try:
        model = baseline.fit(train_prep, len(dataset.labels), seed=cfg.seed)
        metrics = (evaluate.evaluate(model.predict, test.x, test.mask, test.y,
                                     len(dataset.labels)) if len(test) else {})
        return _metrics_row(cfg, fold, dataset, "fp32", model_kind="baseline",
                            params=model.params, train_seconds=model.seconds, **metrics)
    except Exception as err:
        return _failed(cfg, fold, dataset, "fp32", err, model_kind="baseline")
