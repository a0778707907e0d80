"""Progress bars for long work: tqdm on stderr that stays quiet in log files.

On a terminal a bar redraws up to ten times a second. Where stderr is a pipe or a file (``nohup``,
CI, ``2> log``) every redraw is kept: a bar of an hours-long run wrote megabytes of them, so there
it redraws at most once every :data:`LOG_INTERVAL_S` seconds (and when it closes).
"""

from __future__ import annotations

import sys
from typing import IO, Any, Iterable

from tqdm import tqdm

LOG_INTERVAL_S = 60.0  # seconds between redraws into a file or pipe


def progress_bar(iterable: Iterable | None = None, *, file: IO | None = None, **options: Any) -> tqdm:
    """``tqdm(iterable, **options)`` on ``file`` (stderr), as wide as the terminal, redrawn at most
    once a minute where ``file`` is not a terminal (``options`` may still set ``mininterval``)."""
    file = sys.stderr if file is None else file
    if not _is_terminal(file):  # tqdm's monitor also redraws after maxinterval (10 s) without one
        options.setdefault("mininterval", LOG_INTERVAL_S)
        options.setdefault("maxinterval", max(LOG_INTERVAL_S, options["mininterval"]))
    options.setdefault("dynamic_ncols", True)
    return tqdm(iterable, file=file, **options)


def _is_terminal(file: IO) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
