"""ONNX ReID models run through onnxruntime, described by a small model card.

An ONNX file says nothing about the pixels it expects, so a *model card* does: a YAML file beside
the model (``osnet.onnx`` -> ``osnet.yaml``) or the same keys passed as a mapping::

    input_size: [256, 128]   # height, width; may be left out when the graph's input is static
    color: rgb               # channel order the graph expects: rgb | bgr
    pixel_scale: 255.0       # pixels are divided by this, then (x - mean) / std per channel
    mean: [0.485, 0.456, 0.406]
    std: [0.229, 0.224, 0.225]
    raw_pixels: false        # true: normalisation is inside the graph, feed float 0..255 unchanged
    output_dim: 512          # optional; checked against the graph

A model without a card gets the torchreid / BoxMOT export convention that OSNet and most ReID
ONNX exports follow: RGB, divided by 255, ImageNet mean/std, input size read from the graph.

>>> model = OnnxReidModel("osnet_x0_25_msmt17.onnx")        # doctest: +SKIP
>>> model(np.zeros((2, 3, 256, 128), np.float32)).shape      # doctest: +SKIP
(2, 512)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import onnxruntime as ort
import yaml
from pydantic import BaseModel, ValidationError, model_validator

from reid.errors import CrosscamError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelCard(BaseModel):
    """The pixels an ONNX ReID model expects and the size of what it returns."""

    model_config = {"extra": "forbid", "frozen": True}

    input_size: tuple[int, int] | None = None  # (height, width); None: read it from the graph
    color: Literal["rgb", "bgr"] = "rgb"
    pixel_scale: float = 255.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    raw_pixels: bool = False
    output_dim: int | None = None

    @model_validator(mode="after")
    def _raw_pixels_excludes_normalisation(self) -> "ModelCard":
        given = {"pixel_scale", "mean", "std"} & self.model_fields_set
        if self.raw_pixels and given:
            raise ValueError(f"raw_pixels: true means no normalisation; remove {', '.join(sorted(given))}")
        if any(s == 0 for s in self.std) or self.pixel_scale == 0:
            raise ValueError("std and pixel_scale must be non-zero")
        return self

    def normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel ``(gain, offset)``, each (1, 3, 1, 1) float32: graph input = pixels * gain + offset."""
        if self.raw_pixels:
            return np.ones((1, 3, 1, 1), np.float32), np.zeros((1, 3, 1, 1), np.float32)
        std = np.asarray(self.std, np.float64)
        gain = 1.0 / (self.pixel_scale * std)
        offset = -np.asarray(self.mean, np.float64) / std
        return gain.reshape(1, 3, 1, 1).astype(np.float32), offset.reshape(1, 3, 1, 1).astype(np.float32)


CardSource = str | Path | Mapping[str, Any] | ModelCard | None


SPIN_ENV = "CROSSCAM_ORT_SPIN"
_intra_op_threads: int | None = None  # None: onnxruntime's own choice (one per core)


def set_intra_op_threads(threads: int | None) -> None:
    """Give every onnxruntime session opened from now on ``threads`` intra-op threads (None: one
    per core). Several workers sharing a machine each take their share of the cores this way."""
    global _intra_op_threads
    _intra_op_threads = threads


def session_options() -> ort.SessionOptions:
    """onnxruntime options for every crosscam session: quiet, and threads that sleep while they wait.

    By default each intra-op thread spin-waits for the others between parallel sections. When any
    other process (or crosscam's own decode, tracking and writing) holds a core, the spinning
    thread takes the time slice its partner needs: on a 2-core machine with one core busy elsewhere,
    YOLOv8n INT8 at 640x640 took 210 ms per frame spinning and 115 ms without (as fast as one
    thread). On a machine with nothing else running, sleeping costs wake-ups: 67 vs 59 ms there.
    ``CROSSCAM_ORT_SPIN=1`` in the environment restores spinning for such dedicated machines.
    The thread count stays onnxruntime's, so free cores are still used, unless
    :func:`set_intra_op_threads` fixed it.
    """
    options = ort.SessionOptions()
    if _intra_op_threads is not None:
        options.intra_op_num_threads = _intra_op_threads
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    spin = os.environ.get(SPIN_ENV, "0")
    if spin not in ("0", "1"):
        raise CrosscamError(f"{SPIN_ENV}={spin!r}: use 1 (spin-wait, for machines running crosscam alone) or 0 (default)")
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    return options


CARD_METADATA_KEY = "crosscam.model_card"  # where a crosscam export keeps its card (JSON) in the graph's metadata


def card_path_for(model_path: str | Path) -> Path:
    """The YAML card that belongs beside ``model_path`` (``model.onnx`` -> ``model.yaml``)."""
    return Path(model_path).with_suffix(".yaml")


