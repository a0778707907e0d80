"""Alpha query expansion (AQE), as fast-reid's ``aqe`` (Chum et al. 2007, Radenovic et al. 2018).

Every feature (query and gallery alike) is replaced by the mean of its ``qe_k`` nearest features
(itself included, by cosine similarity), each weighted by similarity**alpha; repeated
``qe_times`` times. Defaults are fast-reid's config defaults (TEST.AQE: QE_TIME=1, QE_K=5,
ALPHA=3.0). The (N, N) similarity matrix is never held whole: it is built in row blocks.

>>> import numpy as np
>>> q, g = alpha_query_expansion(np.eye(3, dtype=np.float32)[:1], np.eye(3, dtype=np.float32), qe_k=2)
>>> q.shape, g.shape
((1, 3), (3, 3))
"""

from __future__ import annotations

import numpy as np

from reid.vectors import l2_normalize

_BLOCK_ROWS = 1024


def alpha_query_expansion(
    query: np.ndarray, gallery: np.ndarray, qe_times: int = 1, qe_k: int = 5, alpha: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D), (G, D) features -> expanded (Q, D), (G, D) float32 features (not normalised).

    The weighted mean uses the *raw* features of the neighbours, as fast-reid does; only the
    neighbour search and the weights use normalised features.
    """
    features = np.concatenate([query, gallery]).astype(np.float32)
    k = min(qe_k, len(features))
    for _ in range(qe_times):
        normed = l2_normalize(features)
        expanded = np.empty_like(features)
        for start in range(0, len(features), _BLOCK_ROWS):
            sims = normed[start : start + _BLOCK_ROWS] @ normed.T
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            weights = np.power(np.take_along_axis(sims, top, axis=1), alpha)
            expanded[start : start + _BLOCK_ROWS] = np.einsum("nk,nkd->nd", weights, features[top]) / k
        features = expanded
    return features[: len(query)], features[len(query) :]
