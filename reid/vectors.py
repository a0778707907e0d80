"""Feature vectors scaled to unit length, which is how every consumer of ReID features compares
them (cosine similarity as a dot product).

>>> rows = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
>>> rows.dtype, rows.astype(float).round(3).tolist(), l2_normalize(np.array([0.0, 2.0])).tolist()
(dtype('float32'), [[0.6, 0.8], [0.0, 0.0]], [0.0, 1.0])
"""

from __future__ import annotations

import numpy as np


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """``features`` (N, D), or one (D,) vector, scaled to unit L2 norm along the last axis;
    all-zero rows stay zero; float32."""
    features = np.asarray(features, np.float32)  # float16's 1e-12 would be 0, float64 doubles the memory
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return features / np.maximum(norms, np.float32(1e-12))
