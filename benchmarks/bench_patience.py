"""Early-stopping patience chosen on the inner signers: every inner run of a finished sweep,
replayed with each patience N, against its full run.

    .venv/bin/python benchmarks/bench_patience.py --runs /tmp/bench-sweep-wall/before/mlr511-nested

Each trial's ``train_log.csv`` is the inner run's per-epoch inner-validation accuracy and
loss, on the inner signers only (the held-out signer is sealed while it is written). The
replay follows ``train._fit`` exactly: Keras' ``EarlyStopping`` on inner-validation accuracy
(stop once it has not risen for N epochs), ``KeepBest`` (highest accuracy, then lowest loss,
over the epochs run), the refit's epoch count (that best epoch, at least ``warmup + 1``). The
cosine schedule of the inner run spans ``train.epochs`` whether or not it stops, so the
first epochs of a stopped run are those of the full one: the replay is exact.

Per N: the inner-validation accuracy of the epoch it keeps minus the full run's (mean over
the runs, and the worst run), and the epochs trained (inner run + refit) as a share of the
full runs'. The rule, fixed before looking: the smallest N whose mean loss is within 0.5
points and whose worst run is within 2 points.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, write

MEAN_LOSS, WORST_LOSS = 0.005, 0.02


def curve(path: Path) -> list[tuple[float, float]]:
    """The inner run's (inner-val accuracy, inner-val loss) per epoch."""
    with open(path) as f:
        return [(float(r["val_accuracy"]), float(r["val_loss"])) for r in csv.DictReader(f)]


def replay(points: list[tuple[float, float]], patience: int | None, min_epochs: int
           ) -> dict:
    """What ``_fit`` keeps with ``patience`` (None: no early stopping)."""
    best_acc, wait, run = -1.0, 0, len(points)
    for epoch, (acc, _) in enumerate(points):
        wait += 1
        if acc > best_acc:
            best_acc, wait = acc, 0
            continue
        if patience is not None and wait >= patience and epoch > 0:
            run = epoch + 1
            break
    seen = points[:run]
    best = max(range(run), key=lambda e: (seen[e][0], -seen[e][1], -e))
    return {"epochs_run": run, "best_epoch": best + 1, "accuracy": seen[best][0],
            "refit_epochs": max(best + 1, min_epochs)}


def main():
    p = parser(__doc__, "patience")
    p.add_argument("--runs", required=True, help="a finished sweep's folder")
    p.add_argument("--patience", type=int, nargs="+", default=[3, 4, 5, 6, 8, 10, 12, 15])
    p.add_argument("--min-epochs", type=int, default=4, help="warmup_epochs + 1")
    args = p.parse_args()
    logs = sorted(log for log in Path(args.runs).glob("*/train_log.csv")
                  if (Path(args.runs) / "results" / f"{log.parent.name}.parquet").exists())
    if not logs:
        sys.exit(f"{args.runs}: no */train_log.csv (a finished sweep's folder?)")
    curves = {log.parent.name: curve(log) for log in logs}
    full = {t: replay(c, None, args.min_epochs) for t, c in curves.items()}
    full_epochs = sum(f["epochs_run"] + f["refit_epochs"] for f in full.values())
    rows = []
    for n in args.patience:
        got = {t: replay(c, n, args.min_epochs) for t, c in curves.items()}
        # float32 accuracies of 200 clips: a float tolerance, so 1 clip in 200 is 0.005
        loss = [round(full[t]["accuracy"] - got[t]["accuracy"], 6) for t in curves]
        epochs = sum(g["epochs_run"] + g["refit_epochs"] for g in got.values())
        rows.append({"patience": n, "mean_loss": sum(loss) / len(loss), "worst_loss": max(loss),
                     "runs_changed": sum(x > 0 for x in loss),
                     "epoch_share": epochs / full_epochs,
                     "mean_inner_epochs": sum(g["epochs_run"] for g in got.values()) / len(got),
                     "mean_refit_epochs": sum(g["refit_epochs"] for g in got.values()) / len(got)})
    ok = [r for r in rows if r["mean_loss"] <= MEAN_LOSS and r["worst_loss"] <= WORST_LOSS]
    write(args.out, {"runs": args.runs, "n_runs": len(curves),
                     "rule": f"smallest patience with mean loss <= {MEAN_LOSS} and worst <= "
                             f"{WORST_LOSS} (inner-validation accuracy, the full run's kept "
                             "epoch minus the stopped run's)",
                     "full": {"mean_inner_epochs": sum(f["epochs_run"] for f in full.values())
                              / len(full),
                              "mean_refit_epochs": sum(f["refit_epochs"] for f in full.values())
                              / len(full)},
                     "by_patience": rows, "chosen": ok[0]["patience"] if ok else None})


if __name__ == "__main__":
    main()
