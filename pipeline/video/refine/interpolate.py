"""Boxes for the frames a track missed, from the boxes it had on both sides of the gap.

``linear``: a straight line between the last box before the gap and the first one after it (the
MOTChallenge convention for occlusions). ``gsi``: as StrongSORT's Gaussian-smoothed
interpolation (Du et al., 2023), the boxes near the gap on both sides are fitted with a Gaussian
process (RBF kernel over frame indices) on top of their least-squares line, so a gap during a
turn follows the curve and detection jitter at the gap's ends is smoothed. Boxes are ``xyxy`` pixels; frames are source frame indices (strided frames have gaps in
their numbering, which is why frames, not counts, are the axis).

>>> before = np.array([[0, 0, 0, 10, 20]], np.float64)  # frame, x1, y1, x2, y2
>>> after = np.array([[4, 8, 0, 18, 20]], np.float64)
>>> fill_gap(before, after, np.array([1, 2, 3]), "linear")[:, 0].tolist()
[2.0, 4.0, 6.0]
"""

from __future__ import annotations

from typing import Literal

import numpy as np

GSI_LENGTH_FRAMES = 8.0  # RBF length scale of the Gaussian process, in frames (StrongSORT's tau is 10)
GSI_JITTER = 0.02  # a detector's box jitter, as a share of the box height (the observation noise)


def fill_gap(before: np.ndarray, after: np.ndarray, frames: np.ndarray,
             method: Literal["linear", "gsi"]) -> np.ndarray:
    """``(G, 4)`` float32 boxes for ``frames`` (G,), inside a gap of one track.

    ``before`` ``(B, 5)`` and ``after`` ``(A, 5)`` are ``frame, x1, y1, x2, y2`` rows of the
    track's detected boxes on each side of the gap (frame order, ``B, A >= 1``); ``linear``
    uses the last of ``before`` and the first of ``after``, ``gsi`` all of them.
    """
    frames = np.asarray(frames, np.float64)
    start, end = before[-1], after[0]
    share = (frames - start[0]) / max(end[0] - start[0], 1e-9)
    boxes = start[1:] + share[:, None] * (end[1:] - start[1:])
    if method == "gsi" and len(before) + len(after) >= 3:
        smooth = _gaussian_process(np.concatenate([before, after]), frames)
        sane = (smooth[:, 2] - smooth[:, 0] >= 1) & (smooth[:, 3] - smooth[:, 1] >= 1)  # else keep the line
        boxes[sane] = smooth[sane]
    return boxes.astype(np.float32)


def _gaussian_process(known: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Posterior mean at ``frames`` of a Gaussian process (RBF kernel) over the known boxes, on top
    of their least-squares straight line (so far from the data it falls back to the line)."""
    t = known[:, 0]
    design = np.stack([np.ones_like(t), t - t.mean()], axis=1)
    coef, *_ = np.linalg.lstsq(design, known[:, 1:], rcond=None)
    residual = known[:, 1:] - design @ coef
    noise = max((GSI_JITTER * float(np.mean(known[:, 4] - known[:, 2]))) ** 2, 1.0)  # at least a pixel

    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-0.5 * ((a[:, None] - b[None, :]) / GSI_LENGTH_FRAMES) ** 2)

    line = np.stack([np.ones_like(frames), frames - t.mean()], axis=1) @ coef
    for k in range(4):  # each coordinate with its own signal variance (x moves, y may not)
        ratio = noise / max(float(residual[:, k].var()), noise, 1e-9)
        line[:, k] += kernel(frames, t) @ np.linalg.solve(kernel(t, t) + ratio * np.eye(len(t)), residual[:, k])
    return line
