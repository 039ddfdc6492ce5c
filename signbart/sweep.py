"""Leave-one-signer-out sweeps on Ray Tune: one trial per (holdout, seed, variant[, ablation]).

    signbart sweep sweeps/quickstart.yaml                  # local Ray, results in ./ray_results
    signbart sweep sweeps/mlr511-loso.yaml --dry-run       # the grid and its CPU-hours
    signbart sweep sweeps/mlr511-loso.yaml --resume        # after Ctrl-C or a lost driver

The trial function is a thin wrapper around ``trial.run_trial``; around it sit the grid, the
resources, storage and retries. A trial's rows land in
``<storage>/<name>/results/<trial_id>.parquet``, and that file existing is what "finished"
means: a re-run or ``--resume`` never trains a finished cell twice, even if Tune's own
experiment state is gone. A trial that still raises after its retries gets
``<trial_id>.failed.parquet`` instead (one ``status=failed`` row per quant mode), which a later
successful run of that trial removes.

A sweep folder is one experiment and has one writer: ``sweep.json`` records its resolved grid,
and a run whose grid differs is refused before Ray starts (``sweeprecord``); the folder's lock
(``outlock.writer_lock``) is held for the whole run. SIGTERM and Ctrl-C stop Ray and end in one
sentence with the command that continues.

The driver never imports TensorFlow; only the trial (a Ray worker) and the ``--dry-run`` epoch
timing (a spawned child process) do.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import logging
import multiprocessing
import os
import re
import shlex
import signal
import socket
import tempfile
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs
import ray
from ray import tune
from ray.tune import CLIReporter
from ray.tune.trainable.function_trainable import wrap_function

from signbart import sweeprecord
from signbart.config import (
    ENSEMBLE_MIXES,
    QUANT_MODES,
    SEED,
    SEEDS,
    AugmentConfig,
    ExperimentConfig,
    QATConfig,
    TrainConfig,
    VariantConfig,
    build_experiment,
    config_hash,
    from_dict,
    load_variant,
    load_yaml,
    plain,
    to_dict,
    trial_id,
    within,
)
from signbart.data import open_dataset
from signbart.errors import ConfigError
from signbart.outlock import writer_lock
from signbart.raycluster import connect
from signbart.results import git_sha, read_rows, write_rows
from signbart.search import SearchSpec, choose, search_trial, validate
from signbart.storage import (
    check_reachable,
    exists,
    filesystem,
    join,
    read_json,
    remove,
    rows_uri,
    write_json,
)
from signbart.trial import KEEPBEST, expected_rows, failed_rows, run_trial

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "ray_results"
# What Ray workers inherit: legacy Keras, and this shell's TensorFlow log level (default 3, as
# signbart.tfkeras sets it; the driver itself never imports TensorFlow).
WORKER_ENV = {"TF_USE_LEGACY_KERAS": "1",
              "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


# ---------------------------------------------------------------- the spec

@dataclass(frozen=True)
class Resources:
    """What one trial reserves. ``cpu`` is also its TF thread count, so trials sharing a
    node do not oversubscribe it."""

    cpu: float = 1.0
    gpu: float = 0.0

    LIMITS: typing.ClassVar[dict[str, str]] = {"cpu": "(0, 1024]", "gpu": "[0, 64]"}

    def __post_init__(self):
        within(self)

    @property
    def threads(self) -> int:
        return max(1, int(self.cpu))


@dataclass(frozen=True)
class SweepSpec:
    """A sweep file (see ``sweeps/README.md``). Paths are absolute once loaded."""

    name: str
    data: str
    variants: tuple[str, ...]
    holdouts: str | tuple[str, ...] = "all"
    seeds: tuple[int, ...] = (SEED,)
    quant: tuple[str, ...] = ("fp32", "ptq", "qat")
    train: TrainConfig = field(default_factory=TrainConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    resources: Resources = field(default_factory=Resources)
    retries: int = 2
    baseline: bool = True
    ensemble: bool = False                         # also SignBART + baseline as one model
    ensemble_mix: str = "arithmetic"               # config.ENSEMBLE_MIXES
    ablation: dict = field(default_factory=dict)   # name -> AugmentConfig overrides
    search: SearchSpec | None = None               # nested search per hold-out (search.py)
    smoke: dict = field(default_factory=dict)      # overrides applied by --smoke

    LIMITS: typing.ClassVar[dict[str, str]] = {"seeds": SEEDS, "retries": "[0, 100]"}

    def __post_init__(self):
        if not _SLUG.fullmatch(self.name):
            raise ValueError(f"name: {self.name!r} must be letters, digits, '_', '.', '+', '-' "
                             "(it names the storage folder)")
        if not self.holdouts:
            raise ValueError("holdouts: must not be empty (a list of signers, all, or [none])")
        for key in ("variants", "seeds", "quant"):
            values = getattr(self, key)
            if not values:
                raise ValueError(f"{key}: must not be empty")
            dup = sorted({v for v in values if values.count(v) > 1}, key=str)
            if dup:
                raise ValueError(f"{key}: {dup[0]!r} is listed twice")
        bad = [q for q in self.quant if q not in QUANT_MODES]
        if bad:
            raise ValueError(f"quant: {bad[0]!r} is not one of {', '.join(QUANT_MODES)}")
        if self.ensemble_mix not in ENSEMBLE_MIXES:
            raise ValueError(f"ensemble_mix: {self.ensemble_mix!r} is not one of "
                             f"{', '.join(ENSEMBLE_MIXES)}")
        within(self)
        self.augments()

    def augments(self) -> dict[str, AugmentConfig]:
        """Each ablation's full augmentation config: ``train.augment`` plus its overrides."""
        base = to_dict(self.train.augment)
        out = {}
        for name, overrides in self.ablation.items():
            if not isinstance(name, str) or not _SLUG.fullmatch(name):
                raise ValueError(f"ablation: {name!r} must be a plain name (it names trials)")
            try:
                out[name] = from_dict(AugmentConfig, {**base, **(overrides or {})},
                                      f"ablation.{name}")
            except ConfigError as e:  # re-raised as ValueError so from_dict names the file
                raise ValueError(str(e)) from None
        return out


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for k, v in overrides.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_spec(path, smoke: bool = False, data: str | None = None) -> SweepSpec:
    """Parse and validate a sweep file; relative paths resolve against the working directory.

    ``smoke`` applies the file's ``smoke:`` overrides and appends ``-smoke`` to the name, so a
    smoke run's results are never mistaken for the real sweep's finished cells. Both forms
    are validated either way, so a typo in ``smoke:`` fails before the real run too.
    ``data`` (``--data``) replaces the file's dataset.
    """
    raw = load_yaml(path)
    overrides = raw.get("smoke") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{path}: smoke: expected a mapping of overrides")
    if "smoke" in overrides:
        raise ConfigError(f"{path}: smoke.smoke: overrides cannot nest")
    smoked = _merge({**raw, "name": f"{raw.get('name')}-smoke"}, overrides)
    full = from_dict(SweepSpec, raw, str(path))
    small = from_dict(SweepSpec, smoked, f"{path} (smoke)")
    spec = small if smoke else full
    return dataclasses.replace(spec, data=_absolute(data or spec.data),
                               variants=tuple(_absolute(v) for v in spec.variants))


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


