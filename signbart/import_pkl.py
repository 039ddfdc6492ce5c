"""Import the reference SignBART TensorFlow layout of per-sample ``.pkl`` files.

``SRC/<split or all>/<class>/<user>_<class>_<rep>.pkl`` plus ``label2id.json``. Unpickling
runs arbitrary code, so nothing is loaded unless the caller passes ``trust=True`` (the CLI's
``--trust-pickle``); the result is a pickle-free signbart dataset.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import uuid
from pathlib import Path

import numpy as np

from signbart.data import DatasetWriter, clear_dataset, parse_metadata, remove_stale_temp
from signbart.errors import DatasetError, UserError
from signbart.layouts import get_layout
from signbart.outlock import OutputLock
from signbart.storage import move_into

log = logging.getLogger(__name__)

LAYOUT_BY_K = {65: "holistic-65", 90: "holistic-90"}


def _load_sample(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            sample = pickle.load(f)  # the caller vouched for SRC with trust=True
    except Exception as e:
        raise DatasetError(f"{path}: cannot unpickle ({type(e).__name__}: {e})") from None
    if not isinstance(sample, dict) or "keypoints" not in sample:
        raise DatasetError(f"{path}: expected a dict with field 'keypoints'")
    kp = np.asarray(sample["keypoints"], dtype=np.float32)
    if kp.ndim != 3 or kp.shape[2] not in (2, 3) or kp.shape[1] not in LAYOUT_BY_K:
        raise DatasetError(f"{path}: field 'keypoints' has shape {list(kp.shape)}; expected "
                           "[frames, 65 or 90, 2 or 3]")
    if kp.shape[2] == 2:
        kp = np.concatenate([kp, np.zeros(kp.shape[:2] + (1,), np.float32)], -1)
    sample["keypoints"] = kp
    return sample


def _labels(src: Path) -> list[str] | None:
    path = src / "label2id.json"
    if not path.exists():
        return None
    try:
        label2id = json.loads(path.read_text())
        return [lab for lab, _ in sorted(label2id.items(), key=lambda kv: int(kv[1]))]
    except (json.JSONDecodeError, ValueError, AttributeError) as e:
        raise DatasetError(f"{path}: expected a JSON object of label -> id ({e})") from None


def import_pkl(src, out, trust: bool = False, overwrite: bool = False) -> int:
    """Convert every ``.pkl`` sample under ``src`` into a dataset at ``out``; returns the count.

    The dataset is written to a hidden folder inside ``out`` and moved into place, manifest
    last, only once every sample has converted: a failed import leaves no dataset behind.
    ``overwrite`` replaces a dataset already in ``out``.
    """
    src, out = Path(src), Path(out)
    if not trust:
        raise UserError(f"{src}: refusing to unpickle — loading a .pkl file can run arbitrary "
                        "code; pass --trust-pickle only if you trust where these files came from")
    files = sorted(src.rglob("*.pkl"))
    if not files:
        raise DatasetError(f"{src}: no .pkl files found")
    with OutputLock(out):
        remove_stale_temp(out)
        if (out / "manifest.parquet").exists() and not overwrite:
            raise DatasetError(f"{out}: already holds a dataset (--overwrite replaces it; or "
                               "choose a new output directory)")
        tmp = out / f".import-{uuid.uuid4().hex}"
        try:
            _convert(src, files, tmp)
            clear_dataset(out)  # the old dataset (--overwrite) or a dead writer's leftovers
            move_into(tmp, out, ["arrays", "dataset.json", "labels.json", "manifest.parquet"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("imported %d samples from %s into %s", len(files), src, out)
    return len(files)


def _convert(src: Path, files: list[Path], out: Path) -> None:
    first = _load_sample(files[0])
    layout = get_layout(LAYOUT_BY_K[first["keypoints"].shape[1]])
    labels = _labels(src)
    with DatasetWriter(out, layout, labels=labels,
                       description=f"imported from reference .pkl files in {src}") as writer:
        for path in files:
            sample = first if path == files[0] else _load_sample(path)
            if sample["keypoints"].shape[1] != len(layout):
                raise DatasetError(f"{path}: field 'keypoints' has {sample['keypoints'].shape[1]} "
                                   f"keypoints but {files[0]} has {len(layout)}")
            meta = parse_metadata(path, src)
            signer = str(sample.get("user", meta["signer"]))
            label = str(sample.get("class", meta["label"]))
            if labels is not None and label not in labels:
                raise DatasetError(f"{path}: field 'class' is {label!r}, not in "
                                   f"{src / 'label2id.json'}")
            sample_id = f"{signer}_{label}_{meta['repetition']}"
            writer.add(sample_id, signer, label, meta["repetition"], sample["keypoints"],
                       source=str(path.relative_to(src)))
    log.info("converted %d samples (%s)", len(files), layout.name)
