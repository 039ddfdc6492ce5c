"""What a sweep will cost before it runs: ``--dry-run``'s price and the pre-sweep gate.

Each variant's first trial is run short in a spawned child (``trial.price``: every row kind,
a few epochs), cached per code, host and experiment; a full trial then costs that plus the
epochs it is expected to train, which early stopping makes unknown beforehand: they come from
the sweep's finished trials, else from the last run of the same experiment on this machine
(``record_epochs``), else every epoch allowed. The driver never imports TensorFlow.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import logging
import multiprocessing
import os
import socket
import tempfile
from pathlib import Path

from signbart.config import ExperimentConfig, config_hash
from signbart.data import open_dataset
from signbart.errors import ConfigError
from signbart.results import git_sha, read_rows
from signbart.storage import (
    exists,
    join,
    read_json,
    rows_uri,
    write_json,
)
from signbart.sweepspec import Grid, SweepSpec, search_key
from signbart.trial import expected_rows

log = logging.getLogger(__name__)


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


def _manifest(exp: ExperimentConfig) -> list[int]:
    """Which dataset a trial reads, as a key: its manifest's size and modification time."""
    manifest = Path(exp.data) / "manifest.parquet"
    return [manifest.stat().st_size, manifest.stat().st_mtime_ns]


def _price_key(exp: ExperimentConfig) -> str:
    """What changes a trial's cost: its data, everything in its experiment but the hold-out,
    the code and the host."""
    d = exp.to_dict()
    d.pop("holdout")
    return config_hash({"experiment": d, "manifest": _manifest(exp), "code": git_sha(),
                        "host": socket.gethostname()})


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
    """A trial's price from its sample counts alone (``ANALYTIC_*``), in ``trial.price``'s
    form: nothing run, each phase's epoch from its samples."""
    fold = open_dataset(exp.data).fold(exp.holdout, exp.train.n_val_signers, exp.seed)
    n_train, n_val = len(fold.train), len(fold.val)
    n_final = n_train + n_val if exp.train.refit and n_val > 0 else n_train
    fixed = ANALYTIC_FIXED_S + ANALYTIC_EVAL_S * len(fold.test) * (len(expected_rows(exp)) + 1)
    epoch = {"inner": ANALYTIC_TRAIN_S * n_train + ANALYTIC_EVAL_S * n_val,
             "refit": ANALYTIC_TRAIN_S * n_final, "qat": ANALYTIC_TRAIN_S * n_final}
    return {"short_cpu_s": fixed, "short_wall_s": fixed, "short_epochs": {},
            "epoch_cpu_s": epoch, "analytic": True}


def trial_cpu(price: dict, epochs: dict[str, float]) -> float:
    """CPU-seconds of a full trial: the short run's, plus each phase's further epochs."""
    return price["short_cpu_s"] + sum(
        max(0.0, n - price["short_epochs"].get(phase, 0)) * price["epoch_cpu_s"].get(phase, 0.0)
        for phase, n in epochs.items())


def _epochs_key(exp: ExperimentConfig) -> str:
    """What decides how long a trial trains: its data and everything in its experiment but
    the hold-out, seed, threads and sweep name."""
    d = {k: v for k, v in exp.to_dict().items()
         if k not in ("holdout", "seed", "threads", "sweep")}
    return config_hash({"experiment": d, "manifest": _manifest(exp)})


def _epochs_of(rows) -> dict[str, float] | None:
    """Mean epochs per phase of finished trials' rows (None without any that say)."""
    ours = rows[(rows.model_kind == "signbart") & (rows.status == "ok")]
    inner = ours.groupby("trial_id").inner_epochs.first().dropna()
    if not len(inner):
        return None
    qat = ours[ours.quant == "qat"].qat_epochs.dropna()
    return {"inner": float(inner.mean()),
            "refit": float(ours.groupby("trial_id").epochs_run.first().mean()),
            "qat": float(qat.mean()) if len(qat) else 0.0, "trials": len(inner)}


def expected_epochs(exp: ExperimentConfig, finished: list[str]) -> tuple[dict, str]:
    """The epochs per phase a trial like ``exp`` is expected to train, and whence: this
    sweep's ``finished`` result files, else the last sweep of the same experiment on this
    machine (``record_epochs``), else every epoch the spec allows (an upper bound)."""
    observed = _epochs_of(read_rows(finished).to_pandas()) if finished else None
    source = f"the mean of this sweep's {observed['trials']} finished trial(s)" if observed else ""
    if observed is None:
        observed = read_json(cache_dir() / f"epochs-{_epochs_key(exp)}.json")
        source = (f"the mean of {observed['trials']} trial(s) of its last run here"
                  if observed else "")
    refit = exp.train.refit and exp.train.n_val_signers > 0
    if observed is None:
        return ({"inner": exp.train.epochs, "refit": exp.train.epochs if refit else 0,
                 "qat": exp.qat.epochs if "qat" in exp.quant else 0},
                "every epoch allowed, an upper bound: no trial of it has finished yet")
    return {k: observed[k] for k in ("inner", "refit", "qat")}, source


def record_epochs(experiments: list[ExperimentConfig], path: str) -> None:
    """Keep the epochs the finished trials of each variant trained, for the next price."""
    by_variant: dict[str, list[ExperimentConfig]] = collections.defaultdict(list)
    for e in experiments:
        by_variant[e.variant.name].append(e)
    for exps in by_variant.values():
        files = [rows_uri(path, e.name) for e in exps if exists(rows_uri(path, e.name))]
        observed = _epochs_of(read_rows(files).to_pandas()) if files else None
        if observed:
            try:
                write_json(cache_dir() / f"epochs-{_epochs_key(exps[0])}.json", observed)
            except OSError as err:   # a price hint is not worth failing a finished sweep for
                log.warning("could not keep the epochs trained for the next price: %s", err)


def estimate(spec: SweepSpec, grid: Grid, path: str, max_concurrent: int | None = None,
             measure: bool = True) -> dict:
    """The unfinished trials' CPU-hours and the sweep's wall-clock at its concurrency.

    Each variant is priced on its own (a 42- and a 90-keypoint model differ) by a short real
    run of its first trial with every row kind the spec asks for (``trial.price``), as many
    at once as the sweep runs trials, cached under ``cache_dir()``, plus the epochs a full
    trial is expected to train (``expected_epochs``). With ``measure`` False nothing runs:
    uncached variants get the analytic figure (``_analytic_price``), which is what the
    pre-sweep gate uses.
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
    done = {e.variant.name: [] for e in experiments}
    for e in experiments:
        if exists(rows_uri(path, e.name)):
            done[e.variant.name].append(rows_uri(path, e.name))
    for name, price in prices.items():
        price["epochs"], price["epochs_source"] = expected_epochs(first[name], done[name])
        price["cpu_s"] = trial_cpu(price, price["epochs"])
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
        n = p["epochs"]
        lines.append(f"    epochs: inner run {n['inner']:.1f}, refit {n['refit']:.1f}, QAT "
                     f"{n['qat']:.1f} per trial ({p['epochs_source']})")
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
