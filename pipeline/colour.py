"""Per-camera colour normalisation of the frames whose crops go to the embedder.

Every camera shows clothing through its own colour cast, gain, gamma and contrast, and an
appearance feature learned on ordinary photos (the ImageNet MobileNetV2 most of all) carries that
response into the feature: one person seen by two cameras looks like two people. Equalising each
colour channel over the camera's own frames maps every camera's response onto the same uniform
distribution. The mapping is one lookup table per camera, learned from the first frames the embed
stage sees (mostly the empty scene; not a blank start) and then fixed, so a track's features do not drift.

Only the embedder's crops are normalised: detection, the annotated video and thumbnails see the
frames as they are.

>>> ramp = np.repeat(np.arange(0, 256, 16, dtype=np.uint8), 3).reshape(4, 4, 3)  # 16 grey levels
>>> colour = CameraColour("equalize")
>>> colour.fit([np.zeros((4, 4, 3), np.uint8)])  # a black start teaches nothing: wait for a picture
>>> colour.needs_fit
True
>>> colour.fit([ramp // 2])  # a dim camera: levels 0..120
>>> colour.apply(ramp // 2)[-1, -1].tolist()  # its brightest level maps to the top
[255, 255, 255]
"""

from __future__ import annotations

from typing import Literal, Sequence, get_args

import cv2
import numpy as np

ColourMode = Literal["none", "equalize"]
MIN_SPREAD = 4.0  # grey levels (standard deviation per channel) of frames worth learning a table from


def equalizing_lut(images: Sequence[np.ndarray]) -> np.ndarray:
    """``(256, 3)`` uint8 table mapping each channel's grey levels over ``images`` (``(H, W, 3)``
    uint8) to their cumulative share of that channel's pixels, times 255 (histogram equalisation)."""
    if not images:
        raise ValueError("equalizing_lut: no images to learn from")
    counts = np.zeros((256, 3), np.float64)
    for image in images:
        for channel in range(3):
            counts[:, channel] += np.bincount(image[..., channel].ravel(), minlength=256)
    cdf = np.cumsum(counts, axis=0) / counts.sum(axis=0)
    return np.clip(np.round(cdf * 255.0), 0, 255).astype(np.uint8)


def apply_lut(image: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with channel ``c`` mapped through ``lut[:, c]`` (a new array)."""
    return cv2.LUT(image, np.ascontiguousarray(lut.reshape(256, 1, 3)))


class CameraColour:
    """The colour normalisation of one camera: ``mode`` ``"none"`` (frames pass unchanged) or
    ``"equalize"`` (:func:`equalizing_lut` learned by :meth:`fit` once, then applied to every frame)."""

    def __init__(self, mode: ColourMode = "none"):
        if mode not in get_args(ColourMode):
            raise ValueError(f"colour mode {mode!r}: use 'none' or 'equalize'")
        self.mode = mode
        self.lut: np.ndarray | None = None  # (256, 3) uint8 once fitted

    @property
    def needs_fit(self) -> bool:
        """Whether :meth:`fit` still has a table to learn."""
        return self.mode == "equalize" and self.lut is None

    def fit(self, images: Sequence[np.ndarray]) -> None:
        """Learn the table from ``images`` (the camera's first frames); later calls change nothing.

        Frames with almost no spread in some channel (under :data:`MIN_SPREAD`: a black or blank
        start while the camera warms up) are not learned from: the table would throw every later
        level to the top. The next call tries again.
        """
        if self.needs_fit and images and np.stack(images).reshape(-1, 3).std(axis=0).min() >= MIN_SPREAD:
            self.lut = equalizing_lut(images)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """``image`` as the embedder should see it (the same array when there is nothing to do)."""
        return image if self.lut is None else apply_lut(image, self.lut)

    def describe(self) -> dict:
        """JSON-ready ``{"mode", "lut"}``: ``lut`` is 3 lists (B, G, R) of 256 levels, or None."""
        return {"mode": self.mode, "lut": None if self.lut is None else self.lut.T.tolist()}

    @classmethod
    def from_description(cls, description: dict | None) -> "CameraColour":
        """The normalisation a camera's ``run.json`` recorded (:meth:`describe`); none if absent."""
        colour = cls((description or {}).get("mode", "none"))
        lut = (description or {}).get("lut")
        if lut is not None:
            colour.lut = np.asarray(lut, np.uint8).T.copy()
        return colour
