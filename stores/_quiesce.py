"""Let the Rust transport's threads leave Python before the interpreter finalizes.

obstore completes each request on a tokio thread that takes the GIL to hand the result to
zarr's event loop. A thread that asks for the GIL once Python has begun to finalize is ended
with ``pthread_exit``, whose forced unwinding through Rust frames aborts the whole process:
a script whose work is done and whose output is written exits with SIGABRT (-6) instead of
0, a few times in a hundred runs (CPython gh-87135; Python 3.14 parks such threads instead).
The last request of a program is enough: its thread is still inside
``call_soon_threadsafe`` when the main thread, already given the result, exits.

:func:`settle` runs in the stores' ``atexit`` hook (before finalization, after requests
still pending were given their time or cancelled) once :func:`register` recorded that an
obstore store was opened. It waits, briefly and boundedly, until no storage request is in
flight (:func:`inflight` counts them) and no thread unknown to :mod:`threading` is running
Python code, then yields the GIL once more for threads just woken by a cancellation.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator

__all__ = ["inflight", "register", "settle"]

_lock = threading.Lock()
_count = 0
_used = False

#: Longest wait at exit for requests still in flight (a program ended mid-query).
INFLIGHT_WAIT = 2.0
#: Longest wait at exit for foreign threads to leave Python code.
FOREIGN_WAIT = 1.0
#: A last release of the GIL for threads woken by a cancellation, not yet in Python.
GRACE = 0.02


@contextlib.contextmanager
def inflight() -> Iterator[None]:
    """Count one storage request as in flight while the block runs."""
    global _count
    with _lock:
        _count += 1
    try:
        yield
    finally:
        with _lock:
            _count -= 1


def _foreign_threads_in_python() -> set[int]:
    """Threads running Python code that :mod:`threading` did not start (tokio's)."""
    known = {t.ident for t in threading.enumerate()}
    return {ident for ident in sys._current_frames() if ident not in known}


def settle(*, inflight_wait: float = INFLIGHT_WAIT, foreign_wait: float = FOREIGN_WAIT) -> None:
    """Wait (bounded) until no request is in flight and no foreign thread runs Python;
    nothing to do in a process that opened no obstore store."""
    if not _used:
        return
    start = time.monotonic()
    while _count and time.monotonic() - start < inflight_wait:
        time.sleep(0.005)
    start = time.monotonic()
    while _foreign_threads_in_python() and time.monotonic() - start < foreign_wait:
        time.sleep(0.005)
    time.sleep(GRACE)


def register() -> None:
    """Record that an obstore store was opened: :func:`settle` has work to do at exit."""
    global _used
    _used = True
