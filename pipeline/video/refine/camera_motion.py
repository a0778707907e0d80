"""Global camera motion between consecutive frames, and Kalman states carried along with it.

A hand-held or vehicle camera moves the whole picture: every track's predicted box lands where
the person *was* in the image, and matching fails. As in BoT-SORT (Aharon et al., 2022), the
image motion from the previous frame to the current one is estimated as a 2x3 similarity /
affine transform, and each track's state is moved by it before the Kalman prediction:

- ``ecc``: OpenCV's ECC image alignment (``findTransformECC``, Euclidean) on a downscaled grey frame;
- ``flow``: corners tracked by pyramidal Lucas-Kanade optical flow, then a RANSAC partial affine fit.

>>> motion = CameraMotion("flow")
>>> frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)
>>> motion.estimate(frame) is None  # the first frame has nothing to move from
True
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

WORK_WIDTH = 480  # frames are downscaled to at most this width to estimate the motion


class CameraMotion:
    """Estimates each frame's motion from the previous one (call :meth:`estimate` every frame)."""

    def __init__(self, method: Literal["ecc", "flow"]):
        self.method = method
        self._previous: np.ndarray | None = None
        self._scale = 1.0

    def estimate(self, image_bgr: np.ndarray) -> np.ndarray | None:
        """``(2, 3)`` float64 affine map from the previous frame's pixels to this frame's, or None
        for the first frame or when the estimate failed (the tracks are then left where they are)."""
        h, w = image_bgr.shape[:2]
        self._scale = min(1.0, WORK_WIDTH / w)
        grey = cv2.cvtColor(cv2.resize(image_bgr, (round(w * self._scale), round(h * self._scale))), cv2.COLOR_BGR2GRAY)
        previous, self._previous = self._previous, grey
        if previous is None or previous.shape != grey.shape:
            return None
        small = self._ecc(previous, grey) if self.method == "ecc" else self._flow(previous, grey)
        if small is None:
            return None
        small[:, 2] /= self._scale  # translation back to full-size pixels
        return small

    @staticmethod
    def _ecc(previous: np.ndarray, current: np.ndarray) -> np.ndarray | None:
        warp = np.eye(2, 3, dtype=np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
        try:
            # ECC finds W with current(W x) ~ previous(x): W maps the previous frame's pixels to this one's.
            _, warp = cv2.findTransformECC(previous, current, warp, cv2.MOTION_EUCLIDEAN, criteria, None, 5)
        except cv2.error:  # did not converge (a cut, a blank frame): leave the tracks where they are
            return None
        return warp.astype(np.float64)

    @staticmethod
    def _flow(previous: np.ndarray, current: np.ndarray) -> np.ndarray | None:
        corners = cv2.goodFeaturesToTrack(previous, maxCorners=400, qualityLevel=0.01, minDistance=8, blockSize=3)
        if corners is None or len(corners) < 8:
            return None
        moved, status, _ = cv2.calcOpticalFlowPyrLK(previous, current, corners, None)
        ok = status.reshape(-1) == 1
        if ok.sum() < 8:
            return None
        affine, _ = cv2.estimateAffinePartial2D(corners[ok], moved[ok], method=cv2.RANSAC, ransacReprojThreshold=3.0)
        return None if affine is None else affine.astype(np.float64)


def warp_state(mean: np.ndarray, covariance: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A DeepSORT Kalman state ``(x, y, a, h, vx, vy, va, vh)`` (box centre, aspect, height and
    their velocities, pixels) and its ``(8, 8)`` covariance, moved by the ``(2, 3)`` image map:
    centre mapped, velocities rotated and scaled, height scaled, aspect kept.

    >>> mean = np.array([10.0, 20.0, 0.5, 100.0, 1.0, 0.0, 0.0, 0.0])
    >>> shift = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, -3.0]])
    >>> warp_state(mean, np.eye(8), shift)[0][:6].tolist()
    [15.0, 17.0, 0.5, 100.0, 1.0, 0.0]
    """
    linear = affine[:, :2]
    scale = float(np.sqrt(abs(np.linalg.det(linear))))
    m = np.eye(8)
    m[0:2, 0:2] = linear
    m[4:6, 4:6] = linear
    m[3, 3] = m[7, 7] = scale
    new_mean = m @ mean
    new_mean[:2] += affine[:, 2]
    return new_mean, m @ covariance @ m.T
