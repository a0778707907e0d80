"""The training recipe as one validated pydantic model, :class:`TrainConfig`.

Defaults are fast-reid's ``Base-bagtricks.yml`` + ``bagtricks_R50.yml`` (BoT R50): 256x128
input, flip / pad 10 + crop / random erasing 0.5, P=16 identities x K=4 images, label-smoothed
cross-entropy (epsilon 0.1) + hard-mining triplet (margin 0.3) on the pre-BNNeck feature, Adam
lr 3.5e-4 weight decay 5e-4, linear warm-up (factor 0.1, 2000 iterations), MultiStep [40, 90]
x 0.1 over 120 epochs, AMP on CUDA. Load a YAML with :func:`load_train_config`.

>>> cfg = TrainConfig()
>>> cfg.model.backbone, cfg.sampler.batch_size, cfg.solver.steps
('resnet50', 64, [40, 90])
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable, Iterable, Literal

from pydantic import BaseModel, Field, model_validator

from reid.config import load_config

Backbone = Literal["resnet50", "resnet18", "resnet34", "mobilenetv2", "onnx"]


class _Section(BaseModel):
    model_config = {"extra": "forbid", "validate_assignment": True}  # a value set in Python is checked too


class ModelSection(_Section):
    """Network: backbone, its ImageNet initialisation, pooling and BNNeck (always on)."""

    backbone: Backbone = "resnet50"
    last_stride: Literal[1, 2] = 1
    # ResNet stem: "fastreid" (max-pool padding 0, ceil mode: fast-reid >= Nov 2020) or "torchvision".
    stem: Literal["fastreid", "torchvision"] = "fastreid"
    pooling: Literal["avg", "gem"] = "avg"
    pretrained: bool = True  # ImageNet weights when found on disk, else from scratch with a warning
    onnx: str | None = None  # backbone onnx: the ONNX ReID model to fine-tune (its weights are the start)


class InputSection(_Section):
    """Training augmentation; images are resized once to ``size`` (height, width), then augmented."""

    size: tuple[Annotated[int, Field(ge=32, le=1024)], Annotated[int, Field(ge=16, le=1024)]] = (256, 128)  # (H, W) pixels
    flip_prob: float = Field(0.5, ge=0, le=1)
    padding: int = Field(10, ge=0, le=64)  # pad then random-crop back to ``size``; 0 disables
    erasing_prob: float = Field(0.5, ge=0, le=1)  # random erasing filled with the ImageNet mean
    # fast-reid's INPUT.CJ (off in bagtricks): per-image colour jitter with probability cj_prob, after the crop.
    cj_prob: float = Field(0.0, ge=0, le=1)
    cj_brightness: float = Field(0.15, ge=0, lt=1)
    cj_contrast: float = Field(0.15, ge=0, lt=1)
    cj_saturation: float = Field(0.1, ge=0, lt=1)
    cj_hue: float = Field(0.1, ge=0, le=0.5)


class SamplerSection(_Section):
    """PK batches: ``ids_per_batch`` identities x ``instances`` images each."""

    ids_per_batch: int = Field(16, ge=2)
    instances: int = Field(4, ge=1)

    @property
    def batch_size(self) -> int:
        return self.ids_per_batch * self.instances


class LossSection(_Section):
    """Label-smoothed cross-entropy on the BNNeck logits + triplet on the pre-BNNeck feature."""

    ce_epsilon: float = Field(0.1, ge=0, lt=1)
    ce_weight: float = Field(1.0, ge=0)
    triplet_margin: float = Field(0.3, ge=0)  # 0 = soft margin
    triplet_weight: float = Field(1.0, ge=0)
    triplet_norm_feat: bool = False  # fast-reid's TRI.NORM_FEAT: cosine instead of euclidean distance
    # fast-reid's MODEL.HEADS.CLS_LAYER / SCALE / MARGIN: "linear" feeds the classifier's dot products
    # to the cross-entropy; "cosface" and "circle" feed cosines of the BNNeck feature and the class
    # weights, with an additive (CosFace) or self-paced (Circle) ``cls_margin``, times ``cls_scale``.
    classifier: Literal["linear", "cosface", "circle"] = "linear"
    cls_scale: float = Field(64.0, gt=0)  # cosface / circle only
    cls_margin: float = Field(0.35, ge=0, lt=1)  # cosface / circle only


class SolverSection(_Section):
    """Adam, per-iteration linear warm-up, then per-epoch MultiStep decay; optionally a backbone freeze and an EMA."""

    base_lr: float = Field(3.5e-4, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    epochs: int = Field(120, ge=1)
    steps: list[int] = [40, 90]  # epochs at which the lr is multiplied by ``gamma``
    # fast-reid counts STEPS in epochs ended after the warm-up (its LRScheduler hook steps MultiStepLR
    # only then): with 2000 warm-up iterations of 202 a epoch, its decays come at epochs 49 and 99
    steps_after_warmup: bool = True  # False: steps count from epoch 0
    gamma: float = Field(0.1, gt=0)
    warmup_factor: float = Field(0.1, gt=0, le=1)
    warmup_iters: int = Field(2000, ge=0)
    heads_lr_factor: float = Field(1.0, gt=0)  # SOLVER.HEADS_LR_FACTOR: the BNNeck + classifier's lr multiplier
    iters_per_epoch: int | None = Field(None, ge=1)  # None: train images // batch size (fast-reid's epoch)
    amp: bool = True  # mixed precision; used on CUDA only
    # EMA of the weights (parameters + BN running statistics), updated after every optimizer step;
    # None = off. Its time constant is 1 / (1 - ema_decay) iterations (0.997: 333 iterations), the
    # plain mean of all steps so far before that (reid.training.ema). When on, the periodic and final
    # evaluations and model.pth are of the averaged weights; last.pth keeps both for --resume.
    ema_decay: float | None = Field(None, gt=0, lt=1)
    # fast-reid's SOLVER.FREEZE_ITERS with MODEL.FREEZE_LAYERS [backbone]: for the first N iterations
    # only the head (BNNeck + classifier) trains, so the new classifier's large early gradients do not
    # reach pretrained features; the backbone gets no gradient (no Adam update, no weight decay) and
    # runs in eval mode (BatchNorm statistics fixed). 0 = off. The warm-up still counts from iteration
    # 0 (the backbone joins at the warm-up lr of iteration N; its Adam moments start then), the head
    # keeps heads_lr_factor throughout, the EMA keeps updating (its backbone stays the start weights
    # until N), and a resumed run freezes up to N too (reid.training.freeze).
    freeze_iters: int = Field(0, ge=0)


class EvalSection(_Section):
    """Evaluation on the dataset's query/gallery with fast-reid's Market-1501 protocol."""

    period: int = Field(30, ge=0)  # every N epochs and after the last; 0 = only after the last
    batch_size: int = Field(128, ge=1)
    metric: Literal["cosine", "euclidean"] = "cosine"


class TrainConfig(_Section):
    """Everything ``crosscam train`` needs besides the data root and the output folder."""

    model: ModelSection = ModelSection()
    input: InputSection = InputSection()
    sampler: SamplerSection = SamplerSection()
    loss: LossSection = LossSection()
    solver: SolverSection = SolverSection()
    eval: EvalSection = EvalSection()
    checkpoint_period: int = Field(30, ge=1)  # also saves ``last.pth`` (resume) after every epoch
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = Field(None, ge=1)  # torch CPU threads; None keeps torch's default

    @model_validator(mode="after")
    def _check_across_keys(self) -> "TrainConfig":
        if self.solver.steps != sorted(self.solver.steps):
            raise ValueError("solver.steps must be increasing epochs")
        if self.loss.triplet_weight > 0 and self.sampler.instances < 2:  # no positive pair: the loss is 0 throughout
            raise ValueError("sampler.instances 1: the triplet loss needs 2 or more images of each identity in a "
                             "batch; raise sampler.instances, or set loss.triplet_weight=0")
        return self


def load_train_config(path: str | Path | None = None, overrides: Iterable[str] = (),
                      said: Callable[[str], None] | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from an optional YAML (with ``base:`` files) plus ``KEY=VALUE`` overrides.

    A fast-reid training config (``_BASE_``, upper-case ``MODEL`` / ``SOLVER`` keys) is translated
    by :mod:`reid.training.fastreid_config`, and ``said`` gets the lines saying where each setting
    came from; the overrides use crosscam's keys either way.
    """
    from reid.training.fastreid_config import is_fastreid_config, read_fastreid_config  # it imports this module

    overrides = list(overrides)  # read twice below
    if path is None or not is_fastreid_config(path):
        return load_config(TrainConfig, path, overrides)
    recipe = read_fastreid_config(path)
    cfg = recipe.train_config(overrides)
    for line in recipe.summary(cfg, overrides) if said is not None else ():
        said(line)
    return cfg
