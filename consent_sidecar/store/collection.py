"""Automatic garbage collection paused while the write path builds a mapping in a worker thread.

Why: reading a mapping file (ruamel.yaml) allocates objects by the million, all alive until the
read ends. Every time those survivors grow by a quarter, CPython runs a full (generation 2)
collection that walks every live object holding the GIL, in whichever thread allocated: the
event loop thread waits as long. On a 100,000-destination mapping (1.7 MiB) one admin write
ran 12 full collections, the longest 3.7 s on a loaded host, freeing nothing; Decide stalled
for seconds although every step of the write ran in a worker thread (`bench.bench_limits
admin`). Paused for the length of the read, those collections never run; what the read built
is freed by reference counting when it is dropped.

The pause is counted (overlapping reads keep it until the last one ends) and bounded by the
read, itself bounded by the file's size limit. Meanwhile the decision path, which makes little
cyclic garbage, still frees everything else by reference counting; collection resumes after,
as it was (never enabled if something else had disabled it).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["collection_paused"]

_lock = threading.Lock()
_depth = 0
_resume = False  # enable again when the last pause ends (it was enabled when the first began)


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """No automatic garbage collection, in any thread, until the outermost of these ends."""
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()
