"""Person crops (any size, RGB uint8) -> one model batch ``(N, 3, H, W)`` float32, 0..255.

Two resize paths, chosen by ``EmbedderConfig.preprocess``:

- ``"parity"`` reproduces fast-reid's test loader bit for bit: PIL image, ``T.Resize((h, w),
  interpolation=3)``, i.e. ``Image.resize((w, h), Image.BICUBIC)`` (antialiased when shrinking),
  then float 0..255 without normalisation (the model normalises). Use it to reproduce published
  numbers.
- ``"fast"`` uses OpenCV: ``INTER_AREA`` when shrinking (an antialiasing box filter, like PIL's
  widened kernel) and ``INTER_CUBIC`` when enlarging. Close to parity but not bit-identical:
  on CUHK03 crops (enlarged 192 -> 256 px, or shrunk from 576 px) pixels differ by about one
  grey level on average, and a real ReID model (OSNet) gives features with cosine >= 0.998 to
  the parity ones (tests/test_preprocess.py). Plain INTER_LINEAR or INTER_CUBIC alone are
  further off when shrinking (aliasing).

No normalisation happens here, and the caller's arrays are never modified.

>>> import numpy as np
>>> crops = [np.zeros((300, 100, 3), np.uint8), np.zeros((80, 40, 3), np.uint8)]
>>> crops_to_tensor(crops, size=(256, 128), mode="fast").shape
torch.Size([2, 3, 256, 128])
"""

from __future__ import annotations

from typing import Literal, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from reid.errors import CrosscamError

PreprocessMode = Literal["parity", "fast"]


def crops_to_tensor(
    crops_rgb: Sequence[np.ndarray], size: tuple[int, int] = (256, 128), mode: PreprocessMode = "parity"
) -> torch.Tensor:
    """Resize RGB uint8 ``(h_i, w_i, 3)`` crops to ``size`` = (height, width) and batch them.

    Returns ``(N, 3, H, W)`` float32 in 0..255, in channels-last memory layout (what a
    channels-last model wants; ``.contiguous()`` gives NCHW). ``N == 0`` gives ``(0, 3, H, W)``.
    """
    height, width = size
    if mode == "parity":
        resize = _resize_pil
    elif mode == "fast":
        resize = _resize_cv2
    else:
        raise CrosscamError(f"preprocess mode {mode!r}: expected 'parity' or 'fast'")
    batch = np.empty((len(crops_rgb), height, width, 3), dtype=np.uint8)
    for index, crop in enumerate(crops_rgb):
        _check_crop(crop, index)
        batch[index] = resize(crop, width, height)
    # NHWC uint8 -> NCHW view with channels-last strides -> float32 copy (keeps that layout).
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float()


def _resize_pil(crop: np.ndarray, width: int, height: int) -> np.ndarray:
    # fromarray shares the caller's buffer, but resize writes a new image.
    return np.asarray(Image.fromarray(np.ascontiguousarray(crop), "RGB").resize((width, height), Image.BICUBIC))


def _resize_cv2(crop: np.ndarray, width: int, height: int) -> np.ndarray:
    shrinking = crop.shape[0] > height and crop.shape[1] > width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(crop, (width, height), interpolation=interpolation)


def _check_crop(crop: np.ndarray, index: int) -> None:
    if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        got = f"{crop.dtype} array of shape {crop.shape}" if isinstance(crop, np.ndarray) else type(crop).__name__
        raise CrosscamError(f"crop {index}: expected an (H, W, 3) uint8 RGB array, got a {got}; convert it first")
    if crop.shape[0] == 0 or crop.shape[1] == 0:
        raise CrosscamError(f"crop {index}: empty ({crop.shape[0]}x{crop.shape[1]} pixels); drop empty boxes first")