# ---------------------------------------------------------------- the grid

@dataclass(frozen=True)
class Grid:
    """The resolved axes: signers from the dataset, variants loaded from their files (here,
    once: trials get the variant as data, never its path)."""

    holdouts: tuple[str, ...]
    seeds: tuple[int, ...]
    variants: dict[str, VariantConfig]   # variant name -> the variant
    ablations: dict[str, dict]           # ablation name -> augment overrides (empty: no axis)

    @classmethod
    def of(cls, spec: SweepSpec) -> Grid:
        if not os.path.isdir(spec.data):
            hint = (" A Ray job runs in a copy of its --working-dir without git-ignored paths "
                    "such as data/: pass --data with an absolute path every node has."
                    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ else
                    f" Make it first: `signbart extract VIDEOS {spec.data}` (or `signbart "
                    "synth` / `signbart import-pkl`), or point --data at an existing one.")
            raise ConfigError(f"{spec.data}: dataset directory not found.{hint}")
        holdouts = open_dataset(spec.data).resolve_holdouts(
            list(spec.holdouts) if isinstance(spec.holdouts, tuple) else spec.holdouts)
        variants: dict[str, VariantConfig] = {}
        files: dict[str, str] = {}
        for path in spec.variants:
            variant = load_variant(path)
            if variant.name in variants:
                raise ConfigError(f"{path}: variant name {variant.name!r} is also the name of "
                                  f"{files[variant.name]} (trial names must be unique)")
            variants[variant.name], files[variant.name] = variant, path
            if spec.search is not None:
                validate(spec.search, to_dict(spec.train), to_dict(spec.qat), to_dict(variant),
                         f"{spec.name}")
        if spec.search is not None and spec.train.n_val_signers < 1:
            raise ConfigError(f"{spec.name}: search needs train.n_val_signers >= 1 (candidates "
                              "are scored on inner-validation signers, never the held-out one)")
        return cls(tuple(holdouts), spec.seeds, variants,
                   {k: dict(v or {}) for k, v in spec.ablation.items()})

    def trials(self) -> list[dict]:
        """One dict per trial: its axis values (``ablation`` "" when there is no such axis)."""
        axes = [self.holdouts, self.seeds, list(self.variants), list(self.ablations) or [""]]
        return [{"holdout": h, "seed": s, "variant": v, "ablation": a}
                for h, s, v, a in itertools.product(*axes)]

    def experiments(self, spec: SweepSpec, chosen: dict | None = None, **overrides
                    ) -> list[ExperimentConfig]:
        """Every trial's experiment, built here in the driver with every choice applied: the
        hold-out's search winner (``chosen``), the ablation, and the spec's settings
        (``overrides``: ``build_experiment``'s quant, threads, baseline or settings)."""
        out = []
        for t in self.trials():
            choice = (chosen or {}).get(search_key(t["holdout"], t["variant"]))
            fields = {"quant": spec.quant, "threads": spec.resources.threads,
                      "baseline": spec.baseline, "ensemble": spec.ensemble,
                      "ensemble_mix": spec.ensemble_mix, **overrides}
            out.append(build_experiment(
                spec.data, self.variants[t["variant"]], t["holdout"], seed=t["seed"],
                train=spec.train, qat=spec.qat,
                search={k: choice[k] for k in ("params", "val_accuracy", "val_signers")}
                if choice else None,
                ablation=t["ablation"], augment=self.ablations.get(t["ablation"]),
                sweep=spec.name, where=f"{spec.name}: {trial_id(**t)}", **fields))
        return out

    def cell(self, spec: SweepSpec, holdout: str, seed: int, variant: str | None = None,
             ablation: str = "") -> Grid:
        """The one-trial grid of (holdout, seed, variant, ablation), each checked against the
        spec; ``variant`` may be left out when the spec has one."""
        if variant is None and len(self.variants) == 1:
            variant = next(iter(self.variants))
        for axis, value, known in (("variant", variant, self.variants),
                                   ("ablation", ablation, self.ablations or {"": None})):
            if value not in known:
                raise ConfigError(f"{spec.name}: {axis} {value!r} is not in the spec (known: "
                                  f"{', '.join(map(repr, known))})")
        [holdout] = open_dataset(spec.data).resolve_holdouts([holdout])
        return Grid((holdout,), (seed,), {variant: self.variants[variant]},
                    {ablation: self.ablations[ablation]} if ablation else {})


