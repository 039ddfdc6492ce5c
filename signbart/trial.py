"""One sweep cell family: train FP32 once, export each quant mode, evaluate each as TFLite.

``run_trial(exp, out_dir)`` is a plain function of an ``ExperimentConfig``: Ray Tune fans it
out, the CLI's ``train`` calls it directly, and tests call it with neither. It runs three
steps, each its own function: ``train_fp32`` → ``export`` → ``evaluate_exports``.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from dataclasses import dataclass
from pathlib import Path

from signbart.config import EVAL_BATCH, ExperimentConfig, config_hash
from signbart.results import make_row

log = logging.getLogger(__name__)

KEEPBEST = "signbart-keepbest"   # the inner run's checkpoint, reported beside a refit model
ENSEMBLE_QUANTS = ("fp32", "ptq")  # the ensemble's float and dynamic-range files


@dataclass
class Trained:
    """The FP32 model of one fold and what every later step needs from its training."""

    result: object                # train.TrainResult: the model, its data, the inner run
    fields: dict                  # row fields shared by every quant mode (params, flops, ...)
    card: dict                    # ModelCard fields shared by every exported file


def _config_row(cfg: ExperimentConfig, quant: str, **fields) -> dict:
    """A result row of this trial's config: what was run, and ``fields``."""
    d = cfg.to_dict()
    return make_row(sweep=cfg.sweep, trial_id=cfg.name, holdout=cfg.holdout, seed=cfg.seed,
                    variant=cfg.variant.name, ablation=cfg.ablation or None, quant=quant,
                    augment=json.dumps(d["train"]["augment"], sort_keys=True),
                    search=json.dumps(cfg.search, sort_keys=True) if cfg.search else None,
                    config=json.dumps(d, sort_keys=True), config_hash=config_hash(d), **fields)


def _row(cfg: ExperimentConfig, fold, dataset, quant: str, **fields) -> dict:
    """A row of a trial that ran: its config, its fold, and ``fields`` (which may override
    the fold's counts, as the keep-best row does)."""
    fold_fields = dict(n_train=len(fold.train) + (len(fold.val) if cfg.train.refit else 0),
                       n_val=len(fold.val), n_test=len(fold.test),
                       val_signers=list(fold.val_signers))
    return _config_row(cfg, quant, labels=list(dataset.labels), glosses=list(dataset.glosses),
                       synthetic=dataset.synthetic, **{**fold_fields, **fields})


def _failed(cfg, fold, dataset, quant, err: BaseException, **fields) -> dict:
    log.error("%s %s failed: %s", cfg.name, quant, err)
    return _row(cfg, fold, dataset, quant, status="failed",
                error=f"{type(err).__name__}: {err}", **fields)


def failed_rows(cfg: ExperimentConfig, error: str) -> list[dict]:
    """What a trial that kept raising leaves behind: one failed row per quant mode."""
    return [_config_row(cfg, q, status="failed", error=error) for q in cfg.quant]


def train_fp32(cfg: ExperimentConfig, dataset, fold, out: Path, report=None) -> Trained:
    """Train the FP32 model once and save it as ``model.keras``."""
    from signbart import evaluate
    from signbart.results import git_sha
    from signbart.train import train

    result = train(cfg.train, cfg.variant, dataset, fold, out, cfg.seed, report)
    path = out / "model.keras"
    result.model.save(path)
    flops = evaluate.count_flops(result.model, cfg.train.max_frames)
    fields = dict(params=result.params, flops=flops, train_seconds=result.train_seconds,
                  epochs_run=result.epochs_run, best_epoch=result.best_epoch,
                  inner_epochs=result.inner_epochs,
                  inner_val_accuracy=result.inner_val_accuracy, fp32_model_path=str(path))
    card = dict(variant=cfg.variant, labels=tuple(dataset.labels),
                glosses=tuple(dataset.glosses), layout=dataset.layout.to_dict(),
                max_frames=cfg.train.max_frames, synthetic=dataset.synthetic,
                git_sha=git_sha(), config_hash=config_hash(cfg.to_dict()),
                params=result.params, flops=flops)
    return Trained(result, fields, card)


