"""Blocked distances against direct formulas, and AQE against fast-reid's ``aqe``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_evaluation_ranking import load_fastreid_module

from reid.errors import CrosscamError
from reid.evaluation import alpha_query_expansion, pairwise_distance
from reid.evaluation import distance as distance_module


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    return rng.normal(size=(37, 16)).astype(np.float32), rng.normal(size=(53, 16)).astype(np.float32)


def test_cosine_distance_is_one_minus_cosine(features):
    q, g = features
    expected = 1 - (q @ g.T) / np.linalg.norm(q, axis=1)[:, None] / np.linalg.norm(g, axis=1)[None, :]
    np.testing.assert_allclose(pairwise_distance(q, g), expected, atol=1e-6)


def test_euclidean_distance_is_l2(features):
    q, g = features
    expected = np.linalg.norm(q[:, None, :] - g[None, :, :], axis=2)
    np.testing.assert_allclose(pairwise_distance(q, g, "euclidean"), expected, rtol=1e-5, atol=1e-5)


def test_blocks_give_the_same_matrix(features, monkeypatch):
    q, g = features
    whole = pairwise_distance(q, g, "euclidean")
    monkeypatch.setattr(distance_module, "_BLOCK_BYTES", 4 * g.shape[0] * 5)  # 5 query rows per block
    # equal but for the last bit: the BLAS may pick another kernel for a 5-row product (seen on AMD Zen 5)
    np.testing.assert_allclose(pairwise_distance(q, g, "euclidean"), whole, rtol=1e-6, atol=0)


def test_unknown_metric_and_shape_mismatch_are_errors(features):
    q, g = features
    with pytest.raises(CrosscamError, match="--metric"):
        pairwise_distance(q, g, "manhattan")
    with pytest.raises(CrosscamError, match="same D"):
        pairwise_distance(q, g[:, :8])


def test_aqe_matches_fastreid(features):
    fastreid_qe = load_fastreid_module("query_expansion")
    q, g = features
    ref_q, ref_g = fastreid_qe.aqe(torch.from_numpy(q), torch.from_numpy(g), qe_times=2, qe_k=5, alpha=3.0)
    ours_q, ours_g = alpha_query_expansion(q, g, qe_times=2, qe_k=5, alpha=3.0)
    np.testing.assert_allclose(ours_q, ref_q.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours_g, ref_g.numpy(), rtol=1e-5, atol=1e-6)
