"""The keypoint dataset on disk, and leave-one-signer-out folds as views over it.

A dataset is a directory::

    dataset.json       layout (named keypoints), description, synthetic flag
    labels.json        class ids in id order, with optional glosses
    manifest.parquet   one row per sample: sample_id, signer, label, repetition, n_frames,
                       source, mirrored, shard, offset (+ source_size/source_mtime for --resume)
    arrays/shard-NNNNN.npy   float32 [frames, K, 3] of many samples, concatenated along frames

Shards keep 10,000 samples in a few files (memory-mapped, no pickle anywhere). Every file is
written to a temp name and renamed, so an interrupted writer leaves the last good state.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import re
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from signbart.errors import DatasetError, LeakError, StorageError
from signbart.layouts import Layout
from signbart.storage import remove_temp_files, write_npy, write_parquet, write_text

log = logging.getLogger(__name__)

DEFAULT_PATTERN = r"(?P<signer>[A-Za-z]+\d+)_(?P<label>[A-Za-z0-9]+)_(?P<repetition>[A-Za-z]*\d+)"
MANIFEST_COLUMNS = ["sample_id", "signer", "label", "repetition", "n_frames", "source",
                    "mirrored", "shard", "offset", "source_size", "source_mtime"]


def parse_metadata(path: Path, root: Path | None = None, pattern: str | None = None) -> dict:
    """signer, label and repetition of a video or sample file.

    Tries, in order: ``pattern`` (or the default ``user01_G03_R07``) on the file stem, with the
    class from the parent folder when the pattern has no label group; then the folder layout
    ``<signer>/<class>/<rep>.ext`` relative to ``root``.
    """
    path = Path(path)
    regex = re.compile(pattern or DEFAULT_PATTERN)
    m = regex.fullmatch(path.stem) or regex.search(path.stem)
    if m:
        meta = {k: v for k, v in m.groupdict().items() if v is not None}
        if "label" not in meta and path.parent.name:
            meta["label"] = path.parent.name
        meta.setdefault("repetition", path.stem)
        if "signer" in meta and "label" in meta:
            return {"signer": meta["signer"], "label": meta["label"],
                    "repetition": meta["repetition"]}
    rel = path.relative_to(root).parts if root and path.is_relative_to(root) else path.parts
    if pattern is None and len(rel) >= 3:
        return {"signer": rel[-3], "label": rel[-2], "repetition": path.stem}
    raise DatasetError(f"{path}: cannot read signer/label/repetition from the name "
                       f"(pattern {regex.pattern!r}; or use the <signer>/<class>/<rep> layout)")


def _read_csv_map(path: Path, key: str, value: str) -> dict[str, str]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or key not in reader.fieldnames or value not in reader.fieldnames:
            raise DatasetError(f"{path}: expected columns {key!r} and {value!r}, "
                               f"got {reader.fieldnames}")
        return {row[key].strip(): row[value].strip() for row in reader}


def read_signers_csv(path: Path) -> dict[str, str]:
    """signer -> dominant hand ("left"/"right")."""
    out = _read_csv_map(path, "signer", "dominant_hand")
    bad = {s: h for s, h in out.items() if h.lower() not in ("left", "right")}
    if bad:
        s = next(iter(bad))
        raise DatasetError(f"{path}: dominant_hand of {s!r} must be left or right, got {bad[s]!r}")
    return {s: h.lower() for s, h in out.items()}


def read_glosses_csv(path: Path) -> dict[str, str]:
    """class id -> gloss (human-readable name)."""
    return _read_csv_map(path, "class", "gloss")


# ---------------------------------------------------------------- writing

class DatasetWriter:
    """Appends samples to a dataset directory in shards; ``resume=True`` continues one.

    The caller holds the folder's ``OutputLock``. ``extraction`` (the settings that produced
    the samples) is recorded in ``dataset.json``; a resume with different settings is refused
    unless ``force_settings``, so one dataset never silently mixes two kinds of samples.
    """

    def __init__(self, out_dir, layout: Layout, labels: list[str] | None = None,
                 glosses: dict[str, str] | list[str] | None = None, description: str = "",
                 synthetic: bool = False, resume: bool = False, shard_samples: int = 256,
                 extraction: dict | None = None, force_settings: bool = False):
        self.out = Path(out_dir)
        self.layout = layout
        self.shard_samples = shard_samples
        self._pending: list[tuple[dict, np.ndarray]] = []
        self._fixed_labels = list(labels) if labels else None
        self._glosses = glosses
        manifest = self.out / "manifest.parquet"
        if manifest.exists() and not resume:
            raise DatasetError(f"{self.out}: already holds a dataset (--resume continues an "
                               "interrupted extraction, --overwrite replaces it; or choose a "
                               "new output directory)")
        self._rows = self._resumed_rows(extraction, force_settings) \
            if resume and manifest.exists() else []
        self._next_shard = max((int(r["shard"]) for r in self._rows), default=-1) + 1
        self._ids = {r["sample_id"] for r in self._rows}
        (self.out / "arrays").mkdir(parents=True, exist_ok=True)
        write_text(self.out / "dataset.json", json.dumps({
            "format": "signbart-dataset/1", "description": description,
            "synthetic": synthetic, "layout": layout.to_dict(),
            **({"extraction": extraction} if extraction is not None else {})}, indent=1))

    def _resumed_rows(self, extraction: dict | None, force: bool) -> list[dict]:
        """The rows of the dataset being continued, once it is known to match this run. A run
        in which nothing succeeded left no samples: it is simply started afresh."""
        with contextlib.suppress(OSError, ValueError):  # unreadable: open_dataset says why
            if pd.read_parquet(self.out / "manifest.parquet").empty:
                return []
        existing = open_dataset(self.out)
        if existing.layout.keys != self.layout.keys:
            raise DatasetError(f"{self.out}/dataset.json: layout {existing.layout.name!r} "
                               f"differs from the requested {self.layout.name!r}")
        if extraction is not None:
            diff = _settings_diff(existing.extraction, extraction)
            if diff and not force:
                raise DatasetError(f"{self.out}/dataset.json: {diff}, so --resume would mix "
                                   "samples extracted differently (pass --force-settings to "
                                   "mix them anyway, or extract into a new directory)")
            if diff:
                log.warning("%s: resuming although %s (--force-settings)", self.out, diff)
        return existing.manifest.to_dict("records")

    def existing_sources(self) -> dict[str, tuple]:
        return {r["source"]: (r.get("source_size"), r.get("source_mtime")) for r in self._rows}

    def add(self, sample_id: str, signer: str, label: str, repetition: str,
            keypoints: np.ndarray, source: str, mirrored: bool = False,
            source_size: int | None = None, source_mtime: float | None = None) -> None:
        kp = np.asarray(keypoints, dtype=np.float32)
        if kp.ndim != 3 or kp.shape[1:] != (len(self.layout), 3) or len(kp) == 0:
            raise DatasetError(f"{source}: keypoints shape {kp.shape} does not match layout "
                               f"{self.layout.name!r} [frames, {len(self.layout)}, 3]")
        if not np.isfinite(kp).all():
            raise DatasetError(f"{source}: keypoints contain NaN or inf")
        if sample_id in self._ids:
            raise DatasetError(f"{source}: duplicate sample_id {sample_id!r}")
        self._ids.add(sample_id)
        self._pending.append((dict(sample_id=sample_id, signer=str(signer), label=str(label),
                                   repetition=str(repetition), n_frames=len(kp),
                                   source=str(source), mirrored=bool(mirrored),
                                   source_size=source_size, source_mtime=source_mtime), kp))
        if len(self._pending) >= self.shard_samples:
            self.flush()

    def flush(self) -> None:
        """Write pending samples as one shard, then the manifest that points at it. If either
        write fails, the dataset on disk is unchanged and the samples stay pending."""
        if not self._pending:
            return
        shard = self._next_shard
        offset = 0
        for meta, kp in self._pending:
            meta.update(shard=shard, offset=offset)
            offset += len(kp)
        path = self.out / "arrays" / f"shard-{shard:05d}.npy"
        write_npy(path, np.concatenate([kp for _, kp in self._pending]))
        try:
            self._write_index(self._rows + [meta for meta, _ in self._pending])
        except BaseException:
            with contextlib.suppress(OSError):
                path.unlink()  # no manifest points at it
            raise
        self._rows += [meta for meta, _ in self._pending]
        self._pending = []
        self._next_shard += 1

    def _write_index(self, rows: list[dict]) -> None:
        df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
        labels = self._fixed_labels or sorted(df["label"].unique())
        missing = sorted(set(df["label"]) - set(labels))
        if missing:
            raise DatasetError(f"{self.out}: label {missing[0]!r} is not in the given labels")
        g = self._glosses or {}
        glosses = list(g) if isinstance(g, list) else [g.get(lab, lab) for lab in labels]
        write_text(self.out / "labels.json", json.dumps(
            {"labels": labels, "glosses": glosses}, indent=1, ensure_ascii=False))
        write_parquet(self.out / "manifest.parquet", df)

    def close(self) -> None:
        self.flush()
        if not self._rows:
            self._write_index(self._rows)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        elif exc_type is not StorageError:  # keep what is done; a full disk would refuse it
            self.flush()


def _settings_diff(before: dict | None, now: dict) -> str:
    """Why two extraction settings differ, in words ('' when they match)."""
    if before is None:
        return "the dataset does not record its extraction settings (an older signbart made it)"
    for key in sorted(set(before) | set(now)):
        if before.get(key) != now.get(key):
            return f"{key} was {before.get(key)!r} and is now {now.get(key)!r}"
    return ""


FAILURES_FILE = "extraction_failures.parquet"
DATASET_FILES = ("manifest.parquet", "labels.json", "dataset.json", FAILURES_FILE)


def remove_stale_temp(out: Path) -> None:
    """Delete the temp files of writers that died (``kill -9``) in ``out``. Only call this
    while holding the folder's ``OutputLock``: then no live writer owns any of them."""
    remove_temp_files(out)
    remove_temp_files(Path(out) / "arrays")
    for folder in Path(out).glob(".import-*"):
        shutil.rmtree(folder, ignore_errors=True)


