"""Export a ReID model to ONNX that takes raw RGB pixels, with its model card and a parity check.

The graph's input ``images`` is ``(batch, 3, H, W)`` float32 RGB **0..255** with a dynamic batch;
the mean/std normalisation is inside the graph (the model's own buffers), so nothing outside may
normalise again, the double-normalisation trap of many ReID ONNX exports. The output
``features`` is ``(batch, D)``, the model's raw (not L2-normalised) inference feature. Beside
``model.onnx`` goes ``model.yaml``, the card :mod:`reid.onnx_backend` reads (also kept in the graph's
metadata, so the ``.onnx`` copied alone still reads right)::

    input_size: [256, 128]
    color: rgb
    raw_pixels: true
    output_dim: 2048

At export, the same random pixels run through torch and onnxruntime (at a batch size different
from the traced one, which also proves the batch is dynamic). Parity is measured where features
are used, on L2-normalised rows (every consumer compares unit features): a difference above
``tolerance`` (1e-4) there is an error and nothing is left at the output path. Raw features
differ by float32 rounding times their scale (a BN-calibrated random BoT R50: 1.3e-3 raw at
features up to ~7, 3e-5 on unit rows), so an absolute bound on raw features would refuse
faithful exports of deeper nets, while a wrong weight moves unit features far more than 1e-4.

>>> result = export_onnx("runs/mnv2/model.pth", "mnv2.onnx")  # doctest: +SKIP
>>> result.parity.unit_diff < 1e-4  # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from reid import zoo
from reid.errors import CrosscamError
from reid.export_cache import cached_export, forget
from reid.models.mobilenetv2 import INPUT_SIZE as MOBILENETV2_INPUT_SIZE
from reid.models.mobilenetv2 import load_mobilenetv2_imagenet
from reid.onnx_backend import CARD_METADATA_KEY, OnnxReidModel, card_path_for, session_options
from reid.paths import output_file
from reid.training.checkpoint_io import load_trained_model
from reid.vectors import l2_normalize

OPSET = 17
TOLERANCE = 1e-4
_TRACE_BATCH = 2
_CHECK_BATCH = 3


@dataclass(frozen=True)
class Parity:
    """torch vs onnxruntime on the same pixels: max abs difference of unit (L2-normalised) rows
    (the checked one), of raw features, the raw features' scale (max abs value) and their size D."""

    unit_diff: float
    max_abs_diff: float
    feature_scale: float
    dim: int

    def summary(self) -> dict[str, float]:
        return {"unit_diff": self.unit_diff, "max_abs_diff": self.max_abs_diff, "feature_scale": self.feature_scale}


@dataclass(frozen=True)
class ExportResult:
    """Where the model and card went, the input size (H, W), feature size and torch/ONNX parity."""

    onnx_path: Path
    card_path: Path
    input_size: tuple[int, int]
    parity: Parity

    @property
    def dim(self) -> int:
        return self.parity.dim

    @property
    def max_abs_diff(self) -> float:
        return self.parity.max_abs_diff

    def summary(self) -> dict[str, object]:
        return {
            "onnx": str(Path(self.onnx_path).resolve()),
            "model_card": str(Path(self.card_path).resolve()),
            "input_size": list(self.input_size),
            "dim": self.dim,
            **self.parity.summary(),
            "tolerance": TOLERANCE,
        }


def load_for_export(weights: str | Path, trust: bool = False) -> tuple[nn.Module, tuple[int, int]]:
    """A torch model in eval mode and its input size: a crosscam-trained file, a fast-reid or
    torchreid OSNet checkpoint, or a registry name (``crosscam weights list``; BoxMOT's file names too)."""
    entry = zoo.entry_for_name_or_file(str(weights))
    if entry is not None:
        path = zoo.ensure_weights(entry)
        if entry.architecture == "mobilenetv2":
            return load_mobilenetv2_imagenet(path), tuple(MOBILENETV2_INPUT_SIZE)
        weights = path
    path = Path(weights)
    if entry is None and not path.exists():
        raise CrosscamError(f"{path}: no such file, nor a registry name; give a .pth/.pt checkpoint or a name "
                            f"from `crosscam weights list`{zoo.registry_name_hint(path)}")
    if not zoo.is_checkpoint_name(path) or not path.is_file():
        kind = "a folder" if path.is_dir() else f"{path.suffix} files" if path.suffix else "files without .pth/.pt"
        raise CrosscamError(f"{path}: export needs a torch checkpoint (.pth/.pt) or a registry name; {kind} cannot be exported")
    model, meta = load_trained_model(path, trust=trust, entry=entry)
    return model, tuple(meta["input_size"])


CARD_HEADER = "# crosscam export: feed RGB float 0..255 pixels; normalisation is inside the graph\n"


def export_onnx(
    weights: str | Path, out: str | Path, trust: bool = False, tolerance: float = TOLERANCE, opset: int = OPSET
) -> ExportResult:
    """Export ``weights`` to ``out`` (+ model card beside it); raises CrosscamError when parity fails."""
    out = output_file(out, "--out", example="model.onnx")
    card_path = card_path_for(out)
    if card_path.is_file() and not card_path.read_text(errors="replace").startswith(CARD_HEADER):
        raise CrosscamError(f"--out {out}: {card_path} (where its model card goes) is not a crosscam model card; "
                            "move it or export to another name")
    model, input_size = load_for_export(weights, trust)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.stem}.tmp.onnx")
    try:
        parity = write_checked_onnx(model, input_size, temporary, out, tolerance, opset)
        card = raw_pixel_card(input_size, parity.dim)
        _embed_card(temporary, card)  # the .onnx alone, copied without its .yaml, still reads right
        card_temporary = card_path.with_name(f".{card_path.name}.tmp")
        card_temporary.write_text(CARD_HEADER + yaml.safe_dump(card, sort_keys=False))
        os.replace(temporary, out)
        os.replace(card_temporary, card_path)
    finally:
        temporary.unlink(missing_ok=True)
    return ExportResult(onnx_path=out, card_path=card_path, input_size=input_size, parity=parity)