def write_export(path: Path, blob: bytes, data, card: dict, **fields) -> None:
    """The one way a trial writes a ``.tflite``: checked on eight of ``data``'s samples (it
    loads, has the phone signature, gives finite logits), then written with its model card."""
    from signbart import tflite

    tflite.check(blob, data.x[:8], data.mask[:8])
    tflite.ModelCard(**card, **fields).write(path, blob)


def _tflite_bytes(cfg: ExperimentConfig, trained: Trained, quant: str, report=None
                  ) -> tuple[bytes, dict]:
    """The TFLite bytes of one quant mode, and its row fields (QAT fine-tunes a copy first)."""
    from signbart import quantize
    from signbart.train import make_dataset

    model, frames = trained.result.model, cfg.train.max_frames
    train_data, val_data = trained.result.train_data, trained.result.val_data
    if quant == "fp32":
        return quantize.to_tflite(model, frames), {}
    if quant == "ptq":
        return quantize.ptq_dynamic(model, frames), {}
    if quant == "int8":  # calibration never sees the held-out signer
        rep = ((train_data.x[i:i + 1], train_data.mask[i:i + 1])
               for i in range(min(len(train_data), 200)))
        return quantize.full_int8(model, rep, frames), {}
    qat_model = quantize.apply_qat(model, cfg.qat)
    tr = make_dataset(train_data, cfg.qat.batch_size, cfg.seed)
    # after a refit the inner signers are training data: QAT then has no validation set
    va = (make_dataset(val_data, EVAL_BATCH, cfg.seed, shuffle=False)
          if len(val_data) and not cfg.train.refit else None)
    qat_model, info = quantize.qat_finetune(qat_model, tr, va, cfg.qat, report)
    return quantize.qat_to_tflite(qat_model, frames), {"qat_epochs": info["epochs_run"]}


def export(cfg: ExperimentConfig, trained: Trained, out: Path, report=None
           ) -> tuple[dict[str, tuple[Path, dict]], dict[str, tuple[Path, Exception]]]:
    """Each quant mode as a checked ``.tflite`` with its model card beside it; QAT's epochs
    go to ``report`` as ``train`` sends its own.

    Returns ({quant: (path, row fields)}, {quant: (path, error) of a mode that failed}).
    """
    from signbart import tflite

    data = trained.result.train_data
    exported, errors = {}, {}
    for quant in cfg.quant:
        path = out / tflite.MODEL_FILES[quant]
        try:
            blob, fields = _tflite_bytes(cfg, trained, quant, report)
            write_export(path, blob, data, trained.card, quant=quant)
            exported[quant] = (path, fields)
        except Exception as err:  # recorded as a failed row; the other modes go on
            log.debug("%s", traceback.format_exc())
            errors[quant] = (path, err)
    return exported, errors


def evaluate_exports(cfg: ExperimentConfig, dataset, fold, trained: Trained, out: Path,
                     exported: dict[str, tuple[Path, dict]]) -> list[dict]:
    """Score every exported file on the held-out signer, read here once, after all exports;
    then the keep-best, baseline and ensemble rows the config asks for."""
    from signbart.preprocess import prepare

    test = prepare(dataset, fold.test, cfg.variant, cfg.train.max_frames)
    rows = []
    for quant, (path, fields) in exported.items():
        try:
            rows.append(_row(cfg, fold, dataset, quant, model_path=str(path),
                             **_score(path, test, len(dataset.labels)), **trained.fields,
                             **fields))
        except Exception as err:
            rows.append(_failed(cfg, fold, dataset, quant, err, model_path=str(path),
                                **trained.fields))
    if trained.result.inner_model is not None:
        rows.append(_keepbest_row(cfg, dataset, fold, trained, test, out))
    lin = (_fit_baseline(cfg, dataset, trained.result.train_data)
           if cfg.baseline or cfg.ensemble else None)
    inner = _inner_baseline(cfg, dataset, trained.result) if lin is not None else None
    if cfg.baseline:
        rows.append(_baseline_row(cfg, dataset, fold, lin, inner, trained.result.val_data, test))
    if cfg.ensemble:
        rows.extend(_ensemble_rows(cfg, dataset, fold, trained, lin, inner, test, out))
    return rows


