"""reid.progress: bars redraw rarely into log files and pipes, as usual on a terminal."""

import io
import time

from reid.progress import LOG_INTERVAL_S, _is_terminal, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _redraws(out: io.StringIO, seconds: float) -> int:
    for _ in progress_bar(range(30), file=out, desc="work"):
        time.sleep(seconds / 30)
    return out.getvalue().count("\r")


def test_a_bar_into_a_file_redraws_at_most_once_a_minute():
    logged = _redraws(io.StringIO(), 0.6)
    shown = _redraws(_Terminal(), 0.6)
    assert logged <= 2 < shown  # the first draw and the last; a terminal sees it move every 0.1 s
    logged_bar = progress_bar(file=io.StringIO())
    assert logged_bar.mininterval == logged_bar.maxinterval == LOG_INTERVAL_S  # the monitor thread's redraws too
    assert progress_bar(file=io.StringIO(), mininterval=1).mininterval == 1  # a caller's own pace stays


def test_a_closed_stream_or_one_without_isatty_counts_as_no_terminal():
    closed = io.StringIO()
    closed.close()
    assert not _is_terminal(closed) and not _is_terminal(object()) and _is_terminal(_Terminal())
