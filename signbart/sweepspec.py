"""A sweep file, validated (``SweepSpec``), and the grid of experiments it resolves to.

The driver reads the spec and its variant files here, once; each trial then receives its
resolved ``ExperimentConfig`` as data. Nothing here imports Ray or TensorFlow.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import typing
from dataclasses import dataclass, field

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
    to_dict,
    trial_id,
    within,
)
from signbart.data import open_dataset
from signbart.errors import ConfigError
from signbart.search import SearchSpec, validate

_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


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
    ensemble_gate: bool = False                    # baseline abstains beyond inner clips' z
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
                      "ensemble_mix": spec.ensemble_mix, "ensemble_gate": spec.ensemble_gate,
                      **overrides}
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


def search_key(holdout: str, variant: str) -> str:
    return f"{holdout}-{variant}"


def sweep_hash(spec: SweepSpec, experiments: list[ExperimentConfig]) -> str:
    """What ``--resume`` compares: the spec and every resolved experiment, so an edited
    variant file counts as a changed sweep even though its path did not change."""
    return config_hash({"spec": to_dict(spec), "experiments": [e.to_dict() for e in experiments]})
