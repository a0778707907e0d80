"""fast-reid's MGN (Wang et al., "Learning Discriminative Features with Multiple Granularities").

The trunk up to ``layer3[0]`` is shared (``backbone.0``..``backbone.6``: conv1, bn1, relu, maxpool,
layer1, layer2, layer3's first block). Three branches then each run their own copy of the rest of
layer3 and a layer4: ``b1`` the trunk's layer4 (global), ``b2``/``b3`` a stride-1 layer4 without
IBN (``res_p_conv5``) whose output is also cut along the height into 2 / 3 stripes
(``torch.chunk``). Eight heads (``b1, b2, b3, b21, b22, b31, b32, b33``) each pool one map and
reduce it to 256-d; the inference feature is their BNNeck outputs concatenated in fast-reid's
order ``b1, b2, b3, b21, b22, b31, b32, b33``: ``(N, 2048)``.

Two heads exist (``BotModelConfig.mgn_head``):

- ``embedding`` (fast-reid >= 1.0, PyPI 1.4.0): pooling -> 1x1 conv 2048->256 -> BN (the BNNeck);
- ``reduction`` (fast-reid v0.1.x, the model-zoo MGN files): pooling -> 1x1 conv -> BN -> ReLU,
  then a separate BNNeck. Its files keep the reduction in ``bN_pool.*`` and the BNNeck in
  ``bN_head.bnneck.*``; fast-reid >= 1.0 finds none of them (its issue #508).

State-dict names: ``backbone.*``, ``b1.*``, ``b2.*``, ``b3.*`` (fast-reid's), heads
``bN_head.pool.p`` (learned GeM), ``bN_head.conv.weight``, ``bN_head.bn.*`` (reduction only),
``bN_head.neck.*``, ``bN_head.classifier.weight`` (training only).

>>> import torch
>>> from reid.config import BotModelConfig
>>> model = MgnModel(BotModelConfig(meta="mgn", pooling="gem_learned", input_size=(384, 128))).eval()
>>> model(torch.full((1, 3, 384, 128), 100.0)).shape
torch.Size([1, 2048])
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from reid.config import BotModelConfig
from reid.models.bot import PIXEL_MEAN, PIXEL_STD, build_backbone, build_pool
from reid.models.resnet import Bottleneck

HEADS = ("b1", "b2", "b3", "b21", "b22", "b31", "b32", "b33")
REDUCED_DIM = 256


class MgnHead(nn.Module):
    """One MGN head: ``(N, 2048, h, w) -> (N, 256)`` BNNeck feature (see the module docstring)."""

    def __init__(self, pooling: str, gem_p: float, kind: str, num_classes: int) -> None:
        super().__init__()
        self.pool = build_pool(pooling, gem_p)
        self.conv = nn.Conv2d(2048, REDUCED_DIM, 1, bias=False)
        self.bn: nn.Module | None = nn.BatchNorm1d(REDUCED_DIM) if kind == "reduction" else None
        self.neck = nn.BatchNorm1d(REDUCED_DIM)
        self.neck.bias.requires_grad_(False)
        self.classifier = nn.Linear(REDUCED_DIM, num_classes, bias=False) if num_classes > 0 else None

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        with torch.autocast(feature_map.device.type, enabled=False):
            pooled = self.pool(feature_map.to(self.neck.weight.dtype))
            reduced = self.conv(pooled[:, :, None, None]).flatten(1)
            if self.bn is not None:
                reduced = torch.relu(self.bn(reduced))
            return self.neck(reduced)


def _part_layer4(cfg: BotModelConfig) -> nn.Sequential:
    """fast-reid's ``res_p_conv5``: layer4 at stride 1, no IBN (its weights start as layer4's)."""
    if cfg.backbone == "resnest":
        # fast-reid builds this branch from ResNet bottlenecks only; a ResNeSt MGN is not in its zoo.
        raise ValueError("MGN with a ResNeSt-50 trunk is not a fast-reid architecture")
    return nn.Sequential(
        Bottleneck(1024, 512, stride=1),
        Bottleneck(2048, 512),
        Bottleneck(2048, 512),
    )


class MgnModel(nn.Module):
    """MGN: raw RGB 0..255 ``(N, 3, H, W)`` -> ``(N, 2048)`` (eval); see the module docstring."""

    def __init__(self, cfg: BotModelConfig) -> None:
        super().__init__()
        if cfg.meta != "mgn":
            raise ValueError(f"MgnModel needs meta 'mgn', got {cfg.meta!r}")
        self.cfg = cfg
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        trunk = build_backbone(cfg)
        self.backbone = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool, trunk.layer1, trunk.layer2, trunk.layer3[0])
        rest_of_layer3 = nn.Sequential(*trunk.layer3[1:])
        self.b1 = nn.Sequential(copy.deepcopy(rest_of_layer3), trunk.layer4)
        self.b2 = nn.Sequential(copy.deepcopy(rest_of_layer3), _part_layer4(cfg))
        self.b3 = nn.Sequential(copy.deepcopy(rest_of_layer3), _part_layer4(cfg))
        for name in HEADS:
            setattr(self, f"{name}_head", MgnHead(cfg.pooling, cfg.gem_p, cfg.mgn_head, cfg.num_classes))

    @property
    def feat_dim(self) -> int:
        return REDUCED_DIM * len(HEADS)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.pixel_mean) / self.pixel_std
        shared = self.backbone(x)
        maps = {"b1": self.b1(shared), "b2": self.b2(shared), "b3": self.b3(shared)}
        maps["b21"], maps["b22"] = torch.chunk(maps["b2"], 2, dim=2)
        maps["b31"], maps["b32"], maps["b33"] = torch.chunk(maps["b3"], 3, dim=2)
        return torch.cat([getattr(self, f"{name}_head")(maps[name]) for name in HEADS], dim=1)
