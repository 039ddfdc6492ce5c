"""The whole published sweep, before and after, alone on the machine: wall, CPU, accuracy.

    .venv/bin/python benchmarks/bench_sweep_wall.py --side before   # today's main, ~75 min
    .venv/bin/python benchmarks/bench_sweep_wall.py --side after    # this tree, then --dry-run

Each side runs ``signbart sweep sweeps/mlr511-nested.yaml`` (27 trials, embedded Ray, 2 at a
time) in a fresh interpreter with its own code first on ``PYTHONPATH``: "before" is the commit
``--before``, "after" the commit ``--after`` (default HEAD), each checked out in a git
worktree, so each side reads its own spec and code. One side a call, so the two can
run one after the other in one session with nothing else on the cores; the second call adds
its side to the same JSON file, and once both are there the paired accuracy change is computed.

- ``wall_s``: the sweep command, Ray start-up to its last row.
- ``cpu_s``: busy CPU-seconds of the whole machine over that time (``/proc/stat``), which is
  what a cloud bill counts; ``trial_cpu_s`` the trials' own (each worker's process time).
- ``paired``: the after-minus-before held-out top-1 of the before side's verdict arm, seeds
  averaged within each signer, then a Student t-interval over the signers.
- ``dry_run``: ``--dry-run`` of the after side's spec on empty storage once its sweep has
  run (the short price run then measured on an idle machine, the epochs per trial those the
  sweep's trials trained, ``pricing.expected_epochs``); ``dry_run_first``: the same price
  with those epochs forgotten, as on a machine where no trial of the spec has run yet (every
  epoch allowed is priced); ``error`` is each against the after side's measured wall.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, worktree, write

ROOT = Path(__file__).resolve().parents[1]
SPEC = "sweeps/mlr511-nested.yaml"
DATA = ROOT.parent / "shared" / "data" / "mlr511-90"
BEFORE = "8d14099"   # main at the start of round 4


def busy_seconds() -> float:
    """CPU-seconds the whole machine has spent busy since boot (``/proc/stat``'s cpu line)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]               # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def signbart(code: Path, *args: str, cache: str | None = None) -> tuple[float, float, str]:
    """``signbart ARGS`` run from ``code``; its wall, the machine's busy CPU-s and its output."""
    env = {**os.environ, "PYTHONPATH": str(code), "TF_CPP_MIN_LOG_LEVEL": "3"}
    if cache:
        env["XDG_CACHE_HOME"] = cache
    cmd = [sys.executable, "-m", "signbart.cli", *args]
    c0, w0 = busy_seconds(), time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=code, text=True, capture_output=True)
    wall, cpu = time.perf_counter() - w0, busy_seconds() - c0
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return wall, cpu, done.stdout + done.stderr


def sweep_side(code: Path, storage: Path, data: str, cache: str | None = None) -> dict:
    load = os.getloadavg()
    wall, cpu, _ = signbart(code, "sweep", SPEC, "--data", data, "--storage", str(storage),
                            "--yes", cache=cache)
    print(f"{code}: the sweep took {wall:.1f} s wall, {cpu:.1f} busy CPU-s", flush=True)
    results = storage / "mlr511-nested" / "results"
    attempts = [json.loads(p.read_text())[-1] for p in sorted(results.glob("*.node.json"))]
    return {"code": str(code), "storage": str(storage), "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "trial_cpu_s": round(sum(a["cpu_seconds"] for a in attempts), 1),
            "trial_wall_s": sorted(round(a["seconds"], 1) for a in attempts),
            "trials": len(attempts), "load_average_before": load}


def dry_run(code: Path, data: str, cache: str) -> dict:
    """``--dry-run`` on empty storage with the price cache ``cache``: its wall-clock estimate,
    where its epochs came from, and what pricing cost."""
    with tempfile.TemporaryDirectory() as store:
        wall, _, out = signbart(code, "sweep", SPEC, "--data", data, "--storage", store,
                                "--dry-run", cache=cache)
    hours = re.search(r"about ([0-9.]+) h wall-clock", out)
    source = re.search(r"epochs: (.*)", out)
    if hours is None or source is None:
        raise SystemExit(f"--dry-run printed no estimate:\n{out}")
    return {"wall_s": round(float(hours.group(1)) * 3600, 1), "epochs": source.group(1),
            "pricing_wall_s": round(wall, 1)}


def cell_top1(sweep: str, arm: dict | None = None) -> tuple[dict, dict]:
    """Held-out top-1 of ``arm`` (default: this sweep's verdict) per (signer, seed)."""
    from signbart.report import read

    s = read([sweep])
    if arm is None:
        [row] = s.arms[s.arms.model == s.verdict["model"]].to_dict("records")
        arm = {k: row[k] for k in ("variant", "quant", "model_kind")}
    ok = s.rows[(s.rows.status == "ok")]
    pick = ok[(ok.variant == arm["variant"]) & (ok.quant == arm["quant"])
              & (ok.model_kind == arm["model_kind"])]
    return pick.groupby(["holdout", "seed"]).top1.mean().to_dict(), arm


