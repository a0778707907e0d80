"""Load fast-reid BoT checkpoints into :class:`~reid.models.bot.BotModel`, strictly.

fast-reid renamed its head twice after publishing its model zoo, and loads with ``strict=False``,
so current fast-reid silently drops the BNNeck of every zoo file (its issue #453). Here a load
matches every tensor or fails with one line naming the keys. Accepted key generations (backbone
keys are always ``backbone.`` + torchvision's ResNet names):

- (a) fast-reid v0.1.x, every person-ReID model-zoo file: BNNeck ``heads.bnneck.*``, classifier
  ``heads.classifier.weight``;
- (b) Sep 2020 - Mar 2021: ``heads.bottleneck.0.*`` and ``heads.classifier.weight``;
- (c) Mar 2021 onward and PyPI fastreid 1.4.0: ``heads.bottleneck.0.*`` and ``heads.weight``.

Generation (a) files also store ``pixel_mean``/``pixel_std`` (shape (1, 3, 1, 1)); when present
they must equal crosscam's. The classifier is optional (inference does not use it); when present
it sets ``num_classes``. Files are read with ``torch.load(weights_only=True)``; one that needs
full unpickling (arbitrary code) is refused unless ``trust=True``.

>>> model = load_bot_checkpoint("weights/market_bot_R50.pth")  # doctest: +SKIP
>>> model(torch.zeros(1, 3, 256, 128)).shape  # doctest: +SKIP
torch.Size([1, 2048])
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import torch

from reid.config import BotModelConfig
from reid.errors import CrosscamError
from reid.models.bot import PIXEL_MEAN, PIXEL_STD, BotModel, build_bot_model

Generation = Literal["a", "b", "c"]

TRUST_HINT = "set reid.trust_checkpoint: true (CLI: --trust-checkpoint) only if you trust its source"
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80  # first byte of a pickle (protocol >= 2): torch's legacy format
_SHOWN_KEYS = 4


def load_bot_checkpoint(
    path: str | Path, cfg: BotModelConfig | None = None, trust: bool = False
) -> BotModel:
    """Read a fast-reid BoT checkpoint and return a :class:`BotModel` in eval mode on the CPU.

    ``cfg`` gives depth, stem, last stride and pooling; when it is ``None`` the defaults (BoT R50)
    are used with the stem of the file's generation: ``"torchvision"`` for (a), ``"fastreid"``
    for (b) and (c) (files of generation (b) written before Nov 2020 used the torchvision stem:
    pass ``cfg`` for those). ``cfg.num_classes`` 0 takes the checkpoint's classifier size.
    Raises :class:`CrosscamError` for every bad file, naming it and the offending keys.
    """
    path = Path(path)
    return bot_model_from_payload(read_checkpoint(path, trust), path, cfg)


def bot_model_from_payload(payload: Any, path: Path, cfg: BotModelConfig | None = None) -> BotModel:
    """:func:`load_bot_checkpoint` for a file already read with :func:`read_checkpoint` (``path`` names it in errors)."""
    state_dict = extract_state_dict(payload, path)
    generation = detect_generation(state_dict, path)
    pixel_stats = {name: state_dict.pop(name) for name in ("pixel_mean", "pixel_std") if name in state_dict}
    _check_pixel_stats(pixel_stats, path)
    mapped = to_crosscam_names(state_dict, generation)
    if cfg is None:
        cfg = BotModelConfig(stem="torchvision" if generation == "a" else "fastreid")
    _check_architecture(mapped, cfg, path)
    if cfg.num_classes == 0 and "classifier.weight" in mapped:
        cfg = cfg.model_copy(update={"num_classes": int(mapped["classifier.weight"].shape[0])})
    model = build_bot_model(cfg)
    expected = model.state_dict()
    # num_batches_tracked only counts training steps (no effect on features); old torch lacked it.
    for key, tensor in expected.items():
        if key.endswith(".num_batches_tracked"):
            mapped.setdefault(key, tensor)
    _check_keys_and_shapes(expected, mapped, generation, cfg.depth, path)
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def read_checkpoint(path: Path, trust: bool = False) -> Any:
    """``torch.load`` a file onto the CPU, turning every failure into a one-line CrosscamError."""
    if not path.is_file():
        raise CrosscamError(f"{path}: checkpoint file not found; check the path or download the weights")
    with path.open("rb") as handle:
        head = handle.read(4)
    if not (head == _ZIP_MAGIC or (head[:1] and head[0] == _PICKLE_PROTO)):
        raise CrosscamError(
            f"{path}: not a PyTorch checkpoint (starts with bytes {head!r}); pass a fast-reid .pth file"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... here
        message = str(exc)
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", message)
        if unsafe and not trust:
            raise CrosscamError(
                f"{path}: refused to load, it needs full unpickling (it references {unsafe.group(1)}), "
                f"which can run arbitrary code; {TRUST_HINT}"
            ) from None
        reason = _first_sentence(message) or type(exc).__name__
        raise CrosscamError(
            f"{path}: unreadable checkpoint, truncated or corrupt ({reason}); download it again"
        ) from None


def detect_generation(state_dict: dict[str, torch.Tensor], path: Path | str = "checkpoint") -> Generation:
    """Tell fast-reid's head-key generation ("a", "b" or "c") from the key names."""
    if any(key.startswith("heads.bnneck.") for key in state_dict):
        return "a"
    if "heads.weight" in state_dict:
        return "c"
    if "heads.classifier.weight" in state_dict:
        return "b"
    if any(key.startswith("heads.bottleneck.0.") for key in state_dict):
        return "c"  # no classifier saved: (b) and (c) map identically
    heads = sorted(key for key in state_dict if key.startswith("heads."))
    raise CrosscamError(
        f"{path}: no BNNeck found (expected heads.bnneck.* or heads.bottleneck.0.*, "
        f"found heads keys {_show(heads) if heads else 'none'}); this is not a fast-reid BoT checkpoint"
    )


