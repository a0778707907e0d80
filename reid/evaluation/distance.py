"""Query-gallery distance matrices, computed in blocks of query rows.

``cosine`` is fast-reid's default: 1 - cos between L2-normalised features (range 0..2).
``euclidean`` is the true L2 distance; fast-reid's "euclidean" is its square, which ranks the
same (so CMC/mAP are equal) but gives other ROC thresholds.

>>> import numpy as np
>>> q = np.array([[1.0, 0.0]], np.float32); g = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
>>> pairwise_distance(q, g).tolist(), pairwise_distance(q, g, "euclidean").astype(np.float64).round(3).tolist()
([[0.0, 1.0]], [[0.0, 2.236]])
"""

from __future__ import annotations

import numpy as np

from reid.errors import CrosscamError
from reid.vectors import l2_normalize

METRICS = ("cosine", "euclidean")
# Query rows per block: a block's temporaries stay near 64 MB even for very large galleries.
_BLOCK_BYTES = 64 * 2**20


def pairwise_distance(query: np.ndarray, gallery: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """(Q, D) and (G, D) features -> (Q, G) float32 distances (smaller = more similar).

    Works block by block so the only large allocation is the (Q, G) result itself.
    """
    if metric not in METRICS:
        raise CrosscamError(f"--metric {metric}: unknown; use one of {', '.join(METRICS)}")
    query = np.asarray(query, dtype=np.float32)
    gallery = np.asarray(gallery, dtype=np.float32)
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise CrosscamError(
            f"features: expected (Q, D) and (G, D) arrays with the same D, got {query.shape} and {gallery.shape}"
        )
    if metric == "cosine":
        query, gallery = l2_normalize(query), l2_normalize(gallery)
    else:
        q_sq = np.einsum("ij,ij->i", query, query)
        g_sq = np.einsum("ij,ij->i", gallery, gallery)
    out = np.empty((len(query), len(gallery)), dtype=np.float32)
    rows = max(1, _BLOCK_BYTES // (4 * max(len(gallery), 1)))
    for start in range(0, len(query), rows):
        block = slice(start, start + rows)
        dots = query[block] @ gallery.T
        if metric == "cosine":
            np.subtract(np.float32(1.0), dots, out=out[block])
        else:
            dots *= -2.0
            dots += q_sq[block, None]
            dots += g_sq[None, :]
            np.sqrt(np.maximum(dots, 0.0, out=dots), out=out[block])
    return out
