"""Screen the depthwise-convolution member (``signbart.convnet``) on a finished sweep's folds,
before it is built into the trial.

    python benchmarks/bench_conv_member.py --rows reports/mlr511/rows/mlr511-nested \
        --data ../shared/data/mlr511-90 --seed 42

For each trial of the sweep at ``--seed``: its own config (read from its row), its fold and
inner signers (checked against the row's), and the convolution member trained as
``train.train`` trains SignBART: the same augmentation, schedule, early stopping on the inner
signers, and refit on training + inner signers for the inner run's best epoch. Measured: its
inner-validation accuracy alone and mixed with the inner baseline (``ensemble.fit_mix`` on the
inner signers, as the trial mixes SignBART), then the refit's held-out accuracy alone and mixed
with the full baseline (Keras FP32; no ``.tflite`` is made). Set beside the same rows'
SignBART FP32, ensemble FP32 and baseline. The held-out signer is sealed while anything trains.

The rule, fixed before looking: the member is built into the trial if its mix with the
baseline reaches the SignBART ensemble's mean inner accuracy (within the 0.005 tie), i.e. it
is as good a partner for the baseline as SignBART is, so a three-way mix has something to
gain. Held-out figures are reported, never chosen by.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import parser, row_fold, seed_rows, write

from signbart import baseline, ensemble
from signbart.config import EVAL_BATCH
from signbart.convnet import build_convnet
from signbart.evaluate import accuracy
from signbart.preprocess import prepare
from signbart.signerstats import t_interval
from signbart.train import as_model_inputs, train

TIE = 0.005


def _trial(rows: dict[str, dict], data: str | None, width: int, blocks: int) -> dict:
    sb = rows["signbart"]
    cfg, dataset, fold = row_fold(sb, data)
    labels = len(dataset.labels)

    def build(model_cfg):
        return build_convnet(model_cfg.num_keypoints, model_cfg.num_labels, width, blocks)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(cfg.train, cfg.variant, dataset, fold, tmp, cfg.seed, build=build)
    seconds = time.perf_counter() - start
    val = result.val_data
    inner_base = baseline.fit(result.inner_train_data, labels, seed=cfg.seed).predict(val.x,
                                                                                    val.mask)
    mix = ensemble.fit_mix(result.inner_val_logits, inner_base, val.y, (cfg.ensemble_mix,))
    test = prepare(dataset, fold.test, cfg.variant, cfg.train.max_frames)
    conv = result.model.predict(as_model_inputs(test.x, test.mask), batch_size=EVAL_BATCH,
                                verbose=0)
    base = baseline.fit(result.train_data, labels, seed=cfg.seed).predict(test.x, test.mask)
    return {
        "trial": sb["trial_id"], "holdout": cfg.holdout, "val_signers": list(fold.val_signers),
        "params": result.params, "best_epoch": result.best_epoch,
        "inner_epochs": result.inner_epochs, "train_seconds": seconds,
        "conv_share": mix.weight,
        "inner": {"conv": result.inner_val_accuracy,
                  "conv+baseline": accuracy(ensemble.mix_logits(result.inner_val_logits,
                                                                 inner_base, mix), val.y),
                  "signbart": sb["inner_val_accuracy"],
                  "signbart+baseline": rows["ensemble"]["inner_val_accuracy"],
                  "baseline": rows["baseline"]["inner_val_accuracy"]},
        "held_out": {"conv": accuracy(conv, test.y),
                     "conv+baseline": accuracy(ensemble.mix_logits(conv, base, mix), test.y),
                     "signbart": sb["top1"], "signbart+baseline": rows["ensemble"]["top1"],
                     "baseline": rows["baseline"]["top1"]}}


def main() -> None:
    p = parser(__doc__.splitlines()[0], "conv_member")
    p.add_argument("--rows", required=True, help="a finished sweep's folder of rows")
    p.add_argument("--data", help="the dataset, if not where the trials' configs say")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--holdouts", nargs="*", help="only these folds (default: all)")
    args = p.parse_args()
    by_trial = seed_rows(Path(args.rows), args.seed)
    trials = [_trial(rows, args.data, args.width, args.blocks)
              for _, rows in sorted(by_trial.items())
              if not args.holdouts or rows["signbart"]["holdout"] in args.holdouts]
    if not trials:
        raise SystemExit(f"{args.rows}: no FP32 rows at seed {args.seed}")
    kinds = list(trials[0]["inner"])
    summary = {}
    for scope in ("inner", "held_out"):
        summary[scope] = {k: float(np.mean([t[scope][k] for t in trials])) for k in kinds}
        summary[f"{scope}_paired"] = {
            "conv - signbart": [float(x) for x in t_interval(
                [t[scope]["conv"] - t[scope]["signbart"] for t in trials])],
            "conv+baseline - signbart+baseline": [float(x) for x in t_interval(
                [t[scope]["conv+baseline"] - t[scope]["signbart+baseline"] for t in trials])]}
    keep = summary["inner"]["conv+baseline"] >= summary["inner"]["signbart+baseline"] - TIE
    write(args.out, {"rows": args.rows, "seed": args.seed, "width": args.width,
                     "blocks": args.blocks, "folds": len(trials),
                     "rule": f"build it in if the inner conv+baseline mean is within {TIE} of "
                             "the SignBART ensemble's or above",
                     "build_in": bool(keep), **summary, "per_trial": trials})


if __name__ == "__main__":
    main()
