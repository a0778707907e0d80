"""Counted words for messages and reports: ``plural(1, "track")`` is ``"1 track"``."""

from __future__ import annotations


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
