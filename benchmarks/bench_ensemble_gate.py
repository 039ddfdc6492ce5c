"""What the ensemble's gate (``ensemble_gate: true``) would have changed in a finished sweep.

    python benchmarks/bench_ensemble_gate.py --storage ray_results/mlr511-nested

For every trial of the sweep with an ensemble row: SignBART's held-out logits from the trial's
own ``model_fp32.tflite`` (the TFLite interpreter), the two baselines refitted as the trial fits
them (deterministic: on the inner run's signers, and on all training signers), the mix read
from the ensemble row. The gate's bound is the largest RMS z-score of the inner signers' clips
under the inner baseline, as the trial sets it, so no inner clip is gated and every inner
figure stays as it is; the held-out signer is only scored. The ungated mix, recomputed, is
checked against the row's own top-1 (``rows_reproduced``). It trains nothing.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from common import parser, write

from signbart import baseline, ensemble
from signbart.config import ExperimentConfig
from signbart.data import open_dataset
from signbart.preprocess import prepare
from signbart.signerstats import t_interval
from signbart.tflite import predict_fn
from signbart.train import concat


def _trial(trial_dir: Path, row: dict, data: str | None, std_pad: float) -> dict:
    cfg = ExperimentConfig.parse(json.loads((trial_dir / "config.json").read_text()))
    dataset = open_dataset(data or cfg.data)
    fold = dataset.fold(cfg.holdout, cfg.train.n_val_signers, cfg.seed)
    train, val, test = (prepare(dataset, i, cfg.variant, cfg.train.max_frames)
                        for i in (fold.train, fold.val, fold.test))
    labels = len(dataset.labels)
    inner = baseline.fit(train, labels, seed=cfg.seed, std_pad=std_pad)
    lin = baseline.fit(concat(train, val), labels, seed=cfg.seed, std_pad=std_pad)
    mix = ensemble.Mix(row["ensemble_mode"], tuple(row["ensemble_temperatures"]),
                       row["ensemble_weight"])
    gated = dataclasses.replace(mix, gate=float(inner.rms_z(val.x, val.mask).max()))
    sb = predict_fn(str(trial_dir / "model_fp32.tflite"))(test.x, test.mask)
    base, rms = lin.predict(test.x, test.mask), lin.rms_z(test.x, test.mask)
    top1 = {name: float((ensemble.mix_logits(sb, base, m, rms).argmax(1) == test.y).mean())
            for name, m in (("ungated", mix), ("gated", gated))}
    return {"trial": trial_dir.name, "holdout": cfg.holdout, "seed": cfg.seed,
            "share": mix.weight, "bound": gated.gate, "gated_clips": int((rms > gated.gate).sum()),
            "clips": len(test.y), "row_top1": row["top1"], **top1,
            "signbart": float((sb.argmax(1) == test.y).mean()),
            "baseline": float((base.argmax(1) == test.y).mean())}


def main() -> None:
    p = parser(__doc__.splitlines()[0], "ensemble_gate")
    p.add_argument("--storage", required=True, help="a finished sweep's folder")
    p.add_argument("--data", help="the dataset, if not where the trials' configs say")
    p.add_argument("--std-pad", type=float, default=0.2,
                   help="the baseline's pad the sweep ran with (1e-6 before 2026-12-07)")
    args = p.parse_args()
    storage = Path(args.storage)
    trials = []
    for path in sorted((storage / "results").glob("*.parquet")):
        rows = [r for r in pq.read_table(path).to_pylist()
                if r["model_kind"] == "ensemble" and r["quant"] == "fp32" and r["status"] == "ok"]
        for row in rows:
            trials.append(_trial(storage / row["trial_id"], row, args.data, args.std_pad))
    signers = sorted({t["holdout"] for t in trials})
    per = {k: {s: float(np.mean([t[k] for t in trials if t["holdout"] == s])) for s in signers}
           for k in ("ungated", "gated", "signbart", "baseline")}
    diff = [per["gated"][s] - per["ungated"][s] for s in signers]
    figures = {"storage": storage.name, "std_pad": args.std_pad, "trials": len(trials),
               "rows_reproduced": sum(abs(t["ungated"] - t["row_top1"]) < 1e-9 for t in trials),
               "gated_clips": sum(t["gated_clips"] for t in trials),
               "clips": sum(t["clips"] for t in trials),
               "held_out_mean": {k: float(np.mean(list(v.values()))) for k, v in per.items()},
               "gated_minus_ungated": [float(x) for x in t_interval(diff)],
               "per_signer": {s: {k: per[k][s] for k in per} for s in signers},
               "per_trial": trials}
    write(args.out, figures)


if __name__ == "__main__":
    main()
