"""Hyper-parameter search that never looks at the held-out signer (nested LOSO).

A sweep spec's ``search:`` section names a space of settings (``train.*``, ``qat.*``,
``model.*``). Before the grid runs, each outer hold-out gets its own Ray Tune search: every
candidate trains on that fold's training signers and is scored on its inner-validation signers
only, while the held-out signer stays sealed in the dataset. The best candidate's settings are
then used by that hold-out's grid trials, and every result row records them. Choosing per
hold-out (instead of once for the whole sweep) is what keeps each signer's test score free of
choices made on that signer's own data.

``search_trial`` is a plain function of a config dict (the hold-out's experiment and the
candidate's settings); Ray Tune is only the fan-out around it, and ``trial`` trains.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field

from signbart.config import (
    SEEDS,
    ExperimentConfig,
    QATConfig,
    TrainConfig,
    apply_settings,
    from_dict,
    within,
)
from signbart.errors import ConfigError

SECTIONS = ("train", "qat", "model")
DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")
SCHEDULERS = ("fifo", "asha")


@dataclass(frozen=True)
class SearchSpec:
    """The ``search:`` section of a sweep spec (see ``sweeps/README.md``)."""

    space: dict = field(default_factory=dict)   # "train.lr": {"loguniform": [1e-4, 2e-3]}
    num_samples: int = 8          # random draws per outer hold-out (each covers every grid point)
    scheduler: str = "fifo"       # "asha" stops weak candidates early, on inner-val accuracy
    grace_period: int = 10        # epochs every candidate runs before ASHA may stop it
    seed: int = 0                 # seeds the candidate sampling; the same seed, the same space
    rotations: int = 1            # inner folds a candidate is scored on, in turn (mean score)

    LIMITS: typing.ClassVar[dict[str, str]] = {
        "num_samples": "[1, 100000]", "grace_period": "[1, 100000]", "seed": SEEDS,
        "rotations": "[1, 1000]"}

    def __post_init__(self):
        if not isinstance(self.space, dict) or not self.space:
            raise ValueError("space: must map settings to distributions, e.g. "
                             "train.lr: {loguniform: [1.0e-4, 2.0e-3]}")
        within(self)
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got "
                             f"{self.scheduler!r}")
        if self.rotations > 1 and self.scheduler != "fifo":
            raise ValueError("rotations > 1 needs scheduler: fifo (ASHA would compare a "
                             "candidate's later inner folds with others' first)")
        for key, dist in self.space.items():
            _check_distribution(key, dist)

    def param_space(self) -> dict:
        """Tune's sampling objects for the space, keyed by the dotted setting name."""
        from ray import tune

        out = {}
        for key, dist in self.space.items():
            (kind, args), = dist.items()
            out[key] = {"grid": lambda a: tune.grid_search(list(a)),
                        "choice": lambda a: tune.choice(list(a)),
                        "uniform": lambda a: tune.uniform(*a),
                        "loguniform": lambda a: tune.loguniform(*a),
                        "randint": lambda a: tune.randint(a[0], a[1] + 1)}[kind](args)
        return out

    def candidates(self) -> int:
        """Candidates per hold-out: ``num_samples`` times the product of the grid sizes."""
        return self.num_samples * math.prod(len(d["grid"]) for d in self.space.values()
                                            if "grid" in d)

    def corners(self) -> list[dict]:
        """Settings that together cover every listed value and both ends of every range, for
        validating the space before anything trains."""
        values = {key: next(iter(dist.values())) for key, dist in self.space.items()}
        n = max(len(v) for v in values.values())
        return [{key: v[min(i, len(v) - 1)] for key, v in values.items()} for i in range(n)]


def _check_distribution(key, dist) -> None:
    if not isinstance(key, str) or key.split(".", 1)[0] not in SECTIONS or "." not in key:
        raise ValueError(f"space: {key!r} must be <section>.<field> with section one of "
                         f"{', '.join(SECTIONS)} (e.g. train.lr, model.dropout)")
    if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
        raise ValueError(f"space.{key}: expected one of {{{', '.join(DISTRIBUTIONS)}: ...}}, "
                         f"got {dist!r}")
    (kind, args), = dist.items()
    if not isinstance(args, list) or not args:
        raise ValueError(f"space.{key}.{kind}: expected a non-empty list, got {args!r}")
    if kind in ("grid", "choice"):
        return
    if len(args) != 2 or any(isinstance(a, bool) or not isinstance(a, (int, float)) for a in args):
        raise ValueError(f"space.{key}.{kind}: expected [low, high], got {args!r}")
    if not args[0] < args[1]:
        raise ValueError(f"space.{key}.{kind}: low must be < high, got {args!r}")
    if kind == "loguniform" and args[0] <= 0:
        raise ValueError(f"space.{key}.loguniform: low must be > 0, got {args[0]}")
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise ValueError(f"space.{key}.randint: expected integers, got {args!r}")


def validate(search: SearchSpec, train: dict, qat: dict, variant: dict, where: str) -> None:
    """Fail before anything runs if a setting in the space does not exist or is out of range."""
    from signbart.config import variant_from_dict

    for corner in search.corners():
        t, q, v = apply_settings(corner, train, qat, variant)
        try:
            from_dict(TrainConfig, t, f"{where}: search.space -> train")
            from_dict(QATConfig, q, f"{where}: search.space -> qat")
            variant_from_dict(v).model_config(f"{where}: search.space -> model")
        except ConfigError as e:
            raise ConfigError(str(e)) from None


def search_trial(config: dict, report) -> float:
    """Score one candidate: ``config['experiment']`` (the hold-out's experiment, as the driver
    built it) with ``config['params']`` applied, trained by ``trial.inner_score`` on that
    fold's training signers and scored on its inner signers only (``rotations`` groups of
    them in turn). The held-out signer is sealed for the whole call.

    ``report`` gets ``{epoch, val_accuracy, best_val_accuracy}`` after every epoch (what ASHA
    reads; with rotations, the mean over the inner folds so far). Returns the best
    inner-validation accuracy (the checkpoint a grid trial would keep).
    """
    from signbart.trial import candidate, inner_score

    exp = candidate(ExperimentConfig.parse(config["experiment"]), config["params"])
    if exp.train.n_val_signers < 1:
        raise ConfigError("search: train.n_val_signers must be >= 1 (candidates are scored on "
                          "inner-validation signers, never on the held-out one)")
    return inner_score(exp, config.get("rotations", 1), report)


def choose(candidates: list[dict]) -> dict:
    """The candidate with the highest inner-validation accuracy; ties go to the earliest."""
    scored = [c for c in candidates if c.get("best_val_accuracy") is not None]
    if not scored:
        raise RuntimeError("search: no candidate finished an epoch")
    return max(scored, key=lambda c: (c["best_val_accuracy"], -c["index"]))

