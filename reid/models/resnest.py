"""ResNeSt-50 (Zhang et al., "ResNeSt: Split-Attention Networks") as fast-reid builds it.

ResNeSt-50 ``2s1x64d``: a deep stem (three 3x3 convolutions, 32-32-64 channels; ``conv1.0/1/3/4/6``
then ``bn1``) and max-pool 3x3/2 with padding 1; bottlenecks whose 3x3 convolution is a
split-attention convolution (radix 2, one group) and whose downsampling is an average pool
(``avd``, after the split attention) on the 3x3 path and an average pool before the 1x1 projection
on the shortcut (``downsample.1`` conv, ``downsample.2`` BN). Parameter and buffer names equal
fast-reid's ``backbone.*`` keys.

Two forwards exist for the same tensors, chosen by ``dilated_layer4``:

- ``False``: layer4 at stride ``last_stride`` with no dilation (fast-reid v0.1.x, which trained the
  model-zoo S50 files, and which also inserts non-local blocks: ``non_local=(0, 2, 3, 0)`` for AGW/SBS);
- ``True``: fast-reid >= 1.0 (PyPI 1.4.0): with last stride 1 the 3x3 convolutions of layer4's
  second and later blocks use dilation 2 (no non-local support there).

>>> import torch
>>> ResNeSt50(last_stride=1).eval()(torch.zeros(1, 3, 256, 128)).shape
torch.Size([1, 2048, 16, 8])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from reid.models.resnet import add_non_local_blocks, run_stages

BLOCKS = (3, 4, 6, 3)
STEM_WIDTH = 32
RADIX = 2


class SplitAttentionConv(nn.Module):
    """``(N, C, H, W) -> (N, C, H', W')``: a 3x3 conv to ``radix`` splits, weighted by a softmax over splits.

    Names: ``conv`` (grouped by radix, no bias), ``bn0``, ``fc1`` (+bias), ``bn1``, ``fc2`` (+bias).
    """

    def __init__(self, channels: int, stride: int, dilation: int, radix: int = RADIX) -> None:
        super().__init__()
        inter_channels = max(channels * radix // 4, 32)
        self.radix = radix
        self.conv = nn.Conv2d(channels, channels * radix, 3, stride, dilation, dilation, groups=radix, bias=False)
        self.bn0 = nn.BatchNorm2d(channels * radix)
        self.relu = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(channels, inter_channels, 1)
        self.bn1 = nn.BatchNorm2d(inter_channels)
        self.fc2 = nn.Conv2d(inter_channels, channels * radix, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn0(self.conv(x)))
        batch, channels = x.shape[0], x.shape[1] // self.radix
        splits = x.view(batch, self.radix, channels, *x.shape[2:])
        gap = splits.sum(dim=1).mean(dim=(2, 3), keepdim=True)
        attention = self.fc2(self.relu(self.bn1(self.fc1(gap))))  # (B, radix * C, 1, 1)
        attention = attention.view(batch, self.radix, channels, 1, 1).softmax(dim=1)
        return (splits * attention).sum(dim=1)


class ResNeStBottleneck(nn.Module):
    """1x1 -> split-attention 3x3 -> [avg-pool when ``pool_stride``] -> 1x1 (x4), plus shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, pool_stride: int | None, dilation: int, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = SplitAttentionConv(width, 1, dilation)
        # fast-reid's "avd": the first block of layer2-4 pools (3x3, padding 1, even at stride 1).
        self.avd_layer = nn.AvgPool2d(3, pool_stride, padding=1) if pool_stride is not None else None
        self.conv3 = nn.Conv2d(width, width * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.conv2(self.relu(self.bn1(self.conv1(x))))
        if self.avd_layer is not None:
            y = self.avd_layer(y)
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Average-pool (``stride``; a no-op pool at stride 1) -> 1x1 conv -> BN: ``downsample.0/1/2``."""
    return nn.Sequential(
        nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class ResNeSt50(nn.Module):
    """ResNeSt-50 feature extractor: ``(N, 3, H, W)`` normalised -> ``(N, 2048, H/16, W/16)`` at last stride 1."""

    def __init__(
        self, last_stride: int = 1, dilated_layer4: bool = False, non_local: tuple[int, int, int, int] = (0, 0, 0, 0)
    ) -> None:
        super().__init__()
        if dilated_layer4 and any(non_local):
            raise ValueError("fast-reid's dilated ResNeSt (>= 1.0) has no non-local blocks")
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, STEM_WIDTH, 3, 2, 1, bias=False),
            nn.BatchNorm2d(STEM_WIDTH),
            nn.ReLU(inplace=True),
            nn.Conv2d(STEM_WIDTH, STEM_WIDTH, 3, 1, 1, bias=False),
            nn.BatchNorm2d(STEM_WIDTH),
            nn.ReLU(inplace=True),
            nn.Conv2d(STEM_WIDTH, STEM_WIDTH * 2, 3, 1, 1, bias=False),
        )
        self.bn1 = nn.BatchNorm2d(STEM_WIDTH * 2)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        dilation4 = 2 if dilated_layer4 and last_stride == 1 else 1
        stage_strides = (1, 2, 2, 1 if dilation4 == 2 else last_stride)
        channels = STEM_WIDTH * 2
        stages = []
        for stage, (width, count, stride) in enumerate(zip((64, 128, 256, 512), BLOCKS, stage_strides)):
            out_channels = width * ResNeStBottleneck.expansion
            blocks = [ResNeStBottleneck(channels, width, stride if stage > 0 else None, 1,
                                        _shortcut(channels, out_channels, stride if dilation4 == 1 or stage < 3 else 1))]
            dilation = dilation4 if stage == 3 else 1
            blocks += [ResNeStBottleneck(out_channels, width, None, dilation, None) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = out_channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                n = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0, math.sqrt(2.0 / n))
        self.non_local_plan = add_non_local_blocks(self, non_local, BLOCKS, [256, 512, 1024, 2048])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return run_stages(self, x)
