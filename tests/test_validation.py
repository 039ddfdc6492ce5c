"""Validation at the edge: every numeric config field has a stated range that rejects NaN and
infinity, and a bad number is one sentence naming the file and the field, never a traceback
or a run that trains the full schedule before it fails."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing

import pytest
from conftest import REPO
from test_faults import one_sentence, signbart
from test_sweep import spec_fields, write_spec

from signbart.config import (
    AugmentConfig,
    ExperimentConfig,
    FramingConfig,
    ModelConfig,
    QATConfig,
    TrainConfig,
    VariantConfig,
    from_dict,
)
from signbart.errors import ConfigError
from signbart.search import SearchSpec
from signbart.sweepspec import Grid, Resources, SweepSpec, load_spec

VARIANT = REPO / "configs/arabic-asl-65kpts.yaml"
DEFAULTS = [ModelConfig(), AugmentConfig(), TrainConfig(), QATConfig(), FramingConfig(),
            VariantConfig(name="v"), ExperimentConfig(data="d", variant=VariantConfig(name="v")),
            Resources(), SweepSpec(name="s", data="d", variants=("v",)),
            SearchSpec(space={"train.lr": {"grid": [1e-3]}})]


def numeric_fields(cls) -> list[str]:
    """The fields of ``cls`` that hold numbers (alone, in a tuple, or optional)."""
    def numeric(tp) -> bool:
        return tp in (int, float) or any(numeric(a) for a in typing.get_args(tp))

    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if numeric(hints[f.name])]


def outside(obj, name: str) -> list:
    """Values just outside ``name``'s interval on both sides, and NaN (and infinity for a float),
    shaped as the field is: a number, a [low, high] pair, or a list of seeds."""
    interval = type(obj).LIMITS[name]
    low, high = (float(b) for b in interval[1:-1].split(","))
    below = low if interval[0] == "(" else low - 1
    above = high if interval[-1] == ")" else high + 1
    tp = typing.get_type_hints(type(obj))[name]
    if int in typing.get_args(tp) or tp is int:
        values = [int(below), int(above), math.nan]
    else:
        values = [below, above, math.nan, math.inf, -math.inf]
    if "tuple[float, float]" in str(tp):       # time_warp, speed: each end in the interval
        return [(1.0, v) for v in values] + [(below, 1.0)]
    if "tuple" in str(tp):                     # seeds
        return [(v,) for v in values]
    return values


@pytest.mark.parametrize("obj", DEFAULTS, ids=lambda o: type(o).__name__)
def test_every_numeric_field_states_a_range_that_rejects_nan_inf_and_its_ends(obj):
    cls = type(obj)
    assert set(numeric_fields(cls)) == set(cls.LIMITS), cls.__name__
    for name, interval in cls.LIMITS.items():
        for bad in outside(obj, name):
            with pytest.raises(ValueError, match=rf"^({re.escape(f'{name} must be in {interval}')}"
                                                 rf"|{name} must be \[low, high\])"):
                dataclasses.replace(obj, **{name: bad})


@pytest.mark.parametrize("cls, name", [(c, n) for c in (TrainConfig, QATConfig, AugmentConfig,
                                                         ModelConfig, Resources)
                                       for n in numeric_fields(c)
                                       if typing.get_type_hints(c)[n] is float])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_number_is_refused_naming_the_file_and_field(cls, name, bad):
    with pytest.raises(ConfigError, match=rf"^f\.yaml\.{name}: expected a finite number, "
                                          rf"got {bad!r}$"):
        from_dict(cls, {name: bad}, "f.yaml")


@pytest.mark.parametrize("over, message", [
    ({"train": {"lr": math.nan}}, r"s\.yaml\.train\.lr: expected a finite number, got nan"),
    ({"train": {"lr": math.inf}}, r"s\.yaml\.train\.lr: expected a finite number, got inf"),
    ({"qat": {"lr": math.nan}}, r"s\.yaml\.qat\.lr: expected a finite number, got nan"),
    ({"train": {"plateau_factor": 5}},
     r"s\.yaml\.train: plateau_factor must be in \(0, 1\), got 5"),
    ({"train": {"weight_decay": -3}}, r"s\.yaml\.train: weight_decay must be in \[0, 1\], got -3"),
    ({"train": {"min_lr": -1}}, r"s\.yaml\.train: min_lr must be in \[0, 1\], got -1"),
    ({"train": {"epochs": 1000000000}},
     r"s\.yaml\.train: epochs must be in \[1, 100000\], got 1000000000"),
    ({"resources": {"cpu": math.nan}},
     r"s\.yaml\.resources\.cpu: expected a finite number, got nan"),
    ({"train": {"augment": {"rotate_deg": 720}}},
     r"s\.yaml\.train\.augment: rotate_deg must be in \[0, 180\], got 720"),
    ({"seeds": [-1]}, r"s\.yaml: seeds must be in \[0, 4294967295\], got -1"),
    ({"search": {"space": {"train.lr": {"uniform": [1e-4, math.inf]}}}},
     r"search\.space -> train\.lr: expected a finite number, got inf"),
    ({"search": {"space": {"model.dropout": {"grid": [0.1, math.nan]}}}},
     r"search\.space -> model: model\.dropout: expected a finite number, got nan"),
])
def test_the_probes_numbers_are_refused_by_the_spec(tmp_path, synth_dataset, over, message):
    spec = write_spec(tmp_path / "s.yaml", **{**spec_fields(synth_dataset, [VARIANT]), **over})
    with pytest.raises(ConfigError, match=message):
        Grid.of(load_spec(spec))                 # the grid validates the search space


def test_sweep_with_a_nan_cpu_is_one_sentence(tmp_path, synth_dataset):
    spec = write_spec(tmp_path / "s.yaml", **spec_fields(synth_dataset, [VARIANT],
                                                         resources={"cpu": math.nan}))
    assert "cpu: .nan" in spec.read_text()
    p = signbart("sweep", spec, "--dry-run", "--storage", tmp_path / "store")
    assert p.returncode == 2
    assert one_sentence(p, "sweep").endswith(
        f"{spec}.resources.cpu: expected a finite number, got nan")


@pytest.mark.parametrize("flag, value, message", [
    ("--lr", "nan", r"train\.lr: expected a finite number, got nan"),
    ("--lr", "inf", r"train\.lr: expected a finite number, got inf"),
    ("--lr", "2", r"lr must be in \(0, 1\], got 2"),
    ("--epochs", "1000000000", r"epochs must be in \[1, 100000\], got 1000000000")])
def test_train_refuses_a_bad_number_before_training(tmp_path, synth_dataset, flag, value,
                                                    message):
    out = tmp_path / "run"
    p = signbart("train", "--config", VARIANT, "--data", synth_dataset,
                 "--holdout", "user01", flag, value, "--out", out, timeout=120)
    assert p.returncode == 2
    assert re.search(message, one_sentence(p, "train"))
    assert not out.exists()            # nothing trained, nothing written


def test_evaluate_refuses_a_manifest_with_duplicate_sample_ids(tmp_path, synth_dataset):
    """The probe appended 3 rows: ``evaluate --holdout user01`` scored 11 clips, not 8."""
    from test_data import with_duplicate_rows
    from test_evaluate import tiny_model
    from test_tflite import FRAMES, HAND3, card_for

    from signbart.quantize import to_tflite

    labels = json.loads((synth_dataset / "labels.json").read_text())
    card = card_for(labels=tuple(labels["labels"]), glosses=tuple(labels["glosses"]),
                    variant=dataclasses.replace(HAND3, num_labels=len(labels["labels"])))
    model = tmp_path / "model_fp32.tflite"
    card.write(model, to_tflite(tiny_model(k=3, labels=len(card.labels)), FRAMES))
    assert signbart("evaluate", "--model", model, "--data", synth_dataset, "--holdout",
                    "user01").returncode == 0
    dup = with_duplicate_rows(synth_dataset, tmp_path / "dup")
    p = signbart("evaluate", "--model", model, "--data", dup, "--holdout", "user01")
    assert p.returncode == 2
    assert one_sentence(p, "evaluate").startswith(
        f"signbart evaluate: error: {dup / 'manifest.parquet'}: field 'sample_id' lists 3 id(s) "
        "more than once, e.g. ")