def load_model_card(
    model_path: str | Path, card: CardSource = None, metadata: Mapping[str, str] | None = None
) -> tuple[ModelCard, str]:
    """Return the card for ``model_path`` and where it came from (a file, ``"config"``, ``"embedded"``
    or ``"default"``).

    ``card`` may be a YAML path, a mapping of card keys or a :class:`ModelCard`; ``None`` looks for
    the YAML beside the model, then for the card a crosscam export keeps in the graph's metadata
    (:data:`CARD_METADATA_KEY`; ``metadata``: the graph's metadata where already read, else it is
    read from the file), and falls back to the torchreid convention.
    """
    if isinstance(card, ModelCard):
        return card, "config"
    if isinstance(card, Mapping):
        return _validate_card(dict(card), "model card (config)"), "config"
    path = Path(card) if card is not None else card_path_for(model_path)
    if card is None and not path.is_file():
        embedded = (metadata if metadata is not None else _onnx_metadata(Path(model_path))).get(CARD_METADATA_KEY)
        if embedded is None:
            inside = graph_normalisation(Path(model_path))  # normalisation in the graph: fast-reid deploy exports ...
            return (inside, "graph") if inside is not None else (ModelCard(), "default")
        try:
            data = json.loads(embedded)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise CrosscamError(f"{model_path}: its embedded model card is not a JSON mapping; put a model card "
                                f"YAML beside it ({card_path_for(model_path)})")
        return _validate_card(data, f"{model_path} (its embedded model card)"), "embedded"
    if not path.is_file():
        raise CrosscamError(f"{path}: model card not found; pass an existing YAML file or leave it out")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CrosscamError(f"{path}: model card is not valid YAML; fix the file") from exc
    if not isinstance(data, dict):
        raise CrosscamError(f"{path}: a model card must be a YAML mapping (input_size, color, mean, std, ...)")
    return _validate_card(data, str(path)), str(path)


def graph_normalisation(path: Path) -> ModelCard | None:
    """The card a graph that normalises its input itself needs, read from its first operation:
    ``Sub`` of 0..255-scale means (fast-reid's deploy exports: ``(x - pixel_mean) / pixel_std``,
    pixel_mean about 124, 116, 104) or a ``Div`` by 255 / ``Mul`` by 1/255 (a torchreid model
    exported with its transforms): raw 0..255 pixels; ``Sub`` of 0..1-scale means: pixels / 255
    alone. None for a graph that starts otherwise (the torchreid convention then applies). Fed the
    default ImageNet-normalised pixels instead, such a model's rank-1 falls to chance."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - not an ONNX file: whoever loads the graph says so in one line
        return None
    constants = {t.name: t for t in graph.initializer}
    constants.update({n.output[0]: a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"})
    inputs = {i.name for i in graph.input} - set(constants)
    first = next((n for n in graph.node if n.input and n.input[0] in inputs), None)
    if first is None or first.op_type not in ("Sub", "Div", "Mul") or len(first.input) < 2 or first.input[1] not in constants:
        return None
    try:
        values = numpy_helper.to_array(constants[first.input[1]]).astype(np.float64).reshape(-1)
    except Exception:  # noqa: BLE001 - external or odd tensor data: no guess
        return None
    if values.size not in (1, 3):
        return None
    raw = ModelCard(raw_pixels=True)
    if first.op_type == "Div" and np.allclose(values, 255.0):
        return raw
    if first.op_type == "Mul" and np.allclose(values, 1 / 255.0):
        return raw
    if first.op_type == "Sub" and values.size == 3 and ((values > 20) & (values < 235)).all():
        return raw
    if first.op_type == "Sub" and values.size == 3 and ((values > 0.05) & (values < 0.95)).all():
        return ModelCard(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # it centres 0..1 pixels itself
    return None


def _onnx_metadata(path: Path) -> dict[str, str]:
    """The ONNX file's metadata (key -> value); {} for a file onnx cannot read (its loader says why)."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not an ONNX file: whoever loads the graph says so in one line
        return {}
    return {prop.key: prop.value for prop in graph.metadata_props}


def _validate_card(data: dict[str, Any], where: str) -> ModelCard:
    try:
        return ModelCard.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(card)"
        raise CrosscamError(f"{where}: key '{key}': {err['msg']}; fix the model card") from None