def _tune_trial_name(trial) -> str:
    e = trial.config["experiment"]
    return trial_id(e["holdout"], e["seed"], e["variant"]["name"], e["ablation"])


def search_key(holdout: str, variant: str) -> str:
    return f"{holdout}-{variant}"


def sweep_hash(spec: SweepSpec, experiments: list[ExperimentConfig]) -> str:
    """What ``--resume`` compares: the spec and every resolved experiment, so an edited
    variant file counts as a changed sweep even though its path did not change."""
    return config_hash({"spec": to_dict(spec), "experiments": [e.to_dict() for e in experiments]})


# ---------------------------------------------------------------- storage (path or URI)

def _storage_root(storage: str | None) -> str:
    """Tune wants an absolute local path or a URI."""
    storage = storage or DEFAULT_STORAGE
    return storage.rstrip("/") if "://" in storage else os.path.abspath(storage)


def _persist(rows: list[dict], local_dir: str, uri: str) -> list[dict]:
    """Upload a trial's artifacts to URI storage and point its rows at the uploaded copies."""
    fs, path = filesystem(uri)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(local_dir, path, destination_filesystem=fs)
    local = local_dir.rstrip("/")
    return [{k: (f"{uri}{v[len(local):]}" if k in ("model_path", "fp32_model_path") and
                 isinstance(v, str) and v.startswith(local) else v) for k, v in r.items()}
            for r in rows]


# ---------------------------------------------------------------- the trial

def _node() -> dict:
    return {"node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(),
            "pid": os.getpid()}


def _trainable(config: dict) -> None:
    """One Tune trial: parse its experiment, run_trial (TF is imported there, in the worker),
    write the rows, report them. A trial whose rows already exist just re-reports them."""
    exp = ExperimentConfig.parse(config["experiment"])
    tid = exp.name
    done = rows_uri(config["artifacts"], tid)
    trained = not exists(done)
    last: dict = {}   # the last epoch's metrics, kept in the final report for Tune's table
    if trained:
        node_uri = join(config["artifacts"], "results", f"{tid}.node.json")
        attempt, cpu = {**_node(), "started": time.time()}, time.process_time()
        attempts = (read_json(node_uri) or []) + [attempt]
        write_json(node_uri, attempts)  # where each attempt ran: retries move between nodes
        remote = "://" in config["artifacts"]
        out_dir = (tune.get_context().get_trial_dir() if remote
                   else join(config["artifacts"], tid))
        rows = run_trial(exp, out_dir, report=_live(last))
        rows = [{**r, "node_id": attempt["node_id"], "hostname": attempt["hostname"]}
                for r in rows]
        if remote:
            rows = _persist(rows, out_dir, join(config["artifacts"], tid))
        write_rows(rows, done)
        remove(rows_uri(config["artifacts"], tid, failed=True))
        attempt.update(seconds=time.time() - attempt["started"],
                       cpu_seconds=time.process_time() - cpu)
        write_json(node_uri, attempts)
    rows = read_rows([done]).to_pylist()
    tune.report({**last, "trained": trained, "node_id": _node()["node_id"],
                 **_row_metrics(rows)})


def _live(last: dict):
    """``tune.report`` for each epoch, remembering the latest metrics in ``last``."""
    def report(metrics: dict) -> None:
        last.clear()
        last.update({k: v for k, v in metrics.items() if v is not None})
        tune.report(dict(last))
    return report


def _named(trainable):
    """``trainable`` as Tune's actor class, named in the dashboard by its trial id (``repr``
    is an actor's name in Ray's state API; Tune's default is the function's name)."""
    class Trial(wrap_function(trainable)):
        def __repr__(self):
            return self.trial_name
    Trial.__name__ = Trial.__qualname__ = trainable.__name__   # Tune registers it by name
    return Trial


