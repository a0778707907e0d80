"""Training ReID models with the BoT recipe (fast-reid's bagtricks): config, PK sampler,
augmentation, losses, schedule, the loop, and trained-weights files.

>>> from reid.training import TrainConfig, Trainer, load_train_config
>>> load_train_config(None, ["model.backbone=resnet18"]).model.backbone
'resnet18'
"""

from reid.training.checkpoint_io import load_trained_model, save_checkpoint
from reid.training.config import TrainConfig, load_train_config
from reid.training.losses import hard_triplet_loss, label_smoothed_cross_entropy
from reid.training.models import build_train_model
from reid.training.sampler import PKSampler
from reid.training.trainer import Trainer, read_log

__all__ = [
    "PKSampler",
    "TrainConfig",
    "Trainer",
    "build_train_model",
    "hard_triplet_loss",
    "label_smoothed_cross_entropy",
    "load_train_config",
    "load_trained_model",
    "read_log",
    "save_checkpoint",
]
