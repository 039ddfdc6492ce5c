"""Leave-one-signer-out sweeps on Ray Tune: one trial per (holdout, seed, variant[, ablation]).

    signbart sweep sweeps/quickstart.yaml                  # local Ray, results in ./ray_results
    signbart sweep sweeps/mlr511-loso.yaml --dry-run       # the grid and its CPU-hours
    signbart sweep sweeps/mlr511-loso.yaml --resume        # after Ctrl-C or a lost driver

This module is the run: the Tune trainable around ``trial.run_trial``, the tuner, resume,
retries and signals; it is the only one that imports Ray Tune. The spec and its grid are
``sweepspec``'s, the price ``pricing``'s, the end-of-run counts ``sweepsummary``'s. A trial's
rows land in ``<storage>/<name>/results/<trial_id>.parquet``, and that file existing is what
"finished" means: a re-run or ``--resume`` never trains a finished cell twice, even if Tune's
own experiment state is gone. A trial that still raises after its retries gets
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

import itertools
import logging
import os
import shlex
import signal
import socket
import time

import pyarrow.fs as pafs
import ray
from ray import tune
from ray.tune import CLIReporter
from ray.tune.trainable.function_trainable import wrap_function

from signbart import sweeprecord
from signbart.config import (
    ExperimentConfig,
    build_experiment,
    plain,
    to_dict,
    trial_id,
)
from signbart.data import open_dataset
from signbart.outlock import writer_lock
from signbart.pricing import estimate, gate, record_epochs
from signbart.raycluster import connect
from signbart.results import git_sha, read_rows, write_rows
from signbart.search import choose, search_trial
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
from signbart.sweepspec import Grid, SweepSpec, load_spec, search_key, sweep_hash
from signbart.sweepsummary import SweepSummary, summarize_run
from signbart.trial import failed_rows, run_trial

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "ray_results"
# What Ray workers inherit: legacy Keras, and this shell's TensorFlow log level (default 3, as
# signbart.tfkeras sets it; the driver itself never imports TensorFlow).
WORKER_ENV = {"TF_USE_LEGACY_KERAS": "1",
              "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}


def _tune_trial_name(trial) -> str:
    e = trial.config["experiment"]
    return trial_id(e["holdout"], e["seed"], e["variant"]["name"], e["ablation"])


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
                             ensemble_gate=spec.ensemble_gate,
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
        return summarize_run(spec, grid, path, finished,
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
                _run_grid(spec, grid, root, previous, resume=resume, extend=extend,
                          trust_storage=trust_storage, max_concurrent=max_concurrent)
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
    return summarize_run(spec, grid, path, finished)


def _run_grid(spec: SweepSpec, grid: Grid, root: str, previous: dict | None, *, resume: bool,
              extend: bool, trust_storage: bool, max_concurrent: int | None) -> None:
    """On a connected Ray: the searches, the grid checked and recorded in ``sweep.json``,
    the Tune run, a failed row file for each trial that kept raising, the epochs trained."""
    path = join(root, spec.name)
    uri = join(path, sweeprecord.FILE)
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
    record_epochs(experiments, path)


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
