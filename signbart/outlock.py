"""One writer per output folder: an exclusive ``flock`` on ``OUT/.lock``.

``extract``, ``synth`` and ``import-pkl`` hold it for their whole run, so a second writer into
the same folder fails at once, naming the holder's PID, instead of both finishing and one
manifest silently replacing the other. The kernel drops the lock when its holder dies
(``kill -9`` included), so a stale ``.lock`` file never blocks a ``--resume``.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Self

from signbart.errors import UserError

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
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{self.out}: another signbart process (PID {holder}) is writing "
                            "this folder; wait for it to finish or choose another output "
                            "directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *_) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
