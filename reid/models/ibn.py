"""IBN-a normalisation (Pan et al., "Two at Once: Enhancing Learning and Generalization Capacities
via IBN-Net"): the first half of the channels instance-normalised, the rest batch-normalised.

fast-reid's IBN-a ResNets put it in place of ``bn1`` of every bottleneck in layer1-3 (not layer4).
State-dict names: ``IN.weight``/``IN.bias`` (affine InstanceNorm, no running statistics) and
``BN.*`` (a BatchNorm2d), as in fast-reid's files.

>>> import torch
>>> IBN(64)(torch.randn(2, 64, 8, 4)).shape
torch.Size([2, 64, 8, 4])
"""

from __future__ import annotations

import torch
from torch import nn


class IBN(nn.Module):
    """``(N, C, H, W) -> (N, C, H, W)``: InstanceNorm on channels ``[0, C // 2)``, BatchNorm on the rest."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.half = channels // 2
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(first), self.BN(second)], dim=1)
