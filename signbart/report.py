"""LOSO reports from sweeps' Parquet result rows: ``load -> audit -> summarize -> draw ->
render``, and ``build_report`` writing it all (with the rows it used) to a folder or a URI.

Only result rows and each folder's ``sweep.json`` are read, never logs, so a report of a
running sweep shows what has finished. ``sweep.json`` is the authority on its grid: a row whose
sweep, trial or ``config_hash`` does not match it is never pooled (``rejected.csv``), and every
cell of the grid without a row is listed (``missing.csv``). Statistics are
``signbart.summary``'s, pictures ``signbart.plots``', pages ``signbart.render``'s.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from signbart.cells import Audit, natural
from signbart.config import QUANT_MODES
from signbart.errors import UserError
from signbart.plots import draw
from signbart.published import IDLE_KEYS, PUBLISHED_KEYS
from signbart.render import confusion_files, render_html, render_markdown
from signbart.results import CELL_KEYS, read_rows
from signbart.storage import (
    check_reachable,
    exists,
    filesystem,
    join,
    read_bytes,
    read_json,
    remove,
    write_bytes,
    write_json,
    write_text,
)
from signbart.summary import Summary, summarize
from signbart.tables import confusion_long

log = logging.getLogger(__name__)

FORMATS = ("md", "csv", "html")
MANIFEST = "report.json"  # what a report wrote, so that --overwrite removes exactly that
ROWS = "rows"             # OUT/rows/<sweep>/: the rows a report used, as a sweep folder
LATENCY = "latency.json"  # OUT/latency.json: the idle-machine latencies a report used
PUBLISHED = "published.json"  # OUT/published.json: another work's figures, shown beside ours


# ---------------------------------------------------------------------------------- load

@dataclasses.dataclass
class Folder:
    """One sweep folder the rows came from: where it is, what it is called, its sweep.json."""

    uri: str
    name: str          # the sweep's name (sweep.json's, else the folder's): OUT/rows/<name>
    sweep_json: dict | None


@dataclasses.dataclass
class Loaded:
    rows: pd.DataFrame           # every row, + source_file (<name>/results/<file>, its place
                                 # under OUT/rows/, so the same on a rebuild) and folder
    folders: dict[str, Folder]   # folder uri -> Folder
    files: dict[str, str]        # source_file -> the file's uri


def _uri(inp: str, path: str) -> str:
    return (inp.split("://", 1)[0] + "://" + path) if "://" in inp else path


def _result_files(inp: str) -> list[tuple[str, str]]:
    """(Parquet file, its sweep folder) of one input: a file, a ``results/`` folder, a sweep
    folder or a storage dir of sweep folders; all as the input spells them (path or URI)."""
    check_reachable(inp)
    fs, root = filesystem(inp)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"{inp}: no such file or directory")

    def folder_of(path: str) -> str:
        parent = path.rsplit("/", 1)[0]
        return parent.rsplit("/", 1)[0] if parent.endswith("/results") else parent

    if info.type == pafs.FileType.File:
        return [(_uri(inp, root), _uri(inp, folder_of(root)))]

    def listing(d: str) -> list[pafs.FileInfo]:
        return fs.get_file_info(pafs.FileSelector(d, allow_not_found=True))

    def parquet_in(d: str) -> list[str]:
        return sorted(i.path for i in listing(d) if i.type == pafs.FileType.File
                      and i.base_name.endswith(".parquet") and not i.base_name.startswith("."))

    found = (parquet_in(f"{root}/results") or parquet_in(root)
             or [p for d in sorted(i.path for i in listing(root)
                                   if i.type == pafs.FileType.Directory)
                 for p in parquet_in(f"{d}/results")])
    if not found:
        raise UserError(f"{inp}: no result files (*.parquet in results/, */results/ or the folder)")
    return [(_uri(inp, p), _uri(inp, folder_of(p))) for p in found]


def load(inputs: list[str]) -> Loaded:
    """Every result row under ``inputs``, with the file it came from and its sweep folder."""
    if not inputs:
        raise UserError("report: give at least one sweep directory, results/ folder or file")
    folders: dict[str, Folder] = {}
    files: dict[str, str] = {}
    tables = []
    for f, folder in [pair for inp in inputs for pair in _result_files(inp)]:
        if folder not in folders:
            sj = read_json(join(folder, "sweep.json"))
            sj = sj if isinstance(sj, dict) else None
            name = str((sj or {}).get("name") or folder.rstrip("/").rsplit("/", 1)[-1])
            taken = {x.name for x in folders.values()}
            name = next(n for n in [name] + [f"{name}-{i}" for i in range(2, 999)]
                        if n not in taken)
            folders[folder] = Folder(folder, name, sj)
        rel = f"{folders[folder].name}/results/{f.rsplit('/', 1)[-1]}"  # as under OUT/rows/
        if f in files.values():
            continue
        files[rel] = f
        try:
            t = read_rows([f])
        except (OSError, pa.ArrowException) as e:
            raise UserError(f"{f}: not a readable result file ({e})") from None
        tables.append(t.append_column("source_file", pa.array([rel] * len(t), pa.string()))
                      .append_column("folder", pa.array([folder] * len(t), pa.string())))
    df = pa.concat_tables(tables).to_pandas()
    if df.empty:
        raise UserError(f"{', '.join(inputs)}: the result files hold no rows")
    log.info("report: %d rows from %d files", len(df), len(tables))
    return Loaded(df, folders, files)


# --------------------------------------------------------------------------------- audit

def _cells(sj: dict) -> dict[str, dict] | None:
    """trial_id -> cell of a format-2 sweep.json; None where the grid is not recorded."""
    cells = sj.get("cells") if sj else None
    if not isinstance(cells, list):
        return None
    return {str(c["trial_id"]): c for c in cells if isinstance(c, dict) and "trial_id" in c}


def _reason(r, name: str, cells: dict[str, dict]) -> str:
    """Why row ``r`` does not belong to its folder's grid, or ""."""
    if r.sweep != name:
        return f"a row of sweep {r.sweep!r} in the folder of sweep {name!r}"
    cell = cells.get(str(r.trial_id))
    if cell is None:
        return f"trial {r.trial_id} is not in the grid of {name}/sweep.json"
    if r.config_hash != cell.get("config_hash"):
        return (f"config_hash {r.config_hash} is not the grid's {cell.get('config_hash')}: its "
                "settings differ from the cell's")
    if [r.quant, r.model_kind] not in [list(x) for x in cell.get("rows", [])]:
        return f"({r.quant}, {r.model_kind}) is not a row the cell {r.trial_id} expects"
    return ""


