"""fast-reid's own training configs (``configs/Base-bagtricks.yml``, ``Market1501/bagtricks_R50.yml``...) as a :class:`TrainConfig`.

A fast-reid file is recognised by its content (:func:`is_fastreid_config`: a ``_BASE_`` key, or
upper-case top-level keys such as ``MODEL`` / ``SOLVER``). :func:`read_fastreid_config` follows its
``_BASE_`` chain (relative to the file naming it, as fast-reid does), fills what the files leave
out with fast-reid 1.x's defaults (``fastreid/config/defaults.py``) and translates every key
crosscam's trainer supports (``MAPPING``). A value crosscam cannot train (another meta-architecture,
IBN, non-local or SE blocks, ResNeSt, learned GeM, ArcSoftmax, circle / cosface pair losses, SGD,
cosine schedule, ...: ``CHECKS``) is refused, all such keys in one line naming each key, its value,
the file that set it and what to do. Keys with no effect on training (``OUTPUT_DIR``, ``DATASETS.NAMES``: the data is
``--data``; ``TEST.RERANK``...: ``IGNORED``) are listed, and a key fast-reid 1.x does not have (an
older fast-reid's ``SOLVER.MAX_ITER``, ``INPUT.DO_PAD``...) is refused.

>>> recipe = read_fastreid_config("fast-reid/configs/Market1501/bagtricks_R50.yml")  # doctest: +SKIP
>>> recipe.train_config(["solver.epochs=10"]).solver.base_lr  # doctest: +SKIP
0.00035
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from reid.config import config_file, load_config, merge_dicts, overridden, read_yaml_layers, read_yaml_mapping
from reid.errors import CrosscamError
from reid.training.config import TrainConfig

IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]

# fast-reid 1.x's defaults (fastreid/config/defaults.py, 1.4.0) of every key read here.
DEFAULTS: dict[str, Any] = {
    "MODEL.META_ARCHITECTURE": "Baseline",
    "MODEL.FREEZE_LAYERS": [],
    "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.BACKBONE.DEPTH": "50x",
    "MODEL.BACKBONE.LAST_STRIDE": 1,
    "MODEL.BACKBONE.NORM": "BN",
    "MODEL.BACKBONE.WITH_IBN": False,
    "MODEL.BACKBONE.WITH_SE": False,
    "MODEL.BACKBONE.WITH_NL": False,
    "MODEL.BACKBONE.PRETRAIN": False,
    "MODEL.HEADS.NAME": "EmbeddingHead",
    "MODEL.HEADS.NORM": "BN",
    "MODEL.HEADS.EMBEDDING_DIM": 0,
    "MODEL.HEADS.WITH_BNNECK": False,
    "MODEL.HEADS.NECK_FEAT": "before",
    "MODEL.HEADS.POOL_LAYER": "GlobalAvgPool",
    "MODEL.HEADS.CLS_LAYER": "Linear",
    "MODEL.HEADS.MARGIN": 0.0,
    "MODEL.HEADS.SCALE": 1,
    "MODEL.LOSSES.NAME": ("CrossEntropyLoss",),
    "MODEL.LOSSES.CE.EPSILON": 0.0,
    "MODEL.LOSSES.CE.SCALE": 1.0,
    "MODEL.LOSSES.TRI.MARGIN": 0.3,
    "MODEL.LOSSES.TRI.NORM_FEAT": False,
    "MODEL.LOSSES.TRI.HARD_MINING": False,
    "MODEL.LOSSES.TRI.SCALE": 1.0,
    "MODEL.WEIGHTS": "",
    "MODEL.PIXEL_MEAN": IMAGENET_MEAN,
    "MODEL.PIXEL_STD": IMAGENET_STD,
    "INPUT.SIZE_TRAIN": [256, 128],
    "INPUT.SIZE_TEST": [256, 128],
    "INPUT.CROP.ENABLED": False,
    "INPUT.FLIP.ENABLED": False,
    "INPUT.FLIP.PROB": 0.5,
    "INPUT.PADDING.ENABLED": False,
    "INPUT.PADDING.MODE": "constant",
    "INPUT.PADDING.SIZE": 10,
    "INPUT.CJ.ENABLED": False,
    "INPUT.CJ.PROB": 0.5,
    "INPUT.CJ.BRIGHTNESS": 0.15,
    "INPUT.CJ.CONTRAST": 0.15,
    "INPUT.CJ.SATURATION": 0.1,
    "INPUT.CJ.HUE": 0.1,
    "INPUT.AFFINE.ENABLED": False,
    "INPUT.AUTOAUG.ENABLED": False,
    "INPUT.AUTOAUG.PROB": 0.0,
    "INPUT.AUGMIX.ENABLED": False,
    "INPUT.AUGMIX.PROB": 0.0,
    "INPUT.REA.ENABLED": False,
    "INPUT.REA.PROB": 0.5,
    "INPUT.REA.VALUE": IMAGENET_MEAN,
    "INPUT.RPT.ENABLED": False,
    "INPUT.RPT.PROB": 0.5,
    "DATASETS.NAMES": ("Market1501",),
    "DATASETS.COMBINEALL": False,
    "DATALOADER.SAMPLER_TRAIN": "TrainingSampler",
    "DATALOADER.NUM_INSTANCE": 4,
    "SOLVER.AMP.ENABLED": False,
    "SOLVER.OPT": "Adam",
    "SOLVER.MAX_EPOCH": 120,
    "SOLVER.BASE_LR": 3e-4,
    "SOLVER.HEADS_LR_FACTOR": 1.0,
    "SOLVER.WEIGHT_DECAY": 0.0005,
    "SOLVER.WEIGHT_DECAY_NORM": 0.0005,
    "SOLVER.BIAS_LR_FACTOR": 1.0,
    "SOLVER.WEIGHT_DECAY_BIAS": 0.0005,  # fast-reid: WEIGHT_DECAY's default, not the file's WEIGHT_DECAY
    "SOLVER.SCHED": "MultiStepLR",
    "SOLVER.GAMMA": 0.1,
    "SOLVER.STEPS": [30, 55],
    "SOLVER.WARMUP_FACTOR": 0.1,
    "SOLVER.WARMUP_ITERS": 1000,
    "SOLVER.WARMUP_METHOD": "linear",
    "SOLVER.DELAY_EPOCHS": 0,
    "SOLVER.FREEZE_ITERS": 0,
    "SOLVER.CHECKPOINT_PERIOD": 20,
    "SOLVER.IMS_PER_BATCH": 64,
    "SOLVER.CLIP_GRADIENTS.ENABLED": False,
    "TEST.EVAL_PERIOD": 20,
    "TEST.IMS_PER_BATCH": 64,
    "TEST.METRIC": "cosine",
    "TEST.PRECISE_BN.ENABLED": False,
}

# fast-reid keys (or sections) with no effect on what crosscam trains, and why.
IGNORED: dict[str, str] = {
    "OUTPUT_DIR": "crosscam writes to --out",
    "CUDNN_BENCHMARK": "crosscam turns it on for CUDA",
    "DATASETS.NAMES": "crosscam trains on --data",
    "DATASETS.TESTS": "crosscam evaluates on --data's query/gallery",
    "DATALOADER.NUM_WORKERS": "crosscam loads the images once",
    "DATALOADER.SET_WEIGHT": "SetReWeightSampler only",
    "MODEL.DEVICE": "crosscam picks the device; --set device=...",
    "MODEL.QUEUE_SIZE": "MoCo only",
    "MODEL.BACKBONE.FEAT_DIM": "follows the backbone",
    "MODEL.BACKBONE.PRETRAIN_PATH": "crosscam finds torchvision's ImageNet file in its weights folder",
    "MODEL.BACKBONE.SIE_COE": "ViT only",
    "MODEL.BACKBONE.STRIDE_SIZE": "ViT only",
    "MODEL.BACKBONE.DROP_PATH_RATIO": "ViT only",
    "MODEL.BACKBONE.DROP_RATIO": "ViT only",
    "MODEL.BACKBONE.ATT_DROP_RATE": "ViT only",
    "MODEL.HEADS.NUM_CLASSES": "crosscam counts the identities in --data",
    "MODEL.LOSSES.CE.ALPHA": "adaptive label smoothing only",
    "MODEL.LOSSES.FL": "FocalLoss only",
    "MODEL.LOSSES.CIRCLE": "CircleLoss only",
    "MODEL.LOSSES.COSFACE": "Cosface only",
    "KD": "distillation only",
    "INPUT.CROP": "only with INPUT.CROP.ENABLED",
    "INPUT.AFFINE": "only with INPUT.AFFINE.ENABLED",
    "SOLVER.MOMENTUM": "SGD only",
    "SOLVER.NESTEROV": "SGD only",
    "SOLVER.ETA_MIN_LR": "CosineAnnealingLR only",
    "SOLVER.CLIP_GRADIENTS": "only with SOLVER.CLIP_GRADIENTS.ENABLED",
    "TEST.ROC": "crosscam's evaluation has no ROC",
    "TEST.FLIP": "crosscam's evaluation has no flip",
    "TEST.AQE": "crosscam's evaluation has no query expansion",
    "TEST.RERANK": "crosscam's evaluation has no re-ranking",
    "TEST.PRECISE_BN": "only with TEST.PRECISE_BN.ENABLED",
}

POOLS = {"GlobalAvgPool": "avg", "FastGlobalAvgPool": "avg", "avgpool": "avg", "GeneralizedMeanPooling": "gem", "gempool": "gem"}
CLASSIFIERS = {"Linear": "linear", "linear": "linear", "CosSoftmax": "cosface", "cosface": "cosface",
               "CircleSoftmax": "circle", "circle": "circle"}
LOSSES = ("CrossEntropyLoss", "TripletLoss")
AUGMENT = "crosscam's augmentation is flip, pad + crop, colour jitter (INPUT.CJ) and random erasing"
FASTREID = "or train it with fast-reid itself (crosscam runs its checkpoints: crosscam export --reid model.pth)"


def _depth(value: Any) -> int | None:
    """fast-reid's ``DEPTH`` (``50x``, ``"50"``, 50) as an int; None when it is not a depth."""
    text = str(value).removesuffix("x")
    return int(text) if text.isdigit() else None


