"""Training augmentation on RGB 0..255 float tensors (fast-reid's bagtricks train transforms).

Resize to the input size happens once, when the training images are loaded
(:mod:`reid.training.data`), so each step only flips, pads and crops, and erases. Pixels stay in
0..255 because every crosscam model normalises inside; random erasing therefore fills with the
ImageNet mean *in pixel units* (123.675, 116.28, 103.53), which becomes 0 after the model's
normalisation, as fast-reid's ``INPUT.REA.VALUE`` does.

>>> import torch
>>> augment = TrainAugment(size=(64, 32), flip_prob=0.5, padding=4, erasing_prob=0.5)
>>> augment(torch.full((2, 3, 64, 32), 200.0)).shape
torch.Size([2, 3, 64, 32])
"""

from __future__ import annotations

import torch
from torchvision import transforms as T

from reid.models.bot import PIXEL_MEAN


class TrainAugment:
    """Per-image flip (p), zero-pad + random crop back to ``size``, random erasing (p).

    Call with an ``(N, 3, H, W)`` float32 batch at ``size`` = (H, W); returns a new batch (the
    input is not modified). Randomness comes from torch's global generator (seeded by the trainer).
    """

    def __init__(self, size: tuple[int, int], flip_prob: float = 0.5, padding: int = 10, erasing_prob: float = 0.5):
        steps: list[torch.nn.Module] = [T.RandomHorizontalFlip(flip_prob)]
        if padding > 0:
            steps += [T.Pad(padding, fill=0), T.RandomCrop(tuple(size))]
        # torchvision's defaults (area 2-33 %, aspect 0.3-3.3) are the ones fast-reid uses.
        steps.append(T.RandomErasing(p=erasing_prob, value=list(PIXEL_MEAN)))
        self.pipeline = T.Compose(steps)
        self.size = tuple(size)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if tuple(batch.shape[-2:]) != self.size:
            raise ValueError(f"batch is {tuple(batch.shape[-2:])}, expected the resized input size {self.size}")
        return torch.stack([self.pipeline(image) for image in batch])
