"""Boxes for the frames a track missed, from the boxes it had on both sides of the gap.

``linear``: a straight line between the last box before the gap and the first one after it (the
MOTChallenge convention for occlusions). ``gsi``: as StrongSORT's Gaussian-smoothed
interpolation (Du et al., 2023), the boxes near the gap on both sides are fitted with a Gaussian
process (RBF kernel over frame indices) on top of that line, so a gap during a turn follows the
curve. Boxes are ``xyxy`` pixels; frames are source frame indices (strided frames have gaps in
their numbering, which is why frames, not counts, are the axis).

>>> before = np.array([[0, 0, 0, 10, 20]], np.float64)  # frame, x1, y1, x2, y2
>>> after = np.array([[4, 8, 0, 18, 20]], np.float64)
>>> fill_gap(before, after, np.array([1, 2, 3]), "linear")[:, 0].tolist()
[2.0, 4.0, 6.0]
"""

from __future__ import annotations

from typing import Literal

import numpy as np

GSI_LENGTH_FRAMES = 10.0  # RBF length scale of the Gaussian process, in frames (StrongSORT's tau)
GSI_NOISE = 0.25  # observation noise variance relative to the signal's: how closely the fit follows each box


def fill_gap(before: np.ndarray, after: np.ndarray, frames: np.ndarray,
             method: Literal["linear", "gsi"]) -> np.ndarray:
    """``(G, 4)`` float32 boxes for ``frames`` (G,), inside a gap of one track.

    ``before`` ``(B, 5)`` and ``after`` ``(A, 5)`` are ``frame, x1, y1, x2, y2`` rows of the
    track's detected boxes on each side of the gap (frame order, ``B, A >= 1``); ``linear``
    uses the last of ``before`` and the first of ``after``, ``gsi`` all of them.
    """
    start, end = before[-1], after[0]
    share = (np.asarray(frames, np.float64) - start[0]) / max(end[0] - start[0], 1e-9)
    boxes = start[1:] + share[:, None] * (end[1:] - start[1:])
    if method == "gsi":
        boxes = boxes + _gp_residual(np.concatenate([before, after]), start, end, np.asarray(frames, np.float64))
    return boxes.astype(np.float32)


def _gp_residual(known: np.ndarray, start: np.ndarray, end: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Posterior mean at ``frames`` of a Gaussian process fitted to the known boxes' departures
    from the line through ``start`` and ``end`` (zero at both ends of the gap by construction)."""
    slope = (end[1:] - start[1:]) / max(end[0] - start[0], 1e-9)
    residual = known[:, 1:] - (start[1:] + (known[:, :1] - start[0]) * slope)
    scale = max(float(np.abs(residual).max()), 1e-6)

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-0.5 * ((a[:, None] - b[None, :]) / GSI_LENGTH_FRAMES) ** 2)

    gram = kernel(known[:, 0], known[:, 0]) + GSI_NOISE * np.eye(len(known))
    weights = np.linalg.solve(gram, residual / scale)
    return kernel(frames, known[:, 0]) @ weights * scale
