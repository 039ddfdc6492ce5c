"""User-facing errors: the CLI prints these as one sentence and exits 2 (bad input) or 1 (the
output cannot be written), never a traceback."""

import errno
import os


class UserError(Exception):
    """Bad input from the user: a file, a field or a flag. The message names it."""


class ConfigError(UserError):
    pass


class DatasetError(UserError):
    pass


class LeakError(RuntimeError):
    """The held-out signer's data was read before the final evaluation: a protocol bug."""


class StorageError(Exception):
    """The output cannot be written (disk full, read-only, no permission). The CLI prints the
    message as one sentence and exits 1: the input was fine, the place to write it was not."""


# errno values that mean "this place cannot take the write", reported as a StorageError
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                            errno.EPERM})


def storage_error(e: OSError, path, needed: int | None = None) -> StorageError:
    """One sentence for a failed write: what, where, and how much space it needed."""
    import shutil
    from pathlib import Path

    where = Path(path)
    text = f"{where}: cannot write ({os.strerror(e.errno) if e.errno else e}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        free = next((shutil.disk_usage(p).free for p in (where, *where.parents) if p.exists()),
                    None)
        text += (f"; {_mb(needed)} needed" if needed is not None else "") + \
            (f", {_mb(free)} free there" if free is not None else "")
    return StorageError(text + ")")


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 10_000 else f"{n} bytes"
