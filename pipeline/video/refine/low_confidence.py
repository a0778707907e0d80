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

from pipeline.boxes import iou_matrix


def match_by_iou(predicted: np.ndarray, boxes: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """``[(prediction row, box row)]``: the assignment maximising total IoU (Hungarian), keeping
    pairs that overlap by ``min_iou`` or more."""
    if len(predicted) == 0 or len(boxes) == 0:
        return []
    iou = iou_matrix(predicted, boxes)
    rows, cols = linear_sum_assignment(1.0 - iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]
