"""fast-reid 1.4.0 (PyPI, test-only) built as its person model-zoo configs describe, randomised,
and the same weights in each fast-reid key generation. Shared by the conformance tests and
tests/benchmarks/bench_fastreid_zoo.py.

``ZOO`` maps each zoo architecture name (``weights/registry.yaml``'s ``architecture``) to its
settings from fast-reid's configs: Base-bagtricks.yml (BoT), Base-AGW.yml (non-local blocks, GeM),
Base-SBS.yml (non-local blocks, learned-p GeM, 384x128), Base-MGN.yml (MGN on SBS, 256-d heads),
with ``_R50`` / ``_R50-ibn`` / ``_S50`` / ``_R101-ibn`` backbones.

fast-reid 1.4.0 is the reference for generations (b)/(c). The model-zoo files (generation a) were
trained by fast-reid v0.1.x, whose forward differs in what keys cannot show: the torchvision
max-pool stem, an undilated ResNeSt layer4 that also carries non-local blocks, and MGN heads that
reduce with conv -> BN -> ReLU before a separate BNNeck. :func:`zoo_era` rebuilds that forward from
fast-reid 1.4.0's own layers (MaxPool2d, Non_local, GeneralizedMeanPoolingP, BatchNorm) wired the
way v0.1.x's source wires them.
"""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

NUM_CLASSES = 751
PIXEL_MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
PIXEL_STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)

BACKBONES = {
    "R50": {"NAME": "build_resnet_backbone", "DEPTH": "50x", "WITH_IBN": False},
    "R50-ibn": {"NAME": "build_resnet_backbone", "DEPTH": "50x", "WITH_IBN": True},
    "S50": {"NAME": "build_resnest_backbone", "DEPTH": "50x", "WITH_IBN": False},
    "R101-ibn": {"NAME": "build_resnet_backbone", "DEPTH": "101x", "WITH_IBN": True},
}
METHODS = {
    "bot": {"meta": "Baseline", "nl": False, "pool": "GlobalAvgPool", "size": (256, 128), "embedding": 0},
    "agw": {"meta": "Baseline", "nl": True, "pool": "GeneralizedMeanPooling", "size": (256, 128), "embedding": 0},
    "sbs": {"meta": "Baseline", "nl": True, "pool": "GeneralizedMeanPoolingP", "size": (384, 128), "embedding": 0},
    "mgn": {"meta": "MGN", "nl": False, "pool": "GeneralizedMeanPoolingP", "size": (384, 128), "embedding": 256},
}
ZOO = {f"{method}_{backbone}": (method, backbone) for method in ("bot", "agw", "sbs") for backbone in BACKBONES}
ZOO["mgn_R50-ibn"] = ("mgn", "R50-ibn")


def input_size(arch: str) -> tuple[int, int]:
    return METHODS[ZOO[arch][0]]["size"]


def fastreid_model(arch: str, num_classes: int = NUM_CLASSES) -> nn.Module:
    """fast-reid 1.4.0's model for ``arch`` (eval mode, its default random init from the current seed)."""
    pytest.importorskip("fastreid")
    from fastreid.config import get_cfg
    from fastreid.modeling import build_model

    method, backbone = ZOO[arch]
    settings = METHODS[method]
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = settings["meta"]
    cfg.MODEL.DEVICE = "cpu"
    for key, value in BACKBONES[backbone].items():
        setattr(cfg.MODEL.BACKBONE, key, value)
    cfg.MODEL.BACKBONE.NORM = "BN"
    cfg.MODEL.BACKBONE.LAST_STRIDE = 1
    cfg.MODEL.BACKBONE.FEAT_DIM = 2048
    cfg.MODEL.BACKBONE.WITH_NL = settings["nl"]
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.HEADS.NAME = "EmbeddingHead"
    cfg.MODEL.HEADS.NORM = "BN"
    cfg.MODEL.HEADS.WITH_BNNECK = True
    cfg.MODEL.HEADS.POOL_LAYER = settings["pool"]
    cfg.MODEL.HEADS.EMBEDDING_DIM = settings["embedding"]
    cfg.MODEL.HEADS.CLS_LAYER = "CircleSoftmax" if method in ("sbs", "mgn") else "Linear"
    cfg.MODEL.HEADS.NUM_CLASSES = num_classes
    return build_model(cfg).eval()


MGN_ORDER = ("b1", "b2", "b3", "b21", "b22", "b31", "b32", "b33")


