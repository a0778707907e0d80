"""Adam and the BoT learning-rate schedule.

The learning rate at a step is ``base_lr * warmup(iteration) * gamma ** (milestones passed)``:
a linear warm-up over the first ``warmup_iters`` iterations from ``warmup_factor * base_lr``
to ``base_lr`` (fast-reid's ``WarmupLR``, per iteration), times a MultiStep decay by ``gamma``
at each epoch in ``steps`` (fast-reid's ``MultiStepLR``, per epoch, counted as fast-reid counts them:
``SolverSection.steps_after_warmup``). Written as a pure function of (iteration, epoch) so a
resumed run needs no scheduler state.

>>> from reid.training.config import SolverSection
>>> cfg = SolverSection()
>>> round(learning_rate(cfg, 0, 0, iters_per_epoch=202), 8), round(learning_rate(cfg, 10100, 50, iters_per_epoch=202), 8)
(3.5e-05, 3.5e-05)
"""

from __future__ import annotations

import bisect

import torch

from reid.training.config import SolverSection


def warmup_factor(iteration: int, warmup_iters: int, start_factor: float) -> float:
    """Linear warm-up multiplier: ``start_factor`` at iteration 0, 1.0 from ``warmup_iters`` on."""
    if iteration >= warmup_iters:
        return 1.0
    alpha = iteration / warmup_iters
    return start_factor * (1.0 - alpha) + alpha


def learning_rate(cfg: SolverSection, iteration: int, epoch: int, iters_per_epoch: int) -> float:
    """The learning rate for global ``iteration`` (0-based) inside ``epoch`` (0-based) of
    ``iters_per_epoch`` iterations. With ``steps_after_warmup`` (fast-reid's counting), ``steps`` count
    the epochs from the first one that ends after the warm-up.

    >>> from reid.training.config import SolverSection
    >>> cfg = SolverSection(steps=[40, 90], warmup_iters=2000, steps_after_warmup=True)
    >>> [round(learning_rate(cfg, 202 * e, e, 202) / cfg.base_lr, 3) for e in (40, 48, 49, 98, 99)]
    [1.0, 1.0, 0.1, 0.1, 0.01]
    """
    counted = epoch - cfg.warmup_iters // iters_per_epoch if cfg.steps_after_warmup else epoch
    decays = bisect.bisect_right(cfg.steps, counted)
    return cfg.base_lr * warmup_factor(iteration, cfg.warmup_iters, cfg.warmup_factor) * cfg.gamma**decays


def build_optimizer(model: torch.nn.Module, cfg: SolverSection) -> torch.optim.Adam:
    """Adam over the trainable parameters; weight decay (L2, as fast-reid) on all of them, norms included.

    Two parameter groups: the backbone (``lr_factor`` 1) and the head, BNNeck and classifier
    (``lr_factor`` = ``cfg.heads_lr_factor``, fast-reid's HEADS_LR_FACTOR): fine-tuning a trained
    ReID backbone gently while its new classifier learns at full speed.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    backbone = [p for name, p in named if name.startswith("backbone.")]
    heads = [p for name, p in named if not name.startswith("backbone.")]
    groups = [
        {"params": params, "lr_factor": factor}
        for params, factor in ((backbone, 1.0), (heads, cfg.heads_lr_factor))
        if params
    ]
    # foreach: one fused update over all tensors; the per-tensor loop dominates small models on a CPU.
    optimizer = torch.optim.Adam(groups, lr=cfg.base_lr, weight_decay=cfg.weight_decay, foreach=True)
    set_learning_rate(optimizer, cfg.base_lr)
    return optimizer


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set each group's lr to ``lr`` times its ``lr_factor``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_factor", 1.0)
