"""OSNet (Zhou et al., "Omni-Scale Feature Learning for Person Re-Identification", ICCV 2019) as
torchreid and BoxMOT save it, so their checkpoints load exactly.

torchreid's ``osnet_x1_0``, ``osnet_x0_75``, ``osnet_x0_5``, ``osnet_x0_25`` and ``osnet_ibn_x1_0``
(instance norm in the stem and after each block of the first stage) share one layout (its
``osnet.py``); ``osnet_ain_x1_0`` ... ``osnet_ain_x0_25`` (OSNet-AIN, its ``osnet_ain.py``: instance
norm in the stem and inside the residual of four blocks) name their modules otherwise.
:func:`osnet_spec` reads a checkpoint's layout, widths, depths, norms and feature size from its
tensors, so any of them loads without being named. The network takes (N, 3, H, W) float RGB
pixels 0..255 (it scales them to 0..1 and applies ImageNet's mean/std itself, as torchreid's
transforms do) and returns the (N, 512) output of its ``fc`` layer (Linear, BatchNorm1d, ReLU)
after global average pooling: torchreid's feature in eval mode. The classifier of a checkpoint is
not needed.

>>> spec = OSNetSpec(channels=(16, 64, 96, 128), depths=(2, 2, 2), instance_norm=False, feature_dim=512)
>>> OSNet(spec).eval()(torch.full((2, 3, 256, 128), 128.0)).shape
torch.Size([2, 512])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import torch
from torch import nn
from torch.nn import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = (256, 128)  # (height, width) torchreid trains OSNet at
STAGES = ("conv2", "conv3", "conv4")
OSNET_VARIANTS = "osnet_x1_0/x0_75/x0_5/x0_25, osnet_ibn_x1_0 and osnet_ain_x1_0/x0_75/x0_5/x0_25"  # for messages
Layout = Literal["osnet", "ain"]
Norm = Literal["batch", "instance", "none"]
# the first stream's first convolution of the first block, as each layout names it
FIRST_STREAM = {"osnet": "conv2.0.conv2a.conv1.weight", "ain": "conv2.0.conv2.0.layers.0.conv1.weight"}
AIN_INSTANCE_BLOCKS = frozenset({(0, 0), (0, 1), (1, 1), (2, 0)})  # (stage, block) with IN in the residual


@dataclass(frozen=True)
class OSNetSpec:
    """One OSNet's shape: ``channels`` of the stem and the three stages, blocks per stage
    (``depths``), instance norm in the stem (with ``layout`` ``"osnet"`` also after each block of
    the first stage: IBN), the feature size, and whose module names it has: ``"osnet"`` or
    ``"ain"`` (OSNet-AIN, whose instance-normed blocks are :data:`AIN_INSTANCE_BLOCKS`)."""

    channels: tuple[int, int, int, int]
    depths: tuple[int, int, int]
    instance_norm: bool
    feature_dim: int
    layout: Layout = "osnet"

    def instance_block(self, stage: int, index: int) -> bool:
        """Whether block ``index`` of stage ``stage`` (0, 1, 2) has an instance norm."""
        if self.layout == "ain":
            return (stage, index) in AIN_INSTANCE_BLOCKS
        return self.instance_norm and stage == 0

    def describe(self) -> str:
        """``osnet_x0_25``, ``osnet_ibn_x1_0``, ``osnet_ain_x0_5``: torchreid's name where the widths
        are one of its own."""
        widths = {64: "x1_0", 48: "x0_75", 32: "x0_5", 16: "x0_25"}
        width = widths.get(self.channels[0], f"c{self.channels[0]}")
        variant = "ain_" if self.layout == "ain" else "ibn_" if self.instance_norm else ""
        return f"osnet_{variant}{width}"


def osnet_spec(state: Mapping[str, torch.Tensor]) -> OSNetSpec | None:
    """The OSNet a state_dict holds (torchreid's key names), or None when it is not one."""
    layout = next((name for name, key in FIRST_STREAM.items() if key in state), None)
    if layout is None or "conv1.conv.weight" not in state or "fc.0.weight" not in state:
        return None
    # a stage's blocks are its indices with conv* children (osnet.py's closing 1x1 + pool has "0.")
    depths = tuple(len({key.split(".")[1] for key in state if key.startswith(f"{stage}.")
                        and key.split(".")[2].startswith("conv")}) for stage in STAGES)
    try:
        channels = (int(state["conv1.conv.weight"].shape[0]),
                    *(int(state[f"{stage}.0.conv3.conv.weight"].shape[0]) for stage in STAGES))
    except KeyError:
        return None
    return OSNetSpec(channels, depths, "conv1.bn.running_mean" not in state, int(state["fc.0.weight"].shape[0]), layout)


def _norm(kind: Norm, channels: int) -> nn.Module | None:
    """A 2D norm of ``kind`` (instance norm with affine parameters, as torchreid's); None for ``"none"``."""
    if kind == "none":
        return None
    return nn.InstanceNorm2d(channels, affine=True) if kind == "instance" else nn.BatchNorm2d(channels)


class ConvNorm(nn.Module):
    """Convolution without bias, then a ``norm`` (``bn``: batch, instance or none), then ReLU
    unless ``linear``: (N, cin, H, W) -> (N, cout, H', W')."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 norm: Norm = "batch", linear: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = _norm(norm, cout)
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return x if self.linear else F.relu(x)


class LiteConv3x3(nn.Module):
    """A pointwise then a depthwise 3x3 convolution, batch norm, ReLU: (N, C, H, W) -> same."""

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


class LiteStream(nn.Module):
    """``depth`` light 3x3 convolutions under OSNet-AIN's names (``layers.0`` ...): (N, C, H, W) -> same."""

    def __init__(self, channels: int, depth: int):
        super().__init__()
        self.layers = nn.Sequential(*(LiteConv3x3(channels) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class OmniScaleBlock(nn.Module):
    """A residual block whose middle runs four streams of 1-4 light 3x3 convolutions (receptive
    fields 3 to 9), weighted by one channel gate and summed: (N, cin, H, W) -> (N, cout, H, W).

    ``instance`` adds an instance norm: after the residual sum (IBN), or with ``ain`` inside the
    residual, in place of ``conv3``'s batch norm (OSNet-AIN). ``ain`` names the streams
    ``conv2.0`` ... ``conv2.3`` as osnet_ain.py does, else ``conv2a`` ... ``conv2d``."""

    def __init__(self, cin: int, cout: int, instance: bool = False, ain: bool = False):
        super().__init__()
        mid = cout // 4
        self.conv1 = ConvNorm(cin, mid)
        if ain:
            self.conv2 = nn.ModuleList(LiteStream(mid, depth) for depth in range(1, 5))
        else:
            self.conv2a = LiteConv3x3(mid)
            self.conv2b = nn.Sequential(*(LiteConv3x3(mid) for _ in range(2)))
            self.conv2c = nn.Sequential(*(LiteConv3x3(mid) for _ in range(3)))
            self.conv2d = nn.Sequential(*(LiteConv3x3(mid) for _ in range(4)))
        self.gate = ChannelGate(mid)
        self.instance_at = ("inside" if ain else "after") if instance else None
        self.conv3 = ConvNorm(mid, cout, norm="none" if self.instance_at == "inside" else "batch", linear=True)
        self.downsample = ConvNorm(cin, cout, linear=True) if cin != cout else None
        self.IN = _norm("instance", cout) if instance else None
        self.ain = ain

    def streams(self) -> list[nn.Module]:
        """The four streams, shallowest first."""
        return list(self.conv2) if self.ain else [self.conv2a, self.conv2b, self.conv2c, self.conv2d]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        middle = self.conv1(x)
        gated = [self.gate(stream(middle)) for stream in self.streams()]
        out = self.conv3(gated[0] + gated[1] + gated[2] + gated[3])
        if self.instance_at == "inside":
            out = self.IN(out)
        out = out + (x if self.downsample is None else self.downsample(x))
        if self.instance_at == "after":
            out = self.IN(out)
        return F.relu(out)


def _stage(spec: OSNetSpec, stage: int) -> tuple[nn.Sequential, nn.Module]:
    """Stage ``stage`` (0, 1, 2) and what halves its output, (N, C, H, W) -> (N, C, H/2, W/2): a 1x1
    convolution and a 2x2 average pool, which osnet.py puts at the end of the stage and osnet_ain.py
    beside it (``pool2``, ``pool3``); identity where it stays in the stage or after the last one."""
    cin, cout = spec.channels[stage], spec.channels[stage + 1]
    ain = spec.layout == "ain"
    blocks = [OmniScaleBlock(cin if i == 0 else cout, cout, spec.instance_block(stage, i), ain)
              for i in range(spec.depths[stage])]
    if stage == len(STAGES) - 1:
        return nn.Sequential(*blocks), nn.Identity()
    halve = nn.Sequential(ConvNorm(cout, cout), nn.AvgPool2d(2, stride=2))
    return (nn.Sequential(*blocks), halve) if ain else (nn.Sequential(*blocks, halve), nn.Identity())


class OSNet(nn.Module):
    """OSNet for features: pixels 0..255 RGB in, (N, ``spec.feature_dim``) out."""

    def __init__(self, spec: OSNetSpec):
        super().__init__()
        self.spec = spec
        c = spec.channels
        self.conv1 = ConvNorm(3, c[0], 7, stride=2, padding=3, norm="instance" if spec.instance_norm else "batch")
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2, self.pool2 = _stage(spec, 0)
        self.conv3, self.pool3 = _stage(spec, 1)
        self.conv4, _ = _stage(spec, 2)
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
        x = self.conv5(self.conv4(self.pool3(self.conv3(self.pool2(self.conv2(x))))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
