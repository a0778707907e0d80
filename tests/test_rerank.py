"""k-reciprocal re-ranking against fast-reid's numpy ``re_ranking`` (Zhong et al.)."""

from __future__ import annotations

import numpy as np
import pytest
from test_evaluation_ranking import load_fastreid_module

from reid.errors import CrosscamError
from reid.evaluation import evaluate_ranking, k_reciprocal_rerank, pairwise_distance
from reid.vectors import l2_normalize


def clustered_features(seed, num_q, num_g, num_ids=40, dim=32, noise=0.7):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_ids, dim))
    q_pids, g_pids = rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g)
    q = centers[q_pids] + noise * rng.normal(size=(num_q, dim))
    g = centers[g_pids] + noise * rng.normal(size=(num_g, dim))
    return q.astype(np.float32), g.astype(np.float32), q_pids, g_pids


def euclidean64(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0))


@pytest.mark.parametrize("metric,k1,k2,lambda_value", [("cosine", 20, 6, 0.3), ("euclidean", 10, 1, 0.5)])
def test_matches_fastreid_re_ranking(metric, k1, k2, lambda_value):
    fastreid_rerank = load_fastreid_module("rerank")
    q, g, _, _ = clustered_features(0, 60, 400)
    qn, gn = (l2_normalize(q), l2_normalize(g)) if metric == "cosine" else (q, g)
    expected = fastreid_rerank.re_ranking(
        euclidean64(qn, gn), euclidean64(qn, qn), euclidean64(gn, gn), k1=k1, k2=k2, lambda_value=lambda_value
    )
    ours = k_reciprocal_rerank(q, g, k1=k1, k2=k2, lambda_value=lambda_value, metric=metric)
    assert ours.shape == (60, 400) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=2e-5)


def test_rerank_improves_map_on_clustered_data():
    q, g, q_pids, g_pids = clustered_features(1, 100, 600, num_ids=50, noise=1.2)
    cams = np.zeros(100, int), np.ones(600, int)
    plain = evaluate_ranking(pairwise_distance(q, g), q_pids, g_pids, *cams)
    reranked = evaluate_ranking(k_reciprocal_rerank(q, g), q_pids, g_pids, *cams)
    assert reranked.mAP > plain.mAP


def test_bad_parameters_are_errors():
    q, g, _, _ = clustered_features(2, 3, 10)
    with pytest.raises(CrosscamError, match="k1"):
        k_reciprocal_rerank(q, g, k1=0)
