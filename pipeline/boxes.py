"""Box geometry shared by the stages: areas, pairwise intersections and IoU of ``xyxy`` boxes.

>>> iou_matrix([[0, 0, 2, 2]], [[1, 0, 3, 2], [5, 5, 6, 6]]).round(3).tolist()
[[0.333, 0.0]]
"""

from __future__ import annotations

import numpy as np


def _as_boxes(xyxy) -> np.ndarray:
    return np.asarray(xyxy, np.float64).reshape(-1, 4)


def box_area(xyxy) -> np.ndarray:
    """``(N,)`` areas in square pixels of ``(N, 4)`` xyxy boxes (0 for an inverted box)."""
    b = _as_boxes(xyxy)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def intersection_matrix(a, b) -> np.ndarray:
    """``(len(a), len(b))`` intersection areas of two sets of xyxy boxes."""
    a, b = _as_boxes(a), _as_boxes(b)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def iou_matrix(a, b) -> np.ndarray:
    """``(len(a), len(b))`` IoU (float64) of two sets of xyxy boxes; 0 where both are empty."""
    inter = intersection_matrix(a, b)
    return inter / np.maximum(box_area(a)[:, None] + box_area(b)[None, :] - inter, 1e-9)