def run_trial(cfg: ExperimentConfig, out_dir, report=None) -> list[dict]:
    """Train, export and evaluate one (holdout, seed, variant[, ablation]); one row per quant
    mode, plus the keep-best, baseline and ensemble rows the config asks for.

    FP32 training happens once; each quant mode starts from that model. A failing quant mode
    becomes a ``status=failed`` row with the reason; it does not sink the others.
    """
    if cfg.threads:
        from signbart.tfkeras import set_threads
        set_threads(cfg.threads)
    from signbart.data import open_dataset
    from signbart.storage import write_text

    dataset = open_dataset(cfg.data)
    fold = dataset.fold(cfg.holdout, cfg.train.n_val_signers, cfg.seed)
    out = Path(out_dir)
    write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=1))
    trained = train_fp32(cfg, dataset, fold, out, report)
    exported, errors = export(cfg, trained, out, report)
    rows = [_failed(cfg, fold, dataset, quant, err, model_path=str(path), **trained.fields)
            for quant, (path, err) in errors.items()]
    rows += evaluate_exports(cfg, dataset, fold, trained, out, exported)
    order = {cell: i for i, cell in enumerate(expected_rows(cfg))}
    return sorted(rows, key=lambda r: order[r["quant"], r["model_kind"]])


def candidate(cfg: ExperimentConfig, settings: dict) -> ExperimentConfig:
    """``cfg`` with a search candidate's dotted ``settings`` applied, built as every
    experiment is (``build_experiment``), without refit: a candidate is scored by its inner
    run."""
    from dataclasses import replace

    from signbart.config import build_experiment

    exp = build_experiment(cfg.data, cfg.variant, cfg.holdout, seed=cfg.seed, quant=cfg.quant,
                           train=cfg.train, qat=cfg.qat, settings=settings, sweep=cfg.sweep,
                           threads=cfg.threads, baseline=cfg.baseline, ensemble=cfg.ensemble,
                           where="search candidate")
    return replace(exp, train=replace(exp.train, refit=False))


def inner_score(cfg: ExperimentConfig, rotations: int, report) -> float:
    """Train ``cfg`` on its hold-out's training signers and score it on ``rotations`` disjoint
    groups of inner signers in turn; the mean best inner-validation accuracy. Nothing is
    exported and the held-out signer stays sealed. ``report`` gets ``{epoch, rotation,
    val_accuracy, best_val_accuracy}`` (the mean over the rotations so far)."""
    import math
    import tempfile

    from signbart.data import open_dataset
    from signbart.train import train

    if cfg.threads:
        from signbart.tfkeras import set_threads
        set_threads(cfg.threads)
    dataset = open_dataset(cfg.data)
    folds = dataset.inner_folds(cfg.holdout, cfg.train.n_val_signers, cfg.seed, rotations)
    bests: list[float] = []
    best = -math.inf

    def per_epoch(metrics):
        nonlocal best
        best = max(best, metrics.get("val_accuracy", -math.inf))
        report({"epoch": len(bests) * cfg.train.epochs + metrics["epoch"],
                "rotation": len(bests), "val_accuracy": metrics.get("val_accuracy"),
                "best_val_accuracy": (sum(bests) + best) / (len(bests) + 1)})

    with tempfile.TemporaryDirectory() as tmp:
        for fold in folds:
            dataset.seal([fold.holdout])
            try:
                train(cfg.train, cfg.variant, dataset, fold, tmp, cfg.seed, report=per_epoch)
            finally:
                dataset.unseal()
            bests.append(best)
            best = -math.inf
    return sum(bests) / len(bests)