def onnx_providers(device: str) -> list[str | tuple[str, dict[str, int]]]:
    """onnxruntime execution providers for ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    ``auto`` takes CUDA when this onnxruntime build has it (onnxruntime-gpu), else the CPU.
    """
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "auto":
        device = "cuda" if has_cuda else "cpu"
    if device.startswith("cuda"):
        if not has_cuda:
            raise CrosscamError(
                f"--device {device}: this onnxruntime has no CUDA provider; install onnxruntime-gpu or use --device cpu"
            )
        device_id = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxReidModel:
    """An ONNX ReID model: RGB float pixels 0..255 in, one feature row per image out.

    Normalisation and colour order follow the model card, applied to a copy (never in place).

    >>> model = OnnxReidModel("osnet.onnx", device="cpu")        # doctest: +SKIP
    >>> model.input_size, model.dim                               # doctest: +SKIP
    ((256, 128), 512)
    """

    def __init__(self, path: str | Path, card: CardSource = None, device: str = "cpu"):
        self.path = Path(path)
        if card is not None:  # a wrong card is said before the model loads
            self.card, self.card_source = load_model_card(self.path, card)
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(), providers=onnx_providers(device))
        except Exception as exc:  # onnxruntime's pybind errors (InvalidProtobuf, Fail, ...) share no base class
            # its messages repeat the path: "Load model from <path> failed:<reason>"
            reason = " ".join(str(exc).rsplit("failed:", 1)[-1].split())[:160] or type(exc).__name__
            raise CrosscamError(f"{self.path}: not a loadable ONNX model ({reason}); check the file") from None
        if card is None:
            self.card, self.card_source = load_model_card(self.path, None, self.session.get_modelmeta().custom_metadata_map)
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.input_size = self._resolve_input_size(graph_input.shape)
        batch = graph_input.shape[0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        graph_output = self.session.get_outputs()[0]
        self.output_name = graph_output.name
        if graph_output.shape:  # empty or None: onnxruntime does not know the rank; _run checks it
            self._check_features(graph_output.shape)
        self.dim = self._resolve_output_dim(graph_output.shape)
        self._gain, self._offset = self.card.normalisation()

    def pixels_described(self) -> str:
        """What the graph is fed, and on whose word: ``"rgb /255, mean/std [...] (no model card: the
        torchreid/BoxMOT export convention)"``, ``"raw 0..255 rgb (the graph normalises them)"``, ..."""
        card = self.card
        if card.raw_pixels:
            what = f"raw 0..255 {card.color}"
        else:
            what = f"{card.color} /{card.pixel_scale:g}, mean {list(card.mean)} std {list(card.std)}"
        why = {"default": "no model card: the torchreid/BoxMOT export convention",
               "graph": "no model card: the graph normalises them itself (its first operation says how)",
               "embedded": "the card in the graph's metadata", "config": "the model card given"}
        return f"{what} ({why.get(self.card_source, f'model card {self.card_source}')})"

    def _where(self) -> str:
        if self.card_source in ("default", "graph"):
            return "its default card" if self.card_source == "default" else "its graph's own normalisation"
        return f"model card {self.card_source}"

    def _resolve_input_size(self, shape: list[Any]) -> tuple[int, int]:
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise CrosscamError(f"{self.path}: graph input {shape} is not (N, 3, H, W); only image ReID models are supported")
        graph_hw = tuple(shape[2:]) if all(isinstance(s, int) and s > 0 for s in shape[2:]) else None
        card_hw = self.card.input_size
        if card_hw is not None and graph_hw is not None and tuple(card_hw) != graph_hw:
            raise CrosscamError(
                f"{self.path}: {self._where()} says input_size {list(card_hw)} but the graph's input "
                f"'{self.input_name}' is {shape}; fix input_size in the card"
            )
        if card_hw is None and graph_hw is None:
            raise CrosscamError(
                f"{self.path}: the graph's input {shape} has a dynamic height/width; give input_size: [H, W] "
                f"in a model card at {card_path_for(self.path)}"
            )
        return tuple(card_hw or graph_hw)  # type: ignore[return-value]

    def _resolve_output_dim(self, shape: list[Any]) -> int:
        graph_dim = shape[-1] if shape and isinstance(shape[-1], int) and shape[-1] > 0 else None
        card_dim = self.card.output_dim
        if card_dim is not None and graph_dim is not None and card_dim != graph_dim:
            raise CrosscamError(
                f"{self.path}: {self._where()} says output_dim {card_dim} but the graph's output is {shape}; "
                "fix output_dim in the card"
            )
        if graph_dim is not None:
            return graph_dim
        if card_dim is not None:
            return card_dim
        probe = np.zeros((self.fixed_batch or 1, 3, *self.input_size), np.float32)
        return int(self._run(probe).shape[-1])

    def _check_features(self, shape: Sequence[Any]) -> None:
        """Refuse an output that is not (N, D) feature rows, such as a detector's (1, 84, 8400) boxes."""
        if len(shape) != 2:
            raise CrosscamError(
                f"{self.path}: the graph's output '{self.output_name}' is {list(shape)}, not (N, D) feature rows; "
                "pass a ReID model that returns one feature vector per image"
            )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        outputs = self.session.run(None, {self.input_name: batch})[0]
        self._check_features(outputs.shape)
        return np.asarray(outputs, np.float32)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Features of ``pixels`` (N, 3, H, W) float32 RGB 0..255 at :attr:`input_size` -> (N, D) float32."""
        if self.card.color == "bgr":
            pixels = pixels[:, ::-1]
        graph_input = np.ascontiguousarray(pixels * self._gain + self._offset, np.float32)
        if self.fixed_batch is None:
            return self._run(graph_input)
        return np.concatenate(
            [self._run_fixed(graph_input[i : i + self.fixed_batch]) for i in range(0, len(graph_input), self.fixed_batch)]
            or [np.zeros((0, self.dim), np.float32)]
        )

    def _run_fixed(self, chunk: np.ndarray) -> np.ndarray:
        """Run a graph exported with a fixed batch size, zero-padding the last chunk."""
        padded = np.zeros((self.fixed_batch, *chunk.shape[1:]), np.float32)
        padded[: len(chunk)] = chunk
        return self._run(padded)[: len(chunk)]