def _embed_card(path: Path, card: dict[str, object]) -> None:
    """Keep ``card`` in the ONNX file's metadata (:data:`reid.onnx_backend.CARD_METADATA_KEY`)."""
    import onnx

    graph = onnx.load(str(path))
    graph.metadata_props.add(key=CARD_METADATA_KEY, value=json.dumps(card))
    onnx.save(graph, str(path))


def onnxruntime_model(model: nn.Module, input_size: tuple[int, int], device: str = "cpu") -> OnnxReidModel:
    """``model`` exported to ONNX (parity-checked) and opened in onnxruntime.

    crosscam's fast fp32 runtime for torch checkpoints: onnxruntime fuses conv, BN and ReLU and
    picks blocked memory layouts, about 2.4x PyTorch's eager forward for BoT R50 on this CPU.
    The checked graph is cached (:mod:`reid.export_cache`): later loads of the same model skip
    the export and the check.
    """
    model = model.eval().float()

    def export(path: Path) -> int:
        return write_checked_onnx(model, input_size, path, "onnxruntime runtime (use runtime torch to skip it)").dim

    path, dim = cached_export(model, input_size, OPSET, export)
    try:
        return OnnxReidModel(path, card=raw_pixel_card(input_size, dim), device=device)
    except CrosscamError:  # a damaged cache file: export again
        forget(path)
        path, dim = cached_export(model, input_size, OPSET, export)
        return OnnxReidModel(path, card=raw_pixel_card(input_size, dim), device=device)


def raw_pixel_card(input_size: tuple[int, int], dim: int) -> dict[str, object]:
    """The model card of a crosscam export: RGB 0..255 in, normalisation inside, ``dim`` out."""
    return {"input_size": list(input_size), "color": "rgb", "raw_pixels": True, "output_dim": dim}


def write_checked_onnx(
    model: nn.Module, input_size: tuple[int, int], path: Path, name: str | Path, tolerance: float = TOLERANCE, opset: int = OPSET
) -> Parity:
    """Trace ``model`` (eval, float32) to ``path`` and compare onnxruntime with torch (:func:`check_parity`)."""
    model = model.eval().float()
    _trace_to_onnx(model, input_size, path, opset)
    return check_parity(model, path, input_size, name, tolerance)


def check_parity(
    model: nn.Module, onnx_path: str | Path, input_size: tuple[int, int], name: str | Path, tolerance: float = TOLERANCE
) -> Parity:
    """:func:`parity_check`, raising CrosscamError naming ``name`` when unit features differ by more than ``tolerance``."""
    parity = parity_check(model, onnx_path, input_size)
    if not parity.unit_diff <= tolerance:
        raise CrosscamError(
            f"{name}: ONNX features differ from torch by {parity.unit_diff:.3g} on unit-normalised features "
            f"(> {tolerance:g}; raw {parity.max_abs_diff:.3g} at scale {parity.feature_scale:.3g}); "
            "the export is not faithful, report this with the weights file"
        )
    return parity


def _trace_to_onnx(model: nn.Module, input_size: tuple[int, int], path: Path, opset: int) -> None:
    example = torch.full((_TRACE_BATCH, 3, *input_size), 128.0)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs onnxscript.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )


def smooth_random_pixels(count: int, input_size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(count, 3, H, W) float32 RGB 0..255: random 8x4 colour grids upsampled bilinearly, plus noise of
    +-8 levels. Image-like, unlike white noise, which drives ReID nets far outside anything they saw."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (count, 3, 8, 4)).astype(np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=input_size, mode="bilinear", align_corners=False).numpy()
    return np.clip(smooth + rng.uniform(-8, 8, smooth.shape), 0, 255).astype(np.float32)


def parity_check(model: nn.Module, onnx_path: str | Path, input_size: tuple[int, int], seed: int = 0) -> Parity:
    """torch vs onnxruntime features of the same random 0..255 pixels (:class:`Parity`)."""
    import onnxruntime as ort

    pixels = smooth_random_pixels(_CHECK_BATCH, input_size, seed)
    with torch.inference_mode():
        expected = model(torch.from_numpy(pixels)).numpy()
    if not np.isfinite(expected).all():
        raise CrosscamError(f"{onnx_path}: the torch model gives non-finite features on test images; its weights are broken")
    session = ort.InferenceSession(str(onnx_path), session_options(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": pixels})[0]
    if got.shape != expected.shape:
        raise CrosscamError(f"{onnx_path}: ONNX output shape {got.shape} differs from torch's {expected.shape}")
    return Parity(
        unit_diff=float(np.abs(l2_normalize(got) - l2_normalize(expected)).max()),
        max_abs_diff=float(np.abs(got - expected).max()),
        feature_scale=float(np.abs(expected).max()),
        dim=int(expected.shape[1]),
    )
