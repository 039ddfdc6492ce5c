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
    EVAL_BATCH,
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
KEEPBEST = "signbart-keepbest"   # the inner run's checkpoint, reported beside a refit model


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
    ensemble: bool = False      # also ship SignBART + baseline as one model (fp32, ptq)
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
    """A row of this trial; ``fields`` may override the fold's counts (the keep-best row)."""
    d = cfg.to_dict()
    fold_fields = dict(n_train=len(fold.train) + (len(fold.val) if cfg.train.refit else 0),
                       n_val=len(fold.val), n_test=len(fold.test),
                       val_signers=list(fold.val_signers))
    return make_row(sweep=cfg.sweep, trial_id=cfg.name, holdout=cfg.holdout, seed=cfg.seed,
                    variant=cfg.variant.name, quant=quant,
                    labels=list(dataset.labels), glosses=list(dataset.glosses),
                    synthetic=dataset.synthetic,
                    augment=json.dumps(d["train"]["augment"], sort_keys=True),
                    search=json.dumps(cfg.search, sort_keys=True) if cfg.search else None,
                    config=json.dumps(d, sort_keys=True), config_hash=config_hash(d),
                    **{**fold_fields, **fields})


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
                  inner_val_accuracy=trained.inner_val_accuracy, fp32_model_path=str(fp32_path))

    train_prep, val_prep = trained.train_data, trained.val_data

    def fine_tune():
        qat_model = quantize.apply_qat(trained.model, cfg.qat)
        tr = make_dataset(train_prep, cfg.qat.batch_size, cfg.seed)
        # after a refit the inner signers are training data: QAT then has no validation set
        va = (make_dataset(val_prep, EVAL_BATCH, cfg.seed, shuffle=False)
              if len(val_prep) and not cfg.train.refit else None)
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
            fields = {**common, **({"epochs_run": info["epochs_run"]} if "epochs_run" in info
                                   else {})}
            rows.append(_metrics_row(cfg, fold, dataset, quant, model_path=str(path),
                                     **_score(path, test, len(dataset.labels)), **fields))
        except Exception as err:
            rows.append(_failed(cfg, fold, dataset, quant, err, model_path=str(path), **common))
    if trained.inner_model is not None:
        rows.append(_keepbest_row(cfg, dataset, fold, trained, test, out, common, card))
    lin = _fit_baseline(cfg, dataset, train_prep) if cfg.baseline or cfg.ensemble else None
    if cfg.baseline:
        rows.append(_baseline_row(cfg, dataset, fold, lin, test))
    if cfg.ensemble:
        rows.extend(_ensemble_rows(cfg, dataset, fold, trained, lin, test, out, card))
    order = {q: i for i, q in enumerate(cfg.quant)}
    kinds = {"signbart": 0, "ensemble": 1, KEEPBEST: 2, "baseline": 3}
    return sorted(rows, key=lambda r: (kinds[r["model_kind"]], order.get(r["quant"], 0)))


def _score(path: Path, test, num_labels: int) -> dict:
    """The held-out metrics of one .tflite file (TFLite interpreter), its size and latency."""
    from signbart import evaluate, tflite

    runner = tflite.Runner(str(path))
    metrics = (evaluate.evaluate(runner.predict, test.x, test.mask, test.y, num_labels)
               if len(test) else {})
    return {**metrics, **tflite.latency(runner), "model_bytes": os.path.getsize(path)}


def _keepbest_row(cfg, dataset, fold, trained, test, out: Path, common: dict, card: dict) -> dict:
    """The refit's ablation partner: the inner run's own checkpoint (best inner-val epoch,
    trained without the inner signers), scored as FP32 TFLite on the same held-out signer."""
    from signbart import quantize, tflite

    path = out / "model_keepbest_fp32.tflite"
    fields = {**common, "epochs_run": trained.best_epoch, "train_seconds": None,
              "n_train": len(fold.train)}
    try:
        blob = quantize.to_tflite(trained.inner_model, cfg.train.max_frames)
        tflite.ModelCard(**card, quant="fp32", tflite_sha256=tflite.sha256(blob)).write(path, blob)
        return _metrics_row(cfg, fold, dataset, "fp32", model_kind=KEEPBEST, model_path=str(path),
                            **_score(path, test, len(dataset.labels)), **fields)
    except Exception as err:
        return _failed(cfg, fold, dataset, "fp32", err, model_kind=KEEPBEST, model_path=str(path),
                       **fields)


def _fit_baseline(cfg, dataset, train_prep):
    from signbart import baseline

    try:
        return baseline.fit(train_prep, len(dataset.labels), seed=cfg.seed)
    except Exception as err:  # recorded on the rows that need it
        return err


def _baseline_row(cfg, dataset, fold, lin, test) -> dict:
    from signbart import evaluate

    try:
        if isinstance(lin, Exception):
            raise lin
        metrics = (evaluate.evaluate(lin.predict, test.x, test.mask, test.y,
                                     len(dataset.labels)) if len(test) else {})
        return _metrics_row(cfg, fold, dataset, "fp32", model_kind="baseline",
                            params=lin.params, train_seconds=lin.seconds, **metrics)
    except Exception as err:
        return _failed(cfg, fold, dataset, "fp32", err, model_kind="baseline")


def _ensemble_weight(cfg, dataset, trained) -> float:
    """SignBART's share, fitted on the inner signers: the inner run's SignBART against a
    baseline fit on the inner run's training signers. No inner signers: equal shares."""
    from signbart import baseline, ensemble

    val = trained.val_data
    if trained.inner_val_logits is None or not len(val):
        return 0.5
    inner = baseline.fit(trained.inner_train_data, len(dataset.labels), seed=cfg.seed)
    return ensemble.fit_weight(trained.inner_val_logits, inner.predict(val.x, val.mask), val.y)


def _ensemble_rows(cfg, dataset, fold, trained, lin, test, out: Path, card: dict) -> list[dict]:
    """SignBART + baseline as one .tflite per float/dynamic-range mode, scored like SignBART."""
    from signbart import ensemble, evaluate, quantize, tflite
    from signbart.model import count_params

    rows = []
    for quant in [q for q in cfg.quant if q in ("fp32", "ptq")]:
        path = out / f"ensemble_{quant}.tflite"
        try:
            if isinstance(lin, Exception):
                raise lin
            weight = _ensemble_weight(cfg, dataset, trained)
            model = ensemble.build_ensemble(trained.model, lin, weight)
            frames = cfg.train.max_frames
            blob = (quantize.to_tflite(model, frames) if quant == "fp32"
                    else quantize.ptq_dynamic(model, frames))
            tflite.check(blob, trained.train_data.x[:8], trained.train_data.mask[:8])
            params, flops = count_params(model), evaluate.count_flops(model, frames)
            tflite.ModelCard(**{**card, "params": params, "flops": flops}, quant=quant,
                             tflite_sha256=tflite.sha256(blob), model_kind="ensemble",
                             ensemble_weight=weight).write(path, blob)
            rows.append(_metrics_row(
                cfg, fold, dataset, quant, model_kind="ensemble", model_path=str(path),
                params=params, flops=flops, ensemble_weight=weight,
                train_seconds=trained.train_seconds + lin.seconds,
                epochs_run=trained.epochs_run, best_epoch=trained.best_epoch,
                inner_val_accuracy=trained.inner_val_accuracy,
                **_score(path, test, len(dataset.labels))))
        except Exception as err:
            log.debug("%s", traceback.format_exc())
            rows.append(_failed(cfg, fold, dataset, quant, err, model_kind="ensemble",
                                model_path=str(path)))
    return rows