def _row_metrics(rows: list[dict]) -> dict:
    out = {"rows_ok": sum(r["status"] == "ok" for r in rows),
           "rows_failed": sum(r["status"] != "ok" for r in rows)}
    for r in rows:
        if r["status"] == "ok" and r["top1"] is not None:
            key = r["quant"] if r["model_kind"] == "signbart" else r["model_kind"]
            out[f"top1_{key}"] = r["top1"]
    return out


def _error_text(err: BaseException) -> str:
    """The root cause in one line: Ray wraps a trial's exception in a RayTaskError."""
    cause = getattr(err, "cause", None) or err
    lines = [ln for ln in str(cause).splitlines() if ln.strip()]
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"[:2000]


# ---------------------------------------------------------------- the driver

@dataclass(frozen=True)
class SweepSummary:
    """What a sweep run left in storage; ``exit_code`` is non-zero when any cell is not ok."""

    name: str
    path: str                    # <storage>/<name>
    trials: int
    cells: int                   # trials x quant modes (baseline rows counted apart)
    cells_ok: int = 0
    cells_failed: int = 0
    cells_missing: int = 0       # no row yet (interrupted: run again with --resume)
    baseline_ok: int = 0
    baseline_failed: int = 0
    skipped: int = 0             # trials already finished before this run
    errors: dict = field(default_factory=dict)   # trial_id -> error of a failed trial
    top1: dict = field(default_factory=dict)     # trial_id -> {quant or "baseline": top-1}
    grid: str = ""               # the axes, for humans
    estimate: dict | None = None  # dry run: measured epoch times and CPU-hours

    @property
    def dry_run(self) -> bool:
        return self.estimate is not None

    @property
    def ok(self) -> bool:
        return self.dry_run or not (self.cells_failed or self.cells_missing)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def __str__(self) -> str:
        return self.text()

    def text(self) -> str:
        lines = [f"sweep {self.name}: {self.grid}", f"  storage: {self.path}"]
        if self.estimate is not None:
            return "\n".join(lines + estimate_text(self.estimate, self.skipped))
        lines.append(f"  cells: {self.cells_ok} ok, {self.cells_failed} failed, "
                     f"{self.cells_missing} missing of "
                     f"{self.cells}; baseline rows: {self.baseline_ok} ok, "
                     f"{self.baseline_failed} failed; {self.skipped} trial(s) already finished")
        for tid, scores in sorted(self.top1.items()):
            lines.append(f"  top-1 {tid}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        for tid, err in sorted(self.errors.items()):
            first = (err or "").split("\n", 1)[0]
            lines.append(f"  FAILED {tid}: {first[:300]}")
        if self.cells_missing:
            lines.append("  unfinished: run the same command with --resume to continue")
        return "\n".join(lines)


def _kinds(spec: SweepSpec, grid: Grid) -> collections.Counter:
    """How many rows of each model kind one trial writes, as ``trial.expected_rows`` says
    (every trial of a grid writes the same kinds)."""
    return collections.Counter(kind for _, kind in expected_rows(grid.experiments(spec)[0]))


def _describe(spec: SweepSpec, grid: Grid, kinds: collections.Counter) -> str:
    n = len(grid.trials())
    axes = [f"{len(grid.holdouts)} holdout(s)", f"{len(grid.seeds)} seed(s)",
            f"{len(grid.variants)} variant(s)"] + ([f"{len(grid.ablations)} ablation(s)"]
                                                  if grid.ablations else [])
    extra = {"ensemble": "ensemble cells", KEEPBEST: "keep-best cells",
             "baseline": "baseline rows"}
    return (f"{' x '.join(axes)} = {n} trial(s) x {len(spec.quant)} quant mode(s) "
            f"({', '.join(spec.quant)}) = {n * kinds['signbart']} cells"
            + "".join(f" (+{n * kinds[k]} {what})" for k, what in extra.items() if kinds[k])
            + f"; {spec.resources.cpu:g} CPU/{spec.resources.gpu:g} GPU per trial, "
              f"{spec.retries} retries")


def _summarize(spec: SweepSpec, grid: Grid, path: str, skipped: int, estimate=None
               ) -> SweepSummary:
    counts = dict.fromkeys(("cells_ok", "cells_failed", "cells_missing", "baseline_ok",
                            "baseline_failed"), 0)
    errors, top1 = {}, {}
    trials = grid.trials()
    kinds = _kinds(spec, grid)
    per_trial = sum(kinds.values()) - kinds["baseline"]
    if estimate is None:
        for t in trials:
            tid = trial_id(**t)
            files = [u for u in (rows_uri(path, tid), rows_uri(path, tid, failed=True))
                     if exists(u)]
            rows = read_rows(files[:1]).to_pylist() if files else []
            whole = bool(files) and files[0].endswith(".failed.parquet")  # the trial itself
            models = [r for r in rows if r["model_kind"] != "baseline"]
            counts["cells_missing"] += per_trial - len(models)
            for r in rows:
                if r["status"] == "ok" and r["top1"] is not None:
                    top1.setdefault(tid, {})[r["quant"] if r["model_kind"] == "signbart"
                                             else r["model_kind"]] = r["top1"]
                key = "ok" if r["status"] == "ok" else "failed"
                counts[f"cells_{key}" if r["model_kind"] != "baseline" else f"baseline_{key}"] += 1
                if r["status"] != "ok" and r["model_kind"] != "baseline":
                    errors.setdefault(tid, r["error"] if whole else f"{r['quant']}: {r['error']}")
    return SweepSummary(name=spec.name, path=path, trials=len(trials),
                        cells=len(trials) * per_trial, skipped=skipped, errors=errors,
                        top1=top1, grid=_describe(spec, grid, kinds), estimate=estimate,
                        **counts)


def _search_trainable(config: dict) -> None:
    search_trial(config, report=tune.report)


def run_searches(spec: SweepSpec, grid: Grid, storage: str,
                 max_concurrent: int | None) -> dict[str, dict]:
    """One Tune search per (hold-out, variant), scored on that fold's inner-validation signers.

    Each choice is stored in ``<storage>/<name>/search/<holdout>-<variant>.json`` and reused by
    later runs (delete the file to search again). Returns ``search_key -> choice``.
    """
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    search = spec.search
    path = join(storage, spec.name)
    trainable = tune.with_resources(_named(_search_trainable), {"cpu": spec.resources.cpu,
                                                                "gpu": spec.resources.gpu})
    dataset = open_dataset(spec.data)
    seed = spec.seeds[0]
    chosen = {}
    for holdout, variant in itertools.product(grid.holdouts, grid.variants):
        key = search_key(holdout, variant)
        uri = join(path, "search", f"{key}.json")
        previous = read_json(uri)
        if previous is not None:
            chosen[key] = previous
            continue
        scheduler = (ASHAScheduler(time_attr="epoch", metric="best_val_accuracy", mode="max",
                                   max_t=max(spec.train.epochs, search.grace_period),
                                   grace_period=search.grace_period)
                     if search.scheduler == "asha" else FIFOScheduler())
        tuner = tune.Tuner(
            trainable,
            param_space={"experiment": build_experiment(
                             spec.data, grid.variants[variant], holdout, seed=seed,
                             quant=spec.quant, train=spec.train, qat=spec.qat, sweep=spec.name,
                             threads=spec.resources.threads, baseline=spec.baseline,
                             ensemble=spec.ensemble, ensemble_mix=spec.ensemble_mix,
                             where=f"{spec.name}: search {key}"
                             ).to_dict(),
                         "rotations": search.rotations, "params": search.param_space()},
            tune_config=tune.TuneConfig(num_samples=search.num_samples, scheduler=scheduler,
                                        search_alg=BasicVariantGenerator(random_state=search.seed),
                                        max_concurrent_trials=max_concurrent),
            run_config=tune.RunConfig(name=f"{spec.name}-search-{key}", storage_path=storage,
                                      failure_config=tune.FailureConfig(max_failures=spec.retries),
                                      **_output("epoch", "val_accuracy", "best_val_accuracy")))
        results = tuner.fit()
        candidates = [{"index": i, "params": {k: plain(v) for k, v in r.config["params"].items()},
                       "best_val_accuracy": (r.metrics or {}).get("best_val_accuracy"),
                       "epochs": (r.metrics or {}).get("epoch"),
                       "error": _error_text(r.error) if r.error is not None else None}
                      for i, r in enumerate(results)]
        best = choose(candidates)
        folds = dataset.inner_folds(holdout, spec.train.n_val_signers, seed, search.rotations)
        judges = sorted(s for f in folds for s in f.val_signers)
        chosen[key] = {"holdout": holdout, "variant": variant, "seed": seed,
                       "val_signers": judges, "params": best["params"],
                       "val_accuracy": best["best_val_accuracy"], "candidates": candidates}
        write_json(uri, chosen[key])
        log.info("search %s: chose %s (inner-val accuracy %.3f on %s)", key, best["params"],
                 best["best_val_accuracy"], ", ".join(judges))
    return chosen


def _tuner(spec: SweepSpec, experiments: list[ExperimentConfig], storage: str, restore: bool,
           max_concurrent: int | None) -> tune.Tuner:
    """A Tune run whose grid is the list of resolved experiments (a worker only parses its
    own), or with ``restore`` Tune's own state restored from storage. That state is a pickle
    (``tuner.pkl``): restoring it runs whatever code whoever can write the storage put there,
    so it takes explicit trust (``--trust-storage``). The fresh run loses nothing: finished
    cells are found by their result rows and skipped."""
    path = join(storage, spec.name)
    trainable = tune.with_resources(_named(_trainable), {"cpu": spec.resources.cpu,
                                                         "gpu": spec.resources.gpu})
    if restore:
        log.info("resuming %s from its Tune state", path)
        return tune.Tuner.restore(path, trainable, resume_errored=True)
    param_space = {"artifacts": path,
                   "experiment": tune.grid_search([e.to_dict() for e in experiments])}
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent,
                                    trial_name_creator=_tune_trial_name,
                                    trial_dirname_creator=_tune_trial_name),
        run_config=tune.RunConfig(name=spec.name, storage_path=storage,
                                  failure_config=tune.FailureConfig(max_failures=spec.retries),
                                  **_output("epoch", "val_accuracy", "learning_rate",
                                            "best_epoch", "top1_fp32", params=AXES)))


