"""fast-reid's non-local block (Wang et al., "Non-local Neural Networks", dot-product form).

``z = x + W(y)``, ``y_i = (1/N) sum_j theta(x_i) . phi(x_j) g(x_j)`` over the ``N = H*W`` positions,
where theta, phi, g are 1x1 convolutions (with bias) to ``inter_channels`` and ``W`` is a 1x1
convolution back to ``channels`` followed by a BatchNorm. fast-reid computes ``inter_channels`` as
``reduc_ratio // reduc_ratio``, i.e. **1**, in every release (v0.1 to 1.4.0), so every AGW/SBS file
holds ``g.weight`` of shape ``(1, C, 1, 1)`` (its issues #439, #453 print them); crosscam builds the
same, and strict loading names any file whose shapes differ.

The dot-product form is linear in each factor, so ``(theta phi^T) g`` is computed as
``theta (phi^T g)``: the same numbers up to float rounding, without the ``(N, N)`` matrix (at
384x128 layer2 has N = 768, a 590k-entry matrix per image and per block).

State-dict names: ``g.*``, ``theta.*``, ``phi.*``, ``W.0.*`` (conv), ``W.1.*`` (BatchNorm2d).

>>> import torch
>>> NonLocalBlock(512)(torch.randn(2, 512, 32, 16)).shape
torch.Size([2, 512, 32, 16])
"""

from __future__ import annotations

import torch
from torch import nn


class NonLocalBlock(nn.Module):
    """``(N, C, H, W) -> (N, C, H, W)``, a residual non-local block; see the module docstring."""

    def __init__(self, channels: int, inter_channels: int = 1) -> None:
        super().__init__()
        self.inter_channels = inter_channels
        self.g = nn.Conv2d(channels, inter_channels, 1)
        self.theta = nn.Conv2d(channels, inter_channels, 1)
        self.phi = nn.Conv2d(channels, inter_channels, 1)
        self.W = nn.Sequential(nn.Conv2d(inter_channels, channels, 1), nn.BatchNorm2d(channels))
        # Zero-initialised output BN: a fresh block is the identity (the non-local paper's choice).
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        positions = height * width
        g = self.g(x).flatten(2)  # (B, K, N)
        theta = self.theta(x).flatten(2)  # (B, K, N)
        phi = self.phi(x).flatten(2)  # (B, K, N)
        # sum_j phi_j g_j^T: (B, K, K); then y_i = theta_i^T (that) / N
        context = torch.bmm(phi, g.transpose(1, 2)) / positions
        y = torch.bmm(context.transpose(1, 2), theta)  # (B, K, N)
        return x + self.W(y.view(batch, self.inter_channels, height, width))