def to_crosscam_names(state_dict: dict[str, torch.Tensor], generation: Generation) -> dict[str, torch.Tensor]:
    """Rename fast-reid keys to BotModel's; keys with no rule are kept as they are (then unexpected)."""
    neck_prefix, classifier_key = _head_names(generation)
    mapped = {}
    for key, tensor in state_dict.items():
        if key.startswith(neck_prefix):
            key = "neck." + key[len(neck_prefix):]
        elif key == classifier_key:
            key = "classifier.weight"
        mapped[key] = tensor
    return mapped


def to_fastreid_name(key: str, generation: Generation) -> str:
    """The inverse of :func:`to_crosscam_names` for one key (error messages use the file's names)."""
    neck_prefix, classifier_key = _head_names(generation)
    if key.startswith("neck."):
        return neck_prefix + key[len("neck."):]
    return classifier_key if key == "classifier.weight" else key


def _head_names(generation: Generation) -> tuple[str, str]:
    """(BNNeck key prefix, classifier key) of a fast-reid generation."""
    neck_prefix = "heads.bnneck." if generation == "a" else "heads.bottleneck.0."
    classifier_key = "heads.weight" if generation == "c" else "heads.classifier.weight"
    return neck_prefix, classifier_key


def extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Unwrap ``{"model": ...}`` and ``module.`` prefixes (DataParallel) into a plain key->tensor dict."""
    if isinstance(obj, dict) and "model" in obj:
        obj = obj["model"]
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not obj:
        raise CrosscamError(
            f"{path}: holds a {type(obj).__name__}, not a state_dict or {{'model': state_dict}}; "
            "pass a fast-reid model checkpoint"
        )
    not_tensors = [str(key) for key, value in obj.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CrosscamError(
            f"{path}: entries that are not tensors: {_show(not_tensors)}; pass a fast-reid model checkpoint"
        )
    return {key.removeprefix("module."): value for key, value in obj.items()}


def _check_pixel_stats(stored: dict[str, torch.Tensor], path: Path) -> None:
    ours = {"pixel_mean": PIXEL_MEAN, "pixel_std": PIXEL_STD}
    for name, tensor in stored.items():
        if tensor.numel() != 3 or tensor.shape not in ((3,), (1, 3, 1, 1)):
            raise CrosscamError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, expected (1, 3, 1, 1) or (3,); "
                "this is not a fast-reid RGB model"
            )
        values = tensor.flatten().double()
        if not torch.allclose(values, torch.tensor(ours[name], dtype=torch.float64), atol=1e-3):
            raise CrosscamError(
                f"{path}: {name} is {[round(v, 3) for v in values.tolist()]} but crosscam normalises with "
                f"{list(ours[name])}; the model was trained with other input statistics and is not supported"
            )


def _check_architecture(mapped: dict[str, torch.Tensor], cfg: BotModelConfig, path: Path) -> None:
    """Name a different backbone (IBN, non-local, SE, other depth) instead of listing 100 keys."""
    keys = list(mapped)
    if not any(key.startswith("backbone.") for key in keys):
        raise CrosscamError(f"{path}: no backbone.* tensors (found {_show(keys)}); not a fast-reid BoT checkpoint")
    variants = {
        "IBN-Net (e.g. BoT R50-ibn)": r"\.(IN|BN)\.",
        "non-local blocks (e.g. AGW)": r"^backbone\.NL_",
        "squeeze-excitation blocks": r"\.se\.",
    }
    for variant, pattern in variants.items():
        if any(re.search(pattern, key) for key in keys):
            raise CrosscamError(
                f"{path}: a ResNet with {variant}; crosscam loads plain-ResNet BoT models only, use a BoT R50 file"
            )
    depth = _checkpoint_depth(keys)
    if depth is not None and depth != cfg.depth:
        raise CrosscamError(
            f"{path}: a ResNet-{depth} checkpoint but the model is configured as ResNet-{cfg.depth}; "
            f"set the BoT model depth to {depth}"
        )


def _checkpoint_depth(keys: list[str]) -> int | None:
    """ResNet depth from the block layout: bottleneck or basic blocks, and layer3's block count."""
    layer3_blocks = {int(m.group(1)) for key in keys if (m := re.match(r"backbone\.layer3\.(\d+)\.", key))}
    if not layer3_blocks:
        return None
    count = max(layer3_blocks) + 1
    bottleneck = any(key.startswith("backbone.layer1.0.conv3.") for key in keys)
    layouts = {(True, 6): 50, (True, 23): 101, (False, 2): 18, (False, 6): 34}
    return layouts.get((bottleneck, count))