def expected_rows(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """The (quant, model_kind) rows ``run_trial`` writes for ``cfg``, in its order: the one
    answer to how many cells a trial fills (the sweep's grid and its report ask here)."""
    rows = [(q, "signbart") for q in cfg.quant]
    if cfg.ensemble:
        rows += [(q, "ensemble") for q in cfg.quant if q in ENSEMBLE_QUANTS]
    if cfg.train.refit and cfg.train.n_val_signers > 0:
        rows.append(("fp32", KEEPBEST))
    if cfg.baseline:
        rows.append(("fp32", "baseline"))
    return rows


def _score(path: Path, test, num_labels: int) -> dict:
    """The held-out metrics of one .tflite file (TFLite interpreter), its size and latency."""
    from signbart import evaluate, tflite

    runner = tflite.Runner(str(path))
    metrics = (evaluate.evaluate(runner.predict, test.x, test.mask, test.y, num_labels)
               if len(test) else {})
    return {**metrics, **tflite.latency(runner), "model_bytes": os.path.getsize(path)}


def _keepbest_row(cfg, dataset, fold, trained: Trained, test, out: Path) -> dict:
    """The refit's ablation partner: the inner run's own checkpoint (best inner-val epoch,
    trained without the inner signers), scored as FP32 TFLite on the same held-out signer."""
    from signbart import quantize

    path = out / "model_keepbest_fp32.tflite"
    fields = {**trained.fields, "epochs_run": trained.result.best_epoch, "train_seconds": None,
              "n_train": len(fold.train)}
    try:
        blob = quantize.to_tflite(trained.result.inner_model, cfg.train.max_frames)
        write_export(path, blob, trained.result.inner_train_data, trained.card, quant="fp32")
        return _row(cfg, fold, dataset, "fp32", model_kind=KEEPBEST, model_path=str(path),
                    **_score(path, test, len(dataset.labels)), **fields)
    except Exception as err:
        return _failed(cfg, fold, dataset, "fp32", err, model_kind=KEEPBEST,
                       model_path=str(path), **fields)


def _fit_baseline(cfg, dataset, train_prep):
    from signbart import baseline

    try:
        return baseline.fit(train_prep, len(dataset.labels), seed=cfg.seed)
    except Exception as err:  # recorded on the rows that need it
        return err


def _inner_baseline(cfg, dataset, result):
    """The baseline as the inner run sees it: fit on the inner run's training signers, so its
    inner-signer score is an inner-validation figure. None without inner signers."""
    if result.inner_val_logits is None or not len(result.val_data):
        return None
    return _fit_baseline(cfg, dataset, result.inner_train_data)


def _baseline_row(cfg, dataset, fold, lin, inner, val, test) -> dict:
    from signbart import evaluate

    try:
        for fit in (lin, inner):
            if isinstance(fit, Exception):
                raise fit
        metrics = (evaluate.evaluate(lin.predict, test.x, test.mask, test.y,
                                     len(dataset.labels)) if len(test) else {})
        inner_acc = (evaluate.accuracy(inner.predict(val.x, val.mask), val.y) if inner
                     else None)
        return _row(cfg, fold, dataset, "fp32", model_kind="baseline", params=lin.params,
                    train_seconds=lin.seconds, inner_val_accuracy=inner_acc, **metrics)
    except Exception as err:
        return _failed(cfg, fold, dataset, "fp32", err, model_kind="baseline")


def _ensemble_mix(cfg, result, inner):
    """The mix (temperatures, mode, SignBART's share), fitted by log-likelihood on the inner
    signers (the inner run's SignBART against the inner baseline), and its inner accuracy at
    those parameters: optimistic by a little, as it is scored on the clips it was fitted on.
    ``cfg.ensemble_mix`` names the pool, or ``fit`` for the better of the two by inner NLL.
    ``cfg.ensemble_gate``: the baseline abstains on a clip whose RMS z-score is beyond the
    largest any inner-signer clip reached, so no inner clip is gated and the fit stands.
    No inner signers: equal shares of the first pool, no scaling, no gate, no figure."""
    import dataclasses

    from signbart import ensemble, evaluate

    modes = ensemble.MODES if cfg.ensemble_mix == "fit" else (cfg.ensemble_mix,)
    if inner is None:
        return ensemble.Mix(modes[0]), None
    val = result.val_data
    base = inner.predict(val.x, val.mask)
    mix = ensemble.fit_mix(result.inner_val_logits, base, val.y, modes)
    rms = inner.rms_z(val.x, val.mask) if cfg.ensemble_gate else None
    if rms is not None:
        mix = dataclasses.replace(mix, gate=float(rms.max()))
    return mix, evaluate.accuracy(ensemble.mix_logits(result.inner_val_logits, base, mix, rms),
                                  val.y)


def _ensemble_rows(cfg, dataset, fold, trained: Trained, lin, inner, test, out: Path
                   ) -> list[dict]:
    """SignBART + baseline as one .tflite per float/dynamic-range mode, scored like SignBART.
    The share, the graph and its cost are the same for every mode: built once."""
    from signbart import ensemble, evaluate, quantize
    from signbart.model import count_params

    result, frames = trained.result, cfg.train.max_frames
    quants = [q for q in cfg.quant if q in ENSEMBLE_QUANTS]
    try:
        for fit in (lin, inner):
            if isinstance(fit, Exception):
                raise fit
        mix, inner_acc = _ensemble_mix(cfg, result, inner)
        model = ensemble.build_ensemble(result.model, lin, mix)
        fitted = dict(ensemble_weight=mix.weight, ensemble_mode=mix.mode,
                      ensemble_temperatures=mix.temperatures, ensemble_gate=mix.gate)
        params, flops = count_params(model), evaluate.count_flops(model, frames)
    except Exception as err:
        log.debug("%s", traceback.format_exc())
        return [_failed(cfg, fold, dataset, q, err, model_kind="ensemble",
                        model_path=str(out / f"ensemble_{q}.tflite")) for q in quants]
    rows = []
    for quant in quants:
        path = out / f"ensemble_{quant}.tflite"
        try:
            blob = (quantize.to_tflite(model, frames) if quant == "fp32"
                    else quantize.ptq_dynamic(model, frames))
            write_export(path, blob, result.train_data, {**trained.card, "params": params,
                                                          "flops": flops},
                         quant=quant, model_kind="ensemble", **fitted)
            rows.append(_row(
                cfg, fold, dataset, quant, model_kind="ensemble", model_path=str(path),
                params=params, flops=flops, **fitted,
                train_seconds=result.train_seconds + lin.seconds,
                epochs_run=result.epochs_run, best_epoch=result.best_epoch,
                inner_epochs=result.inner_epochs, inner_val_accuracy=inner_acc,
                **_score(path, test, len(dataset.labels))))
        except Exception as err:
            log.debug("%s", traceback.format_exc())
            rows.append(_failed(cfg, fold, dataset, quant, err, model_kind="ensemble",
                                model_path=str(path)))
    return rows


PRICE_EPOCHS = 3       # the short run --dry-run clocks: enough for a steady epoch after tracing
PRICE_QAT_EPOCHS = 2


def price(cfg: ExperimentConfig, out_dir) -> dict:
    """A short real run of ``cfg``'s trial: ``PRICE_EPOCHS`` epochs (and the refit and QAT
    epochs that follow), every export, evaluation and fit its rows need. Its CPU-seconds,
    how many epochs each training phase ran, and what one more epoch of each costs: the
    pricer (``pricing.trial_cpu``) adds the epochs it expects a full trial to train."""
    import statistics
    import time
    from dataclasses import replace

    epochs = min(PRICE_EPOCHS, cfg.train.epochs)
    short = replace(cfg, train=replace(cfg.train, epochs=epochs, early_stopping=0,
                                       warmup_epochs=min(cfg.train.warmup_epochs, epochs - 1)),
                    qat=replace(cfg.qat, epochs=min(PRICE_QAT_EPOCHS, cfg.qat.epochs)))
    ticks: list[tuple[str, float]] = []

    def clock(metrics: dict) -> None:
        phase = "qat" if metrics.get("qat") else "refit" if metrics.get("refit") else "inner"
        ticks.append((phase, time.process_time()))

    c0, w0 = time.process_time(), time.perf_counter()
    run_trial(short, out_dir, report=clock)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    epoch_s, ran = {}, {}
    for phase in ("inner", "refit", "qat"):
        times = [t for p, t in ticks if p == phase]
        ran[phase] = len(times)
        if len(times) > 1:   # the first epoch carries the tracing: steady ones only
            epoch_s[phase] = statistics.median(b - a for a, b in zip(times, times[1:]))
        elif times:          # a one-epoch refit: its epochs cost about the inner run's
            epoch_s[phase] = epoch_s.get("inner", 0.0)
    return {"short_cpu_s": cpu, "short_wall_s": wall, "short_epochs": ran,
            "epoch_cpu_s": epoch_s}
