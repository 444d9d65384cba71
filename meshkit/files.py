"""Private files created once: a key or a secret that every later start reuses."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def create_private_file(path: Path, data: bytes) -> bool:
    """Create path holding data with mode 0600 unless it exists; True when this call created it.

    Nobody ever reads a partial file, and when several processes race, the first file published
    wins and is never replaced.
    """
    # mkstemp creates the file with mode 0600; os.link publishes it atomically and fails when
    # another process won the race, in which case that process's file is kept.
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
            return True
        return False
    finally:
        os.unlink(temp)
