"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of either.

The data goes to a temporary file in the same directory (so the final rename cannot cross filesystems),
is fsynced, then renamed over the target; the directory is fsynced so the rename itself survives a crash.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, mode: int = 0o644, overwrite: bool = True) -> Iterator[BinaryIO]:
    """A binary file to write that appears at ``path`` atomically, with permission bits ``mode``, once the block
    ends without an error (an error leaves the old file, or none, and no temporary file).

    With ``overwrite=False`` an existing file is never replaced (``FileExistsError``): the check and the
    write are one step (a hard link), so two writers cannot both believe they created the file.
    """
    target = Path(path)
    directory = target.parent
    # mkstemp creates the file 0600, so a private key is never readable by others, even for an instant.
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            yield f
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp_name, target)
        else:
            try:
                os.link(tmp_name, target)
            except FileExistsError:
                raise
            except OSError:
                # Filesystems without hard links: fall back to check-then-rename (a narrow race, but the
                # file is still never half-written).
                if target.exists():
                    raise FileExistsError(f"{target} already exists") from None
                os.replace(tmp_name, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    _fsync_directory(directory)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically with permission bits ``mode`` (``atomic_file``)."""
    with atomic_file(path, mode=mode, overwrite=overwrite) as f:
        f.write(data)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some platforms cannot open a directory; the rename is still atomic there
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
