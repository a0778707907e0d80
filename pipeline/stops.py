"""Stops (Ctrl-C, SIGTERM) held off while writes that belong together are made."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


@contextmanager
def stops_held():
    """Hold Ctrl-C (and SIGTERM where the CLI stops on it) that arrive while the block runs, and
    act on them once it ends: for writes that must happen together (every sink gets a frame or
    none; the store's commit and the camera folders that follow it). Only in the main thread
    (where Python runs signal handlers), for signals whose handler is Python's."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    previous = {s: handler for s, handler in previous.items() if callable(handler)}
    for s in previous:
        signal.signal(s, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for signum in held[:1]:  # the first stop held is acted on now (as if it came now)
            previous[signum](signum, None)
