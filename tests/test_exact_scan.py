"""The bf16 scan in front of the exact index answers exactly as FAISS's flat search does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pipeline.identity.bf16_scan as bf16_scan
import pipeline.identity.exact_scan as exact_scan
from pipeline.config import StoreConfig
from pipeline.identity.bf16_scan import Bf16Scan
from pipeline.identity.exact_scan import exact_searcher
from pipeline.identity.faiss_index import build_index
from pipeline.identity.store import CameraRecord, CameraTracks, EmbedderInfo, TrackStore
from pipeline.types import TrackSummary


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors in groups of 1-5 around random centres, as a store's tracks of one person."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // 3 + 1, dim), dtype=np.float32)
    noise = 0.6 * rng.standard_normal((n, dim), dtype=np.float32) / np.sqrt(dim)
    return unit(centres[rng.integers(0, len(centres), n)] + noise)


def assert_same_answers(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    """Equal scores (fp32 rounding apart) and the same ids, but where two scores tie."""
    (scores, ids), (ref_scores, ref_ids) = got, want
    np.testing.assert_allclose(scores, ref_scores, atol=2e-6)
    for row in range(len(ids)):
        differ = ids[row] != ref_ids[row]
        if differ.any():  # only vectors whose scores tie with another's may trade places
            tied = np.abs(ref_scores[row][:, None] - ref_scores[row][None, :]) < 2e-6
            assert (tied.sum(axis=1)[differ] > 1).all(), (row, np.flatnonzero(differ))
            assert set(ids[row][scores[row] > ref_scores[row, -1] + 2e-6]) <= set(ref_ids[row])


@pytest.mark.parametrize("k", [1, 10, 200, 1000])  # 1000: most of the index, FAISS answers
def test_bf16_scan_returns_the_flat_search_answers(k):
    vectors = clustered(6000, 128, seed=0)
    keys = np.arange(len(vectors), dtype=np.int64) * 7 + 3  # ids are not positions
    index = build_index(vectors, keys, StoreConfig(index="flat"))
    rng = np.random.default_rng(1)
    queries = unit(vectors[rng.integers(0, len(vectors), 30)] + 0.3 * rng.standard_normal((30, 128), dtype=np.float32) / np.sqrt(128))
    queries[0] = unit(rng.standard_normal(128, dtype=np.float32))  # far from everything: a dense band
    assert_same_answers(Bf16Scan(index).search(queries, k), index.search(queries, k))


def test_bf16_scan_is_exact_where_bf16_cannot_tell_vectors_apart():
    """Hundreds of vectors that differ below bf16's resolution: the band overflows, FAISS answers."""
    rng = np.random.default_rng(2)
    base = unit(rng.standard_normal(64, dtype=np.float32))
    near = unit(base + 1e-4 * rng.standard_normal((900, 64), dtype=np.float32))
    vectors = np.concatenate([near, clustered(4000, 64, seed=3)])
    index = build_index(vectors, np.arange(len(vectors), dtype=np.int64), StoreConfig(index="flat"))
    queries = np.stack([base, unit(base + 0.01 * rng.standard_normal(64, dtype=np.float32)), vectors[2000]])
    for k in (5, 50):
        assert_same_answers(Bf16Scan(index).search(queries, k), index.search(queries, k))


def test_the_rounding_bound_holds_for_every_score():
    """|fp32 score - bf16 score| <= a + b |bf16 score|, the bound the scan prunes with, for every
    pair, also for vectors of large and tiny entries (one heavy coordinate, sparse rows)."""
    rng = np.random.default_rng(4)
    vectors = clustered(3000, 256, seed=5)
    vectors[:50] = unit(np.eye(256, dtype=np.float32)[:50] * 20 + rng.standard_normal((50, 256), dtype=np.float32) * 0.01)
    vectors[50:100] = unit(np.where(rng.random((50, 256)) < 0.05, rng.standard_normal((50, 256)), 0).astype(np.float32) + 1e-3)
    index = build_index(vectors, np.arange(len(vectors), dtype=np.int64), StoreConfig(index="flat"))
    scan = Bf16Scan(index)
    queries = torch.from_numpy(np.concatenate([vectors[:60], clustered(40, 256, seed=6)]))
    rounded = queries.to(torch.bfloat16)
    rough = scan.rough_scores(rounded).float()
    exact = queries.double() @ torch.from_numpy(vectors).double().T
    a, b = scan._input_bound(queries, rounded)[:, None].double(), bf16_scan._SPARE * bf16_scan._OUTPUT_ROUNDING
    slack = a + b * rough.double().abs() - (exact - rough.double()).abs()
    assert float(slack.min()) >= 0
    assert float(slack.min()) < float(a.max())  # and it is not vacuous: some score comes close to it


def test_exact_searcher_uses_the_scan_only_for_large_flat_cpu_indexes(monkeypatch):
    vectors = clustered(500, 32, seed=7)
    keys = np.arange(500, dtype=np.int64)
    flat = build_index(vectors, keys, StoreConfig(index="flat"))
    ivf = build_index(vectors, keys, StoreConfig(index="ivf", ivf_nlist=4))
    assert exact_searcher(flat, True) == flat.search  # fewer than MIN_VECTORS
    monkeypatch.setattr(exact_scan, "MIN_VECTORS", 100)
    monkeypatch.setattr(exact_scan, "bf16_matmul_is_fast", lambda: True)
    assert isinstance(exact_searcher(flat, True).__self__, Bf16Scan)
    assert exact_searcher(flat, False) == flat.search  # store.bf16_scan: false
    assert exact_searcher(ivf, True) == ivf.search
    monkeypatch.setattr(exact_scan, "bf16_matmul_is_fast", lambda: False)
    assert exact_searcher(flat, True) == flat.search


def test_store_answers_the_same_with_and_without_the_bf16_scan(tmp_path, monkeypatch):
    monkeypatch.setattr(exact_scan, "MIN_VECTORS", 100)
    monkeypatch.setattr(exact_scan, "bf16_matmul_is_fast", lambda: True)
    features = clustered(400, 64, seed=8)
    embedder = EmbedderInfo("fp", "test", 64)
    summaries = [TrackSummary("cam", i + 1, i, i + 9, i / 10, i / 10 + 0.9, 10, f, f[None]) for i, f in enumerate(features)]
    record = CameraRecord("cam", 0.0, False, "cam.mp4", 10.0, (64, 64), 500, "cam")
    TrackStore.create(tmp_path / "store", embedder).write([CameraTracks(record, summaries, list(range(1, 401)))])
    queries = features[:12] + 0.05
    answers = {}
    for on in (True, False):
        store = TrackStore.open(tmp_path / "store", config=StoreConfig(bf16_scan=on))
        answers[on] = store.search(queries, 25)
        assert (store._index_search == store._index.search) is not on
    assert_same_answers(answers[True], answers[False])