class Reference:
    """A randomised fast-reid 1.4.0 model of one zoo architecture, with its two forwards.

    ``features(images, "modern")`` is fast-reid 1.4.0's forward (the model as it builds it);
    ``features(images, "zoo")`` the model-zoo era's (v0.1.x) on the same weights plus the parts
    only that era has (``self.extras``). :meth:`state_dict` gives the weights in a key generation:
    (b)/(c) hold the modern model, (a) the zoo-era one with ``pixel_mean``/``pixel_std``.
    """

    def __init__(self, arch: str, calibration: torch.Tensor, seed: int = 2020) -> None:
        from fastreid.layers import Non_local
        from fastreid.layers.batch_norm import get_norm
        from fastreid.layers.pooling import GeneralizedMeanPoolingP

        torch.manual_seed(seed)
        self.arch = arch
        self.method, self.backbone_name = ZOO[arch]
        self.model = fastreid_model(arch)
        self.resnest = self.backbone_name == "S50"
        extras = nn.ModuleDict()
        if not self.resnest:
            extras["maxpool"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # v0.1's stem
        if self.resnest and METHODS[self.method]["nl"]:  # v0.1's ResNeSt carried AGW/SBS's non-local blocks
            extras["NL_2"] = nn.ModuleList(Non_local(512, "BN") for _ in range(2))
            extras["NL_3"] = nn.ModuleList(Non_local(1024, "BN") for _ in range(3))
        if self.method == "agw":  # v0.1's "gempool" learned p
            extras["pool"] = GeneralizedMeanPoolingP()
        if self.method == "mgn":  # v0.1's pool -> conv -> BN -> ReLU, then a BNNeck per branch
            for name in MGN_ORDER:
                extras[f"{name}_pool"] = nn.Sequential(
                    GeneralizedMeanPoolingP(), nn.Conv2d(2048, 256, 1, bias=False), get_norm("BN", 256), nn.ReLU(True)
                )
                extras[f"{name}_bnneck"] = get_norm("BN", 256, bias_freeze=True)
        self.extras = extras
        self._randomise(calibration)

    def _randomise(self, calibration: torch.Tensor, seed: int = 7) -> None:
        """Every BN/IN/GeM/non-local parameter random; BN statistics from one batch of both forwards.

        BN and IN affine parameters and GeM's p are drawn at random (non-local blocks' output BN
        starts at zero, an identity); then train-mode passes over ``calibration`` (N, 3, H, W) RGB
        0..255 set every running mean/var to batch statistics, so features have a trained model's
        magnitudes and every BN shapes the output. The zoo-era pass runs last and its statistics
        stay (momentum 1): a non-local block is cubic in its input, so statistics averaged with the
        other era's (S50: no non-local blocks) would let its activations explode.
        """
        generator = torch.Generator().manual_seed(seed)
        modules = list(self.model.modules()) + list(self.extras.modules())
        norms = [m for m in modules if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d))]
        with torch.no_grad():
            for norm in norms:
                if norm.affine:
                    norm.weight.copy_(torch.rand(norm.num_features, generator=generator) * 0.5 + 0.75)
                    if norm.bias.requires_grad:  # BNNeck biases stay frozen at 0, as in training
                        norm.bias.copy_(torch.randn(norm.num_features, generator=generator) * 0.1)
                norm.momentum = 1.0
            for module in modules:
                if module.__class__.__name__ == "Non_local":
                    # A non-local block is cubic in its input: a trained one adds a modest residual, and
                    # a full-size random one makes activations of crops unlike the calibration ones explode.
                    module.W[1].weight.mul_(0.1)
                if isinstance(getattr(module, "p", None), nn.Parameter):
                    module.p.fill_(2.5 + torch.rand(1, generator=generator).item())
            self.model.train(), self.extras.train()
            for era in ("modern", "zoo"):
                self.features(calibration, era)
            for norm in norms:
                norm.momentum = 0.1
            for module in modules:
                if module.__class__.__name__ == "Non_local":
                    module.W[1].running_var.mul_(100)  # a residual a tenth the size: stable on unseen images too
        self.model.eval(), self.extras.eval()

    def features(self, images: torch.Tensor, era: str) -> torch.Tensor:
        """(N, D) features of ``images`` (N, 3, H, W) RGB 0..255 in the ``modern`` or ``zoo`` forward."""
        model = self.model
        x = (images - PIXEL_MEAN) / PIXEL_STD  # fast-reid normalises in place; this is its arithmetic
        if self.method == "mgn":
            shared = self._mgn_trunk(x, era)
            maps = {"b1": model.b1(shared), "b2": model.b2(shared), "b3": model.b3(shared)}
            maps["b21"], maps["b22"] = torch.chunk(maps["b2"], 2, dim=2)
            maps["b31"], maps["b32"], maps["b33"] = torch.chunk(maps["b3"], 3, dim=2)
            if era == "modern":
                heads = [getattr(model, f"{n}_head") for n in MGN_ORDER]
                return torch.cat([h.bottleneck(h.pool_layer(maps[n]))[..., 0, 0] for h, n in zip(heads, MGN_ORDER)], 1)
            return torch.cat([self.extras[f"{n}_bnneck"](self.extras[f"{n}_pool"](maps[n]))[..., 0, 0] for n in MGN_ORDER], 1)
        fmap = model.backbone(x) if era == "modern" else self._zoo_backbone(x)
        pool = self.extras["pool"] if era == "zoo" and "pool" in self.extras else model.heads.pool_layer
        return model.heads.bottleneck(pool(fmap))[..., 0, 0]

    def _mgn_trunk(self, x: torch.Tensor, era: str) -> torch.Tensor:
        trunk = self.model.backbone
        if era == "zoo":
            trunk = nn.Sequential(*trunk[:3], self.extras["maxpool"], *trunk[4:])
        return trunk(x)

    def _zoo_backbone(self, x: torch.Tensor) -> torch.Tensor:
        backbone = self.model.backbone
        if not self.resnest:  # v0.1's ResNet forward is 1.4.0's with the torchvision max-pool
            own = backbone.maxpool
            backbone.maxpool = self.extras["maxpool"]
            try:
                return backbone(x)
            finally:
                backbone.maxpool = own
        x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x))))
        for stage, layer in enumerate((backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4), start=1):
            blocks = self.extras[f"NL_{stage}"] if f"NL_{stage}" in self.extras else []
            for index, block in enumerate(layer):
                x = _undilated(block)(x) if stage == 4 else block(x)
                position = index - (len(layer) - len(blocks))
                if position >= 0:
                    x = blocks[position](x)
        return x

    def state_dict(self, generation: str) -> dict[str, torch.Tensor]:
        """The weights under fast-reid's key names of ``generation`` ("a" is the zoo-era model)."""
        state = {key: value.clone() for key, value in self.model.state_dict().items()}
        if generation == "c":
            return state
        if self.method == "mgn":
            return self._mgn_state_dict(state, generation)
        state["heads.classifier.weight"] = state.pop("heads.weight")
        if generation == "b":
            return state
        state = {key.replace("heads.bottleneck.0.", "heads.bnneck."): value for key, value in state.items()}
        for name, tensor in self.extras.state_dict().items():
            if name.startswith("NL_"):
                state[f"backbone.{name}"] = tensor.clone()
            elif name.startswith("pool."):
                state[f"heads.pool_layer.{name[5:]}"] = tensor.clone()
        return state | {"pixel_mean": PIXEL_MEAN.clone(), "pixel_std": PIXEL_STD.clone()}

    def _mgn_state_dict(self, state: dict[str, torch.Tensor], generation: str) -> dict[str, torch.Tensor]:
        for name in MGN_ORDER:
            state[f"{name}_head.classifier.weight"] = state.pop(f"{name}_head.weight")
        if generation == "b":
            return state
        state = {key: value for key, value in state.items() if "_head." not in key or key.endswith("classifier.weight")}
        for name, tensor in self.extras.state_dict().items():
            branch, _, rest = name.partition("_")
            kind, _, tail = rest.partition(".")
            key = f"{branch}_pool.{tail}" if kind == "pool" else f"{branch}_head.bnneck.{tail}"
            state[key] = tensor.clone()
        return state | {"pixel_mean": PIXEL_MEAN.clone(), "pixel_std": PIXEL_STD.clone()}


def _undilated(block: nn.Module):
    """Run a fast-reid 1.4.0 ResNeSt block with its 3x3 convolution undilated (v0.1's layer4)."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        conv = block.conv2.conv
        own = conv.dilation, conv.padding
        conv.dilation, conv.padding = (1, 1), (1, 1)
        try:
            return block(x)
        finally:
            conv.dilation, conv.padding = own
    return forward
