"""Where one real nested trial spends its CPU-seconds, before and after, side by side.

    python benchmarks/bench_trial.py                       # ~5 min on 2 idle cores
    python benchmarks/bench_trial.py --epochs 4 --ray      # quicker, plus Ray's overhead

The trial is one cell of ``sweeps/mlr511-nested.yaml`` on ``../shared/data/mlr511-90`` (the
framed-light variant, one hold-out; each tree reads its own spec), built with
``sweep.fold_experiment`` exactly as the sweep builds it, and run by ``trial.run_trial`` as a
Tune worker runs it. "before" is the code at ``--before`` (checked out into a temporary git worktree), "after" this tree; each
runs in its own child process with its code first on PYTHONPATH, one after the other in the
same run, so both see the same machine.

Each stage is timed by wrapping the function that does it (exclusive time: a conversion
inside QAT's export counts as conversion, not QAT), in process CPU-seconds (every thread)
and wall seconds; the child's total is its ``getrusage`` CPU time, children included.
``--ray`` also runs the after trial through a local Ray (``ray.init``) and reports the
difference from the plain call as Ray's overhead. The rows of both runs are compared: an
overhead-only change must leave top-1, confusion matrix and parameter count identical.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import parser, worktree, write

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mlr511-90"
SPEC = Path("sweeps/mlr511-nested.yaml")   # each tree reads its own copy
VARIANT = "arabic-asl-65kpts-framed-light"
BEFORE = "a1f8341"

# (module, attribute, stage): the functions a trial's time goes to. Missing ones are skipped,
# so one list serves both trees.
STAGES = [
    ("signbart.data", "open_dataset", "open_dataset"),
    ("signbart.preprocess", "prepare", "prepare"),
    ("signbart.train", "prepare", "prepare"),
    ("signbart.train", "_fit", "fit"),
    ("signbart.train", "train", "train_other"),
    ("signbart.quantize", "apply_qat", "qat_apply"),
    ("signbart.quantize", "qat_finetune", "qat_finetune"),
    ("signbart.quantize", "to_tflite", "convert_fp32"),
    ("signbart.quantize", "ptq_dynamic", "convert_ptq"),
    ("signbart.quantize", "qat_to_tflite", "convert_qat_strip"),
    ("signbart.quantize", "full_int8", "convert_int8"),
    ("signbart.quantize", "convert", "convert"),
    ("signbart.tflite", "check", "tflite_check"),
    ("signbart.tflite", "latency", "latency"),
    ("signbart.evaluate", "evaluate", "evaluate"),
    ("signbart.evaluate", "count_flops", "count_flops"),
    ("signbart.baseline", "fit", "baseline_fit"),
    ("signbart.ensemble", "fit_weight", "ensemble_fit"),   # the BEFORE tree's share fit
    ("signbart.ensemble", "fit_mix", "ensemble_fit"),
    ("signbart.ensemble", "build_ensemble", "ensemble_build"),
    ("signbart.trial", "_score", "score_other"),
    ("signbart.trial", "write_export", "write_export"),
]


class Profile:
    """Exclusive CPU and wall seconds per stage, and how often each ran."""

    def __init__(self):
        self.stages: dict[str, dict] = {}
        self.stack: list[list[float]] = []   # [cpu, wall] spent in children, per open call
        self.fits = 0

    def wrap(self, stage: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            name = stage
            if stage == "fit":   # the inner run first, the refit second
                self.fits += 1
                name = "inner_fit" if self.fits == 1 else "refit_fit"
            self.stack.append([0.0, 0.0])
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                cpu, wall = time.process_time() - c0, time.perf_counter() - w0
                inner = self.stack.pop()
                s = self.stages.setdefault(name, {"cpu_s": 0.0, "wall_s": 0.0, "calls": 0})
                s["cpu_s"] += cpu - inner[0]
                s["wall_s"] += wall - inner[1]
                s["calls"] += 1
                if self.stack:
                    self.stack[-1][0] += cpu
                    self.stack[-1][1] += wall
        return timed

    def install(self):
        import importlib

        for module, attr, stage in STAGES:
            with contextlib.suppress(ImportError):
                mod = importlib.import_module(module)
                if callable(getattr(mod, attr, None)):
                    setattr(mod, attr, self.wrap(stage, getattr(mod, attr)))
        from signbart.tfkeras import keras

        keras.Model.save = self.wrap("save_keras", keras.Model.save)


def rusage_cpu() -> float:
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def experiment(data: str, holdout: str, epochs: int | None, settings: dict):
    from signbart.sweep import fold_experiment
    try:
        from signbart.sweepspec import load_spec
    except ImportError:   # a tree from before sweep.py was split (8d14099 and older)
        from signbart.sweep import load_spec

    spec = load_spec(Path.cwd() / SPEC, data=data)
    settings = {**settings, **({"train.epochs": epochs} if epochs else {})}
    return fold_experiment(spec, holdout, spec.seeds[0], VARIANT,
                           **({"settings": settings} if settings else {}))


def _plain_rows(rows: list[dict]) -> list[dict]:
    keep = ("quant", "model_kind", "status", "error", "top1", "confusion", "params", "flops",
            "epochs_run", "best_epoch", "inner_val_accuracy", "model_bytes", "qat_epochs",
            "ensemble_weight")
    return [{k: r.get(k) for k in keep} for r in rows]


def child(data: str, holdout: str, epochs: int | None, settings: dict, ray_too: bool) -> dict:
    """One trial in this process, stage by stage; with ``ray_too`` also once through Ray."""
    import signbart

    c0, w0 = rusage_cpu(), time.perf_counter()
    profile = Profile()
    profile.install()
    from signbart.trial import run_trial

    exp = experiment(data, holdout, epochs, settings)
    setup = {"cpu_s": rusage_cpu() - c0, "wall_s": time.perf_counter() - w0, "calls": 1}
    with tempfile.TemporaryDirectory() as tmp:
        c1, w1 = rusage_cpu(), time.perf_counter()
        rows = run_trial(exp, Path(tmp) / "plain")
        cpu, wall = rusage_cpu() - c1, time.perf_counter() - w1
        stages = {k: profile.stages[k] for k in sorted(profile.stages)}
        stages["other"] = {"cpu_s": cpu - sum(s["cpu_s"] for s in stages.values()),
                           "wall_s": wall - sum(s["wall_s"] for s in stages.values())}
        out = {"code": str(Path(signbart.__file__).parent), "trial": exp.name,
               "epochs": exp.train.epochs, "threads": exp.threads, "cpu_s": cpu, "wall_s": wall,
               "import_and_build": setup, "stages": stages, "rows": _plain_rows(rows)}
        if ray_too:
            out["ray"] = _through_ray(exp, Path(tmp) / "ray")
    return out


def _through_ray(exp, out: Path) -> dict:
    """The same trial as a Ray task on a fresh local Ray, against the plain call above."""
    import ray

    from signbart.sweep import WORKER_ENV
    from signbart.trial import run_trial

    c0, w0 = rusage_cpu(), time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": WORKER_ENV})
    try:
        task = ray.remote(num_cpus=1)(lambda cfg: (run_trial(cfg, out), rusage_cpu())[1])
        worker_cpu = ray.get(task.remote(exp))
    finally:
        ray.shutdown()
    return {"wall_s": time.perf_counter() - w0, "driver_cpu_s": rusage_cpu() - c0,
            "worker_cpu_s": worker_cpu}


def run_tree(code: Path, args, settings: dict) -> dict:
    """``child`` in a fresh interpreter with ``code`` first on the path; its whole CPU time."""
    env = {**os.environ, "PYTHONPATH": str(code), "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, __file__, "--child", f.name, "--holdout", args.holdout,
               "--data", args.data, "--settings", json.dumps(settings)]
        cmd += ["--epochs", str(args.epochs)] if args.epochs else []
        cmd += ["--ray"] if args.ray and code == ROOT else []
        c0 = sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
        subprocess.run(cmd, env=env, cwd=code, check=True, stdout=subprocess.DEVNULL)
        result = json.loads(Path(f.name).read_text())
        result["settings"] = settings
        result["process_cpu_s"] = sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2]) - c0
        return result


def main():
    p = parser(__doc__, "trial")
    p.add_argument("--before", default=BEFORE, help="the commit to compare with")
    p.add_argument("--data", default=str(DATA), help="the MLR511 keypoint dataset")
    p.add_argument("--holdout", default="user04")
    p.add_argument("--epochs", type=int, help="train.epochs instead of the spec's")
    p.add_argument("--ray", action="store_true", help="also time the after trial through Ray")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a dotted experiment setting for both trees (train.early_stopping=6)")
    p.add_argument("--after-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a dotted setting for the after tree only (one lever alone)")
    p.add_argument("--child", help=argparse_hidden())
    p.add_argument("--settings", default="{}", help=argparse_hidden())
    args = p.parse_args()
    if args.child:
        Path(args.child).write_text(json.dumps(child(args.data, args.holdout, args.epochs,
                                                     json.loads(args.settings), args.ray)))
        return
    if not Path(args.data).is_dir():
        sys.exit(f"{args.data} is absent: this benchmark needs the MLR511 keypoints")
    both = settings(args.set)
    with worktree(args.before) as before_tree:
        before = run_tree(before_tree, args, both)
    after = run_tree(ROOT, args, {**both, **settings(args.after_set)})
    same = before.pop("rows") == after.pop("rows")
    figures = {"trial": after["trial"], "spec": str(SPEC),
               "data": args.data, "epochs": after["epochs"],
               "threads": after["threads"], "before_commit": args.before,
               "before": before, "after": after,
               "cpu_ratio": after["cpu_s"] / before["cpu_s"],
               "rows_identical": same,
               "paired": {"mean_delta": None, "worst_signer_delta": None,
                          "note": "the 9-fold paired run (benchmarks/README.md) fills these"}}
    if "ray" in after:
        r = after["ray"]
        figures["ray_overhead"] = {"wall_s": r["wall_s"] - after["wall_s"],
                                   "cpu_s": r["worker_cpu_s"] + r["driver_cpu_s"]
                                   - after["cpu_s"]}
    write(args.out, figures)


def settings(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs as dotted settings, each value read as YAML (6, true, [0.8, 1.2])."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"--set {pair!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
