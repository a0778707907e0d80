"""ByteTrack's second association: low-confidence boxes matched to tracks by overlap alone.

A detector's boxes between ``detector.low_confidence`` and ``detector.confidence`` are mostly
people partly hidden or blurred, and too unreliable to start a track or to describe an
appearance. Matched by IoU to the predicted boxes of confirmed tracks that DeepSORT left
unmatched in this frame (and that were matched in the frame before), they keep those tracks
going through the dip instead of coasting (Zhang et al., ByteTrack, ECCV 2022).

>>> pred = np.array([[0, 0, 10, 20], [50, 0, 60, 20]], np.float32)
>>> low = np.array([[51, 1, 61, 21], [200, 0, 210, 20]], np.float32)
>>> match_by_iou(pred, low, min_iou=0.5)
[(1, 0)]
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` IoU of two sets of xyxy boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_by_iou(predicted: np.ndarray, boxes: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """``[(prediction row, box row)]``: the assignment maximising total IoU (Hungarian), keeping
    pairs that overlap by ``min_iou`` or more."""
    if len(predicted) == 0 or len(boxes) == 0:
        return []
    iou = iou_matrix(predicted, boxes)
    rows, cols = linear_sum_assignment(1.0 - iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]