# The grid's axes as the table's parameter columns, looked up inside each trial's experiment
# (without them Tune would print the whole experiment dict, cut to 20 characters).
AXES = {"experiment/holdout": "holdout", "experiment/seed": "seed",
        "experiment/variant/name": "variant", "experiment/ablation": "ablation"}


def _output(*metrics: str, params: dict | None = None) -> dict:
    """RunConfig's console settings: a table of ``metrics`` (and ``params``) per trial (Tune's
    classic reporter, the one whose columns can be chosen); trial configs and results only at
    -v."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    verbose = logging.getLogger("signbart").isEnabledFor(logging.DEBUG)
    return {"verbose": 3 if verbose else 1,
            "progress_reporter": CLIReporter(
                metric_columns={m: m.replace("_", " ") for m in metrics},
                parameter_columns=params or [],
                max_report_frequency=10 if verbose else 30)}


def run_sweep(spec_path, address: str | None = None, storage: str | None = None,
              resume: bool = False, max_concurrent: int | None = None, dry_run: bool = False,
              smoke: bool = False, trust_storage: bool = False,
              data: str | None = None, extend: bool = False, yes: bool = False
              ) -> SweepSummary:
    """Run (or, with ``dry_run``, size) the sweep in ``spec_path``; see ``sweeps/README.md``.

    Results go to ``<storage>/<name>/results/``, models to ``<storage>/<name>/<trial_id>/``;
    ``storage`` is a local path (default ``./ray_results``) or a URI such as ``s3://b/p``;
    ``data`` replaces the spec's dataset (a Ray job's copy of the repository has no data/).
    ``extend`` resumes a sweep whose spec gained cells (``sweeprecord.check``). One run holds
    the sweep folder at a time (``outlock.writer_lock``); SIGTERM or Ctrl-C stop Ray and raise
    ``Interrupted`` with the command that continues.
    """
    spec = load_spec(spec_path, smoke=smoke, data=data)
    grid = Grid.of(spec)
    root = _storage_root(storage)
    check_reachable(root)             # a missing bucket is one sentence, before Ray starts
    path = join(root, spec.name)
    finished = sum(exists(rows_uri(path, trial_id(**t))) for t in grid.trials())
    if dry_run:
        return _summarize(spec, grid, path, finished,
                          estimate(spec, grid, path, max_concurrent))
    if not yes:
        gate(spec, grid, path, max_concurrent)
    resume = resume or extend
    again = _command(spec_path, address, storage, max_concurrent, smoke, data, trust_storage)
    with writer_lock(path):
        uri = join(path, sweeprecord.FILE)
        previous = read_json(uri)
        experiments = None if spec.search else grid.experiments(spec)
        _check(uri, previous, spec, experiments, extend)      # before Ray starts
        with _Signals() as signals:
            ours = not ray.is_initialized()
            try:
                try:
                    connect(address, env=WORKER_ENV)
                except SystemExit as e:   # ray.init's own SIGTERM handler, until arm()
                    if e.code != signal.SIGTERM:
                        raise
                    signals.signum = signal.SIGTERM
                    raise Interrupted(signal.SIGTERM) from None
                signals.arm()
                chosen = run_searches(spec, grid, root, max_concurrent) if spec.search else None
                experiments = grid.experiments(spec, chosen)
                digest = _check(uri, previous, spec, experiments, extend)
                restore = (resume and trust_storage and (previous or {}).get("hash") == digest
                           and tune.Tuner.can_restore(path))
                if resume and not trust_storage:
                    log.info("%s: a fresh Tune run over the grid, skipping finished trials "
                             "(Tune's pickled state is only restored with --trust-storage)", path)
                write_json(uri, sweeprecord.record(
                    previous, spec.name, to_dict(spec), digest, sweeprecord.cells(experiments),
                    git_sha(), "extend" if extend else "resume" if resume else "start"))
                results = _tuner(spec, experiments, root, restore, max_concurrent).fit()
                for result in results:
                    if result.error is not None and result.config:
                        exp = ExperimentConfig.parse(result.config["experiment"])
                        if not exists(rows_uri(path, exp.name)):
                            write_rows(failed_rows(exp, _error_text(result.error)),
                                       rows_uri(path, exp.name, failed=True))
            except KeyboardInterrupt:   # Ray's waits turn Interrupted into a KeyboardInterrupt
                done = sum(exists(rows_uri(path, trial_id(**t))) for t in grid.trials())
                raise Interrupted(signals.signum, (
                    f"stopped by {signal.Signals(signals.signum).name}: the rows of the {done} "
                    f"finished trial(s) in {join(path, 'results')} are kept; continue with "
                    f"`{again}`")) from None
            finally:
                signals.done()
                if ours:   # also after an interrupted ray.init: its processes may have started
                    ray.shutdown()
    return _summarize(spec, grid, path, finished)


def _check(uri: str, previous: dict | None, spec: SweepSpec,
           experiments: list[ExperimentConfig] | None, extend: bool) -> str | None:
    """``sweeprecord.check`` of this run against ``previous``; the grid's hash."""
    digest = None if experiments is None else sweep_hash(spec, experiments)
    sweeprecord.check(uri, previous, to_dict(spec), digest,
                      None if experiments is None else sweeprecord.cells(experiments), extend)
    return digest


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT during a sweep; the message says what is kept and how to go on."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class _Signals:
    """SIGTERM and SIGINT raise ``Interrupted`` in the driver, once (a second one, while Ray
    shuts down, is ignored), instead of Ray's handler (``sys.exit`` after a C++ stack dump) and
    Tune's (which waits for trials to save). ``ray.init`` puts Ray's handler back: ``arm``
    after it. ``done`` when Ray is being stopped anyway: later signals are then ignored."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self) -> _Signals:
        self.stopping, self.signum = False, signal.SIGINT
        self.previous = {s: signal.getsignal(s) for s in self.SIGNALS}
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        self.arm()
        return self

    def arm(self) -> None:
        for s in self.SIGNALS:
            signal.signal(s, self._handler)

    def done(self) -> None:
        self.stopping = True

    def _handler(self, signum, frame):
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        if not self.stopping:
            self.signum = signum
            raise Interrupted(signum)

    def __exit__(self, *_) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)


def _command(spec_path, address, storage, max_concurrent, smoke, data, trust_storage) -> str:
    """The ``signbart sweep ... --resume`` that continues this run."""
    args = ["signbart", "sweep", str(spec_path), "--resume"]
    for flag, value in (("--address", address), ("--storage", storage), ("--data", data),
                        ("--max-concurrent", max_concurrent)):
        if value is not None:
            args += [flag, str(value)]
    args += ["--smoke"] * smoke + ["--trust-storage"] * trust_storage
    return shlex.join(args)


def fold_experiment(spec: SweepSpec, holdout: str, seed: int, variant: str | None = None,
                    ablation: str = "", storage: str | None = None, **overrides
                    ) -> ExperimentConfig:
    """One cell of a sweep, resolved exactly as the sweep resolves it (``signbart train
    --spec``). With a ``search:`` section the hold-out's stored choice is used; when there is
    none yet, that hold-out's search runs first (on Ray) and is stored where the sweep looks."""
    grid = Grid.of(spec).cell(spec, holdout, seed, variant, ablation)
    chosen = None
    if spec.search is not None:
        started = connect(None, env=WORKER_ENV)
        try:
            chosen = run_searches(spec, grid, _storage_root(storage), None)
        finally:
            if started:
                ray.shutdown()
    [exp] = grid.experiments(spec, chosen, **overrides)
    return exp


