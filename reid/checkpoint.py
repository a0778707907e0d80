"""Load fast-reid person ReID checkpoints (BoT, AGW, SBS, MGN) into crosscam's models, strictly.

fast-reid renamed its head twice after publishing its model zoo, and loads with ``strict=False``,
so current fast-reid silently drops the BNNeck of every zoo file (its issue #453). Here a load
matches every tensor or fails with one line naming the keys. Accepted key generations (backbone
keys are always ``backbone.`` + torchvision's ResNet names, or fast-reid's for its variants):

- (a) fast-reid v0.1.x, every person-ReID model-zoo file: BNNeck ``heads.bnneck.*``, classifier
  ``heads.classifier.weight``; MGN: ``bN_pool.*`` (GeM, 1x1 conv, BN) and ``bN_head.bnneck.*``;
- (b) Sep 2020 - Mar 2021: ``heads.bottleneck.0.*`` and ``heads.classifier.weight``;
- (c) Mar 2021 onward and PyPI fastreid 1.4.0: ``heads.bottleneck.0.*`` and ``heads.weight``;
  MGN (b, c): ``bN_head.bottleneck.0.weight`` (1x1 conv) and ``bN_head.bottleneck.1.*`` (BNNeck).

A learned GeM exponent is ``heads.pool_layer.p`` (``bN_head.pool_layer.p``) in every generation.
Generation (a) files also store ``pixel_mean``/``pixel_std`` (shape (1, 3, 1, 1)); when present
they must equal crosscam's. The classifier is optional (inference does not use it); when present
it sets ``num_classes``. Files are read with ``torch.load(weights_only=True)``; one that needs
full unpickling (arbitrary code) is refused unless ``trust=True``.

The architecture comes from the keys (:func:`infer_model_config`): ResNet depth or ResNeSt,
IBN-a, non-local blocks per stage, learned GeM, MGN. What keys cannot tell comes from the era of
the generation: (a) the torchvision stem and an undilated ResNeSt layer4, (b)/(c) fast-reid's stem
and dilated layer4; fixed GeM (p = 3) when non-local blocks come without a learned p (AGW in
fast-reid >= 1.0), average pooling otherwise; 256x128 input (MGN: 384x128). SBS files hold
nothing that says 384x128: the registry passes ``input_size``, or pass it yourself.

>>> model = load_bot_checkpoint("weights/market_bot_R50.pth")  # doctest: +SKIP
>>> model(torch.zeros(1, 3, 256, 128)).shape  # doctest: +SKIP
torch.Size([1, 2048])
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import torch
from pydantic import ValidationError

from reid import zoo
from reid.config import BotModelConfig
from reid.errors import CrosscamError
from reid.models.bot import PIXEL_MEAN, PIXEL_STD, BotModel
from reid.models.mgn import HEADS as MGN_HEADS
from reid.models.mgn import MgnModel
from reid.models.osnet import OSNET_VARIANTS, OSNet, OSNetSpec

Generation = Literal["a", "b", "c"]
Meta = Literal["baseline", "mgn"]

TRUST_HINT = "set reid.trust_checkpoint: true (CLI: --trust-checkpoint) only if you trust its source"
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80  # first byte of a pickle (protocol >= 2): torch's legacy format
_SHOWN_KEYS = 4
MGN_INPUT_SIZE = (384, 128)


def load_bot_checkpoint(
    path: str | Path, cfg: BotModelConfig | None = None, trust: bool = False, overrides: Mapping[str, Any] | None = None
) -> BotModel | MgnModel:
    """Read a fast-reid checkpoint and return its model (:class:`BotModel` or :class:`MgnModel`), eval mode, CPU.

    ``cfg`` fixes the architecture (the file must then match it); ``None`` infers it from the file
    (module docstring), ``overrides`` (:class:`BotModelConfig` fields, e.g. ``{"input_size": (384, 128)}``
    for an SBS file, ``{"pooling": "gem"}`` for a fast-reid 1.4.0 AGW S50) completing what keys cannot tell.
    ``cfg.num_classes`` 0 takes the checkpoint's classifier size. Raises :class:`CrosscamError`
    for every bad file, naming it and the offending keys.
    """
    path = Path(path)
    return bot_model_from_payload(read_checkpoint(path, trust), path, cfg, overrides)


def bot_model_from_payload(
    payload: Any, path: Path, cfg: BotModelConfig | None = None, overrides: Mapping[str, Any] | None = None
) -> BotModel | MgnModel:
    """:func:`load_bot_checkpoint` for a file already read with :func:`read_checkpoint` (``path`` names it in errors)."""
    state_dict = extract_state_dict(payload, path)
    meta = detect_meta(state_dict)
    generation = detect_generation(state_dict, path)
    pixel_stats = {name: state_dict.pop(name) for name in ("pixel_mean", "pixel_std") if name in state_dict}
    _check_pixel_stats(pixel_stats, path)
    mapped = to_crosscam_names(state_dict, generation, meta)
    _check_supported(mapped, path)
    inferred = infer_model_config(mapped, generation, meta)
    if cfg is None:
        cfg = _with_overrides(inferred, overrides or {}, path)
    else:
        _check_architecture(inferred, cfg, path)
    classifiers = [mapped[key] for key in mapped if key.endswith("classifier.weight")]
    if cfg.num_classes == 0 and classifiers:
        cfg = cfg.model_copy(update={"num_classes": int(classifiers[0].shape[0])})
    with torch.device("meta"):  # names and shapes only: a refused file costs no weight initialisation
        expected = build_fastreid_model(cfg).state_dict()
    # num_batches_tracked only counts training steps (no effect on features); old torch lacked it.
    for key in expected:
        if key.endswith(".num_batches_tracked"):
            mapped.setdefault(key, torch.zeros((), dtype=torch.long))
    _check_keys_and_shapes(expected, mapped, generation, meta, cfg, path)
    model = build_fastreid_model(cfg)
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def _with_overrides(cfg: BotModelConfig, overrides: Mapping[str, Any], path: Path) -> BotModelConfig:
    try:
        return BotModelConfig.model_validate(cfg.model_dump() | dict(overrides))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(model)"
        raise CrosscamError(f"{path}: model setting '{key}': {err['msg']}; fix the registry entry or the override") from None


def build_fastreid_model(cfg: BotModelConfig) -> BotModel | MgnModel:
    """A randomly initialised network of ``cfg``'s architecture (:class:`BotModel` or :class:`MgnModel`)."""
    return MgnModel(cfg) if cfg.meta == "mgn" else BotModel(cfg)