def audit(loaded: Loaded) -> tuple[pd.DataFrame, Audit]:
    """(the rows that belong to their folder's grid, what was rejected, missing and unknown)."""
    df = loaded.rows
    reasons = pd.Series("", index=df.index)
    missing, grids, expected = [], [], []
    for uri, folder in loaded.folders.items():
        mine = df[df.folder == uri]
        cells = _cells(folder.sweep_json)
        if cells is None:
            why = ("no sweep.json" if folder.sweep_json is None
                   else "its sweep.json records no cells (an older format)")
            grids.append({"sweep": folder.name, "folder": uri, "grid": f"unknown: {why}",
                          "trials": None, "trials_with_rows": mine.trial_id.nunique(),
                          "missing_cells": None})
            continue
        name = str(folder.sweep_json.get("name") or folder.name)
        reasons[mine.index] = [_reason(r, name, cells) for r in mine.itertuples()]
        good = mine[reasons[mine.index] == ""]
        have = set(zip(good.trial_id, good.quant, good.model_kind))
        failed = set(good.trial_id[good.status != "ok"])
        gaps = [{"sweep": name, "trial_id": t, "holdout": str(c.get("holdout")),
                 "seed": c.get("seed"), "variant": c.get("variant"),
                 "ablation": c.get("ablation") or "", "quant": q, "model_kind": k}
                for t, c in cells.items() if t not in failed
                for q, k in c.get("rows", []) if (t, q, k) not in have]
        missing += gaps
        expected += [{"sweep": name, "holdout": str(c.get("holdout")), "seed": c.get("seed")}
                     for c in cells.values()]
        grids.append({"sweep": name, "folder": uri, "grid": "known", "trials": len(cells),
                      "trials_with_rows": good.trial_id.nunique(), "missing_cells": len(gaps)})
    bad = df[reasons != ""]
    rejected = (bad.assign(file=bad.source_file, reason=reasons[bad.index])
                .groupby(["file", "trial_id", "reason"], dropna=False).size()
                .rename("rows").reset_index())
    miss = pd.DataFrame(missing, columns=list(CELL_KEYS) + ["trial_id", "ablation"])
    miss = miss[["sweep", "trial_id", "holdout", "seed", "variant", "ablation", "quant",
                 "model_kind"]]
    miss = miss.sort_values(["sweep", "holdout", "seed"], key=lambda c: c.map(natural),
                            kind="stable").reset_index(drop=True)
    return df[reasons == ""].drop(columns="folder"), Audit(
        rejected=rejected, missing=miss, grids=pd.DataFrame(grids),
        expected=pd.DataFrame(expected, columns=["sweep", "holdout", "seed"]))


