"""``<storage>/<name>/sweep.json``: what a sweep is, so that one folder holds one experiment.

It records the resolved grid (every cell's experiment, its ``config_hash`` and the rows it
writes) and the hash of the whole; it is written when a sweep starts and rewritten by each
``--resume`` / ``--extend``, with one entry per run in ``runs`` (its git SHA among them). A run
whose grid hashes differently is refused before anything runs, naming what changed, unless it
is an ``--extend`` that only adds cells: the rows of one cell never mix settings. A changed
git SHA is not refused (resuming after a bug fix is normal); it is logged and kept in ``runs``,
and every row carries the commit it ran under.

Format 1 (``{"hash", "spec"}``, before cells were recorded) is upgraded in place by a run with
the same hash.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from signbart.config import ExperimentConfig, config_hash
from signbart.errors import UserError
from signbart.trial import expected_rows

log = logging.getLogger(__name__)

FORMAT = 2
FILE = "sweep.json"
SHOWN = 3   # changes named in a refusal; the rest are counted


def cells(experiments: list[ExperimentConfig]) -> list[dict]:
    """One entry per trial: its axes, the ``config_hash`` its rows carry, the (quant,
    model_kind) rows it writes, and its experiment (so a changed field can be named)."""
    out = []
    for e in experiments:
        d = e.to_dict()
        out.append({"trial_id": e.name, "holdout": e.holdout, "seed": e.seed,
                    "variant": e.variant.name, "ablation": e.ablation,
                    "config_hash": config_hash(d),
                    "rows": [list(r) for r in expected_rows(e)], "experiment": d})
    return out


def changes(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted field, old value, new value) for every leaf that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += changes(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def _listed(found: list[tuple[str, object, object]]) -> str:
    text = "; ".join(f"{f} was {o!r}, now {n!r}" for f, o, n in found[:SHOWN])
    return text + (f" (and {len(found) - SHOWN} more)" if len(found) > SHOWN else "")


def check(uri: str, previous: dict | None, spec: dict, digest: str | None,
          grid: list[dict] | None, extend: bool) -> None:
    """Refuse (UserError) a run that would put other settings into the sweep ``previous``
    describes. ``digest`` and ``grid`` (``cells``) are None while a nested search has yet to
    choose (then only the spec itself is compared)."""
    if not previous or previous.get("hash") == digest:
        return
    way_out = ("run it under another `name:`" + ("" if extend else
               ", or with --extend if you only added cells (hold-outs, seeds, variants, "
               "ablation arms)"))
    spec_changes = changes(previous.get("spec") or {}, spec)
    if grid is None:
        if spec_changes and not extend:
            raise UserError(f"{uri}: this sweep was started with other settings: "
                            f"{_listed(spec_changes)}; nothing was run: {way_out}")
        return
    old = {c["trial_id"]: c for c in previous.get("cells") or []}
    new = {c["trial_id"]: c for c in grid}
    if extend:
        if "cells" not in previous:
            raise UserError(f"{uri}: --extend needs the cells a sweep.json of format {FORMAT} "
                            "records; resume once with the unchanged spec first (it upgrades "
                            "the file), or run the changed spec under another `name:`")
        gone = sorted(set(old) - set(new))
        if gone:
            raise UserError(f"{uri}: --extend only adds cells, and {', '.join(gone[:SHOWN])} "
                            f"{'is' if len(gone) == 1 else 'are'} no longer in the grid; "
                            "nothing was run: run the changed spec under another `name:`")
        for tid in sorted(old):
            if old[tid]["config_hash"] != new[tid]["config_hash"]:
                found = changes(old[tid].get("experiment") or {}, new[tid]["experiment"])
                raise UserError(f"{uri}: --extend never changes a cell's settings, and "
                                f"{tid} would change: {_listed(found)}; nothing was run: "
                                "run the changed spec under another `name:`")
        return
    found = spec_changes
    if not found:
        for tid in sorted(set(old) & set(new)):
            if old[tid]["config_hash"] != new[tid]["config_hash"]:
                found = [(f"{tid}: {f}", o, n) for f, o, n in changes(
                    old[tid].get("experiment") or {}, new[tid]["experiment"])]
                break
    added, gone = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    what = _listed(found) if found else "; ".join(
        [f"cells added: {', '.join(added[:SHOWN])}"] * bool(old and added)
        + [f"cells removed: {', '.join(gone[:SHOWN])}"] * bool(gone)
    ) or "the resolved experiments (a variant file or a search choice) differ"
    raise UserError(f"{uri}: this sweep was started with other settings: {what}; nothing was "
                    f"run: {way_out}")


def record(previous: dict | None, name: str, spec: dict, digest: str, grid: list[dict],
           git_sha: str, mode: str) -> dict:
    """The new ``sweep.json``: this grid, and ``previous``'s runs plus this one (``mode``:
    start, resume or extend). A changed git SHA is logged, not refused."""
    runs = list((previous or {}).get("runs") or [])
    last = runs[-1]["git_sha"] if runs else (previous or {}).get("git_sha")
    if last is not None and last != git_sha:
        log.warning("%s: the code changed since the last run (git %s, now %s); each row keeps "
                    "the commit it ran under (git_sha), and sweep.json lists every run",
                    name, last or "unknown", git_sha or "unknown")
    runs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_sha": git_sha,
                 "host": socket.gethostname(), "pid": os.getpid(), "mode": mode,
                 "hash": digest})
    return {"format": FORMAT, "name": name, "hash": digest, "git_sha": git_sha, "spec": spec,
            "cells": grid, "runs": runs}
