"""Crops of detected people -> unit appearance features, with ``reid.Embedder``.

Boxes are clipped to the image first; a box whose clipped crop is narrower or shorter than
``min_size`` pixels is dropped from the detections (too little of a person to describe, and a
tracker cannot match a box without a feature). Crops of several frames go to the embedder in one
call, so a batch is filled even when each frame has one or two people.

>>> from reid import Embedder
>>> embedder = Embedder.from_weights("../shared/weights/osnet_x0_25_msmt17.onnx")  # doctest: +SKIP
>>> embed_detections(embedder, [(image, detections)], min_size=8)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.types import Detections


def clip_boxes(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(N, 4)`` xyxy boxes clipped to an image of ``width`` x ``height`` pixels, float32."""
    clipped = np.asarray(xyxy, np.float32).reshape(-1, 4).copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    return clipped


def size_filtered(dets: Detections, width: int, height: int, min_size: int) -> Detections:
    """The boxes clipped to a ``width`` x ``height`` image, without those whose clipped size
    (rounded to whole pixels) is under ``min_size`` in either direction (no features)."""
    boxes = clip_boxes(dets.xyxy, width, height)
    rounded = np.round(boxes)
    keep = ((rounded[:, 2] - rounded[:, 0]) >= min_size) & ((rounded[:, 3] - rounded[:, 1]) >= min_size)
    return Detections(boxes[keep], np.asarray(dets.confidence, np.float32)[keep])


def split_by_confidence(dets: Detections, threshold: float) -> tuple[Detections, Detections]:
    """``(boxes with confidence >= threshold, the others)``, each in the input order.

    >>> high, low = split_by_confidence(Detections(np.zeros((3, 4), np.float32), np.array([0.9, 0.2, 0.5], np.float32)), 0.4)
    >>> high.confidence.tolist(), low.confidence.tolist()
    ([0.8999999761581421, 0.5], [0.20000000298023224])
    """
    high = np.asarray(dets.confidence) >= threshold
    return (Detections(dets.xyxy[high], dets.confidence[high]),
            Detections(dets.xyxy[~high], dets.confidence[~high]))


def _crop_slices(box: np.ndarray) -> tuple[slice, slice]:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return slice(y1, y2), slice(x1, x2)


def embed_detections(
    embedder, frames: Sequence[tuple[np.ndarray, Detections]], min_size: int = 8
) -> list[Detections]:
    """Clip, filter and embed the detections of several frames in one ``embedder.embed`` call.

    ``frames``: ``(image (H, W, 3) uint8 BGR, detections)`` pairs. Returns new :class:`Detections`
    per frame holding the clipped boxes that were kept, their confidences, and ``features``
    ``(N, D)`` float32 with unit rows.
    """
    kept: list[Detections] = []
    crops: list[np.ndarray] = []
    for image, dets in frames:
        h, w = image.shape[:2]
        dets = size_filtered(dets, w, h, min_size)
        kept.append(dets)
        crops.extend(image[_crop_slices(box)] for box in dets.xyxy)
    features = embedder.embed(crops, bgr=True, normalize=True)
    start = 0
    for dets in kept:
        dets.features = features[start : start + len(dets)].astype(np.float32, copy=False)
        start += len(dets)
    return kept
