"""Merged blobs split with the tracker's predictions: the merge/split handling of blob trackers.

A background-subtraction blob is often several people: walkers that cross, or one passing
behind another as the camera sees them. A single frame cannot tell, but the tracker can: if the
boxes it predicts for two or more recently seen people fall inside one detection, that detection
is those people, merged. :func:`split_by_predictions` replaces it by their predicted boxes,
refined to the detection, so every track keeps being matched through the merge instead of
coasting unseen (and losing its identity when the people separate).

Boxes are ``xyxy`` float32 pixels of the frame.
"""

from __future__ import annotations

import numpy as np

from pipeline.boxes import box_area, intersection_matrix, iou_matrix
from pipeline.types import Detections

DUPLICATE_IOU = 0.9  # predictions overlapping this much are one person tracked twice (crossers overlap less)


def split_by_predictions(detections: Detections, predicted: np.ndarray, features: np.ndarray,
                         min_cover: float) -> Detections:
    """``detections`` (with features: after the embed stage) where each box that covers the predicted
    boxes of two or more tracks is replaced by those boxes.

    ``predicted``: (K, 4) xyxy of the tracks' predicted boxes, oldest track first; ``features``:
    (K, D) each track's latest appearance. A prediction belongs to the detection covering the
    largest share of its area, if that share reaches ``min_cover``. A detection owning two or
    more is a merged blob: each owned prediction is clipped to it, and the outermost one on each
    side is moved out to the detection's edge there (the blob's extent is someone's). The new
    boxes keep the detection's confidence and take their track's own feature: the crop of a
    merged blob shows several people, and its embedding would pull each one's appearance
    towards the others'. A prediction overlapping an older one in the same blob by
    :data:`DUPLICATE_IOU` is one person tracked twice and is left out, so the duplicate dies.

    >>> dets = Detections(np.array([[0, 0, 60, 100]], np.float32), np.array([0.9], np.float32),
    ...                   np.ones((1, 2), np.float32))
    >>> pred = np.array([[0, 10, 30, 100], [28, 0, 58, 90]], np.float32)
    >>> split_by_predictions(dets, pred, np.eye(2, dtype=np.float32), 0.6).xyxy.tolist()
    [[0.0, 10.0, 30.0, 100.0], [28.0, 0.0, 60.0, 90.0]]
    """
    if len(detections) == 0 or len(predicted) < 2:
        return detections
    area = np.maximum(box_area(predicted), 1e-9)  # a degenerate prediction covers nothing
    cover = intersection_matrix(predicted, detections.xyxy) / area[:, None]  # (K, N)
    owner = cover.argmax(axis=1)
    owned = cover[np.arange(len(predicted)), owner] >= min_cover
    boxes, confidence, feats = [], [], []
    for j in range(len(detections)):
        mine = _distinct(predicted, np.flatnonzero(owned & (owner == j)))
        if len(mine) < 2:
            boxes.append(detections.xyxy[j : j + 1])
            feats.append(detections.features[j : j + 1])
            confidence.append(detections.confidence[j : j + 1])
        else:
            boxes.append(_refine(predicted[mine], detections.xyxy[j]))
            feats.append(features[mine])
            confidence.append(np.full(len(mine), detections.confidence[j]))
    return Detections(np.concatenate(boxes).astype(np.float32), np.concatenate(confidence).astype(np.float32),
                      np.concatenate(feats).astype(np.float32))


def _distinct(predicted: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``rows`` without those overlapping an earlier kept one by :data:`DUPLICATE_IOU` or more."""
    kept: list[int] = []
    for row in rows:
        if not kept or iou_matrix(predicted[row : row + 1], predicted[kept]).max() < DUPLICATE_IOU:
            kept.append(int(row))
    return np.array(kept, np.int64)


def _refine(predicted: np.ndarray, blob: np.ndarray) -> np.ndarray:
    """``predicted`` (K, 4) clipped to the ``blob`` box, the outermost one per side moved to its edge."""
    out = predicted.copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(blob[0], blob[2])
    out[:, [1, 3]] = out[:, [1, 3]].clip(blob[1], blob[3])
    out[out[:, 0].argmin(), 0] = blob[0]
    out[out[:, 1].argmin(), 1] = blob[1]
    out[out[:, 2].argmax(), 2] = blob[2]
    out[out[:, 3].argmax(), 3] = blob[3]
    return out