def _names(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _linear(v: dict[str, Any]) -> bool:
    return CLASSIFIERS.get(v["MODEL.HEADS.CLS_LAYER"]) == "linear"


def _close(a: Any, b: Any) -> bool:
    """Numbers (or lists of them) equal to float precision; anything else: equal."""
    try:
        return all(abs(float(x) - float(y)) <= 1e-6 * max(1.0, abs(float(y))) for x, y in zip(_names(a), _names(b), strict=True))
    except (TypeError, ValueError):
        return a == b


# (key, accepted(value, all values), why crosscam cannot train another value and what to do)
CHECKS: list[tuple[str, Callable[[Any, dict[str, Any]], bool], str]] = [
    ("MODEL.META_ARCHITECTURE", lambda x, v: x == "Baseline", f"crosscam trains the Baseline (BoT) architecture only; use Baseline, {FASTREID}"),
    ("MODEL.BACKBONE.NAME", lambda x, v: x == "build_resnet_backbone", f"crosscam trains ResNets (build_resnet_backbone) only; use it, {FASTREID}"),
    ("MODEL.BACKBONE.DEPTH", lambda x, v: _depth(x) in (18, 34, 50), "crosscam trains ResNet-18/34/50; set 18x, 34x or 50x"),
    ("MODEL.BACKBONE.WITH_IBN", lambda x, v: x is False, f"crosscam trains no IBN-a ResNet; set it to False, {FASTREID}"),
    ("MODEL.BACKBONE.WITH_SE", lambda x, v: x is False, f"crosscam trains no squeeze-excitation blocks; set it to False, {FASTREID}"),
    ("MODEL.BACKBONE.WITH_NL", lambda x, v: x is False, f"crosscam trains no non-local blocks (AGW, SBS); set it to False, {FASTREID}"),
    ("MODEL.BACKBONE.NORM", lambda x, v: x in ("BN", "syncBN"), "crosscam's ResNet uses BatchNorm; set BN"),
    ("MODEL.HEADS.NAME", lambda x, v: x == "EmbeddingHead", "crosscam's head is fast-reid's EmbeddingHead; set EmbeddingHead"),
    ("MODEL.HEADS.NORM", lambda x, v: x in ("BN", "syncBN"), "crosscam's BNNeck is a BatchNorm; set BN"),
    ("MODEL.HEADS.WITH_BNNECK", lambda x, v: x is True, "crosscam's head always has a BNNeck; set it to True (Base-bagtricks.yml does)"),
    ("MODEL.HEADS.EMBEDDING_DIM", lambda x, v: x == 0, "crosscam's head has no embedding layer; set it to 0"),
    ("MODEL.HEADS.NECK_FEAT", lambda x, v: x == "before", "crosscam's triplet loss takes the feature before the BNNeck; set before"),
    ("MODEL.HEADS.POOL_LAYER", lambda x, v: x in POOLS,
     "crosscam pools with GlobalAvgPool or GeneralizedMeanPooling (p 3, not learned); set one of them"),
    ("MODEL.HEADS.CLS_LAYER", lambda x, v: x in CLASSIFIERS, "crosscam's classifiers are Linear, CosSoftmax and CircleSoftmax; set one of them"),
    ("MODEL.HEADS.SCALE", lambda x, v: not _linear(v) or x == 1,
     "crosscam's Linear classifier does not scale its logits; set 1, or CLS_LAYER CosSoftmax / CircleSoftmax"),
    ("MODEL.LOSSES.NAME", lambda x, v: set(_names(x)) <= set(LOSSES) and bool(_names(x)),
     "crosscam trains with CrossEntropyLoss and TripletLoss only; keep one or both"),
    ("MODEL.LOSSES.CE.EPSILON", lambda x, v: isinstance(x, (int, float)) and 0 <= x < 1,
     "crosscam's label smoothing is a fixed epsilon in [0, 1); set one"),
    ("MODEL.LOSSES.TRI.HARD_MINING", lambda x, v: x is True or "TripletLoss" not in _names(v["MODEL.LOSSES.NAME"]),
     "crosscam's triplet loss takes the hardest positive and negative; set it to True"),
    ("MODEL.WEIGHTS", lambda x, v: not x, "crosscam starts from ImageNet weights, not a checkpoint; remove it "
     "(to fine-tune an ONNX ReID model: --set model.backbone=onnx --set model.onnx=PATH)"),
    ("MODEL.FREEZE_LAYERS", lambda x, v: set(_names(x or ())) <= {"backbone"}, "crosscam can freeze the backbone only; set [backbone] or []"),
    ("MODEL.PIXEL_MEAN", lambda x, v: _close(x, IMAGENET_MEAN), "crosscam's models normalise with the ImageNet mean; remove it"),
    ("MODEL.PIXEL_STD", lambda x, v: _close(x, IMAGENET_STD), "crosscam's models normalise with the ImageNet std; remove it"),
    ("INPUT.SIZE_TEST", lambda x, v: _close(x, v["INPUT.SIZE_TRAIN"]), "crosscam evaluates at the training size; set it to INPUT.SIZE_TRAIN"),
    ("INPUT.CROP.ENABLED", lambda x, v: x is False, f"{AUGMENT}; set it to False"),
    ("INPUT.AFFINE.ENABLED", lambda x, v: x is False, f"{AUGMENT}; set it to False"),
    ("INPUT.AUTOAUG.ENABLED", lambda x, v: x is False or v["INPUT.AUTOAUG.PROB"] == 0, f"{AUGMENT}; set it to False"),
    ("INPUT.AUGMIX.ENABLED", lambda x, v: x is False or v["INPUT.AUGMIX.PROB"] == 0, f"{AUGMENT}; set it to False"),
    ("INPUT.RPT.ENABLED", lambda x, v: x is False or v["INPUT.RPT.PROB"] == 0, f"{AUGMENT}; set it to False"),
    ("INPUT.PADDING.MODE", lambda x, v: x == "constant" or v["INPUT.PADDING.ENABLED"] is False, "crosscam pads with zeros; set constant"),
    ("INPUT.REA.VALUE", lambda x, v: _close(x, IMAGENET_MEAN) or v["INPUT.REA.ENABLED"] is False,
     "crosscam's random erasing fills with the ImageNet mean; remove it"),
    ("DATASETS.NAMES", lambda x, v: len(_names(x)) == 1, "crosscam trains on one --data folder; merge the datasets into one "
     "Market-1501-layout folder and name one"),
    ("DATASETS.COMBINEALL", lambda x, v: x is False, "crosscam trains on bounding_box_train only (query/gallery evaluate); set it to False"),
    ("DATALOADER.SAMPLER_TRAIN", lambda x, v: x == "NaiveIdentitySampler", "crosscam samples P identities x K images "
     "(NaiveIdentitySampler); set it"),
    ("SOLVER.IMS_PER_BATCH", lambda x, v: isinstance(x, int) and isinstance(k := v["DATALOADER.NUM_INSTANCE"], int) and k > 0 and x % k == 0,
     "crosscam's batches are P identities x DATALOADER.NUM_INSTANCE images; make it a multiple of NUM_INSTANCE"),
    ("SOLVER.OPT", lambda x, v: x == "Adam", "crosscam trains with Adam; set Adam"),
    ("SOLVER.SCHED", lambda x, v: x == "MultiStepLR", "crosscam's schedule is MultiStepLR (STEPS, GAMMA) after a warm-up; set MultiStepLR"),
    ("SOLVER.WARMUP_METHOD", lambda x, v: x == "linear", "crosscam's warm-up is linear; set linear"),
    ("SOLVER.DELAY_EPOCHS", lambda x, v: x == 0, "crosscam holds no decay back past the warm-up; set 0"),
    ("SOLVER.BIAS_LR_FACTOR", lambda x, v: _close(x, 1), "crosscam trains biases at the base lr; set 1"),
    ("SOLVER.WEIGHT_DECAY_NORM", lambda x, v: _close(x, v["SOLVER.WEIGHT_DECAY"]),
     "crosscam decays norm layers like the rest; set SOLVER.WEIGHT_DECAY's value"),
    ("SOLVER.WEIGHT_DECAY_BIAS", lambda x, v: _close(x, v["SOLVER.WEIGHT_DECAY"]),
     "crosscam decays biases like the rest; set SOLVER.WEIGHT_DECAY's value"),
    ("SOLVER.CLIP_GRADIENTS.ENABLED", lambda x, v: x is False, "crosscam does not clip gradients; set it to False"),
    ("TEST.PRECISE_BN.ENABLED", lambda x, v: x is False, "crosscam does not recompute BatchNorm statistics; set it to False"),
]

FASTREID_SECTIONS = {key.split(".")[0] for key in (*DEFAULTS, *IGNORED)}  # MODEL, INPUT, ..., OUTPUT_DIR, KD

# crosscam key <- (fast-reid keys, their values -> crosscam's value; SKIP: crosscam's default applies)
SKIP = object()
MAPPING: list[tuple[str, tuple[str, ...], Callable[..., Any]]] = [
    ("model.backbone", ("MODEL.BACKBONE.DEPTH",), lambda d: f"resnet{_depth(d)}"),
    ("model.last_stride", ("MODEL.BACKBONE.LAST_STRIDE",), lambda s: s),
    ("model.pooling", ("MODEL.HEADS.POOL_LAYER",), lambda p: POOLS[p]),
    ("model.pretrained", ("MODEL.BACKBONE.PRETRAIN",), lambda p: p),
    ("input.size", ("INPUT.SIZE_TRAIN",), lambda s: list(_names(s))),
    ("input.flip_prob", ("INPUT.FLIP.ENABLED", "INPUT.FLIP.PROB"), lambda on, p: p if on else 0.0),
    ("input.padding", ("INPUT.PADDING.ENABLED", "INPUT.PADDING.SIZE"), lambda on, s: s if on else 0),
    ("input.erasing_prob", ("INPUT.REA.ENABLED", "INPUT.REA.PROB"), lambda on, p: p if on else 0.0),
    ("input.cj_prob", ("INPUT.CJ.ENABLED", "INPUT.CJ.PROB"), lambda on, p: p if on else 0.0),
    ("input.cj_brightness", ("INPUT.CJ.BRIGHTNESS",), lambda x: x),
    ("input.cj_contrast", ("INPUT.CJ.CONTRAST",), lambda x: x),
    ("input.cj_saturation", ("INPUT.CJ.SATURATION",), lambda x: x),
    ("input.cj_hue", ("INPUT.CJ.HUE",), lambda x: x),
    ("sampler.ids_per_batch", ("SOLVER.IMS_PER_BATCH", "DATALOADER.NUM_INSTANCE"), lambda n, k: n // k),
    ("sampler.instances", ("DATALOADER.NUM_INSTANCE",), lambda k: k),
    ("loss.ce_epsilon", ("MODEL.LOSSES.CE.EPSILON",), lambda e: e),
    ("loss.ce_weight", ("MODEL.LOSSES.NAME", "MODEL.LOSSES.CE.SCALE"), lambda n, s: s if "CrossEntropyLoss" in _names(n) else 0.0),
    ("loss.triplet_margin", ("MODEL.LOSSES.TRI.MARGIN",), lambda m: m),
    ("loss.triplet_weight", ("MODEL.LOSSES.NAME", "MODEL.LOSSES.TRI.SCALE"), lambda n, s: s if "TripletLoss" in _names(n) else 0.0),
    ("loss.triplet_norm_feat", ("MODEL.LOSSES.TRI.NORM_FEAT",), lambda f: f),
    ("loss.classifier", ("MODEL.HEADS.CLS_LAYER",), lambda c: CLASSIFIERS[c]),
    ("loss.cls_scale", ("MODEL.HEADS.CLS_LAYER", "MODEL.HEADS.SCALE"), lambda c, s: SKIP if CLASSIFIERS[c] == "linear" else s),
    ("loss.cls_margin", ("MODEL.HEADS.CLS_LAYER", "MODEL.HEADS.MARGIN"), lambda c, m: SKIP if CLASSIFIERS[c] == "linear" else m),
    ("solver.base_lr", ("SOLVER.BASE_LR",), lambda x: x),
    ("solver.weight_decay", ("SOLVER.WEIGHT_DECAY",), lambda x: x),
    ("solver.epochs", ("SOLVER.MAX_EPOCH",), lambda x: x),
    ("solver.steps", ("SOLVER.STEPS",), lambda s: list(_names(s))),
    ("solver.steps_after_warmup", ("SOLVER.SCHED",), lambda s: True),  # fast-reid's hook counts them so
    ("solver.gamma", ("SOLVER.GAMMA",), lambda x: x),
    ("solver.warmup_factor", ("SOLVER.WARMUP_FACTOR",), lambda x: x),
    ("solver.warmup_iters", ("SOLVER.WARMUP_ITERS",), lambda x: x),
    ("solver.heads_lr_factor", ("SOLVER.HEADS_LR_FACTOR",), lambda x: x),
    ("solver.amp", ("SOLVER.AMP.ENABLED",), lambda x: x),
    ("solver.freeze_iters", ("MODEL.FREEZE_LAYERS", "SOLVER.FREEZE_ITERS"), lambda layers, n: n if "backbone" in _names(layers or ()) else 0),
    ("eval.period", ("TEST.EVAL_PERIOD",), lambda x: x),
    ("eval.batch_size", ("TEST.IMS_PER_BATCH",), lambda x: x),
    ("eval.metric", ("TEST.METRIC",), lambda x: x),
    ("checkpoint_period", ("SOLVER.CHECKPOINT_PERIOD",), lambda x: x),
]


def is_fastreid_config(path: str | Path) -> bool:
    """True when ``path`` is a fast-reid config: a ``_BASE_`` key, or upper-case top-level keys of which one
    at least is a fast-reid section (MODEL, SOLVER...); a crosscam file with a stray upper-case key is
    crosscam's (its error names the key)."""
    try:
        keys = set(read_yaml_mapping(config_file(path)))
    except CrosscamError:  # reading it as crosscam's says what is wrong
        return False
    return "_BASE_" in keys or bool(keys & FASTREID_SECTIONS) and all(str(key).isupper() for key in keys)


@dataclass
class FastreidRecipe:
    """A fast-reid config translated for ``crosscam train`` (see the module docstring)."""

    files: list[Path]  # the file and its _BASE_ chain, outermost base first
    origin: dict[str, Path]  # fast-reid key -> the file that set it (keys left at fast-reid's default are absent)
    data: dict[str, Any]  # crosscam's TrainConfig mapping
    sources: dict[str, tuple[str, ...]]  # crosscam key -> the fast-reid keys it came from
    ignored: dict[str, str]  # fast-reid keys (or sections) the files set with no effect on training -> why

    @property
    def path(self) -> Path:
        return self.files[-1]

    def train_config(self, overrides: Iterable[str] = ()) -> TrainConfig:
        """The validated :class:`TrainConfig`, with ``KEY=VALUE`` overrides in crosscam's keys applied last."""
        names = {key: "/".join(keys) for key, keys in self.sources.items()}
        return load_config(TrainConfig, self.path, overrides, from_file=self.data, key_names=names)

    def summary(self, cfg: TrainConfig, overrides: Iterable[str] = ()) -> list[str]:
        """Lines saying the settings ``cfg`` trains with: those the fast-reid files set, those from fast-reid's
        defaults (a line per crosscam section each; a ``--set`` one marked), and what was ignored."""
        overrides = list(overrides)
        values = cfg.model_dump()

        def described(keys: list[str]) -> list[str]:
            sections: dict[str, list[str]] = {}
            for key in keys:
                note = "--set" if overridden(key, overrides) else "/".join(self.sources[key])
                sections.setdefault(key.split(".")[0], []).append(f"{key}={_value(_get(values, key))} ({note})")
            return [f"  {', '.join(items)}" for items in sections.values()]

        from_files = [key for key, keys in self.sources.items() if any(k in self.origin for k in keys)]
        defaults = [key for key in self.sources if key not in from_files]
        bases = f" (with _BASE_ {', '.join(str(p) for p in self.files[:-1])})" if len(self.files) > 1 else ""
        lines = [f"fast-reid config {self.path}{bases}:", *described(from_files)]
        if defaults:
            lines += ["fast-reid's defaults (the files leave them out):", *described(defaults)]
        if self.ignored:
            lines.append("ignored (no effect on crosscam's training): " + ", ".join(f"{k} ({why})" for k, why in self.ignored.items()))
        return lines


def read_fastreid_config(path: str | Path) -> FastreidRecipe:
    """Read a fast-reid config with its ``_BASE_`` files and translate it; a value crosscam cannot
    train, or a key fast-reid 1.x does not have, is a one-line :class:`CrosscamError`."""
    layers = read_yaml_layers(path, base_key="_BASE_")
    files = [file for file, _ in layers]
    origin: dict[str, Path] = {}
    merged: dict[str, Any] = {}
    for file, data in layers:
        flat = _flatten(data)
        origin.update({key: file for key in flat})
        merged.update(flat)
    for key in merged:
        section = key.split(".")[0]
        if section not in FASTREID_SECTIONS and not section.isupper():  # a _BASE_ naming a crosscam file, say
            raise CrosscamError(f"{_where(key, origin, files)}: {key}: not a fast-reid config key (fast-reid's are upper-case: "
                                "MODEL, INPUT, SOLVER...); a _BASE_ names a fast-reid file, and --config takes crosscam's "
                                "or fast-reid's, not both in one")
        if section not in FASTREID_SECTIONS:
            close = difflib.get_close_matches(section, sorted(FASTREID_SECTIONS), n=1, cutoff=0.7)
            hint = f"did you mean {close[0]}?" if close else f"its sections are {', '.join(sorted(FASTREID_SECTIONS))}"
            raise CrosscamError(f"{_where(key, origin, files)}: {section}: not a section of fast-reid's config; {hint}")
        if key not in DEFAULTS and _ignored(key) is None:
            raise CrosscamError(f"{_where(key, origin, files)}: {key}: not a key of fast-reid 1.x's config (fastreid/config/defaults.py); "
                                "an older fast-reid's file (SOLVER.MAX_ITER, INPUT.DO_PAD...)? use fast-reid >= 1.0's keys, or remove it")
    values = {**DEFAULTS, **{key: value for key, value in merged.items() if key in DEFAULTS}}
    refused = [(key, advice) for key, accepted, advice in CHECKS if not accepted(values[key], values)]
    if refused:  # all of them at once: one edit of the files, not one run per key
        where = _where(refused[0][0], origin, files)
        problems = [f"{'' if _where(key, origin, files) == where else _where(key, origin, files) + ': '}{key} "
                    f"{_value(values[key])}: {advice}" for key, advice in refused]
        more = f" ({len(refused)} settings crosscam cannot train; edit the file: --set takes crosscam's keys)" if len(refused) > 1 else ""
        raise CrosscamError(f"{where}: {' | '.join(problems)}{more}")
    data: dict[str, Any] = {}
    sources: dict[str, tuple[str, ...]] = {}
    for target, keys, convert in MAPPING:
        value = convert(*(values[key] for key in keys))
        if value is not SKIP:
            sources[target] = keys
            for part in reversed(target.split(".")):
                value = {part: value}
            data = merge_dicts(data, value)
    # a section whose switch is read (INPUT.CROP.ENABLED) is not ignored; DATASETS.NAMES is both checked and ignored
    ignored = {prefix: IGNORED[prefix] for key in merged if (prefix := _ignored(key)) is not None and (key not in DEFAULTS or key == prefix)}
    return FastreidRecipe(files, origin, data, sources, ignored)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"MODEL": {"BACKBONE": {"DEPTH": "50x"}}}`` -> ``{"MODEL.BACKBONE.DEPTH": "50x"}``; strings
    are read as Python literals where they are one (``("Market1501",)`` -> a tuple), as fast-reid's CfgNode does."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = _literal(value)
    return flat


def _literal(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # TypeError: "{[1]: 2}"
        return value


def _ignored(key: str) -> str | None:
    """The ``IGNORED`` entry covering ``key`` (itself or a section around it), if any."""
    return next((prefix for prefix in IGNORED if key == prefix or key.startswith(f"{prefix}.")), None)


def _where(key: str, origin: dict[str, Path], files: list[Path]) -> str:
    """The file that set ``key`` (a base: which file's _BASE_ it is), or fast-reid's default in the top file."""
    top = files[-1]
    if key not in origin:
        return f"{top} (fast-reid's default; the file does not set it)"
    return str(top) if origin[key] == top else f"{origin[key]} (_BASE_ of {top})"


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _get(data: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data