def _check_keys_and_shapes(
    expected: dict[str, torch.Tensor],
    mapped: dict[str, torch.Tensor],
    generation: Generation,
    depth: int,
    path: Path,
) -> None:
    """Fail naming the keys (as the file spells them) unless both sides hold the same tensors."""
    missing = [to_fastreid_name(k, generation) for k in expected if k not in mapped]
    unexpected = [to_fastreid_name(k, generation) for k in mapped if k not in expected]
    mismatched = [
        f"{to_fastreid_name(k, generation)} {tuple(mapped[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in mapped and mapped[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_show(missing)}")
    if unexpected:
        problems.append(f"unexpected {_show(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch (file vs model) {_show(mismatched)}")
    if problems:
        raise CrosscamError(
            f"{path}: does not match the BoT ResNet-{depth} model: {'; '.join(problems)}; "
            "use a fast-reid BoT checkpoint of this architecture"
        )


def _show(keys: list[str]) -> str:
    """First few keys and the total count, e.g. ``neck.running_var, ... (3 keys)``."""
    shown = ", ".join(keys[:_SHOWN_KEYS])
    more = ", ..." if len(keys) > _SHOWN_KEYS else ""
    return f"{shown}{more} ({len(keys)} key{'s' if len(keys) != 1 else ''})"


def _first_sentence(text: str) -> str:
    """torch's messages run to paragraphs; keep the first sentence of the first line, at most 120 chars."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0].split(". ")[0][:120] if lines else ""
