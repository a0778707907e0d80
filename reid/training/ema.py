"""An exponential moving average (EMA) of a model's weights, updated after every optimizer step.

The average is a full copy of the model on the same device (``ModelEma.module``) that is never
trained itself: after optimizer step ``t`` (0-based count of earlier updates) every parameter
and floating buffer (BatchNorm running mean / var) becomes
``ema = decay_t * ema + (1 - decay_t) * weight`` with ``decay_t = min(decay, t / (t + 1))``;
integer buffers (``num_batches_tracked``, index constants) are copied. The warm-up of
``decay_t`` (Mean-Teacher's) makes the average the plain mean of all the steps so far until
``1 / (1 - decay)`` steps (the start weights and the random classifier are not mixed in), then
a true EMA whose time constant is ``1 / (1 - decay)`` steps. No host synchronisation: one fused
``torch._foreach_lerp_`` over all floating tensors per step.

>>> model = torch.nn.Linear(1, 1, bias=False)
>>> ema = ModelEma(model, decay=0.5)
>>> for value in (1.0, 2.0, 3.0):  # three optimizer steps
...     _ = model.weight.data.fill_(value)
...     ema.update(model)
>>> float(ema.module.weight)  # (1 + 2) / 2 after two steps, then (1.5 + 3) / 2
2.25
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """EMA of ``model``'s parameters and floating buffers; ``module`` is the averaged model (eval copy)."""

    def __init__(self, model: nn.Module, decay: float, updates: int = 0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.updates = updates  # optimizer steps averaged so far
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    def current_decay(self) -> float:
        """``decay_t`` of the next update: the running mean's ``t / (t + 1)`` until it exceeds ``decay``."""
        return min(self.decay, self.updates / (self.updates + 1))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights into the average (call after each optimizer step)."""
        weight = 1.0 - self.current_decay()
        averaged, current, copied_to, copied_from = [], [], [], []
        theirs_by_name = _tensors(model)
        for name, mine in _tensors(self.module).items():
            theirs = theirs_by_name[name]
            if mine.is_floating_point():
                averaged.append(mine)
                current.append(theirs.detach())
            else:
                copied_to.append(mine)
                copied_from.append(theirs)
        if averaged:
            torch._foreach_lerp_(averaged, current, weight)
        for mine, theirs in zip(copied_to, copied_from):
            mine.copy_(theirs)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        self.module.load_state_dict(state, strict=True)
        self.updates = updates


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by name, in a fixed order (the same for a model and its deep copy)."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}