# ---------------------------------------------------------------- --dry-run sizing

GATE_CPU_HOURS = 24.0   # a sweep priced above this asks for --yes before it starts
# The gate's analytic fallback when no trial of the spec's variants has been priced on this
# host: CPU-seconds per sample and epoch of training (measured on 2.6 GHz AVX-512 cores, one
# thread, 65-79 keypoints), per sample of evaluation, and the fixed cost of a trial (exports,
# evaluation, baseline, start-up). Rough by design: it only has to tell hours from days.
ANALYTIC_TRAIN_S = 1 / 150
ANALYTIC_EVAL_S = 1 / 450
ANALYTIC_FIXED_S = 60.0


def cache_dir() -> Path:
    """Where ``--dry-run`` keeps its measured trial prices: ``$XDG_CACHE_HOME/signbart``
    (``~/.cache/signbart``). Never in the sweep's storage."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "signbart"


def _price_key(exp: ExperimentConfig) -> str:
    """What changes a trial's cost: its data (the manifest's size and time), everything in
    its experiment but the hold-out, the code and the host."""
    from signbart.results import git_sha

    manifest = Path(exp.data) / "manifest.parquet"
    d = exp.to_dict()
    d.pop("holdout")
    return config_hash({"experiment": d, "manifest": [manifest.stat().st_size,
                                                      manifest.stat().st_mtime_ns],
                        "code": git_sha(), "host": socket.gethostname()})


def _cached_price(exp: ExperimentConfig) -> dict | None:
    return read_json(cache_dir() / f"price-{_price_key(exp)}.json")


def _measure(exps: list[ExperimentConfig], workers: int) -> dict[str, dict]:
    """``trial.price`` of each of ``exps`` (one per variant), ``workers`` at a time, each in a
    spawned child with TensorFlow's output silenced (the driver never imports TensorFlow),
    cached under ``cache_dir()``. Side by side at the sweep's own concurrency, so the pricing
    takes a trial's time per ``workers`` variants and clocks trials that share the cores as
    the sweep's do."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(exps)), mp_context=ctx) as pool:
        futures = {exp.variant.name: (exp, pool.submit(_price_quietly, exp.to_dict()))
                   for exp in exps}
        prices = {}
        for name, (exp, future) in futures.items():
            prices[name] = {**future.result(), "host": socket.gethostname()}
            write_json(cache_dir() / f"price-{_price_key(exp)}.json", prices[name])
    return prices


