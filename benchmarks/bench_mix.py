"""Mixing rules for the ensemble, compared on a finished sweep's own exported members.

    python benchmarks/bench_mix.py --runs ray_results/mlr511-nested

Every nested trial leaves the inner run's checkpoint (``model_keepbest_fp32.tflite``) and the
refit (``model_fp32.tflite``, ``model_ptq_int8.tflite``). The baseline is refitted here, as the
trial fits it (on the inner run's signers, then on all training signers). Each rule then chooses
its parameters on the inner signers' logits only and is scored on the held-out signer, so the
rules are paired by fold and no training is repeated. Logits come from the TFLite interpreter;
the mix is ``ensemble.mix_logits``, which the exported graph computes.

``--unmirrored DATASET`` adds the clips of left-handed signers extracted without mirroring
(``signbart extract`` without ``signers.csv``): each such signer's fold is also scored on them,
with the preprocessing the variant's ``handedness`` asks for and with ``auto`` forced.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import parser, write

from signbart import baseline, ensemble
from signbart.config import ExperimentConfig
from signbart.data import open_dataset
from signbart.evaluate import accuracy
from signbart.preprocess import prepare
from signbart.signerstats import t_interval
from signbart.tflite import Runner
from signbart.train import concat


def _trial_dirs(runs: Path) -> list[Path]:
    return sorted(p.parent for p in runs.glob("*/config.json")
                  if (p.parent / "model_keepbest_fp32.tflite").exists())


def _logits(path: Path, prep) -> np.ndarray:
    return Runner(str(path), frames=prep.x.shape[1]).predict(prep.x, prep.mask)


def collect(trial: Path, data: str | None, unmirrored: str | None) -> dict:
    """The fold's inner and held-out logits of both members, and the labels."""
    cfg = ExperimentConfig.parse(json.loads((trial / "config.json").read_text()))
    dataset = open_dataset(data or cfg.data)
    fold = dataset.fold(cfg.holdout, cfg.train.n_val_signers, cfg.seed)
    frames = cfg.train.max_frames
    train, val, test = (prepare(dataset, idx, cfg.variant, frames)
                        for idx in (fold.train, fold.val, fold.test))
    inner_base = baseline.fit(train, len(dataset.labels), seed=cfg.seed)
    full_base = baseline.fit(concat(train, val), len(dataset.labels), seed=cfg.seed)
    out = {"holdout": cfg.holdout, "seed": cfg.seed, "variant": cfg.variant.name,
           "val_y": val.y, "test_y": test.y,
           "val_signbart": _logits(trial / "model_keepbest_fp32.tflite", val),
           "val_baseline": inner_base.predict(val.x, val.mask),
           "test_signbart": _logits(trial / "model_fp32.tflite", test),
           "test_signbart_ptq": _logits(trial / "model_ptq_int8.tflite", test),
           "test_baseline": full_base.predict(test.x, test.mask)}
    if unmirrored:
        left = open_dataset(unmirrored)
        idx = np.flatnonzero(left.manifest["signer"].to_numpy() == cfg.holdout)
        if len(idx):
            for name, variant in (("as", cfg.variant),
                                  ("auto", _auto(cfg.variant))):
                if variant is None:
                    continue
                prep = prepare(left, idx, variant, frames)
                out[f"unmirrored_{name}_y"] = prep.y
                out[f"unmirrored_{name}_signbart"] = _logits(trial / "model_fp32.tflite", prep)
                out[f"unmirrored_{name}_baseline"] = full_base.predict(prep.x, prep.mask)
    return out


def _auto(variant):
    if not hasattr(variant, "handedness"):
        return None
    return dataclasses.replace(variant, handedness="auto")


def _before(f: dict) -> ensemble.Mix:
    """The rule this benchmark replaces: log-linear pool, no temperatures, SignBART's share
    on a 0.1 grid by inner accuracy, then inner log-likelihood, then nearest 0.5."""
    def score(w):
        lp = ensemble.mix_logits(f["val_signbart"], f["val_baseline"],
                                 ensemble.Mix("geometric", (1.0, 1.0), float(w)))
        return accuracy(lp, f["val_y"]), -ensemble.nll(lp, f["val_y"]), -abs(w - 0.5)
    return ensemble.Mix("geometric", (1.0, 1.0), float(max(np.linspace(0, 1, 11).round(2),
                                                             key=score)))


def _by_nll(f: dict, modes, calibrated: bool) -> ensemble.Mix:
    """Share (and mode, of ``modes``) of lowest inner NLL, with or without temperatures."""
    temps = ((ensemble.fit_temperature(f["val_signbart"], f["val_y"]),
              ensemble.fit_temperature(f["val_baseline"], f["val_y"]))
             if calibrated else (1.0, 1.0))
    return min((ensemble.Mix(m, temps, float(w)) for m in modes for w in ensemble.SHARE_GRID),
               key=lambda c: (round(ensemble.nll(ensemble.mix_logits(
                   f["val_signbart"], f["val_baseline"], c), f["val_y"]), 9),
                   abs(c.weight - 0.5)))


RULES = {
    "before: geometric, share by inner accuracy": _before,
    "geometric, share by inner NLL": lambda f: _by_nll(f, ["geometric"], False),
    "arithmetic, share by inner NLL": lambda f: _by_nll(f, ["arithmetic"], False),
    "calibrated geometric": lambda f: _by_nll(f, ["geometric"], True),
    "calibrated arithmetic": lambda f: _by_nll(f, ["arithmetic"], True),
    "shipped: ensemble.fit_mix": lambda f: ensemble.fit_mix(f["val_signbart"], f["val_baseline"],
                                                            f["val_y"]),
}