# --------------------------------------------------------------------------------- build

@dataclasses.dataclass
class ReportPaths:
    """What ``build_report`` wrote."""

    out_dir: str
    csv: dict[str, str] = dataclasses.field(default_factory=dict)  # table name -> path
    markdown: str | None = None
    html: str | None = None
    verdict: str | None = None
    images: list[str] = dataclasses.field(default_factory=list)
    rows: list[str] = dataclasses.field(default_factory=list)    # the copied rows and sweep.json


def rebuild_command(out_dir: str, names: list[str], formats=FORMATS,
                    latency: bool = False, published: bool = False) -> str:
    """The one command that rebuilds a report from the rows (latencies, published figures) it
    copied beside itself. It never carries ``--handedness``: that table also needs the sweep's
    .tflite files, which the rows only name, so a copy of the report cannot promise it."""
    fmt = "" if tuple(formats) == FORMATS else f" --format {','.join(formats)}"
    rows = " ".join(join(out_dir, ROWS, n) for n in names)
    idle = f" --latency {join(out_dir, LATENCY)}" if latency else ""
    beside = f" --published {join(out_dir, PUBLISHED)}" if published else ""
    return f"signbart report {rows} --out {out_dir} --overwrite{idle}{beside}{fmt}"


def _object_with_list(path: str, key: str, what: str, how: str) -> dict:
    """A JSON object holding a ``key`` list, or one sentence naming the file."""
    if not exists(path):
        raise UserError(f"{path}: no such {what} ({how})")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise UserError(f"{path}: not a {what} (a JSON object with a '{key}' list; {how})")
    return data


def read_latency(path: str) -> pd.DataFrame:
    """The ``models`` list of a ``benchmarks/bench_latency.py`` file, checked field by field."""
    data = _object_with_list(path, "models", "latency file",
                             "benchmarks/bench_latency.py writes one")
    out = []
    for i, m in enumerate(data["models"]):
        where = f"{path}: models[{i}]"
        if not isinstance(m, dict):
            raise UserError(f"{where}: expected an object, got {m!r}")
        for k in IDLE_KEYS:
            if not isinstance(m.get(k), str) or not m[k]:
                raise UserError(f"{where}.{k}: expected a name, got {m.get(k)!r}")
        for k in ("latency_ms_p50", "latency_ms_p90"):
            x = m.get(k)
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not (
                    math.isfinite(x) and x > 0):
                raise UserError(f"{where}.{k}: expected a positive number of ms, got {x!r}")
        out.append({k: m[k] for k in IDLE_KEYS + ["latency_ms_p50", "latency_ms_p90"]})
    table = pd.DataFrame(out, columns=IDLE_KEYS + ["latency_ms_p50", "latency_ms_p90"])
    twice = table[table.duplicated(IDLE_KEYS)]
    if len(twice):
        raise UserError(f"{path}: {' '.join(twice.iloc[0][IDLE_KEYS])} is timed twice")
    return table


def _range(x, where: str, ceiling: float | None) -> tuple[float, float]:
    """A published [low, high] (one number: both): finite, positive, low <= high <= ceiling."""
    pair = x if isinstance(x, list) and len(x) == 2 else [x, x]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               and v > 0 for v in pair) or pair[0] > pair[1] or (ceiling and pair[1] > ceiling):
        top = f" <= {ceiling:g}" if ceiling else ""
        raise UserError(f"{where}: expected a number or a [low, high] pair, 0 < low <= high{top}, "
                        f"got {x!r}")
    return float(pair[0]), float(pair[1])


