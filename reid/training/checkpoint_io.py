"""Trained weights on disk in fast-reid's key layout, plus a ``crosscam`` entry describing the model.

A file is ``{"model": state_dict, "crosscam": {...}}`` (``last.pth`` adds ``optimizer``,
``scaler``, ``epoch``, ``iteration`` and ``config`` for ``--resume``). Keys are fast-reid's:
``backbone.*`` + the BNNeck and classifier names of a key generation chosen by the ResNet stem,
so that :func:`reid.checkpoint.load_bot_checkpoint` (hence ``Embedder.from_weights``) rebuilds a
trained **ResNet-50** exactly, picking the right stem from the names alone:

- stem ``fastreid`` -> generation (c): ``heads.bottleneck.0.*``, ``heads.weight`` (fast-reid 1.4);
- stem ``torchvision`` -> generation (a): ``heads.bnneck.*``, ``heads.classifier.weight`` and the
  ``pixel_mean``/``pixel_std`` buffers (fast-reid v0.1.x, the model-zoo files).

Other backbones (ResNet-18/34, MobileNetV2) use the same names; ``crosscam export`` reads them
through the ``crosscam`` entry, and their ONNX export is what the other commands load.

>>> meta = describe_model(ModelSection(backbone="mobilenetv2"), (128, 64), num_classes=743, feat_dim=1280)
>>> meta["backbone"], meta["input_size"]
('mobilenetv2', [128, 64])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from reid import zoo
from reid.checkpoint import (bot_model_from_payload, describe_architecture, extract_state_dict, osnet_from_state,
                             read_checkpoint, to_crosscam_names, to_fastreid_name)
from reid.errors import CrosscamError
from reid.models.bot import PIXEL_MEAN, PIXEL_STD
from reid.models.osnet import INPUT_SIZE as OSNET_INPUT_SIZE
from reid.models.osnet import osnet_spec
from reid.training.config import ModelSection
from reid.training.models import build_model

FORMAT_VERSION = 1


def key_generation(stem: str) -> str:
    """fast-reid key generation written for a ResNet ``stem`` (see the module docstring)."""
    return "a" if stem == "torchvision" else "c"


def describe_model(cfg: ModelSection, input_size: tuple[int, int], num_classes: int, feat_dim: int) -> dict[str, Any]:
    """The ``crosscam`` entry: everything needed to rebuild the network and feed it."""
    return {
        "format": FORMAT_VERSION,
        "backbone": cfg.backbone,
        "last_stride": cfg.last_stride,
        "stem": cfg.stem,
        "pooling": cfg.pooling,
        "input_size": [int(v) for v in input_size],
        "num_classes": int(num_classes),
        "feat_dim": int(feat_dim),
    }


def to_fastreid_state_dict(model: nn.Module, stem: str) -> dict[str, torch.Tensor]:
    """``model``'s state dict under fast-reid's names (generation from ``stem``), on the CPU."""
    generation = key_generation(stem)
    state = {to_fastreid_name(key, generation): value.detach().cpu() for key, value in model.state_dict().items()}
    if generation == "a":
        state["pixel_mean"] = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
        state["pixel_std"] = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return state


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any], **extra: Any) -> Path:
    """Write ``{"model", "crosscam", **extra}`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": to_fastreid_state_dict(model, meta["stem"]), "crosscam": meta, **extra}
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def load_trained_model(
    path: str | Path, trust: bool = False, overrides: Mapping[str, Any] | None = None,
    entry: zoo.WeightsEntry | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model (eval mode, CPU) from a crosscam-trained file or any fast-reid checkpoint.

    Returns the model and its description (``input_size``, ``backbone``, ``feat_dim``, ...); a
    fast-reid file without a ``crosscam`` entry gets the architecture its keys describe
    (:func:`reid.checkpoint.infer_model_config`) completed by ``overrides`` and by its registry
    ``entry`` (given, or the entry whose zoo file name ``path`` keeps): the input size its keys
    cannot tell, and a check that the keys describe that entry's architecture. A weight that is
    NaN or infinite is refused.
    """
    path = Path(path)
    payload = read_checkpoint(path, trust)
    meta = payload.get("crosscam") if isinstance(payload, dict) else None
    if meta is None and (entry is None or entry.format == zoo.TORCHREID_FORMAT):
        osnet = _torchreid_osnet(payload, path, entry)
        if osnet is not None:
            return osnet
        if entry is not None:
            raise CrosscamError(f"{path}: not a torchreid OSNet state_dict, which {entry.name} is; download it again: "
                                f"`crosscam weights download {entry.name} --force`")
    if meta is None:
        entry = entry or zoo.entry_for_file(path)
        settings = {**(zoo.model_overrides(entry) if entry is not None else {}), **(overrides or {})}
        model = bot_model_from_payload(payload, path, overrides=settings)  # the file is read once
        cfg = model.cfg
        if entry is not None:
            zoo.check_architecture(entry, cfg, path)
        _check_finite(model, path)
        return model, {
            "format": FORMAT_VERSION,
            "backbone": describe_architecture(cfg),
            "last_stride": cfg.last_stride,
            "stem": cfg.stem,
            "pooling": cfg.pooling,
            "input_size": list(cfg.input_size),
            "num_classes": cfg.num_classes,
            "feat_dim": model.feat_dim,
        }
    if meta.get("format") != FORMAT_VERSION:
        raise CrosscamError(f"{path}: crosscam checkpoint format {meta.get('format')!r} is not {FORMAT_VERSION}; re-export with this crosscam")
    cfg = ModelSection(**{key: meta[key] for key in ("backbone", "last_stride", "stem", "pooling")}, pretrained=False)
    state = {k: v for k, v in payload["model"].items() if k not in ("pixel_mean", "pixel_std")}
    state = to_crosscam_names(state, key_generation(cfg.stem))
    model = build_model(cfg, int(state["classifier.weight"].shape[0]) if "classifier.weight" in state else 0, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CrosscamError(f"{path}: weights do not match a {cfg.backbone} model ({' '.join(str(exc).split())[:240]})") from None
    _check_finite(model, path)
    return model.eval(), meta


def _torchreid_osnet(payload: Any, path: Path, entry: zoo.WeightsEntry | None = None,
                     ) -> tuple[nn.Module, dict[str, Any]] | None:
    """A torchreid / BoxMOT OSNet checkpoint (a state_dict, or torchreid's ``{"state_dict": ...}``)
    as a model and its description; None for any other file. Loaded by its registry ``entry``, it
    must be that entry's OSNet."""
    if not isinstance(payload, dict):
        return None
    state = extract_state_dict(payload, path)  # a file fast-reid's reader would refuse is refused as it would
    spec = osnet_spec(state)
    if spec is None:
        return None
    if entry is not None and spec.describe() != entry.architecture:
        raise CrosscamError(f"{path}: holds {spec.describe()}, not {entry.architecture} as {entry.name} should; "
                            f"download it again: `crosscam weights download {entry.name} --force`")
    model = osnet_from_state(state, spec, path)
    _check_finite(model, path)
    classes = state.get("classifier.weight")
    return model, {"format": FORMAT_VERSION, "backbone": spec.describe(), "input_size": list(OSNET_INPUT_SIZE),
                   "num_classes": int(classes.shape[0]) if classes is not None else 0, "feat_dim": spec.feature_dim}


def _check_finite(model: nn.Module, path: Path) -> None:
    """One line naming the first tensor of ``model`` with a NaN or infinite value, if any."""
    broken = [key for key, value in model.state_dict().items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise CrosscamError(f"{path}: {len(broken)} tensor(s) hold NaN or infinite values ({broken[0]}, ...); the "
                            "file is broken: download or train it again")
