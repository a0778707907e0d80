"""evaluate_ranking: parity with fast-reid's numpy eval_market1501, hand-computed cases, the
documented behaviour on ties and short galleries, and input errors."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from reid.errors import CrosscamError
from reid.evaluation import evaluate_ranking

FASTREID_EVALUATION = (
    Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    / "site-packages" / "fastreid" / "evaluation"
)


def load_fastreid_module(name: str):
    """fast-reid's ``evaluation/<name>.py``, loaded by file path (its package ``__init__`` does not
    import on Python 3.11; the numpy modules do on their own). Skips when fastreid is absent."""
    path = FASTREID_EVALUATION / f"{name}.py"
    if not path.is_file():
        pytest.skip(f"{path} not present (fastreid is installed --no-deps by `make install`)")
    spec = importlib.util.spec_from_file_location(f"fastreid_reference_{name}", path)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Cython rank evaluation is unavailable"
        spec.loader.exec_module(module)
    return module


def market_like_case(seed, num_q, num_g, num_ids, num_cams, distractors, unmatched_queries, dtype=np.float64):
    """Random ids/cameras like Market-1501 (distractors pid 0 in the gallery, some query ids
    absent from the gallery) and tie-free random distances."""
    rng = np.random.default_rng(seed)
    g_pids = np.concatenate([rng.integers(1, num_ids + 1, num_g - distractors), np.zeros(distractors, int)])
    q_pids = rng.integers(1, num_ids + 1, num_q)
    q_pids[:unmatched_queries] = num_ids + 1 + np.arange(unmatched_queries)
    q_camids, g_camids = rng.integers(1, num_cams + 1, num_q), rng.integers(1, num_cams + 1, num_g)
    distmat = rng.random((num_q, num_g)).astype(dtype)
    # Pull same-person pairs closer so the metrics are far from trivial.
    distmat[q_pids[:, None] == g_pids[None, :]] *= dtype(0.6)
    return distmat, q_pids, g_pids, q_camids, g_camids


@pytest.fixture(scope="module")
def fastreid_rank():
    return load_fastreid_module("rank")


@pytest.mark.parametrize(
    "seed,num_q,num_g,num_ids,num_cams,distractors,unmatched",
    [
        (0, 300, 3000, 150, 6, 400, 5),
        (1, 500, 2000, 400, 2, 0, 20),  # two cameras: many queries with only junk
        (2, 200, 4000, 60, 4, 2500, 0),  # many positives per query, many distractors
    ],
)
def test_identical_to_fastreid_numpy(fastreid_rank, seed, num_q, num_g, num_ids, num_cams, distractors, unmatched):
    case = market_like_case(seed, num_q, num_g, num_ids, num_cams, distractors, unmatched)
    cmc, all_ap, all_inp = fastreid_rank.eval_market1501(*case, 50)
    result = evaluate_ranking(*case, max_rank=50)
    assert result.cmc.dtype == np.float32
    np.testing.assert_array_equal(result.cmc, cmc)
    assert result.num_valid_query == len(all_ap)
    assert result.valid[:unmatched].sum() == 0
    # AP sums the same terms in another order: equal to the last bits of a float64.
    np.testing.assert_allclose(result.ap[result.valid], all_ap, rtol=1e-13, atol=0)
    np.testing.assert_array_equal(result.inp[result.valid], all_inp)
    assert result.mAP == pytest.approx(np.mean(all_ap), rel=1e-13)
    assert result.mINP == pytest.approx(np.mean(all_inp), rel=1e-13)


def test_float32_input_matches_fastreid(fastreid_rank):
    rng = np.random.default_rng(3)
    num_q, num_g = 100, 1500
    # Distinct float32 values per row: tie-free in float32 too.
    distmat = (rng.permuted(np.tile(np.arange(num_g), (num_q, 1)), axis=1) / num_g).astype(np.float32)
    ids = rng.integers(1, 80, num_q), rng.integers(1, 80, num_g), rng.integers(1, 4, num_q), rng.integers(1, 4, num_g)
    cmc, all_ap, _ = fastreid_rank.eval_market1501(distmat, *ids, 50)
    result = evaluate_ranking(distmat, *ids)
    np.testing.assert_array_equal(result.cmc, cmc)
    np.testing.assert_allclose(result.ap[result.valid], all_ap, rtol=1e-13)


def test_hand_computed_case():
    # Query 0 (pid 1, cam 0): gallery order by distance is g2 (junk: pid 1 cam 0), g0 (hit),
    # g3 (miss), g1 (hit) -> filtered ranking hit, miss, hit: AP = (1/1 + 2/3) / 2, INP = 2/3.
    # Query 1 (pid 2, cam 1): g4 (miss), g5 (hit) -> AP = 1/2, INP = 1/2.
    distmat = np.array(
        [[0.2, 0.9, 0.1, 0.5, 0.95, 0.99], [0.9, 0.8, 0.7, 0.6, 0.1, 0.3]], dtype=np.float32
    )
    q_pids, g_pids = np.array([1, 2]), np.array([1, 1, 1, 3, 0, 2])
    q_camids, g_camids = np.array([0, 1]), np.array([1, 2, 0, 1, 1, 0])
    result = evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=4)
    np.testing.assert_allclose(result.ap, [(1 + 2 / 3) / 2, 0.5])
    np.testing.assert_allclose(result.inp, [2 / 3, 0.5])
    np.testing.assert_array_equal(result.cmc, np.float32([0.5, 1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(result.first_match_rank, [0, 1])
    assert result.summary()["rank1"] == 0.5


def test_query_without_valid_match_is_left_out():
    distmat = np.array([[0.1, 0.2], [0.3, 0.4]])
    # Query 1's only same-id gallery image is from its own camera: junk, so no valid match.
    result = evaluate_ranking(distmat, np.array([1, 2]), np.array([1, 2]), np.array([0, 0]), np.array([1, 0]), max_rank=2)
    assert result.num_valid_query == 1
    assert result.valid.tolist() == [True, False]
    assert np.isnan(result.ap[1]) and result.first_match_rank[1] == -1
    assert result.mAP == 1.0


def test_ties_rank_the_positive_after_equal_negatives():
    # All distances equal: a tie-aware protocol must not call this a perfect model.
    distmat = np.zeros((1, 4))
    result = evaluate_ranking(distmat, np.array([1]), np.array([2, 1, 3, 4]), np.array([0]), np.array([1, 1, 1, 1]), max_rank=4)
    assert result.first_match_rank[0] == 3
    np.testing.assert_array_equal(result.cmc, np.float32([0, 0, 0, 1]))
    assert result.ap[0] == pytest.approx(0.25)


def test_gallery_shorter_than_max_rank_pads_cmc_with_its_last_value(fastreid_rank):
    case = market_like_case(4, 40, 30, 10, 3, 5, 0)
    result = evaluate_ranking(*case, max_rank=50)
    assert result.cmc.shape == (50,)
    assert np.all(np.diff(result.cmc) >= 0) and result.cmc[-1] == 1.0
    np.testing.assert_array_equal(result.cmc[30:], 1.0)
    # fast-reid truncates max_rank to the gallery size, then crashes when junk removal leaves a
    # query fewer than that many candidates (ragged CMC rows).
    with pytest.raises(ValueError):
        fastreid_rank.eval_market1501(*case, 50)


def test_gallery_shorter_than_max_rank_matches_fastreid_where_it_runs(fastreid_rank):
    # No junk (every gallery image from camera 2, every query from camera 1): fast-reid runs
    # and returns a CMC of gallery length; ours is the same curve padded to max_rank.
    rng = np.random.default_rng(5)
    distmat = rng.random((20, 12))
    ids = rng.integers(1, 5, 20), rng.integers(1, 5, 12), np.ones(20, int), np.full(12, 2)
    cmc, all_ap, _ = fastreid_rank.eval_market1501(distmat, *ids, 50)
    result = evaluate_ranking(distmat, *ids, max_rank=50)
    assert len(cmc) == 12
    np.testing.assert_array_equal(result.cmc[:12], cmc)
    np.testing.assert_array_equal(result.cmc[12:], cmc[-1])
    np.testing.assert_allclose(result.ap[result.valid], all_ap, rtol=1e-13)


@pytest.mark.parametrize(
    "distmat,q_pids,message",
    [
        (np.zeros((2, 3)), np.array([1]), "q_pids"),
        (np.array([[np.nan, 0.1, 0.2], [0.1, 0.2, 0.3]]), np.array([1, 2]), "NaN"),
        (np.zeros((2, 3), dtype=np.int64), np.array([1, 2]), "floating-point"),
        (np.zeros(3), np.array([1]), "2-D"),
        (np.zeros((2, 3)), np.array([7, 8]), "no query has a match"),
    ],
)
def test_bad_inputs_are_clear_errors(distmat, q_pids, message):
    with pytest.raises(CrosscamError, match=message):
        evaluate_ranking(distmat, q_pids, np.array([1, 2, 3]), np.zeros(len(q_pids), int), np.ones(3, int))


def test_a_cmc_far_longer_than_the_gallery_is_refused_not_allocated():
    """--max-rank 10^11 tried to allocate 745 GiB; up to the default 50 a short gallery's CMC is padded."""
    distmat, ids = np.zeros((2, 3)), (np.array([1, 2]), np.array([1, 2, 3]), np.zeros(2, int), np.ones(3, int))
    assert len(evaluate_ranking(distmat, *ids, max_rank=50).cmc) == 50
    with pytest.raises(CrosscamError, match=r"max_rank 100000000000: longer than the gallery \(3 images\).*at most 50"):
        evaluate_ranking(distmat, *ids, max_rank=100_000_000_000)