def paired(before: str, after: str) -> dict:
    """The after-minus-before top-1 of the before's verdict arm over the (signer, seed) cells
    both sides have, seeds averaged within each signer, with a t-interval over the signers."""
    from signbart.signerstats import t_interval

    b, arm = cell_top1(before)
    a, _ = cell_top1(after, arm)
    cells = sorted(set(a) & set(b))
    signers = sorted({h for h, _ in cells})
    deltas = {h: sum(a[c] - b[c] for c in cells if c[0] == h)
              / sum(c[0] == h for c in cells) for h in signers}
    mean, lo, hi = t_interval(list(deltas.values())) if len(deltas) > 1 else (
        next(iter(deltas.values()), float("nan")), float("nan"), float("nan"))
    return {"arm": arm, "mean_delta": mean, "ci": [lo, hi], "n_signers": len(deltas),
            "n_cells": len(cells), "by_signer": deltas,
            "before_mean": sum(b[c] for c in cells) / len(cells),
            "after_mean": sum(a[c] for c in cells) / len(cells)}


def trial_times(sweep: Path) -> dict[str, dict]:
    """Each finished trial's wall and CPU seconds (its last attempt's ``node.json``)."""
    out = {}
    for p in sorted((sweep / "results").glob("*.node.json")):
        last = json.loads(p.read_text())[-1]
        if "seconds" in last and (sweep / "results" / f"{p.name[:-10]}.parquet").exists():
            out[p.name[:-10]] = {"wall_s": round(last["seconds"], 1),
                                 "cpu_s": round(last["cpu_seconds"], 1)}
    return out


def by_cell(before: Path, after: Path) -> dict:
    """The trials both sides finished, side by side: what a sweep that was stopped early can
    still say (each trial ran 2 at a time on the same machine in both)."""
    b, a = trial_times(before), trial_times(after)
    both = sorted(set(b) & set(a))
    return {"trials": both, "before": {t: b[t] for t in both}, "after": {t: a[t] for t in both},
            "wall_ratio": sum(a[t]["wall_s"] for t in both) / sum(b[t]["wall_s"] for t in both),
            "cpu_ratio": sum(a[t]["cpu_s"] for t in both) / sum(b[t]["cpu_s"] for t in both)}


def main():
    p = parser(__doc__, "sweep_wall")
    p.add_argument("--side", choices=["before", "after"], required=True)
    p.add_argument("--before", default=BEFORE, help="the commit the before side runs")
    p.add_argument("--after", default="HEAD", help="the commit the after side runs (each side "
                   "runs from its own worktree, so the tree here may change meanwhile)")
    p.add_argument("--data", default=str(DATA), help="the MLR511 keypoint dataset")
    p.add_argument("--before-rows", help="a sweep folder of the before code's rows to pair "
                   "with (default: the before side's own), e.g. a published report's rows/ "
                   "when the runs are deterministic")
    p.add_argument("--before-partial", help="a before sweep folder stopped before it finished: "
                   "its finished trials are set beside the after side's, cell by cell")
    p.add_argument("--after-partial", help="with --only-figures: an after sweep folder stopped "
                   "before it finished, paired cell by cell")
    p.add_argument("--only-figures", action="store_true",
                   help="run nothing: recompute the derived figures of the JSON file")
    p.add_argument("--storage", default="/tmp/bench-sweep-wall",
                   help="where each side's sweep folder goes (SIDE/mlr511-nested)")
    args = p.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(f"{args.data} is absent: this benchmark needs the MLR511 keypoints")
    out = Path(args.out)
    figures = json.loads(out.read_text()) if out.exists() else {}
    storage = Path(args.storage) / args.side
    if storage.exists() and not args.only_figures:
        sys.exit(f"{storage} exists: a side runs on empty storage (remove it first)")
    args.before, args.after = (subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", c], check=True, capture_output=True,
        text=True).stdout.strip() for c in (args.before, args.after))
    if args.side == "before" and not args.only_figures:
        with worktree(args.before) as tree:
            figures["before"] = {"commit": args.before, **sweep_side(tree, storage, args.data)}
    elif not args.only_figures:
        with worktree(args.after) as tree, tempfile.TemporaryDirectory() as cache:
            figures["after"] = {"commit": args.after, **sweep_side(tree, storage, args.data,
                                                                    cache)}
            figures["dry_run"] = dry_run(tree, args.data, cache)
            for kept in Path(cache).glob("signbart/epochs-*.json"):
                kept.unlink()   # as on a machine where no trial of the spec has run yet
            figures["dry_run_first"] = dry_run(tree, args.data, cache)
    figures = {"spec": SPEC, "data": args.data, **figures}
    if "after" in figures:
        a = figures["after"]
        for key in ("dry_run_first", "dry_run"):
            figures[key]["error"] = figures[key]["wall_s"] / a["wall_s"] - 1
        before_rows = args.before_rows or (str(Path(figures["before"]["storage"])
                                               / "mlr511-nested") if "before" in figures else None)
        if before_rows:
            figures["paired"] = {"before_rows": before_rows,
                                 **paired(before_rows, str(Path(a["storage"]) / "mlr511-nested"))}
    if args.before_partial and (args.after_partial or "after" in figures):
        after = args.after_partial or str(Path(figures["after"]["storage"]) / "mlr511-nested")
        figures["by_cell"] = {"before_sweep": args.before_partial, "after_sweep": after,
                              **by_cell(Path(args.before_partial), Path(after))}
        if args.after_partial and args.before_rows:
            figures["paired"] = {"before_rows": args.before_rows,
                                 **paired(args.before_rows, args.after_partial)}
    if "before" in figures and "after" in figures:
        b, a = figures["before"], figures["after"]
        figures["wall_ratio"] = a["wall_s"] / b["wall_s"]
        figures["cpu_ratio"] = a["cpu_s"] / b["cpu_s"]
    write(str(out), figures)


if __name__ == "__main__":
    main()
