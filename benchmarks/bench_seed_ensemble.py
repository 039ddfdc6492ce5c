"""Several SignBART seeds in one graph, screened on a finished sweep's folds: does averaging
them help on the inner signers, and what does the one file cost?

    python benchmarks/bench_seed_ensemble.py --rows reports/mlr511/rows/mlr511-nested \
        --data ../shared/data/mlr511-90 --seed 42 --members 3

For each trial of the sweep at ``--seed``: its own config and fold (inner signers checked
against the row's), then ``--members`` inner runs of SignBART on that one inner split, with
model seeds ``seed``, ``seed + 1000``, ... The first has the trial's own seed, but this process
runs TensorFlow at its default thread count where the sweep ran one thread per trial, so its
float sums, and its training, differ: it need not reproduce the row (``reproduced_inner``
counts the folds where it does). The members are mixed by the mean of their probabilities
at equal shares: nothing is fitted on the inner signers, so their accuracy of the mix is a
clean inner figure. Held out, each inner model and the mix are scored (Keras FP32; the
row's keep-best partner is the same first model as a ``.tflite``). The cost: the mix as one
graph (``ensemble.MixLogProbs``) exported as dynamic-range INT8, its size and single-thread
latency in the TFLite interpreter beside one member's, measured in one run.

The rule, fixed before looking: build seed ensembles into the trial if the mix's mean inner
accuracy beats the single model's (the first member's) by more than the verdict's 0.005 tie. Held-out figures are
reported, never chosen by.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import parser, row_fold, seed_rows, write

from signbart import ensemble, quantize, tflite
from signbart.config import EVAL_BATCH
from signbart.evaluate import accuracy
from signbart.preprocess import prepare
from signbart.signerstats import t_interval
from signbart.tfkeras import keras
from signbart.train import as_model_inputs, train

TIE = 0.005
SEED_STEP = 1000


def mean_probs(logits: list[np.ndarray]) -> np.ndarray:
    """The equal-share arithmetic mix, as ``MixLogProbs`` computes it."""
    k = len(logits)
    return ensemble.mix_log_probs(logits, [1.0] * k, [1.0 / k] * k, "arithmetic")


def one_graph(models: list) -> keras.Model:
    k = int(dict(zip(models[0].input_names, models[0].inputs))["keypoints"].shape[2])
    keypoints = keras.Input(shape=(None, k, 2), name="keypoints")
    mask = keras.Input(shape=(None,), name="attention_mask")
    for i, m in enumerate(models):
        m._name = f"signbart_{i}"          # one graph holds each member under its own name
    members = [m({"keypoints": keypoints, "attention_mask": mask}) for m in models]
    out = ensemble.MixLogProbs([1.0 / len(models)] * len(models), mode="arithmetic",
                               name="seed_mix")(members)
    return keras.Model({"keypoints": keypoints, "attention_mask": mask}, out, name="seeds")


def _trial(rows: dict[str, dict], data: str | None, members: int) -> tuple[dict, list, int]:
    """The fold's figures, its member models and their frame count."""
    sb = rows["signbart"]
    cfg, dataset, fold = row_fold(sb, data)
    inner_only = dataclasses.replace(cfg.train, refit=False)
    models, inner_logits, inner_best = [], [], []
    for k in range(members):
        with tempfile.TemporaryDirectory() as tmp:
            result = train(inner_only, cfg.variant, dataset, fold, tmp, cfg.seed + SEED_STEP * k)
        models.append(result.model)
        inner_logits.append(result.inner_val_logits)
        inner_best.append(result.inner_val_accuracy)
    val_y = result.val_data.y
    test = prepare(dataset, fold.test, cfg.variant, cfg.train.max_frames)
    test_logits = [m.predict(as_model_inputs(test.x, test.mask), batch_size=EVAL_BATCH,
                             verbose=0) for m in models]
    record = {"trial": sb["trial_id"], "holdout": cfg.holdout,
              "val_signers": list(fold.val_signers), "row_inner": sb["inner_val_accuracy"],
              "row_keepbest_top1": rows["signbart-keepbest"]["top1"],
              "inner": {"single": accuracy(inner_logits[0], val_y),
                        "members": [accuracy(x, val_y) for x in inner_logits],
                        "mix": accuracy(mean_probs(inner_logits), val_y)},
              "inner_best_epoch_accuracy": inner_best,
              "held_out": {"single": accuracy(test_logits[0], test.y),
                           "members": [accuracy(x, test.y) for x in test_logits],
                           "mix": accuracy(mean_probs(test_logits), test.y)}}
    return record, models, cfg.train.max_frames


def _cost(models: list, frames: int, out: Path) -> dict:
    """Size and latency of one member and of the one-graph mix, dynamic-range INT8."""
    figures = {}
    for name, model in (("single", models[0]), ("mix", one_graph(models))):
        blob = quantize.ptq_dynamic(model, frames)
        path = out / f"seeds_{name}_ptq.tflite"
        path.write_bytes(blob)
        figures[name] = {"bytes": len(blob), **tflite.latency(str(path), n=200)}
    return figures


def main() -> None:
    p = parser(__doc__.splitlines()[0], "seed_ensemble")
    p.add_argument("--rows", required=True, help="a finished sweep's folder of rows")
    p.add_argument("--data", help="the dataset, if not where the trials' configs say")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--holdouts", nargs="*", help="only these folds (default: all)")
    args = p.parse_args()
    by_trial = seed_rows(Path(args.rows), args.seed)
    trials, last = [], None             # only the last fold's members are priced
    for _, rows in sorted(by_trial.items()):
        if args.holdouts and rows["signbart"]["holdout"] not in args.holdouts:
            continue
        record, *last = _trial(rows, args.data, args.members)
        trials.append(record)
        print(json.dumps(record), flush=True)
    if not trials:
        raise SystemExit(f"{args.rows}: no FP32 rows at seed {args.seed}")
    with tempfile.TemporaryDirectory() as tmp:
        cost = _cost(*last, Path(tmp))
    summary = {scope: {k: float(np.mean([t[scope][k] for t in trials])) for k in ("single", "mix")}
               for scope in ("inner", "held_out")}
    paired = {scope: [float(x) for x in t_interval([t[scope]["mix"] - t[scope]["single"]
                                                    for t in trials])]
              for scope in ("inner", "held_out")}
    write(args.out, {
        "rows": args.rows, "seed": args.seed, "members": args.members,
        "member_seeds": [args.seed + SEED_STEP * k for k in range(args.members)],
        "folds": len(trials),
        "rule": f"build it in if the mix's mean inner accuracy beats the single model's by more "
                f"than {TIE}",
        "build_in": bool(summary["inner"]["mix"] - summary["inner"]["single"] > TIE),
        "reproduced_inner": sum(abs(t["inner"]["single"] - t["row_inner"]) < 1e-6
                                for t in trials),
        **summary, "mix_minus_single": paired, "cost_ptq": cost,
        "cost_ratio": {"bytes": cost["mix"]["bytes"] / cost["single"]["bytes"],
                       "latency_p50": cost["mix"]["latency_ms_p50"]
                       / cost["single"]["latency_ms_p50"]},
        "per_trial": trials})


if __name__ == "__main__":
    main()
