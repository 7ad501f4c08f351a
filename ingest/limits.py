"""The file-size limit, checked before a file is read (from `stat`, or a declared size).

`check_declared_size` is what a front end calls on an upload's declared size (a
Discord attachment's `size`) before downloading it; `read_within_limit` reads a
file from disk only after its size passed, and never more than the limit even if
the file grows meanwhile. Messages say the limit in the unit of RAGCORD_MAX_FILE_MB
(MB of 1,048,576 bytes: the 50 MB default is "50 MB").
"""

from __future__ import annotations

import stat
from pathlib import Path

from ingest.loaders import LoadError, _check_size


def check_declared_size(size: int, name: str, max_bytes: int) -> None:
    """Raise `LoadError` (a one-line message) if a file of `size` bytes is over the limit.

    The loaders' own size check, under a public name for the front ends.
    """
    _check_size(size, name, max_bytes)


def read_within_limit(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, refused from its `stat` size before anything is read.

    Only regular files: a FIFO or a device (/dev/zero) would block or never end.
    """
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise LoadError(f"{path.name} is not a regular file")
    check_declared_size(info.st_size, path.name, max_bytes)
    with path.open("rb") as fh:
        data = fh.read(max_bytes + 1)
    check_declared_size(len(data), path.name, max_bytes)  # it grew since the stat
    return data
