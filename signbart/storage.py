"""Where every file signbart writes goes through: one atomic write, for local paths and URIs.

A file is written to a hidden temp name beside its target and renamed into place, so a reader
(a report of a running sweep, a resumed extraction) sees the old file or the new one, never
half of one. A location is a local path or anything ``pyarrow.fs`` opens (``s3://``,
``gs://``, ``file://``): trials on other nodes write their rows straight to shared storage.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from signbart.errors import STORAGE_ERRNOS, StorageError, storage_error


def filesystem(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``location`` and the path inside it (local paths made absolute).

    A URI gets the filesystem pyarrow builds from the environment alone (credentials, region,
    ``AWS_ENDPOINT_URL`` for an S3-compatible server), so a user with a bucket needs nothing
    else. A URI pyarrow cannot open is a StorageError naming it.
    """
    location = str(location)
    if "://" in location:
        try:
            return pafs.FileSystem.from_uri(location)
        except (OSError, pa.ArrowException) as e:
            raise StorageError(f"{location}: cannot open this storage ({_first_line(e)})"
                               ) from None
    return pafs.LocalFileSystem(), os.path.abspath(location)


def check_reachable(location: str | Path) -> None:
    """Raise StorageError unless the bucket of URI ``location`` exists and its server answers.

    Called before Ray starts (and before a model or report is read), so a mistyped bucket or
    an endpoint that does not answer is one sentence, not a traceback after start-up. Local
    folders pass: they are made on the first write.
    """
    fs, path = filesystem(location)
    if isinstance(fs, pafs.LocalFileSystem):
        return
    bucket = path.split("/", 1)[0]
    try:
        info = fs.get_file_info(bucket)
    except OSError as e:
        raise StorageError(f"{location}: the storage does not answer ({_first_line(e)})"
                           ) from None
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{location}: bucket {bucket!r} does not exist (signbart never "
                           "creates buckets: create it, or fix the name)")


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def with_suffix(location: str | Path, suffix: str) -> str:
    """``location`` with its file name's extension replaced by ``suffix``, for a local path or
    a URI alike (``pathlib`` would turn ``s3://b/m.tflite`` into ``s3:/b/m.json``)."""
    head, sep, name = str(location).rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return f"{head}{sep}{stem}{suffix}"


def join(root: str | Path, *parts: str) -> str:
    """``root/part/...`` for a local path or a URI alike."""
    return "/".join([str(root).rstrip("/"), *parts])


def rows_uri(sweep: str, trial_id: str, failed: bool = False) -> str:
    """``<sweep>/results/<trial_id>.parquet`` (or ``.failed.parquet``): the file whose
    existence makes a trial finished."""
    return join(sweep, "results",
                f"{trial_id}.failed.parquet" if failed else f"{trial_id}.parquet")


def _write(location: str | Path, fill: Callable[[io.RawIOBase], None],
           needed: int | None = None) -> str:
    """The one atomic write: ``fill`` a hidden temp file beside ``location``, then rename it.
    On any failure the temp file is removed; a full, read-only or forbidden place is a
    StorageError naming ``location`` and the ``needed`` bytes, not a raw OSError."""
    fs, path = filesystem(location)
    parent, _, name = path.rpartition("/")
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        fs.create_dir(parent, recursive=True)
        with fs.open_output_stream(tmp) as stream:
            fill(stream)
        fs.move(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                fs.delete_file(tmp)
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            raise storage_error(e, location, needed) from None
        raise
    return str(location)


def write_bytes(location: str | Path, data: bytes) -> str:
    return _write(location, lambda f: f.write(data), len(data))


def write_text(location: str | Path, text: str) -> str:
    return write_bytes(location, text.encode())


def write_json(location: str | Path, obj) -> str:
    """``obj`` as indented JSON with sorted keys (values JSON lacks, such as times, as text)."""
    return write_text(location, json.dumps(obj, indent=1, sort_keys=True, default=str))


def write_parquet(location: str | Path, table: pa.Table | pd.DataFrame) -> str:
    """A table, or a DataFrame without its index, as Parquet."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    return _write(location, lambda f: pq.write_table(table, f))


def write_npy(location: str | Path, array: np.ndarray) -> str:
    """``array`` in ``.npy`` format, never pickled (so it can be memory-mapped and trusted)."""
    return _write(location, lambda f: np.save(f, array, allow_pickle=False), array.nbytes + 128)


def read_json(location: str | Path):
    """The JSON at ``location``, or None when it is missing or unreadable."""
    fs, path = filesystem(location)
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read())
    except (OSError, json.JSONDecodeError):
        return None


def read_bytes(location: str | Path) -> bytes:
    """The bytes of the file at ``location``; FileNotFoundError when there is none."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(location))
    with fs.open_input_stream(path) as f:
        return f.read()


def exists(location: str | Path) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def remove(location: str | Path) -> None:
    """Delete the file at ``location`` if there is one."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_file(path)


def remove_temp_files(folder: str | Path) -> None:
    """Delete the temp files ``_write`` left in ``folder`` when its process died mid-write
    (``kill -9``). Only while holding the folder's ``OutputLock``: no live writer owns them."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def move_into(src: str | Path, dst: str | Path, names: list[str]) -> None:
    """Rename ``names`` from folder ``src`` into folder ``dst`` in order (same filesystem): a
    folder written aside is published this way, its last name being the commit point."""
    for name in names:
        os.replace(Path(src) / name, Path(dst) / name)
