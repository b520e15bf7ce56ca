"""Saving the mapping file: the atomic, durable replace behind every admin write.

Owns the only way the mapping file is written: a temp file in the same directory, write,
fsync, `os.replace`, fsync of the directory, so a crash leaves the old file or the new one,
never a mix. Never validates or renders (the editor does), never follows a symlink, and
never leaves its temp file behind when it fails.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike[str], text: str, *, mode: int | None = None) -> None:
    """Replace the file at `path` with `text` (UTF-8) atomically and durably, or raise OSError changing nothing.

    Temp file in the same directory, write, flush, fsync, `os.replace`, fsync the directory.
    Keeps the old file's permission bits (and owner, where allowed); `mode` instead sets them
    (a private file is private from its first byte, never chmod-ed after the rename); a new
    file without `mode` gets 0644. Refuses anything but a regular file (a symlink is not
    followed: mounted ConfigMaps are read-only anyway).
    """
    target = os.fspath(path)
    try:
        st: os.stat_result | None = os.lstat(target)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise OSError(f"{target}: refusing to replace it: {what} (write to the real file instead)")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise OSError(f"{target}: text cannot be encoded as UTF-8: {e}") from e
    directory = os.path.dirname(target) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        try:
            os.fchmod(fd, mode if mode is not None else stat.S_IMODE(st.st_mode) if st is not None else 0o644)
            if st is not None and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(PermissionError):  # not ours to give away; the mode is kept anyway
                    os.fchown(fd, st.st_uid, st.st_gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