def read_published(path: str) -> tuple[str, pd.DataFrame]:
    """Another work's published figures for this task (e.g. the reference implementation's
    "expected results"): a ``source`` sentence and ``figures``, each a ``quant`` mode with its
    ``top1`` range (fractions) and, optionally, a ``variant`` (else every variant's), a
    ``size_mb`` and a ``speedup`` range over FP32. Checked field by field."""
    data = _object_with_list(path, "figures", "file of published figures",
                             "a 'source' sentence and a 'figures' list: see the README's Reports")
    if not isinstance(data.get("source"), str) or not data["source"].strip():
        raise UserError(f"{path}: source: say whose figures these are and on what protocol")
    out = []
    for i, f in enumerate(data["figures"]):
        where = f"{path}: figures[{i}]"
        if not isinstance(f, dict):
            raise UserError(f"{where}: expected an object, got {f!r}")
        unknown = sorted(set(f) - {"variant", "quant", "top1", "size_mb", "speedup"})
        if unknown:
            raise UserError(f"{where}: unknown field {unknown[0]!r}")
        if f.get("quant") not in QUANT_MODES:
            raise UserError(f"{where}.quant: expected one of {', '.join(QUANT_MODES)}, "
                            f"got {f.get('quant')!r}")
        if not isinstance(f.get("variant", ""), str):
            raise UserError(f"{where}.variant: expected a variant name, got {f['variant']!r}")
        top1 = _range(f.get("top1"), f"{where}.top1", 1.0)
        size = (_range(f["size_mb"], f"{where}.size_mb", None)[0] if "size_mb" in f
                else math.nan)
        speed = _range(f["speedup"], f"{where}.speedup", None) if "speedup" in f else (
            math.nan, math.nan)
        out.append([f.get("variant", ""), f["quant"], *top1, size, *speed])
    return data["source"].strip(), pd.DataFrame(out, columns=PUBLISHED_KEYS)


def _check_published(path: str, figures: pd.DataFrame, s: Summary) -> None:
    """Every published figure must sit beside at least one arm, or it was meant for other
    inputs."""
    unused = sorted(set(range(len(figures))) - set(s.published.figure))
    if unused:
        f = figures.iloc[unused[0]]
        of = f"{f.variant} {f.quant}" if f.variant else f.quant
        raise UserError(f"{path}: figures[{unused[0]}] ({of}) is beside no SignBART arm of "
                        "these inputs: figures of another sweep?")


def _check_latency(path: str, idle: pd.DataFrame, s: Summary) -> None:
    """A latency file of another sweep must not be pooled: each of its arms is in the rows."""
    arms = set(map(tuple, s.summary[IDLE_KEYS].to_numpy()))
    foreign = [k for k in map(tuple, idle[IDLE_KEYS].to_numpy()) if k not in arms]
    if foreign:
        raise UserError(f"{path}: times {' '.join(foreign[0])}, which no row of these inputs "
                        f"is ({len(foreign)} such entries): a latency file of another sweep?")


def _identity(loaded: Loaded) -> list[list[str]]:
    """The sweeps a report is built from: (name, grid hash) each; same sweeps, same report."""
    return sorted([f.name, str((f.sweep_json or {}).get("hash") or "")]
                  for f in loaded.folders.values())


def _check_out(out_dir: str, loaded: Loaded, overwrite: bool) -> list[str]:
    """The files the report already in ``out_dir`` wrote (to replace); refuses to replace a
    report of other sweeps unless ``overwrite``."""
    previous = read_json(join(out_dir, MANIFEST))
    if isinstance(previous, dict):
        if previous.get("sweeps") != _identity(loaded) and not overwrite:
            built = ", ".join(n for n, _ in previous.get("sweeps", [])) or "other inputs"
            raise UserError(f"{out_dir}: holds a report of {built}, not of these inputs; pass "
                            "--overwrite to replace it (its files are removed)")
        return [str(f) for f in previous.get("files", [])]
    if not overwrite and any(exists(join(out_dir, f)) for f in ("summary.md", "report.html")):
        raise UserError(f"{out_dir}: holds a report without {MANIFEST}, so of unknown inputs; "
                        "pass --overwrite to write over it")
    return []


def _remove(out_dir: str, rels: list[str]) -> None:
    """Delete the old report's files ``rels`` and the folders they leave empty."""
    fs, root = filesystem(out_dir)
    for rel in rels:
        remove(join(out_dir, rel))
    for d in sorted({"/".join(r.split("/")[:i]) for r in rels
                     for i in range(1, r.count("/") + 1)}, key=len, reverse=True):
        path = f"{root}/{d}"
        if (fs.get_file_info(path).type == pafs.FileType.Directory
                and not fs.get_file_info(pafs.FileSelector(path))):
            fs.delete_dir(path)