def _downloaded_entry(path: Path) -> zoo.WeightsEntry | None:
    """The registry entry whose download is the file at ``path`` (so `weights download --force` replaces it)."""
    entry = zoo.entry_for_file(path)
    return entry if entry is not None and path.resolve() == entry.local_path().resolve() else None


def read_checkpoint(path: Path, trust: bool = False) -> Any:
    """``torch.load`` a file onto the CPU, turning every failure into a one-line CrosscamError."""
    if not path.is_file():
        raise CrosscamError(f"{path}: checkpoint file not found; check the path or download the weights")
    with path.open("rb") as handle:
        head = handle.read(4)
    if not (head == _ZIP_MAGIC or (head[:1] and head[0] == _PICKLE_PROTO)):
        entry = _downloaded_entry(path)  # a registry file replaced by an error page, say
        raise CrosscamError(
            f"{path}: not a PyTorch checkpoint (starts with bytes {head!r}); "
            + (f"download it again: `crosscam weights download {entry.name} --force`" if entry else "pass a fast-reid .pth file")
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
        entry = _downloaded_entry(path)
        again = (f"download it again (`crosscam weights download {entry.name} --force`)" if entry else
                 "replace it with a whole copy (a registry file: `crosscam weights download NAME --force`)")
        raise CrosscamError(f"{path}: unreadable checkpoint, truncated or corrupt ({reason}); {again}") from None


def detect_meta(state_dict: dict[str, torch.Tensor]) -> Meta:
    """``mgn`` when the file has MGN's per-branch heads, else ``baseline`` (BoT, AGW, SBS)."""
    return "mgn" if any(key.startswith(("b1_head.", "b1_pool.")) for key in state_dict) else "baseline"


def detect_generation(state_dict: dict[str, torch.Tensor], path: Path | str = "checkpoint") -> Generation:
    """Tell fast-reid's head-key generation ("a", "b" or "c") from the key names."""
    head = "b1_head." if detect_meta(state_dict) == "mgn" else "heads."
    if any(key.startswith(head + "bnneck.") for key in state_dict):
        return "a"
    if head + "weight" in state_dict:
        return "c"
    if head + "classifier.weight" in state_dict:
        return "b"
    if any(key.startswith(head + "bottleneck.") for key in state_dict):
        return "c"  # no classifier saved: (b) and (c) map identically
    heads = sorted(key for key in state_dict if key.startswith(head))
    if not heads and ("classifier.weight" in state_dict or "conv1.conv.weight" in state_dict):
        kind = "an OSNet variant" if "conv1.conv.weight" in state_dict else "a model"
        raise CrosscamError(f"{path}: {kind} in torchreid's layout (a classifier, no fast-reid head) that crosscam does not "
                            f"build (it loads torchreid's {OSNET_VARIANTS} exactly); export it to ONNX "
                            "(README: Bring your own ReID model)")
    raise CrosscamError(
        f"{path}: no BNNeck found (expected {head}bnneck.* or {head}bottleneck.*, "
        f"found {head[:-1]} keys {_show(heads) if heads else 'none'}); this is neither a fast-reid ReID checkpoint nor "
        "a torchreid OSNet: export other models to ONNX (README: Bring your own ReID model)"
    )


def name_rules(generation: Generation, meta: Meta = "baseline") -> list[tuple[str, str]]:
    """(fast-reid key prefix, crosscam key prefix) pairs of a generation; other keys keep their names."""
    if meta == "baseline":
        neck = "heads.bnneck." if generation == "a" else "heads.bottleneck.0."
        classifier = "heads.weight" if generation == "c" else "heads.classifier.weight"
        return [(neck, "neck."), (classifier, "classifier.weight"), ("heads.pool_layer.", "pool.")]
    rules = []
    for name in MGN_HEADS:
        head = f"{name}_head."
        if generation == "a":
            rules += [(f"{name}_pool.0.", head + "pool."), (f"{name}_pool.1.", head + "conv."),
                      (f"{name}_pool.2.", head + "bn."), (head + "bnneck.", head + "neck.")]
        else:
            rules += [(head + "pool_layer.", head + "pool."), (head + "bottleneck.0.", head + "conv."),
                      (head + "bottleneck.1.", head + "neck.")]
        classifier = head + ("weight" if generation == "c" else "classifier.weight")
        rules.append((classifier, head + "classifier.weight"))
    return rules


def to_crosscam_names(
    state_dict: dict[str, torch.Tensor], generation: Generation, meta: Meta = "baseline"
) -> dict[str, torch.Tensor]:
    """Rename fast-reid keys to crosscam's; keys with no rule are kept as they are (then unexpected)."""
    rules = name_rules(generation, meta)
    return {_rename(key, rules): tensor for key, tensor in state_dict.items()}


def to_fastreid_name(key: str, generation: Generation, meta: Meta = "baseline") -> str:
    """The inverse of :func:`to_crosscam_names` for one key (error messages use the file's names)."""
    return _rename(key, [(ours, theirs) for theirs, ours in name_rules(generation, meta)])


def _rename(key: str, rules: list[tuple[str, str]]) -> str:
    for source, target in rules:
        if key.startswith(source):
            return target + key[len(source):]
    return key


def infer_model_config(mapped: dict[str, torch.Tensor], generation: Generation, meta: Meta) -> BotModelConfig:
    """The architecture crosscam-named keys describe, completed by the generation's era (module docstring)."""
    keys = list(mapped)
    resnest = any(key.startswith(("backbone.conv1.0.", "backbone.0.0.")) for key in keys)  # the deep stem
    non_local = tuple(
        len({m.group(1) for key in keys if (m := re.match(rf"backbone\.NL_{stage}\.(\d+)\.", key))}) for stage in range(1, 5)
    )
    learned = any(key.endswith("pool.p") for key in keys)
    era_a = generation == "a"
    return BotModelConfig(
        depth=_checkpoint_depth(mapped, meta) or 50,
        stem="torchvision" if era_a else "fastreid",
        pooling="gem_learned" if learned else ("gem" if any(non_local) else "avg"),
        backbone="resnest" if resnest else "resnet",
        ibn=any(".bn1.IN." in key for key in keys),
        non_local=non_local,
        dilated_layer4=resnest and not era_a,
        meta=meta,
        mgn_head="reduction" if era_a else "embedding",
        input_size=MGN_INPUT_SIZE if meta == "mgn" else (256, 128),
    )


def extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Unwrap ``{"model": ...}`` and ``module.`` prefixes (DataParallel) into a plain key->tensor dict."""
    if isinstance(obj, dict) and "model" in obj:
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # torchreid's save_checkpoint
        obj = obj["state_dict"]
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and not obj:
        raise CrosscamError(f"{path}: holds no weights (an empty state_dict); pass a fast-reid model checkpoint")
    if not isinstance(obj, dict):
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


def _check_supported(mapped: dict[str, torch.Tensor], path: Path) -> None:
    """Name what crosscam does not build (no backbone, squeeze-excitation) instead of listing 100 keys."""
    keys = list(mapped)
    if not any(key.startswith("backbone.") for key in keys):
        raise CrosscamError(f"{path}: no backbone.* tensors (found {_show(keys)}); not a fast-reid ReID checkpoint")
    if any(re.search(r"\.se\.", key) for key in keys):
        raise CrosscamError(
            f"{path}: a ResNet with squeeze-excitation blocks; crosscam loads fast-reid's BoT/AGW/SBS/MGN "
            "ResNet, IBN-a ResNet and ResNeSt files"
        )


def describe_architecture(cfg: BotModelConfig) -> str:
    """A short name such as ``ResNet-50-IBN with non-local blocks (0, 2, 3, 0)`` or ``MGN ResNet-50``."""
    name = "ResNeSt-50" if cfg.backbone == "resnest" else f"ResNet-{cfg.depth}" + ("-IBN" if cfg.ibn else "")
    if any(cfg.non_local):
        name += f" with non-local blocks {cfg.non_local}"
    return f"MGN {name}" if cfg.meta == "mgn" else name


def _check_architecture(inferred: BotModelConfig, cfg: BotModelConfig, path: Path) -> None:
    """Name a file whose trunk differs from the configured one, instead of listing 100 keys."""
    fields = ("meta", "backbone", "depth", "ibn", "non_local")
    if any(getattr(inferred, field) != getattr(cfg, field) for field in fields):
        raise CrosscamError(
            f"{path}: a {describe_architecture(inferred)} checkpoint but the model is configured as "
            f"{describe_architecture(cfg)}; configure the model as the file's architecture (or leave it to crosscam)"
        )


def _checkpoint_depth(mapped: dict[str, torch.Tensor], meta: Meta) -> int | None:
    """ResNet depth from the block layout: bottleneck or basic blocks, and layer3's block count."""
    if meta == "mgn":  # layer3 = backbone.6 (its first block) + b1.0.* (the rest)
        rest = {int(m.group(1)) for key in mapped if (m := re.match(r"b1\.0\.(\d+)\.", key))}
        return {6: 50, 23: 101}.get(max(rest) + 2 if rest else 0)
    layer3_blocks = {int(m.group(1)) for key in mapped if (m := re.match(r"backbone\.layer3\.(\d+)\.", key))}
    if not layer3_blocks:
        return None
    count = max(layer3_blocks) + 1
    bottleneck = any(key.startswith("backbone.layer1.0.conv3.") for key in mapped)
    layouts = {(True, 6): 50, (True, 23): 101, (False, 2): 18, (False, 6): 34}
    return layouts.get((bottleneck, count))


def _check_keys_and_shapes(
    expected: dict[str, torch.Tensor],
    mapped: dict[str, torch.Tensor],
    generation: Generation,
    meta: Meta,
    cfg: BotModelConfig,
    path: Path,
) -> None:
    """Fail naming the keys (as the file spells them) unless both sides hold the same tensors."""
    problems = _key_problems(expected, mapped, lambda key: to_fastreid_name(key, generation, meta))
    if problems:
        raise CrosscamError(
            f"{path}: does not match the {describe_architecture(cfg)} model: {'; '.join(problems)}; "
            "use a fast-reid checkpoint of this architecture"
        )


def osnet_from_state(state: dict[str, torch.Tensor], spec: OSNetSpec, path: Path) -> OSNet:
    """The OSNet ``spec`` with ``state``'s weights (its classifier left out), in eval mode; a
    missing, unexpected or wrong-shaped tensor is a one-line error naming them."""
    model = OSNet(spec)
    given = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    problems = _key_problems(model.state_dict(), given)
    if problems:
        raise CrosscamError(f"{path}: does not match torchreid's {spec.describe()}: {'; '.join(problems)}; crosscam "
                            f"loads torchreid's {OSNET_VARIANTS} (others: export them to ONNX)")
    model.load_state_dict(given, strict=True)
    return model.eval()


def _key_problems(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor],
                  shown: Callable[[str], str] = str) -> list[str]:
    """What keeps ``given`` from loading into a model with ``expected`` tensors: missing,
    unexpected and wrong-shaped keys (named by ``shown``, as the file spells them), each
    ``"missing a, b (2 keys)"``; empty when they match."""
    missing = [shown(k) for k in expected if k not in given]
    unexpected = [shown(k) for k in given if k not in expected]
    mismatched = [f"{shown(k)} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
                  for k in expected if k in given and given[k].shape != expected[k].shape]
    return [f"{what} {_show(keys)}" for what, keys in (("missing", missing), ("unexpected", unexpected),
                                                       ("shape mismatch (file vs model)", mismatched)) if keys]


def _show(keys: list[str]) -> str:
    """First few keys and the total count, e.g. ``neck.running_var, ... (3 keys)``."""
    shown = ", ".join(keys[:_SHOWN_KEYS])
    more = ", ..." if len(keys) > _SHOWN_KEYS else ""
    return f"{shown}{more} ({len(keys)} key{'s' if len(keys) != 1 else ''})"


def _first_sentence(text: str) -> str:
    """torch's messages run to paragraphs; keep the first sentence of the first line, at most 120 chars."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0].split(". ")[0][:120] if lines else ""