def clear_dataset(out: Path) -> None:
    """Remove a dataset's own files from ``out`` (``--overwrite``), manifest first, so an
    interruption never leaves a valid-looking half. Anything else in the folder stays."""
    out = Path(out)
    for name in DATASET_FILES:
        (out / name).unlink(missing_ok=True)
    for shard in (out / "arrays").glob("shard-*.npy"):
        shard.unlink()
    with contextlib.suppress(OSError):
        (out / "arrays").rmdir()


# ---------------------------------------------------------------- reading

@dataclass(frozen=True, eq=False)
class Fold:
    """One LOSO fold: index arrays into the dataset's manifest. Views, never copies."""

    holdout: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    val_signers: tuple[str, ...]


class Dataset:
    def __init__(self, path):
        self.path = Path(path)
        for name in ("dataset.json", "labels.json", "manifest.parquet"):
            if not (self.path / name).is_file():
                raise DatasetError(f"{self.path / name}: missing — is {self.path} a signbart "
                                   "dataset (made by synth, import-pkl or extract)?")
        info = self._json("dataset.json")
        try:
            self.layout = Layout.from_dict(info["layout"])
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{self.path / 'dataset.json'}: bad field 'layout' ({e})") from None
        self.description = info.get("description", "")
        self.synthetic = bool(info.get("synthetic", False))
        self.extraction: dict | None = info.get("extraction")  # None: not extracted here
        lab = self._json("labels.json")
        if not isinstance(lab.get("labels"), list) or not lab["labels"]:
            raise DatasetError(f"{self.path / 'labels.json'}: field 'labels' must be a "
                               "non-empty list")
        self.labels: list[str] = [str(x) for x in lab["labels"]]
        twice = sorted({x for x in self.labels if self.labels.count(x) > 1})
        if twice:
            raise DatasetError(f"{self.path / 'labels.json'}: field 'labels' lists {twice[0]!r} "
                               "twice (class ids must be unique)")
        self.glosses: list[str] = [str(x) for x in (lab.get("glosses") or self.labels)]
        try:
            self.manifest = pd.read_parquet(self.path / "manifest.parquet")
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise DatasetError(f"{self.path / 'manifest.parquet'}: unreadable ({e})") from None
        missing = [c for c in MANIFEST_COLUMNS[:9] if c not in self.manifest.columns]
        if missing:
            raise DatasetError(f"{self.path / 'manifest.parquet'}: missing column {missing[0]!r}")
        ids = self.manifest["sample_id"]
        twice = ids[ids.duplicated()].unique().tolist()
        if twice:
            raise DatasetError(f"{self.path / 'manifest.parquet'}: field 'sample_id' lists "
                               f"{len(twice)} id(s) more than once, e.g. "
                               f"{', '.join(map(repr, twice[:3]))} (each sample must be "
                               "unique, or it is trained or scored twice)")
        unknown = sorted(set(self.manifest["label"]) - set(self.labels))
        if unknown:
            raise DatasetError(f"{self.path / 'manifest.parquet'}: label {unknown[0]!r} is not "
                               f"in labels.json")
        self.label_ids = self.manifest["label"].map(
            {lab: i for i, lab in enumerate(self.labels)}).to_numpy(np.int32)
        self._shards: dict[int, np.ndarray] = {}
        self._sealed: frozenset[str] = frozenset()

    def _json(self, name: str) -> dict:
        try:
            return json.loads((self.path / name).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DatasetError(f"{self.path / name}: unreadable JSON ({e})") from None

    def __len__(self) -> int:
        return len(self.manifest)

    @property
    def signers(self) -> list[str]:
        return sorted(self.manifest["signer"].unique())

    def _shard(self, shard: int) -> np.ndarray:
        if shard not in self._shards:
            path = self.path / "arrays" / f"shard-{shard:05d}.npy"
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except OSError as e:
                raise DatasetError(f"{path}: unreadable keypoint array ({e})") from None
            except ValueError as e:  # a damaged header; numpy's words mislead ("pickled data")
                raise DatasetError(f"{path}: corrupt keypoint array ({e})") from None
            if arr.ndim != 3 or arr.shape[1:] != (len(self.layout), 3) or arr.dtype != np.float32:
                raise DatasetError(f"{path}: expected float32 [frames, {len(self.layout)}, 3], "
                                   f"got {arr.dtype} {list(arr.shape)}")
            self._shards[shard] = arr
        return self._shards[shard]

    def keypoints(self, i: int) -> np.ndarray:
        """float32 [frames, K, 3] of sample ``i`` (x, y, z or visibility; missing = 0)."""
        row = self.manifest.iloc[int(i)]
        if row["signer"] in self._sealed:
            raise LeakError(f"sample {row['sample_id']!r} of held-out signer {row['signer']!r} "
                            "was read before the final evaluation")
        arr = self._shard(int(row["shard"]))
        start, n = int(row["offset"]), int(row["n_frames"])
        if start + n > len(arr):
            raise DatasetError(f"{self.path}/arrays/shard-{int(row['shard']):05d}.npy: too short "
                               f"for sample {row['sample_id']!r} (corrupt or truncated)")
        return np.asarray(arr[start:start + n])

    def seal(self, signers) -> None:
        """Make reading these signers' samples raise LeakError until ``unseal``."""
        self._sealed = frozenset(s for s in signers if s != "none")

    def unseal(self) -> None:
        self._sealed = frozenset()

    def resolve_holdouts(self, holdouts) -> list[str]:
        """``"all"`` -> every signer; a list is checked against the signers present."""
        if holdouts == "all" or holdouts == ["all"]:
            return self.signers
        out = [str(h) for h in ([holdouts] if isinstance(holdouts, str) else holdouts)]
        unknown = [h for h in out if h != "none" and h not in self.signers]
        if unknown:
            raise DatasetError(f"{self.path}: holdout signer {unknown[0]!r} is not in the dataset "
                               f"(signers: {', '.join(self.signers)})")
        return out

    def fold(self, holdout: str, val_signers: int = 0, seed: int = 0) -> Fold:
        """Train/val/test index views. ``val_signers`` inner signers are drawn from the
        training signers with ``(seed, holdout)`` (nested LOSO); the holdout is never among
        them. Keying the draw on the hold-out too matters: with the seed alone every fold drew
        the same position of its sorted candidates, so one signer judged almost every fold."""
        return self.inner_folds(holdout, val_signers, seed, 1)[0]

    def inner_folds(self, holdout: str, val_signers: int, seed: int, count: int) -> list[Fold]:
        """``count`` folds whose inner signers are disjoint groups of ``val_signers`` from one
        (seed, holdout) shuffle of the training signers; the first is ``fold``'s."""
        self.resolve_holdouts([holdout])
        signer = self.manifest["signer"].to_numpy()
        rest = sorted(s for s in self.signers if s != holdout)
        if val_signers * count >= len(rest) or (count > 1 and val_signers < 1):
            raise DatasetError(f"{self.path}: {count} x {val_signers} validation signer(s) leave "
                               f"no training signer (only {len(rest)} besides the holdout)")
        order = np.random.default_rng([seed, zlib.crc32(holdout.encode())]).permutation(rest)
        idx = np.arange(len(signer))
        folds = []
        for i in range(count):
            val = tuple(sorted(order[i * val_signers:(i + 1) * val_signers]))
            folds.append(Fold(holdout=holdout,
                              train=idx[~np.isin(signer, [holdout, *val])],
                              val=idx[np.isin(signer, val)],
                              test=idx[signer == holdout] if holdout != "none" else idx[:0],
                              val_signers=val))
        return folds


def open_dataset(path) -> Dataset:
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: dataset directory not found")
    return Dataset(path)
