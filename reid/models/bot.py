"""The BoT ReID network (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person ReID"),
and fast-reid's AGW and SBS, which are the same "Baseline" with other trunks and pooling.

Input ``(N, 3, H, W)`` float32 RGB 0..255 (256x128; SBS 384x128). The model subtracts ``pixel_mean``
and divides by ``pixel_std`` itself, as fast-reid does, so every caller feeds raw pixels. Then:
ResNet / ResNeSt (IBN-a, non-local blocks) -> global pooling (average, GeM with a fixed or a
learned p, max) -> BNNeck (BatchNorm1d whose bias stays 0 in training) -> [bias-free linear
classifier, training only].

Eval mode returns the ``(N, feat_dim)`` float32 BNNeck output, not L2-normalised (fast-reid's inference
feature). Train mode returns a dict: ``"features"`` (pooled, before the BNNeck; for the triplet
loss), ``"bn_features"`` and, with a classifier, ``"logits"`` ``(N, num_classes)``.

State-dict names: ``backbone.*`` (torchvision's ResNet names, fast-reid's for its variants),
``pool.p`` (learned GeM only), ``neck.*``, ``classifier.weight``.
The pixel buffers are not saved (they are constants of the model, as in fast-reid 1.4).
"""

from __future__ import annotations

import torch
from torch import nn

from reid.config import BotModelConfig
from reid.models.resnest import ResNeSt50
from reid.models.resnet import ResNet

# ImageNet statistics in 0..255 units, fast-reid's MODEL.PIXEL_MEAN / PIXEL_STD.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class GeneralizedMeanPool(nn.Module):
    """GeM pooling ``(mean(x.clamp(eps) ** p)) ** (1/p)`` over H, W: ``(N, C, H, W) -> (N, C)``.

    ``learned=True`` makes ``p`` a parameter of shape (1,) (fast-reid's ``GeneralizedMeanPoolingP``,
    key ``p``); otherwise it is a constant and nothing is saved.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learned: bool = False) -> None:
        super().__init__()
        self.p: float | nn.Parameter = nn.Parameter(torch.full((1,), float(p))) if learned else p
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class GlobalAvgPool(nn.Module):
    """Mean over H, W: ``(N, C, H, W) -> (N, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class GlobalMaxPool(nn.Module):
    """Max over H, W: ``(N, C, H, W) -> (N, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


def build_pool(pooling: str, gem_p: float = 3.0) -> nn.Module:
    """The pooling layer called ``pooling``: avg | gem | gem_learned | max (see BotModelConfig)."""
    if pooling in ("gem", "gem_learned"):
        return GeneralizedMeanPool(gem_p, learned=pooling == "gem_learned")
    if pooling == "max":
        return GlobalMaxPool()
    return GlobalAvgPool()


def build_backbone(cfg: BotModelConfig) -> ResNet | ResNeSt50:
    """The trunk ``cfg`` names, randomly initialised: ``(N, 3, H, W)`` -> ``(N, 2048, H/16, W/16)``."""
    if cfg.backbone == "resnest":
        return ResNeSt50(cfg.last_stride, cfg.dilated_layer4, cfg.non_local)
    return ResNet(cfg.depth, cfg.last_stride, cfg.stem, cfg.ibn, cfg.non_local)


class BnneckReidModel(nn.Module):
    """Any trunk + the BoT head: pixel normalisation, pooling, BNNeck, optional classifier.

    ``backbone`` maps normalised ``(N, 3, H, W)`` images to ``(N, feat_dim, h, w)`` feature maps.
    Inputs and outputs are those of the module docstring.
    """

    def __init__(self, backbone: nn.Module, feat_dim: int, pooling: str = "avg", gem_p: float = 3.0,
                 num_classes: int = 0) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        self.backbone = backbone
        self.pool = build_pool(pooling, gem_p)
        self.neck = nn.BatchNorm1d(feat_dim)
        nn.init.ones_(self.neck.weight)
        nn.init.zeros_(self.neck.bias)
        # BoT freezes the neck's bias at 0, so the bias-free classifier sees zero-centred features.
        self.neck.bias.requires_grad_(False)
        self.classifier: nn.Linear | None = None
        if num_classes > 0:
            self.classifier = nn.Linear(feat_dim, num_classes, bias=False)
            nn.init.normal_(self.classifier.weight, std=0.001)

    @property
    def feat_dim(self) -> int:
        return self.neck.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        # Out of place: the caller's batch must stay raw pixels.
        x = (images - self.pixel_mean) / self.pixel_std
        feature_map = self.backbone(x)
        # Pooling and BNNeck run at the neck's own precision (float32) under bf16/fp16 autocast:
        # the neck subtracts a running mean close to the pooled values, a cancellation that would
        # leave bf16 almost no bits.
        with torch.autocast(feature_map.device.type, enabled=False):
            pooled = self.pool(feature_map.to(self.neck.weight.dtype))
            bn_features = self.neck(pooled)
        if not self.training:
            return bn_features
        out = {"features": pooled, "bn_features": bn_features}
        if self.classifier is not None:
            out["logits"] = self.classifier(bn_features)
        return out


class BotModel(BnneckReidModel):
    """BoT ResNet ReID model; see the module docstring for inputs and outputs.

    >>> import torch
    >>> model = build_bot_model(BotModelConfig(depth=18)).eval()
    >>> with torch.inference_mode():
    ...     feats = model(torch.full((2, 3, 256, 128), 128.0))
    >>> feats.shape
    torch.Size([2, 512])
    """

    def __init__(self, cfg: BotModelConfig) -> None:
        super().__init__(build_backbone(cfg), cfg.feat_dim, cfg.pooling, cfg.gem_p, cfg.num_classes)
        self.cfg = cfg


def build_bot_model(cfg: BotModelConfig | None = None) -> BotModel:
    """Build a randomly initialised :class:`BotModel` (``cfg`` defaults to BoT R50, no classifier)."""
    cfg = cfg if cfg is not None else BotModelConfig()
    if cfg.meta != "baseline":
        raise ValueError(f"BotModel is fast-reid's Baseline; meta {cfg.meta!r} is built by reid.models.mgn")
    return BotModel(cfg)