def _price_quietly(experiment: dict) -> dict:
    """In the child: no TensorFlow lines on the terminal (errors come back as exceptions)."""
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
    from signbart.trial import price

    with tempfile.TemporaryDirectory() as tmp:
        return price(ExperimentConfig.parse(experiment), tmp)


def _analytic_price(exp: ExperimentConfig) -> dict:
    """A trial's CPU-seconds from its sample counts alone (``ANALYTIC_*``)."""
    fold = open_dataset(exp.data).fold(exp.holdout, exp.train.n_val_signers, exp.seed)
    t, q = exp.train, exp.qat
    n_train, n_val = len(fold.train), len(fold.val)
    refit = t.refit and n_val > 0
    n_final = n_train + n_val if refit else n_train
    trained = t.epochs * (n_train + (n_final if refit else 0))
    trained += q.epochs * n_final * ("qat" in exp.quant)
    evaluated = t.epochs * n_val + len(fold.test) * (len(expected_rows(exp)) + 1)
    cpu = ANALYTIC_TRAIN_S * trained + ANALYTIC_EVAL_S * evaluated + ANALYTIC_FIXED_S
    return {"cpu_s": cpu, "epoch_cpu_s": {"inner": ANALYTIC_TRAIN_S * n_train
                                          + ANALYTIC_EVAL_S * n_val},
            "short_cpu_s": cpu, "short_wall_s": cpu, "analytic": True}


