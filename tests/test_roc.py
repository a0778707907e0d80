"""ROC statistics: fast-reid's TPR@FPR (via its own pair extraction and an implementation of
sklearn's roc_curve, as its evaluator calls it) and the standard TAR@FAR (by brute force)."""

from __future__ import annotations

import numpy as np
import pytest
from test_evaluation_ranking import load_fastreid_module, market_like_case

from reid.evaluation import evaluate_roc
from reid.evaluation.roc import split_pair_distances


def sklearn_roc_curve(labels, scores):
    """sklearn.metrics.roc_curve(labels, scores) with its defaults (drop_intermediate=True);
    sklearn is not a dependency here, so this follows its documented algorithm."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    scores, labels = scores[order], labels[order]
    threshold_idxs = np.r_[np.where(np.diff(scores))[0], len(scores) - 1]
    tps = np.cumsum(labels)[threshold_idxs]
    fps = 1 + threshold_idxs - tps
    keep = np.where(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
    fps, tps = np.r_[0, fps[keep]], np.r_[0, tps[keep]]
    return fps / fps[-1], tps / tps[-1]


@pytest.fixture(scope="module")
def case():
    return market_like_case(7, 120, 900, 60, 3, 100, 4)


def test_fastreid_tpr_at_fpr_matches_its_evaluator(case):
    fastreid_roc = load_fastreid_module("roc")
    scores, labels = fastreid_roc.evaluate_roc_py(*case)
    fprs, tprs = sklearn_roc_curve(labels, scores)
    roc = evaluate_roc(*case)
    for fpr in (1e-4, 1e-3, 1e-2):
        assert roc.fastreid_tpr_at_fpr[fpr] == pytest.approx(tprs[np.argmin(np.abs(fprs - fpr))], abs=1e-12)
    assert roc.num_genuine == int((labels == 0).sum()) and roc.num_impostor == int((labels == 1).sum())


def test_tar_at_far_by_brute_force(case):
    genuine, impostor = split_pair_distances(*case)
    roc = evaluate_roc(*case)
    for far, tar in roc.tar_at_far.items():
        threshold = roc.threshold_at_far[far]
        assert np.mean(impostor < threshold) <= far  # never more false accepts than allowed
        assert np.mean(impostor <= threshold) > far  # and the threshold cannot be raised
        assert tar == pytest.approx(np.mean(genuine < threshold))
    assert roc.tar_at_far[1e-4] <= roc.tar_at_far[1e-3] <= roc.tar_at_far[1e-2]


def test_histograms_and_threshold(case):
    roc = evaluate_roc(*case)
    assert roc.genuine_histogram.sum() == roc.num_genuine
    assert roc.impostor_histogram.sum() == roc.num_impostor
    # The suggested threshold maximises TAR - FAR (up to the grid it is searched on).
    genuine, impostor = split_pair_distances(*case)
    genuine, impostor = np.sort(genuine), np.sort(impostor)

    def youden(t):
        return (np.searchsorted(genuine, t) / len(genuine)) - (np.searchsorted(impostor, t) / len(impostor))

    best_anywhere = youden(np.r_[genuine, impostor]).max()
    assert youden(roc.suggested_threshold) >= best_anywhere - 2e-3
    assert set(roc.summary()) >= {"TAR@FAR=1e-04", "fastreid_TPR@FPR=1e-02", "suggested_threshold"}


def test_tiny_case_by_hand():
    distmat = np.array([[0.1, 0.9, 0.8], [0.7, 0.2, 0.6]])
    roc = evaluate_roc(distmat, np.array([1, 2]), np.array([1, 2, 3]), np.array([0, 0]), np.array([1, 1, 1]))
    # Genuine 0.1 and 0.2; impostors 0.9, 0.8, 0.7, 0.6. FAR 1e-2 of 4 impostors allows none:
    # threshold = the smallest impostor (0.6), both genuine pairs are below it.
    assert roc.threshold_at_far[1e-2] == 0.6 and roc.tar_at_far[1e-2] == 1.0
