"""Backbone freeze for the first iterations of a fine-tune (fast-reid's ``MODEL.FREEZE_LAYERS: [backbone]``
with ``SOLVER.FREEZE_ITERS``).

While ``iteration < iters`` only the head (pooling, BNNeck, classifier) trains: the backbone's
parameters have ``requires_grad`` off, so they get no gradient (``.grad`` stays None, which Adam
skips: no moments, no weight decay, and no backward pass through the backbone at all), and the
backbone runs in eval mode, so its BatchNorm running statistics do not move either. From
``iters`` on everything trains as before. The state is a function of the global iteration alone
(a Python int: no host synchronisation, and a resumed run freezes up to ``iters`` as well).

Build the optimizer before the freeze first applies: it must hold the backbone's parameters.

>>> from reid.training.config import ModelSection
>>> from reid.training.models import build_train_model
>>> model = build_train_model(ModelSection(backbone="resnet18", pretrained=False), num_classes=3).train()
>>> freeze = BackboneFreeze(model, iters=2)
>>> freeze.update(0), model.backbone.training, model.backbone.conv1.weight.requires_grad, model.neck.training
(True, False, False, True)
>>> freeze.update(2), model.backbone.training, model.backbone.conv1.weight.requires_grad
(False, True, True)
"""

from __future__ import annotations

from torch import nn


class BackboneFreeze:
    """Freeze ``model.backbone`` (weights and BatchNorm statistics) for global iterations ``0 .. iters - 1``."""

    def __init__(self, model: nn.Module, iters: int):
        self.backbone: nn.Module = model.backbone
        self.iters = iters
        # Only the parameters that train at all are released again (none is frozen for good today).
        self.trainable = [p for p in self.backbone.parameters() if p.requires_grad]
        self.frozen = False

    def update(self, iteration: int) -> bool:
        """Apply the state for the step about to run at global ``iteration``; True while frozen.

        Call it after every ``model.train()`` (which puts the backbone back in train mode) and
        before each step's forward pass.
        """
        frozen = iteration < self.iters
        if frozen != self.frozen:
            for parameter in self.trainable:
                parameter.requires_grad_(not frozen)
                if frozen:
                    parameter.grad = None
            self.frozen = frozen
            if not frozen:
                self.backbone.train()
        if frozen and self.backbone.training:
            self.backbone.eval()
        return frozen