def estimate(spec: SweepSpec, grid: Grid, path: str, max_concurrent: int | None = None,
             measure: bool = True) -> dict:
    """The unfinished trials' CPU-hours and the sweep's wall-clock at its concurrency.

    Each variant is priced on its own (a 42- and a 90-keypoint model differ) by a short real
    run of its first trial with every row kind the spec asks for (``trial.price``), as many
    at once as the sweep runs trials, cached under ``cache_dir()``. With ``measure`` False
    nothing runs: uncached variants get the analytic figure (``_analytic_price``), which is
    what the pre-sweep gate uses.
    """
    experiments = grid.experiments(spec)
    concurrency = max(1, int((os.cpu_count() or 1) // spec.resources.cpu))
    if max_concurrent:
        concurrency = min(concurrency, max_concurrent)
    first = {}
    for exp in experiments:
        first.setdefault(exp.variant.name, exp)
    prices = {name: _cached_price(exp) for name, exp in first.items()}
    unpriced = [first[name] for name, price in prices.items() if price is None]
    if measure and unpriced:
        prices.update(_measure(unpriced, concurrency))
    prices = {name: price or _analytic_price(first[name]) for name, price in prices.items()}
    todo = [e for e in experiments if not exists(rows_uri(path, e.name))]
    trial_s = [prices[e.variant.name]["cpu_s"] for e in todo]
    walls = [prices[e.variant.name]["cpu_s"] * prices[e.variant.name]["short_wall_s"]
             / prices[e.variant.name]["short_cpu_s"] for e in todo]
    searches = 0
    search_s = 0.0
    if spec.search is not None:
        per = spec.search.candidates() * spec.search.rotations * spec.train.epochs
        for h, v in itertools.product(grid.holdouts, grid.variants):
            if not exists(join(path, "search", f"{search_key(h, v)}.json")):
                searches += spec.search.candidates()
                search_s += per * prices[v]["epoch_cpu_s"]["inner"]
    wall = max(sum(walls) / concurrency, max(walls, default=0.0)) + search_s / concurrency
    return {"trials": [e.name for e in todo], "prices": prices, "concurrency": concurrency,
            "search_trainings": searches, "cpu_hours": (sum(trial_s) + search_s) / 3600,
            "wall_hours": wall / 3600, "host": socket.gethostname(),
            "threads": spec.resources.threads}


def estimate_text(e: dict, skipped: int) -> list[str]:
    """The dry-run's lines: the trials still to run, each variant's price, the totals."""
    lines = [f"  trials to run ({len(e['trials'])}; {skipped} already finished):"]
    lines += [f"    {t}" for t in e["trials"]]
    for name, p in e["prices"].items():
        how = ("analytic, nothing measured yet" if p.get("analytic") else
               f"measured on {e['host']}, {e['threads']} thread(s)")
        lines.append(f"  {name}: {p['cpu_s']:.0f} CPU-s per trial ({how}; every row: training, "
                     "refit, QAT, exports, INT8 calibration, evaluation, latency)")
    lines.append(f"  estimate: {e['cpu_hours']:.2f} CPU-hours, about {e['wall_hours']:.2f} h "
                 f"wall-clock at {e['concurrency']} trial(s) at a time"
                 + (f" (with {e['search_trainings']} search candidate(s) to train first)"
                    if e["search_trainings"] else ""))
    return lines


def gate(spec: SweepSpec, grid: Grid, path: str, max_concurrent: int | None) -> None:
    """Refuse a sweep priced beyond the machine (``GATE_CPU_HOURS``) unless told ``yes``;
    priced from the cache or analytically, so it costs no training."""
    e = estimate(spec, grid, path, max_concurrent, measure=False)
    if e["cpu_hours"] > GATE_CPU_HOURS:
        raise ConfigError(f"{spec.name}: priced at {e['cpu_hours']:.0f} CPU-hours (over "
                          f"{GATE_CPU_HOURS:.0f}; --dry-run shows how), so it starts only "
                          "with --yes")
