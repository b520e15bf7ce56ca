"""A file's state as the watchers compare it, never by mtime alone: its stat key and its content hash.

`stat_key` is (inode, size, mtime_ns) behind any symlinks; `content_hash` the sha256 of the
regular file's content (optionally only as much as a size limit needs to tell). The mapping
watcher, the principals watcher and the admin write path (is the file still the one it
loaded?) read files through these. Blocking; never opens a FIFO or a device for reading.
"""

from __future__ import annotations

import hashlib
import os
import stat

__all__ = ["StatKey", "content_hash", "stat_key"]

StatKey = tuple[int, int, int] | None

_CHUNK = 1 << 20  # bytes read at a time


def stat_key(path: str) -> StatKey:
    """(inode, size, mtime_ns) of the file behind `path`, or None when it cannot be stat'ed."""
    try:
        st = os.stat(path)  # follows symlinks: a ..data swap changes the target's identity
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def content_hash(path: str, max_bytes: int | None = None) -> str | None:
    """sha256 hex of the regular file behind `path`, or of its first `max_bytes + 1` bytes (blocking; never
    on a FIFO or device); None when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        digest = hashlib.sha256()
        left = None if max_bytes is None else max_bytes + 1  # None: up to the file's end
        while (size := _CHUNK if left is None else min(left, _CHUNK)) and (chunk := os.read(fd, size)):
            digest.update(chunk)
            if left is not None:
                left -= len(chunk)
        return digest.hexdigest()
    except OSError:
        return None
    finally:
        os.close(fd)
