"""SearchBatcher: concurrent searches share one call of the wrapped search, each caller gets its rows."""

from __future__ import annotations

import threading
import time

import faiss
import numpy as np
from pipeline.identity.search_batcher import SearchBatcher


class SlowIndex:
    """An exact index whose searches take a while, counting the calls and rows it gets."""

    def __init__(self, n: int = 500, d: int = 16):
        rng = np.random.default_rng(0)
        self.vectors = rng.standard_normal((n, d)).astype(np.float32)
        self.index = faiss.IndexFlatIP(d)
        self.index.add(self.vectors)
        self.calls: list[int] = []
        self.fail = False

    def search(self, rows: np.ndarray, k: int):
        self.calls.append(len(rows))
        time.sleep(0.05)
        if self.fail:
            raise RuntimeError("index gone")
        return self.index.search(rows, k)


def run_threads(search, queries: list[tuple[np.ndarray, int]]) -> list:
    answers: list = [None] * len(queries)
    start = threading.Barrier(len(queries))

    def ask(i: int) -> None:
        start.wait()
        try:
            answers[i] = search(*queries[i])
        except RuntimeError as exc:
            answers[i] = exc

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(queries))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_a_lone_caller_searches_at_once_with_its_own_rows():
    index = SlowIndex()
    batcher = SearchBatcher(index.search)
    rows = index.vectors[:3]
    scores, ids = batcher(rows, 4)
    assert index.calls == [3]
    expected = index.index.search(rows, 4)
    np.testing.assert_array_equal(ids, expected[1])
    np.testing.assert_array_equal(scores, expected[0])


def test_concurrent_callers_share_searches_and_each_gets_what_its_own_search_gives():
    index = SlowIndex()
    batcher = SearchBatcher(index.search)
    rng = np.random.default_rng(1)
    queries = [(index.vectors[rng.integers(0, 500, int(rng.integers(1, 6)))], 7) for _ in range(12)]
    answers = run_threads(batcher, queries)
    assert len(index.calls) < len(queries), index.calls  # scans were shared
    assert sum(index.calls) == sum(len(q) for q, _ in queries)  # every row searched once
    for (rows, k), (scores, ids) in zip(queries, answers):
        expected_scores, expected_ids = index.index.search(rows, k)
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)


def test_callers_with_another_k_are_never_merged():
    index = SlowIndex()
    batcher = SearchBatcher(index.search)
    queries = [(index.vectors[i : i + 2], 3 if i % 2 else 9) for i in range(8)]
    answers = run_threads(batcher, queries)
    for (rows, k), (scores, ids) in zip(queries, answers):
        assert ids.shape == (2, k)
        np.testing.assert_array_equal(ids, index.index.search(rows, k)[1])


def test_a_shared_search_that_fails_fails_each_of_its_callers_and_the_next_ones_search_again():
    index = SlowIndex()
    batcher = SearchBatcher(index.search)
    index.fail = True
    answers = run_threads(batcher, [(index.vectors[i : i + 1], 2) for i in range(6)])
    assert all(isinstance(a, RuntimeError) for a in answers)
    index.fail = False
    scores, ids = batcher(index.vectors[:1], 2)
    assert ids[0, 0] == np.argmax(index.vectors @ index.vectors[0])


def test_rows_per_search_are_capped():
    index = SlowIndex()
    batcher = SearchBatcher(index.search, max_rows=4)
    run_threads(batcher, [(index.vectors[i : i + 3], 2) for i in range(6)])
    assert max(index.calls) <= 4 and sum(index.calls) == 18


def test_a_store_answers_concurrent_searches_as_it_answers_each_alone(tmp_path):
    from pipeline.identity.store import CameraRecord, CameraTracks, EmbedderInfo, TrackStore
    from pipeline.types import TrackSummary

    rng = np.random.default_rng(2)
    d = 32
    feats = rng.standard_normal((300, d)).astype(np.float32)
    store = TrackStore.create(tmp_path / "store", EmbedderInfo("f", "test", d))
    summaries = [TrackSummary("cam", i + 1, i, i + 5, float(i), i + 5.0, 6, f, f[None], None)
                 for i, f in enumerate(feats)]
    store.write([CameraTracks(CameraRecord("cam", 0.0, False, "cam.mp4", 10.0, (64, 64), 400, "x"),
                              summaries, list(range(1, 301)))])
    queries = [(feats[i : i + 3], 5) for i in range(0, 24, 3)]
    alone = [store.search(rows, k) for rows, k in queries]
    together = run_threads(store.search, queries)
    for (_, ids_alone), (_, ids_together) in zip(alone, together):
        np.testing.assert_array_equal(ids_alone, ids_together)