def _softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(ensemble.log_softmax(np.asarray(logits, np.float64)))


def _seed_pool(fs: list[dict]) -> dict[str, float]:
    """Per signer with several seeds: the seeds' refit SignBARTs averaged (arithmetic mean of
    probabilities), as one graph of them would be; no parameter is fitted."""
    out = {}
    for signer in sorted({f["holdout"] for f in fs}):
        mine = [f for f in fs if f["holdout"] == signer]
        if len(mine) > 1:
            pooled = np.mean([_softmax(f["test_signbart"]) for f in mine], 0)
            out[signer] = float((pooled.argmax(1) == mine[0]["test_y"]).mean())
    return out


def score(folds: list[dict]) -> dict:
    """Per rule and variant: held-out top-1 per signer (seeds averaged within a signer first:
    the signer is the unit), its mean and t-interval, the paired difference from the old rule
    and from the baseline, and what the rule chose in each fold."""
    out = {}
    for variant in sorted({f["variant"] for f in folds}):
        fs = sorted((f for f in folds if f["variant"] == variant),
                    key=lambda f: (f["holdout"], f["seed"]))
        per = {"signbart alone": [accuracy(f["test_signbart"], f["test_y"]) for f in fs],
               "baseline alone": [accuracy(f["test_baseline"], f["test_y"]) for f in fs]}
        chosen, unmirrored = {}, {}
        for name, rule in RULES.items():
            mixes = [rule(f) for f in fs]
            chosen[name] = [dataclasses.asdict(m) for m in mixes]
            per[name] = [accuracy(ensemble.mix_logits(f["test_signbart"], f["test_baseline"], m),
                                   f["test_y"]) for f, m in zip(fs, mixes)]
            for f, m in zip(fs, mixes):
                for key in ("as", "auto"):
                    if f"unmirrored_{key}_y" in f:
                        unmirrored.setdefault(f"{f['holdout']} s{f['seed']}", {})[
                            f"{name} / {key}"] = accuracy(
                            ensemble.mix_logits(f[f"unmirrored_{key}_signbart"],
                                                f[f"unmirrored_{key}_baseline"], m),
                            f[f"unmirrored_{key}_y"])
        fold_signers = np.array([f["holdout"] for f in fs])
        signers = sorted(set(fold_signers))
        by_signer = {name: np.array([np.mean(np.array(acc)[fold_signers == s]) for s in signers])
                     for name, acc in per.items()}
        pool = _seed_pool(fs)
        if len(pool) == len(signers):
            by_signer["SignBART, seeds pooled in one model"] = np.array([pool[s] for s in signers])
        before, base = by_signer["before: geometric, share by inner accuracy"], by_signer[
            "baseline alone"]
        out[variant] = {"signers": signers, "folds": len(fs), "rules": {
            name: {"per_signer": acc.round(4).tolist(), "mean_ci": t_interval(acc),
                   "worst": float(acc.min()),
                   "minus_before_ci": t_interval(acc - before),
                   "minus_signbart_ci": t_interval(acc - by_signer["signbart alone"]),
                   "minus_baseline_ci": t_interval(acc - base),
                   "signers_at_or_above_baseline": int((acc >= base).sum()),
                   **({"chosen": chosen[name]} if name in chosen else {})}
            for name, acc in by_signer.items()}, "unmirrored": unmirrored}
    return out


def _table(figures: dict) -> str:
    lines = []
    for variant, v in figures.items():
        lines += [f"\n{variant} ({v['folds']} folds, {len(v['signers'])} signers)",
                  f"{'rule':45s} {'mean':>6s} {'worst':>6s} {'vs before [95% CI]':>22s} "
                  f"{'vs SignBART [95% CI]':>22s} {'vs baseline [95% CI]':>22s} >=base"]
        for name, r in v["rules"].items():
            d, g, b = r["minus_before_ci"], r["minus_signbart_ci"], r["minus_baseline_ci"]
            lines.append(f"{name:45s} {r['mean_ci'][0]:6.3f} {r['worst']:6.2f} "
                         f"{d[0]:+.3f} [{d[1]:+.3f},{d[2]:+.3f}] "
                         f"{g[0]:+.3f} [{g[1]:+.3f},{g[2]:+.3f}] "
                         f"{b[0]:+.3f} [{b[1]:+.3f},{b[2]:+.3f}] "
                         f"{r['signers_at_or_above_baseline']:3d}")
        for signer, accs in v["unmirrored"].items():
            lines.append(f"unmirrored {signer}: " + ", ".join(f"{k} {a:.2f}"
                                                              for k, a in accs.items()))
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__.splitlines()[0], "mix")
    p.add_argument("--runs", required=True, help="a finished nested sweep's trial folders")
    p.add_argument("--data", help="the dataset (default: each trial config's own)")
    p.add_argument("--unmirrored", help="left-handed signers' clips extracted without mirroring")
    a = p.parse_args()
    trials = _trial_dirs(Path(a.runs))
    if not trials:
        raise SystemExit(f"{a.runs}: no nested trial folders (config.json and "
                         "model_keepbest_fp32.tflite)")
    folds = [collect(t, a.data, a.unmirrored) for t in trials]
    figures = score(folds)
    print(_table(figures))
    write(a.out, {"runs": str(a.runs), "trials": len(trials), "variants": figures})


if __name__ == "__main__":
    main()
