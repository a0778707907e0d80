"""Words for messages and reports: counted (``plural(1, "track")`` is ``"1 track"``), times on a
run's clock (``clock_text``), an error's first line (``first_line``).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta


def plural(n: int, word: str, words: str | None = None) -> str:
    """``"1 track"``, ``"2 tracks"``; ``words`` for irregular plurals (``identity``/``identities``).

    >>> plural(1, "track"), plural(0, "camera"), plural(3, "identity", "identities")
    ('1 track', '0 cameras', '3 identities')
    """
    return f"{n} {word if n == 1 else (words or word + 's')}"


def numbered(word: str, numbers: list[int]) -> str:
    """``"track 4"``, ``"tracks 1, 3"``: ``word`` in the number of ``numbers``, then them.

    >>> numbered("track", [4]), numbered("track", [1, 3])
    ('track 4', 'tracks 1, 3')
    """
    return f"{word if len(numbers) == 1 else word + 's'} {', '.join(map(str, numbers))}"


def first_line(exc: BaseException) -> str:
    """An exception's message as one line (its type's name when it has none).

    >>> first_line(ValueError("bad\\nmore")), first_line(KeyError())
    ('bad', 'KeyError')
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def clock_text(seconds: float, origin: str | None = None) -> str:
    """``seconds`` on the run's clock as ``[-]hh:mm:ss.s``, or as a date and time (to 0.1 s, in the
    zone the cameras file wrote) when the clock's ``origin`` (ISO 8601) is known.

    >>> clock_text(3725.25), clock_text(-24.4), clock_text(22.96, "2024-05-01 08:00:00")
    ('01:02:05.3', '-00:00:24.4', '2024-05-01 08:00:23.0')
    >>> clock_text(22.96, "2024-05-01 08:00:00.500000+02:00"), clock_text(-0.5, "2024-05-01 00:00:00"), clock_text(0.25)
    ('2024-05-01 08:00:23.5+02:00', '2024-04-30 23:59:59.5', '00:00:00.3')
    """
    if origin is not None:
        try:
            when = datetime.fromisoformat(origin) + timedelta(seconds=seconds)
            tenths = math.floor(when.microsecond / 100_000 + 0.5)  # halves up, as the serve page; 10: the next second
            when = when.replace(microsecond=0) + timedelta(seconds=tenths / 10)
        except OverflowError:  # past year 9999: seconds on the run's clock instead
            return clock_text(seconds)
        offset = when.strftime("%z")  # "+0200", or "" without a zone
        zone = f"{offset[:3]}:{offset[3:5]}" if offset else ""
        return f"{when:%Y-%m-%d %H:%M:%S}.{when.microsecond // 100_000}{zone}"
    tenths = math.floor(abs(seconds) * 10 + 0.5)  # halves up, as the serve page
    minutes, tenths = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    return f"{'-' if seconds < 0 and tenths + minutes + hours else ''}{hours:02d}:{minutes:02d}:{tenths / 10:04.1f}"


def counting_order(name: str) -> tuple:
    """Sort key putting names in the order people count them: camera ``cam2`` before ``cam10``, frame
    ``2.jpg`` before ``10.jpg``.

    >>> sorted(["cam10", "cam2", "door", "cam1"], key=counting_order), sorted(["Seq3", "seq10", "seq1"], key=counting_order)
    (['cam1', 'cam2', 'cam10', 'door'], ['seq1', 'Seq3', 'seq10'])
    >>> sorted(["floor1²", "floor1"], key=counting_order)  # "²" is a digit but no number
    ['floor1', 'floor1²']
    >>> sorted(["1700000000.1.jpg", "1700000000.05.jpg"], key=counting_order)  # a time stamp's digits after its "."
    ['1700000000.05.jpg', '1700000000.1.jpg']
    >>> sorted(["cam1.10", "cam1.9"], key=counting_order)  # numbering, not a fraction
    ['cam1.9', 'cam1.10']
    """
    parts = [part for part in re.split(r"(\d+)", name) if part]
    folded = []
    for i, part in enumerate(parts):
        if not part.isdecimal():
            folded.append((1, 0, part.casefold()))
        elif i == 2 and parts[1] == "." and parts[0].isdecimal():  # a time stamp's fraction: 1700000000.05.jpg
            folded.append((0, float(f"0.{part}"), ""))
        else:
            folded.append((0, int(part), ""))
    return tuple(folded), name  # ties (cam01 and cam1, Cam and cam): by the name itself
