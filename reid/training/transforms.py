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

import math

import torch
import torch.nn.functional as F

from reid.models.bot import PIXEL_MEAN

# Random erasing's area and aspect ranges (torchvision's defaults, the ones fast-reid uses).
ERASE_AREA = (0.02, 0.33)
ERASE_ASPECT = (0.3, 1 / 0.3)
ERASE_ATTEMPTS = 10


class ColorJitter:
    """fast-reid's ``INPUT.CJ``: with probability ``prob`` per image, random brightness, contrast, saturation and hue.

    Factors are drawn per image like torchvision's ``ColorJitter`` (brightness, contrast and
    saturation uniform in [1 - x, 1 + x], a hue shift uniform in [-hue, hue] turns of the colour
    wheel) and applied in that fixed order to ``(N, 3, H, W)`` RGB 0..255 float batches, clamped to
    0..255. Brightness, contrast and saturation are vectorised over the batch; the hue shift goes
    through torchvision per jittered image. Randomness comes from torch's global CPU generator.
    """

    def __init__(self, prob: float, brightness: float, contrast: float, saturation: float, hue: float):
        self.prob = prob
        self.ranges = (brightness, contrast, saturation)
        self.hue = hue

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        chosen = torch.nonzero(torch.rand(len(batch)) < self.prob).flatten()
        if len(chosen) == 0:
            return batch
        brightness, contrast, saturation = (
            (1 + (torch.rand(len(chosen)) * 2 - 1) * spread).to(batch.device).view(-1, 1, 1, 1) for spread in self.ranges
        )
        hues = ((torch.rand(len(chosen)) * 2 - 1) * self.hue).tolist()
        index = chosen.to(batch.device)
        images = (batch[index] * brightness).clamp(0, 255)
        mean_gray = _gray(images).mean(dim=(2, 3), keepdim=True)
        images = ((images - mean_gray) * contrast + mean_gray).clamp(0, 255)
        gray = _gray(images)
        images = ((images - gray) * saturation + gray).clamp(0, 255)
        if self.hue > 0:
            # Imported here: torchvision takes seconds to import, and loading a checkpoint (which
            # goes through reid.training) must not pay for a jitter only training uses.
            from torchvision.transforms.v2.functional import adjust_hue

            images = torch.stack([adjust_hue(image / 255, shift) * 255 for image, shift in zip(images, hues)])
        out = batch.clone()
        out[index] = images
        return out


def _gray(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma of (N, 3, H, W) RGB images, with the weights of torchvision's grayscale (as its jitter)."""
    return (0.2989 * images[:, 0:1] + 0.587 * images[:, 1:2] + 0.114 * images[:, 2:3])


class TrainAugment:
    """Per-image flip (p), zero-pad + random crop back to ``size``, optional colour jitter, random erasing (p).

    Call with an ``(N, 3, H, W)`` float32 batch at ``size`` = (H, W) on any device; returns a new
    batch on that device (the input is not modified). Randomness comes from torch's global CPU
    generator (seeded by the trainer), so a seed gives the same augmentations on CPU and GPU.
    The batch is flipped and padded at once and cropped by slicing, which costs about a
    millisecond per 64 images instead of the ~1 s of per-image torchvision transforms on 2 cores.
    """

    def __init__(
        self,
        size: tuple[int, int],
        flip_prob: float = 0.5,
        padding: int = 10,
        erasing_prob: float = 0.5,
        color_jitter: ColorJitter | None = None,
    ):
        self.size = tuple(size)
        self.color_jitter = color_jitter
        self.flip_prob = flip_prob
        self.padding = padding
        self.erasing_prob = erasing_prob
        self.fill = torch.tensor(PIXEL_MEAN).view(3, 1, 1)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if tuple(batch.shape[-2:]) != self.size:
            raise ValueError(f"batch is {tuple(batch.shape[-2:])}, expected the resized input size {self.size}")
        n = len(batch)
        flip = (torch.rand(n) < self.flip_prob).to(batch.device)
        out = torch.where(flip.view(n, 1, 1, 1), batch.flip(3), batch)
        if self.padding > 0:
            out = self._pad_and_crop(out)
        else:
            out = out.clone()
        if self.color_jitter is not None:
            out = self.color_jitter(out)
        fill = self.fill.to(out.device, out.dtype)
        for index in torch.nonzero(torch.rand(n) < self.erasing_prob).flatten().tolist():
            box = self._erase_box()
            if box is not None:
                top, left, height, width = box
                out[index, :, top : top + height, left : left + width] = fill
        return out

    def _pad_and_crop(self, batch: torch.Tensor) -> torch.Tensor:
        height, width = self.size
        padded = F.pad(batch, (self.padding,) * 4)
        tops = torch.randint(0, 2 * self.padding + 1, (len(batch),)).tolist()
        lefts = torch.randint(0, 2 * self.padding + 1, (len(batch),)).tolist()
        return torch.stack([image[:, t : t + height, l : l + width] for image, t, l in zip(padded, tops, lefts)])

    def _erase_box(self) -> tuple[int, int, int, int] | None:
        """(top, left, height, width) of a rectangle of 2-33 % of the image, aspect 0.3-3.3; None after 10 misses."""
        height, width = self.size
        for _ in range(ERASE_ATTEMPTS):
            area = height * width * float(torch.empty(1).uniform_(*ERASE_AREA))
            aspect = math.exp(float(torch.empty(1).uniform_(math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1]))))
            box_h, box_w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < box_h < height and 0 < box_w < width:
                top = int(torch.randint(0, height - box_h + 1, (1,)))
                left = int(torch.randint(0, width - box_w + 1, (1,)))
                return top, left, box_h, box_w
        return None
