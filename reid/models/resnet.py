"""ResNet backbones whose parameter and buffer names equal torchvision's.

The layout matches ``torchvision.models.resnet{18,34,50,101}`` without ``avgpool``/``fc``: the
stride of a downsampling bottleneck sits on its 3x3 convolution ("ResNet v1.5"), and the stem is
conv 7x7/2 -> BN -> ReLU -> max-pool 3x3/2. Two stems exist in checkpoints people own:

- ``"torchvision"``: max-pool ``padding=1`` (torchvision, fast-reid up to autumn 2020, which
  trained every model-zoo file);
- ``"fastreid"``: max-pool ``padding=0, ceil_mode=True`` (fast-reid since Nov 2020, PyPI 1.4.0).

Both give the same output size for even inputs (64x32 for 256x128) but different values, so the
stem must match the one the weights were trained with. ``last_stride=1`` keeps layer4 at 1/16 of
the input (16x8 for 256x128) as the BoT recipe does.

fast-reid's variants: ``ibn=True`` puts :class:`~reid.models.ibn.IBN` (``bn1.IN`` / ``bn1.BN``) in
place of ``bn1`` in every bottleneck of layer1-3 (IBN-a); ``non_local=(0, 2, 3, 0)`` inserts that
many :class:`~reid.models.non_local.NonLocalBlock` after the last blocks of each stage
(``NL_2.0`` ... as fast-reid names them; AGW/SBS use (0, 2, 3, 0) for R50 and (0, 2, 9, 0) for
R101 in fast-reid 1.4.0).

>>> import torch
>>> net = ResNet(depth=50, last_stride=1).eval()
>>> net(torch.zeros(1, 3, 256, 128)).shape
torch.Size([1, 2048, 16, 8])
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from reid.models.ibn import IBN
from reid.models.non_local import NonLocalBlock

Stem = Literal["torchvision", "fastreid"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1, ibn: bool = False) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1: nn.Module = IBN(width) if ibn else nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand, plus shortcut; ResNet-50/101."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1, ibn: bool = False) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1: nn.Module = IBN(width) if ibn else nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """The 1x1 conv + BN shortcut (``downsample.0`` / ``downsample.1``) when shapes change."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


# depth -> (block type, blocks per stage), as in the ResNet paper.
ARCHITECTURES: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """A ResNet feature extractor: ``(N, 3, H, W)`` normalised float -> ``(N, C, H/s, W/s)``.

    ``C`` is 2048 for depth 50/101 and 512 for 18/34; ``s`` is 16 with ``last_stride=1`` and 32
    with ``last_stride=2``. Weights are randomly initialised (Kaiming normal, fan-out; BN 1/0).
    ``ibn`` and ``non_local`` (blocks per stage) are fast-reid's variants (module docstring).

    >>> ResNet(depth=18).out_channels
    512
    >>> sorted(ResNet(depth=50, non_local=(0, 2, 3, 0)).non_local_plan)
    [1, 2]
    """

    def __init__(
        self,
        depth: int = 50,
        last_stride: int = 1,
        stem: Stem = "torchvision",
        ibn: bool = False,
        non_local: tuple[int, int, int, int] = (0, 0, 0, 0),
    ) -> None:
        super().__init__()
        if depth not in ARCHITECTURES:
            raise ValueError(f"ResNet depth must be one of {sorted(ARCHITECTURES)}, got {depth}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        if stem not in ("torchvision", "fastreid"):
            raise ValueError(f"stem must be 'torchvision' or 'fastreid', got {stem!r}")
        block, counts = ARCHITECTURES[depth]
        self.depth = depth
        self.stem = stem
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        if stem == "torchvision":
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)
        channels = 64
        stages = []
        for stage, (width, count, stride) in enumerate(zip((64, 128, 256, 512), counts, (1, 2, 2, last_stride))):
            blocks = []
            for index in range(count):
                # IBN-a stops before layer4 (its features must stay discriminative).
                blocks.append(block(channels, width, stride if index == 0 else 1, ibn=ibn and stage < 3))
                channels = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = channels
        self._init_weights()
        self.non_local_plan = add_non_local_blocks(self, non_local, counts, [64 * block.expansion * 2**i for i in range(4)])

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return run_stages(self, x)


def add_non_local_blocks(
    net: nn.Module, counts: tuple[int, int, int, int], blocks_per_stage: tuple[int, ...], channels: list[int]
) -> dict[int, dict[int, int]]:
    """Give ``net`` fast-reid's ``NL_<stage>`` module lists; return {stage: {block index: NL index}}.

    ``counts[s]`` blocks go after the last ``counts[s]`` residual blocks of stage ``s`` (0-based),
    as fast-reid places them; stages without any get no attribute (and no keys).
    """
    plan: dict[int, dict[int, int]] = {}
    for stage, (count, blocks, width) in enumerate(zip(counts, blocks_per_stage, channels)):
        if count == 0:
            continue
        if count > blocks:
            raise ValueError(f"stage {stage + 1} has {blocks} blocks, cannot hold {count} non-local blocks")
        setattr(net, f"NL_{stage + 1}", nn.ModuleList(NonLocalBlock(width) for _ in range(count)))
        plan[stage] = {blocks - count + index: index for index in range(count)}
    return plan


def run_stages(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """layer1..layer4 of ``net``, with its non-local blocks where ``net.non_local_plan`` puts them."""
    for stage, layer in enumerate((net.layer1, net.layer2, net.layer3, net.layer4)):
        plan = net.non_local_plan.get(stage)
        if plan is None:
            x = layer(x)
            continue
        blocks = getattr(net, f"NL_{stage + 1}")
        for index, block in enumerate(layer):
            x = block(x)
            if index in plan:
                x = blocks[plan[index]](x)
    return x


def fold_batchnorm(net: ResNet) -> ResNet:
    """An inference-only copy of ``net`` with every BN folded into the conv before it.

    Each ``conv -> bn`` pair (not IBN halves, whose instance statistics depend on the input) becomes one conv with a bias (``w * g / s``, ``(b - m) * g / s + beta``
    with ``s = sqrt(var + eps)``) and the BN an ``Identity``: the same function with one memory
    pass fewer per layer, about 10-20% faster on CPU. Results differ from the unfolded network
    by float32 rounding only. The copy has extra ``.bias`` keys, so save the original, not this.

    >>> folded = fold_batchnorm(ResNet(depth=18).eval())
    >>> isinstance(folded.bn1, nn.Identity), folded.conv1.bias is not None
    (True, True)
    """
    if net.training:
        raise ValueError("fold_batchnorm needs a network in eval mode (it bakes in the running statistics)")
    folded = copy.deepcopy(net)
    pairs = [(folded, "conv1", "bn1")]
    for stage in (folded.layer1, folded.layer2, folded.layer3, folded.layer4):
        for block in stage:
            convs = ("conv1", "conv2", "conv3") if isinstance(block, Bottleneck) else ("conv1", "conv2")
            pairs += [(block, conv, conv.replace("conv", "bn")) for conv in convs]
            if block.downsample is not None:
                pairs.append((block.downsample, "0", "1"))
    for blocks in (getattr(folded, f"NL_{stage}", ()) for stage in range(1, 5)):
        pairs += [(block.W, "0", "1") for block in blocks]
    for owner, conv_name, bn_name in pairs:
        if not isinstance(getattr(owner, bn_name), nn.BatchNorm2d):
            continue
        setattr(owner, conv_name, fuse_conv_bn_eval(getattr(owner, conv_name), getattr(owner, bn_name)))
        setattr(owner, bn_name, nn.Identity())
    return folded