def build_report(inputs: list[str], out_dir: str, formats=FORMATS,
                 overwrite: bool = False, handedness: str | None = None,
                 latency: str | None = None, published: str | None = None) -> ReportPaths:
    """Read and check the rows under ``inputs``, write the report to ``out_dir`` (a path or a
    URI), and copy the rows it used to ``out_dir/rows/<sweep>/``.

    csv: one file per ``Summary`` table; md: ``summary.md`` and the PNGs it links; html:
    ``report.html`` with its charts and summed confusion matrices embedded. Always:
    ``verdict.json``, ``report.json`` and each model's per-hold-out confusion counts as
    ``confusion/<model>.csv``. ``handedness`` (a dataset of left-handed signers' unmirrored
    clips) adds ``handedness.csv`` (``signbart.handedness``). ``latency`` (a file of
    ``benchmarks/bench_latency.py``) replaces the latencies timed inside the sweep with the
    idle machine's, and is copied to ``OUT/latency.json``. ``published`` (another work's
    figures, ``read_published``) adds ``published.csv`` and its section, and is copied to
    ``OUT/published.json``.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise UserError(f"report: unknown format {unknown[0]!r} (known: {', '.join(FORMATS)})")
    check_reachable(out_dir)          # before any work: a mistyped bucket is one sentence
    loaded = load(inputs)
    rows, checked = audit(loaded)
    if rows.empty:
        raise UserError(f"{', '.join(inputs)}: every row was rejected, e.g. "
                        f"{checked.rejected.file.iloc[0]}: {checked.rejected.reason.iloc[0]}")
    idle = read_latency(latency) if latency else None
    idle_bytes = read_bytes(latency) if latency else b""  # before OUT/latency.json is rewritten
    claims = read_published(published) if published else None
    claims_bytes = read_bytes(published) if published else b""
    previous = _check_out(out_dir, loaded, overwrite)
    used = sorted(set(rows.source_file))
    names = sorted({f.name for f in loaded.folders.values()})
    command = rebuild_command(out_dir, names, formats, latency=bool(latency),
                              published=bool(published))
    s = summarize(rows, checked, idle, claims)
    if latency:
        _check_latency(latency, idle, s)
    if published:
        _check_published(published, claims[1], s)
    if handedness:  # imports TensorFlow's TFLite interpreter: only when asked
        from signbart.handedness import handedness_table

        s = dataclasses.replace(s, handedness=handedness_table(s.rows, s.verdict["model"],
                                                               handedness))
    paths = ReportPaths(out_dir=out_dir)
    written: list[str] = []

    def put(rel: str, data: bytes | str) -> str:
        uri = join(out_dir, rel)
        (write_text if isinstance(data, str) else write_bytes)(uri, data)
        written.append(rel)
        return uri

    for rel in used:  # the rows travel with the report, as sweep folders
        paths.rows.append(put(f"{ROWS}/{rel}", read_bytes(loaded.files[rel])))
    for f in loaded.folders.values():
        if f.sweep_json is not None:
            paths.rows.append(put(f"{ROWS}/{f.name}/sweep.json",
                                  read_bytes(join(f.uri, "sweep.json"))))
    if latency:
        put(LATENCY, idle_bytes)
    if published:
        put(PUBLISHED, claims_bytes)
    if "csv" in formats:
        for name, table in s.csv_tables().items():
            paths.csv[name] = put(f"{name}.csv", table.to_csv(index=False))
    paths.verdict = put("verdict.json", _json(s.verdict))
    pictures = draw(s) if {"md", "html"} & set(formats) else []
    if "md" in formats:
        paths.images += [put(p.path, p.png) for p in pictures]
    folds = confusion_long(s.confusion)
    for model, path in confusion_files(s).items():
        put(path, folds[folds.model == model].drop(columns="model").to_csv(index=False))
    if "md" in formats:
        paths.markdown = put("summary.md", render_markdown(s, pictures, command, handedness))
    if "html" in formats:
        paths.html = put("report.html", render_html(s, pictures, command, handedness))
    _remove(out_dir, sorted(set(previous) - set(written)))
    write_json(join(out_dir, MANIFEST), {
        "format": 1, "inputs": list(inputs), "sweeps": _identity(loaded), "rebuild": command,
        "handedness": handedness, "latency": latency, "published": published,
        "files": sorted(written + [MANIFEST])})
    log.info("report: wrote %s (%d files; %d stale files of the previous report removed)",
             out_dir, len(written), len(set(previous) - set(written)))
    return paths


def _json(obj) -> str:
    return json.dumps(obj, indent=1, allow_nan=False) + "\n"


def read(inputs: list[str]) -> Summary:
    """The summary of the rows under ``inputs`` that belong to their sweeps' grids."""
    return summarize(*audit(load(inputs)))
