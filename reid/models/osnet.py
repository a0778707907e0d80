"""OSNet (Zhou et al., "Omni-Scale Feature Learning for Person Re-Identification", ICCV 2019) as
torchreid and BoxMOT save it, so their checkpoints load exactly.

torchreid's ``osnet_x1_0``, ``osnet_x0_75``, ``osnet_x0_5``, ``osnet_x0_25`` and ``osnet_ibn_x1_0``
(instance norm in the stem and after each block of the first stage) share one layout;
:func:`osnet_spec` reads a checkpoint's widths, depths, norms and feature size from its tensors,
so any of them loads without being named. The network takes (N, 3, H, W) float RGB pixels 0..255
(it scales them to 0..1 and applies ImageNet's mean/std itself, as torchreid's transforms do) and
returns the (N, 512) output of its ``fc`` layer (Linear, BatchNorm1d, ReLU) after global average
pooling: torchreid's feature in eval mode. The classifier of a checkpoint is not needed.

>>> spec = OSNetSpec(channels=(16, 64, 96, 128), depths=(2, 2, 2), instance_norm=False, feature_dim=512)
>>> OSNet(spec).eval()(torch.full((2, 3, 256, 128), 128.0)).shape
torch.Size([2, 512])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn
from torch.nn import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = (256, 128)  # (height, width) torchreid trains OSNet at
STAGES = ("conv2", "conv3", "conv4")


@dataclass(frozen=True)
class OSNetSpec:
    """One OSNet's shape: ``channels`` of the stem and the three stages, blocks per stage
    (``depths``), instance norm in the stem and first stage (IBN), the feature size."""

    channels: tuple[int, int, int, int]
    depths: tuple[int, int, int]
    instance_norm: bool
    feature_dim: int

    def describe(self) -> str:
        """``osnet_x0_25``, ``osnet_ibn_x1_0``: torchreid's name where the widths are one of its own."""
        widths = {64: "x1_0", 48: "x0_75", 32: "x0_5", 16: "x0_25"}
        width = widths.get(self.channels[0], f"c{self.channels[0]}")
        return f"osnet_{'ibn_' if self.instance_norm else ''}{width}"


def osnet_spec(state: Mapping[str, torch.Tensor]) -> OSNetSpec | None:
    """The OSNet a state_dict holds (torchreid's key names), or None when it is not one."""
    if "conv1.conv.weight" not in state or "conv2.0.conv2a.conv1.weight" not in state or "fc.0.weight" not in state:
        return None
    # a stage's blocks are its indices with conv* children (its last, the 1x1 + pool transition, has "0.")
    depths = tuple(len({key.split(".")[1] for key in state if key.startswith(f"{stage}.")
                        and key.split(".")[2].startswith("conv")}) for stage in STAGES)
    try:
        channels = (int(state["conv1.conv.weight"].shape[0]),
                    *(int(state[f"{stage}.0.conv3.conv.weight"].shape[0]) for stage in STAGES))
    except KeyError:
        return None
    return OSNetSpec(channels, depths, "conv1.bn.running_mean" not in state, int(state["fc.0.weight"].shape[0]))


def _norm(channels: int, instance: bool) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True) if instance else nn.BatchNorm2d(channels)


class ConvNorm(nn.Module):
    """Convolution without bias, then a norm (``bn``: batch or instance), then ReLU unless ``linear``."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 instance: bool = False, linear: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = _norm(cout, instance)
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return x if self.linear else F.relu(x)


class LiteConv3x3(nn.Module):
    """A pointwise then a depthwise 3x3 convolution, batch norm, ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """Per-channel weights in (0, 1) from the globally pooled input (a 16x bottleneck); one gate is
    shared by a block's four streams."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class OmniScaleBlock(nn.Module):
    """A residual block whose middle runs four streams of 1-4 light 3x3 convolutions (receptive
    fields 3 to 9), weighted by one channel gate and summed; instance norm after the sum with
    ``instance`` (IBN)."""

    def __init__(self, cin: int, cout: int, instance: bool = False):
        super().__init__()
        mid = cout // 4
        self.conv1 = ConvNorm(cin, mid)
        self.conv2a = LiteConv3x3(mid)
        self.conv2b = nn.Sequential(*(LiteConv3x3(mid) for _ in range(2)))
        self.conv2c = nn.Sequential(*(LiteConv3x3(mid) for _ in range(3)))
        self.conv2d = nn.Sequential(*(LiteConv3x3(mid) for _ in range(4)))
        self.gate = ChannelGate(mid)
        self.conv3 = ConvNorm(mid, cout, linear=True)
        self.downsample = ConvNorm(cin, cout, linear=True) if cin != cout else None
        self.IN = nn.InstanceNorm2d(cout, affine=True) if instance else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        middle = self.conv1(x)
        gated = [self.gate(stream(middle)) for stream in (self.conv2a, self.conv2b, self.conv2c, self.conv2d)]
        out = self.conv3(gated[0] + gated[1] + gated[2] + gated[3])
        out = out + (x if self.downsample is None else self.downsample(x))
        if self.IN is not None:
            out = self.IN(out)
        return F.relu(out)


def _stage(cin: int, cout: int, depth: int, halve: bool, instance: bool = False) -> nn.Sequential:
    """``depth`` blocks, then (``halve``) a 1x1 convolution and a 2x2 average pool."""
    blocks: list[nn.Module] = [OmniScaleBlock(cin if i == 0 else cout, cout, instance) for i in range(depth)]
    if halve:
        blocks.append(nn.Sequential(ConvNorm(cout, cout), nn.AvgPool2d(2, stride=2)))
    return nn.Sequential(*blocks)


class OSNet(nn.Module):
    """OSNet for features: pixels 0..255 RGB in, (N, ``spec.feature_dim``) out."""

    def __init__(self, spec: OSNetSpec):
        super().__init__()
        self.spec = spec
        c = spec.channels
        self.conv1 = ConvNorm(3, c[0], 7, stride=2, padding=3, instance=spec.instance_norm)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = _stage(c[0], c[1], spec.depths[0], halve=True, instance=spec.instance_norm)
        self.conv3 = _stage(c[1], c[2], spec.depths[1], halve=True)
        self.conv4 = _stage(c[2], c[3], spec.depths[2], halve=False)
        self.conv5 = ConvNorm(c[3], c[3])
        self.fc = nn.Sequential(nn.Linear(c[3], spec.feature_dim), nn.BatchNorm1d(spec.feature_dim), nn.ReLU())
        # not in the state_dict: torchreid's checkpoints hold no pixel statistics
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def feat_dim(self) -> int:
        return self.spec.feature_dim

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels / 255.0 - self.pixel_mean) / self.pixel_std  # torchreid's ToTensor, then Normalize
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.conv4(self.conv3(self.conv2(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
