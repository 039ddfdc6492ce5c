"""One writer per output folder: an exclusive ``flock`` on ``OUT/.lock``, or on an object
store (which has no ``flock``) a lease object.

``extract``, ``synth``, ``import-pkl`` and ``sweep`` (on ``<storage>/<name>/``) hold it for
their whole run, so a second writer into the same folder fails at once, naming the holder's
PID and host, instead of both finishing and one file silently replacing the other. The kernel
drops the lock when its holder dies (``kill -9`` included), so a stale ``.lock`` file never
blocks a ``--resume``; a lease expires instead (``LEASE_SECONDS`` after its last renewal).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Self

from signbart.errors import UserError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class OutputLock:
    """``with OutputLock(out):`` creates ``out`` if needed and holds its lock until exit."""

    def __init__(self, out):
        self.out = Path(out)
        self._fd: int | None = None

    def __enter__(self) -> Self:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, _, host = (os.pread(fd, 300, 0).decode(errors="replace").strip()
                            or "unknown").partition(" ")
            os.close(fd)
            raise UserError(f"{self.out}: another signbart process (PID {pid}) is writing "
                            f"this folder{f' (on {host})' if host else ''}; wait for it to "
                            "finish or choose another output directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *_) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


LEASE_FILE = ".lease.json"
LEASE_SECONDS = 120.0   # a lease not renewed for this long is stale: its holder is gone


def writer_lock(location: str):
    """The one-writer lock of a sweep folder: ``OutputLock`` on a local path (or ``file://``),
    an ``S3Lease`` on ``s3://``; other URIs have neither, and say so."""
    if "://" not in location or location.startswith("file://"):
        return OutputLock(location.removeprefix("file://"))
    if location.startswith("s3://"):
        return S3Lease(location)
    log.warning("%s: no lock on this kind of storage; make sure only one sweep writes here",
                location)
    return contextlib.nullcontext()


def _s3_client(uri: str):
    """A boto3 client and (bucket, key prefix) for ``uri``. boto3 reads the same settings
    pyarrow does (``AWS_ENDPOINT_URL``, ``AWS_REGION``, credentials, ``~/.aws``)."""
    import boto3

    if not logging.getLogger("signbart").isEnabledFor(logging.DEBUG):
        for name in ("boto3", "botocore"):   # "Found credentials in ...", at INFO
            logging.getLogger(name).setLevel(logging.WARNING)
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return boto3.session.Session().client("s3"), bucket, prefix.strip("/")   # thread-safe


class S3Lease:
    """``with S3Lease("s3://bucket/sweep"):`` holds ``.lease.json`` there, renewed every
    quarter of ``LEASE_SECONDS`` while the block runs.

    It is created with a conditional put (``If-None-Match: *``), so of two sweeps starting at
    once exactly one gets it; a lease not renewed for ``LEASE_SECONDS`` is taken over with
    ``If-Match`` on its ETag (again exactly one winner). A store that answers
    ``NotImplemented`` to conditional writes gets a plain put instead, with a warning: then a
    sweep started while another is running is still refused, but two started within the same
    second may both run.
    """

    def __init__(self, uri: str, seconds: float = LEASE_SECONDS):
        self.uri, self.seconds = uri.rstrip("/"), seconds
        self._etag: str | None = None
        self._token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._client, self._bucket, prefix = _s3_client(self.uri)
        self._key = f"{prefix}/{LEASE_FILE}" if prefix else LEASE_FILE
        try:
            self._etag = self._put(IfNoneMatch="*")
        except Exception as e:   # botocore's ClientError, imported with boto3
            if _code(e) == "NotImplemented":
                log.warning("%s: the store has no conditional writes; the lease is a plain "
                            "put (see sweeps/README.md)", self.uri)
                self._etag = self._put()
            elif _code(e) in ("PreconditionFailed", "412"):
                self._take_over()
            else:
                raise self._error(e) from None
        self._thread = threading.Thread(target=self._renew, daemon=True, name="lease")
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._etag is not None:
            holder, etag = self._read()
            if holder and holder.get("token") == self._token:
                self._client.delete_object(Bucket=self._bucket, Key=self._key)
            self._etag = None

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "token": self._token, "renewed": now,
                           "expires": now + self.seconds}).encode()

    def _put(self, **condition) -> str:
        return self._client.put_object(Bucket=self._bucket, Key=self._key, Body=self._body(),
                                       ContentType="application/json", **condition)["ETag"]

    def _read(self) -> tuple[dict | None, str | None]:
        try:
            got = self._client.get_object(Bucket=self._bucket, Key=self._key)
        except Exception as e:
            if _code(e) in ("NoSuchKey", "404"):
                return None, None
            raise self._error(e) from None
        try:
            return json.loads(got["Body"].read()), got["ETag"]
        except ValueError:
            return {}, got["ETag"]

    def _take_over(self) -> None:
        holder, etag = self._read()
        if holder is None:   # released between our put and our read: try once more
            self._etag = self._put(IfNoneMatch="*")
            return
        left = float(holder.get("expires", 0)) - time.time()
        if left > 0:
            raise UserError(f"{self.uri}: another signbart process (PID {holder.get('pid')} on "
                            f"{holder.get('host')}) is writing this sweep (its lease "
                            f"{LEASE_FILE}, renewed while it runs, expires in {left:.0f} s "
                            "unless renewed); wait for it to finish or choose another name")
        try:
            self._etag = self._put(IfMatch=etag)
        except Exception as e:
            if _code(e) in ("PreconditionFailed", "412"):
                raise UserError(f"{self.uri}: another signbart sweep took over the stale lease "
                                f"{LEASE_FILE} first; wait for it to finish") from None
            raise self._error(e) from None
        log.warning("%s: took over a stale lease (PID %s on %s, not renewed for %.0f s)",
                    self.uri, holder.get("pid"), holder.get("host"),
                    time.time() - float(holder.get("renewed", 0)))

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            try:
                self._etag = self._put(IfMatch=self._etag)
            except Exception as e:
                log.error("%s: could not renew the lease (%s): another sweep may take over "
                          "after %.0f s", self.uri, _code(e) or e, self.seconds)

    def _error(self, e: Exception) -> UserError:
        why = getattr(e, "response", {}).get("Error", {}).get("Message") or str(e)
        return UserError(f"{self.uri}: cannot write the sweep's lease {LEASE_FILE} "
                         f"({_code(e) or type(e).__name__}: {why})")


def _code(e: Exception) -> str:
    """An S3 error's code (``PreconditionFailed``, ``NoSuchBucket``), '' for other errors."""
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
