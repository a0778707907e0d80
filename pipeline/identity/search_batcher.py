"""Concurrent nearest-neighbour searches of one index, answered by shared scans.

An exact (flat) search is bound by reading every stored vector: one query row over 100k 512-d
tracks costs about the same as sixteen rows together (17 vs 24 ms on a 2-core machine). A server
answering eight track queries at once would read the index eight times; :class:`SearchBatcher`
lets the threads that call it while a search is running wait, and the next of them searches for
all the waiting rows in one call, then hands each caller its own rows of the result.

No thread is added and nothing waits on a timer: a caller alone searches at once. Requests are
grouped by ``k`` so every caller gets exactly what a search of its own rows with its ``k`` gives.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass(eq=False)  # compared by identity
class _Request:
    rows: np.ndarray  # (Q, D) float32
    k: int
    done: bool = False
    result: tuple[np.ndarray, np.ndarray] | None = None
    error: BaseException | None = None


class SearchBatcher:
    """``batcher(rows, k)`` answers as ``search(rows, k)`` would, sharing scans with concurrent callers."""

    def __init__(self, search: SearchFn, max_rows: int = 256):
        self._search = search
        self._max_rows = max_rows  # rows per shared search: bounds the (rows, k) result and the wait
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._busy = False

    def __call__(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores (Q, k) and ids (Q, k) for ``rows`` (Q, D), as the wrapped search returns them."""
        request = _Request(rows, k)
        with self._cond:
            self._pending.append(request)
            while self._busy and not request.done:
                self._cond.wait()
            if request.done:
                return self._answer(request)
            batch = self._take_batch(request)
            self._busy = True
        try:
            self._run(batch)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        return self._answer(request)

    def _take_batch(self, own: _Request) -> list[_Request]:
        """``own`` and the pending requests with its ``k``, oldest first, up to ``max_rows`` rows
        (lock held); the others wait for the next search."""
        batch, rows = [own], len(own.rows)
        for request in self._pending:
            if request is not own and request.k == own.k and rows + len(request.rows) <= self._max_rows:
                batch.append(request)
                rows += len(request.rows)
        self._pending = [r for r in self._pending if r not in batch]
        return batch

    def _run(self, batch: list[_Request]) -> None:
        try:
            scores, ids = self._search(np.concatenate([r.rows for r in batch]), batch[0].k)
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets the error
            for request in batch:
                request.error, request.done = exc, True
            return
        start = 0
        for request in batch:
            end = start + len(request.rows)
            request.result, request.done = (scores[start:end], ids[start:end]), True
            start = end

    @staticmethod
    def _answer(request: _Request) -> tuple[np.ndarray, np.ndarray]:
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result
