"""Writing and reading the trust files: whole or not at all, private ones with mode 0600.

A file is first written under a hidden temporary name in its folder, flushed, given its mode,
then moved into place: a reader sees the old content or the new, never half of it. A file that
holds a private key is written with mode 0600 and read only when neither group nor others may
access it (checked on the open file, so the check and the read concern the same file).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

__all__ = ["PRIVATE", "PUBLIC", "FileModeError", "check_private", "read_private", "write_atomic"]

PRIVATE = 0o600
"""Mode of files that hold a private key: read and write for the owner only."""

PUBLIC = 0o644
"""Mode of files anyone may read: certificates, the CRL, the register."""


class FileModeError(ValueError):
    """A file that holds a private key is accessible by group or others."""


def write_atomic(path: Path, data: bytes, mode: int, *, replace: bool = True) -> None:
    """Write ``data`` to ``path`` with exactly ``mode``, atomically.

    Parameters
    ----------
    path
        The file to write; its folder must exist.
    data
        The whole content.
    mode
        The permission bits the file gets (not reduced by the umask).
    replace
        Whether an existing file is replaced; when false, an existing file is an error.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``replace`` is false.
    """
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temp, path)
        else:
            os.link(temp, path)  # fails if path exists, unlike a rename
    finally:
        if os.path.lexists(temp):
            os.unlink(temp)


def check_private(path: Path) -> None:
    """Check, without reading it, that group and others have no access to a private file.

    Raises
    ------
    FileModeError
        If the file's mode grants anything to group or others.
    OSError
        If the file cannot be examined (e.g. ``FileNotFoundError``).
    """
    _check_mode(path, os.stat(path).st_mode)


def read_private(path: Path) -> bytes:
    """Read a file that holds a private key, refusing it when group or others may access it.

    Raises
    ------
    FileModeError
        If the file's mode grants anything to group or others; the message names the file,
        its mode and the fix.
    OSError
        If the file cannot be opened (e.g. ``FileNotFoundError``).
    """
    with open(path, "rb") as handle:
        _check_mode(path, os.fstat(handle.fileno()).st_mode)
        return handle.read()


def _check_mode(path: Path, st_mode: int) -> None:
    mode = stat.S_IMODE(st_mode)
    if mode & 0o077:
        raise FileModeError(
            f"{path} holds a private key but is accessible by group or others "
            f"(mode {mode:04o}); run 'chmod 600 {path}'"
        )
