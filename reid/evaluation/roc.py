"""Verification view of a distance matrix: genuine vs impostor pairs, TAR at FAR, thresholds.

Pairs follow the ranking protocol: a *genuine* pair is a query and a gallery image of the same
person from another camera; an *impostor* pair has different person ids (distractors included);
same-person same-camera pairs are junk and left out.

Two conventions, kept apart because they are easy to confuse:

* ``tar_at_far`` (the standard one): accept a pair when its distance is below a threshold. For a
  target FAR x, the threshold is the smallest one that accepts at most floor(x * impostors)
  impostor pairs (accept ``distance < threshold``); TAR is the share of genuine pairs accepted.
* ``fastreid_tpr_at_fpr``: what fast-reid logs as "TPR@FPR=x". Its ROC takes the *impostor*
  pairs as the positive class and the distance as the score, so its "FPR" is the share of
  genuine pairs rejected (FRR) and its "TPR" the share of impostors rejected (1 - FAR). For each
  x it takes the curve point whose FPR is nearest to x (the first such point, as
  ``np.argmin`` does on sklearn's ``roc_curve``), i.e. rejecting the k genuine pairs with the
  largest distances, k/genuine nearest to x, and reports the share of impostor pairs whose
  distance is at least the k-th largest genuine distance. Identical to fast-reid on tie-free
  distances.

>>> import numpy as np
>>> dist = np.array([[0.1, 0.9, 0.8], [0.7, 0.2, 0.6]], np.float32)
>>> roc = evaluate_roc(dist, np.array([1, 2]), np.array([1, 2, 3]), np.array([0, 0]), np.array([1, 1, 1]))
>>> roc.num_genuine, roc.num_impostor, roc.tar_at_far[0.01]
(2, 4, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from reid.evaluation.ranking import same_person_pairs

FAR_TARGETS = (1e-4, 1e-3, 1e-2)
_HISTOGRAM_BINS = 100
_CURVE_BINS = 4096


@dataclass(frozen=True)
class RocResult:
    """Verification metrics of one distance matrix.

    Attributes:
        tar_at_far: {far: tar} for FAR_TARGETS, fractions 0..1 (standard convention).
        threshold_at_far: {far: distance threshold} used for ``tar_at_far`` (accept d < threshold).
        fastreid_tpr_at_fpr: {fpr: tpr} in fast-reid's convention (see the module docstring).
        suggested_threshold: distance maximising TAR - FAR (Youden's J) over a fine grid.
        far_curve, tar_curve: (B,) float64, the ROC curve sampled at ``_CURVE_BINS`` thresholds.
        histogram_edges: (H+1,) bin edges of the distance histograms.
        genuine_histogram, impostor_histogram: (H,) int64 pair counts per bin.
        num_genuine, num_impostor: pair counts.
    """

    tar_at_far: dict[float, float]
    threshold_at_far: dict[float, float]
    fastreid_tpr_at_fpr: dict[float, float]
    suggested_threshold: float
    far_curve: np.ndarray = field(repr=False)
    tar_curve: np.ndarray = field(repr=False)
    histogram_edges: np.ndarray = field(repr=False)
    genuine_histogram: np.ndarray = field(repr=False)
    impostor_histogram: np.ndarray = field(repr=False)
    num_genuine: int = 0
    num_impostor: int = 0

    def summary(self) -> dict[str, float]:
        """Flat dict for reports: ``TAR@FAR=1e-04`` ..., ``fastreid_TPR@FPR=1e-04`` ..., threshold."""
        out = {f"TAR@FAR={far:.0e}": tar for far, tar in self.tar_at_far.items()}
        out.update({f"fastreid_TPR@FPR={fpr:.0e}": tpr for fpr, tpr in self.fastreid_tpr_at_fpr.items()})
        out["suggested_threshold"] = self.suggested_threshold
        return out


def split_pair_distances(distmat, q_pids, g_pids, q_camids, g_camids) -> tuple[np.ndarray, np.ndarray]:
    """Genuine (P,) and impostor (N,) pair distances of a (Q, G) matrix (junk pairs left out)."""
    distmat = np.asarray(distmat)
    pair_q, pair_g, is_pos = same_person_pairs(*(np.asarray(a).ravel() for a in (q_pids, g_pids, q_camids, g_camids)))
    genuine = distmat[pair_q[is_pos], pair_g[is_pos]]
    impostor = np.delete(distmat.ravel(), pair_q * distmat.shape[1] + pair_g)
    return genuine, impostor


def evaluate_roc(distmat, q_pids, g_pids, q_camids, g_camids, far_targets=FAR_TARGETS) -> RocResult:
    """ROC statistics of a (Q, G) distance matrix; ids and cameras as in ``evaluate_ranking``."""
    genuine, impostor = split_pair_distances(distmat, q_pids, g_pids, q_camids, g_camids)
    genuine = np.sort(genuine)
    tar, thresholds = _tar_at_far(genuine, impostor, far_targets)
    fastreid = _fastreid_tpr_at_fpr(genuine, impostor, far_targets)

    lo, hi = float(min(genuine[0], impostor.min())), float(max(genuine[-1], impostor.max()))
    hi = hi if hi > lo else lo + 1.0
    # Integer bin counts with a range take numpy's fast uniform-bin path (no per-value search).
    fine_edges = np.linspace(lo, hi, _CURVE_BINS + 1)
    far_curve = np.cumsum(np.histogram(impostor, _CURVE_BINS, (lo, hi))[0]) / max(len(impostor), 1)
    tar_curve = np.cumsum(np.histogram(genuine, _CURVE_BINS, (lo, hi))[0]) / max(len(genuine), 1)
    best = int(np.argmax(tar_curve - far_curve))
    impostor_histogram, edges = np.histogram(impostor, _HISTOGRAM_BINS, (lo, hi))
    return RocResult(
        tar_at_far=tar,
        threshold_at_far=thresholds,
        fastreid_tpr_at_fpr=fastreid,
        suggested_threshold=float(fine_edges[best + 1]),
        far_curve=far_curve,
        tar_curve=tar_curve,
        histogram_edges=edges,
        genuine_histogram=np.histogram(genuine, _HISTOGRAM_BINS, (lo, hi))[0],
        impostor_histogram=impostor_histogram,
        num_genuine=len(genuine),
        num_impostor=len(impostor),
    )


def _tar_at_far(genuine_sorted, impostor, far_targets):
    """Standard TAR at FAR; the impostor array is partitioned in place (it is a private copy)."""
    allowed = {far: int(np.floor(far * len(impostor))) for far in far_targets}
    kth = sorted({n for n in allowed.values() if n < len(impostor)})
    if kth:
        impostor.partition(kth)
    tar, thresholds = {}, {}
    for far, n in allowed.items():
        threshold = float(impostor[n]) if n < len(impostor) else np.inf
        thresholds[far] = threshold
        tar[far] = float(np.searchsorted(genuine_sorted, threshold, side="left") / len(genuine_sorted))
    return tar, thresholds


def _fastreid_tpr_at_fpr(genuine_sorted, impostor, fpr_targets):
    """fast-reid's TPR@FPR (impostors positive, distance as score); see the module docstring."""
    num_genuine = len(genuine_sorted)
    out = {}
    for fpr in fpr_targets:
        # Curve levels are k / num_genuine, k = 0..num_genuine; the nearest (first on ties) wins.
        levels = np.array([np.floor(fpr * num_genuine), np.ceil(fpr * num_genuine)])
        k = int(levels[np.argmin(np.abs(levels / num_genuine - fpr))])
        if k == 0:
            out[fpr] = 0.0  # the curve's first point (threshold +inf) rejects nothing
            continue
        threshold = genuine_sorted[num_genuine - k]
        out[fpr] = float(np.count_nonzero(impostor >= threshold) / len(impostor))
    return out
