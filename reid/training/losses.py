"""The BoT losses: label-smoothed cross-entropy and batch-hard triplet, as fast-reid computes them.

- :func:`label_smoothed_cross_entropy`: target distribution ``1 - eps`` on the true class and
  ``eps / (C - 1)`` on each of the other ``C - 1`` classes (fast-reid's convention; the BoT paper
  writes ``eps / C`` everywhere), averaged over the rows whose loss is non-zero.
- :func:`hard_triplet_loss`: euclidean distances (clamped at 1e-12 before the square root) of
  the features, or cosine distance ``2 - 2 cos`` with ``norm_feat``; for each anchor the farthest
  positive and the closest negative; ``mean(max(0, d_ap - d_an + margin))``, or the soft margin
  ``mean(log(1 + exp(d_ap - d_an)))`` when ``margin`` is 0.
- :func:`class_scores` / :func:`class_logits`: the classifier's scores (dot products, or cosines)
  and the logits the cross-entropy sees, either the plain dot products or fast-reid's
  margin softmaxes on cosines (CosFace: ``s (cos - m)`` on the target; Circle: ``s a_p (cos - (1 - m))``
  on the target and ``s a_n (cos - m)`` elsewhere, with ``a_p = max(0, 1 + m - cos)`` and
  ``a_n = max(0, cos + m)`` taken as constants).

>>> import torch
>>> logits = torch.tensor([[2.0, 0.0, 0.0]])
>>> round(float(label_smoothed_cross_entropy(logits, torch.tensor([0]), epsilon=0.0)), 4)
0.2395
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Scalar loss of ``logits`` (N, C) float against ``targets`` (N,) int64 class indices."""
    num_classes = logits.shape[1]
    log_probs = F.log_softmax(logits.float(), dim=1)
    off_target = epsilon / (num_classes - 1) if num_classes > 1 else 0.0
    soft = torch.full_like(log_probs, off_target)
    soft.scatter_(1, targets.unsqueeze(1), 1.0 - epsilon)
    per_row = -(soft * log_probs).sum(dim=1)
    nonzero = int(torch.count_nonzero(per_row.detach()))
    return per_row.sum() / max(nonzero, 1)


def pairwise_euclidean(features: torch.Tensor) -> torch.Tensor:
    """(N, N) euclidean distances of (N, D) features, via the Gram matrix, clamped at 1e-12 before sqrt."""
    squared = features.pow(2).sum(dim=1, keepdim=True)
    dist = squared + squared.t() - 2.0 * features @ features.t()
    return dist.clamp(min=1e-12).sqrt()


def pairwise_cosine_distance(features: torch.Tensor) -> torch.Tensor:
    """(N, N) ``2 - 2 cos`` of (N, D) features (squared euclidean distance of unit vectors)."""
    unit = F.normalize(features, dim=1)
    return 2.0 - 2.0 * unit @ unit.t()


def hard_triplet_loss(
    features: torch.Tensor, targets: torch.Tensor, margin: float = 0.3, norm_feat: bool = False
) -> torch.Tensor:
    """Batch-hard triplet loss of ``features`` (N, D) with identity ``targets`` (N,).

    Every anchor needs a positive (another image of its identity; the PK sampler guarantees it)
    and a negative; an anchor without a positive uses distance 0 as its hardest positive.
    """
    features = features.float()
    dist = pairwise_cosine_distance(features) if norm_feat else pairwise_euclidean(features)
    same = targets.unsqueeze(0) == targets.unsqueeze(1)
    hardest_positive = (dist * same).max(dim=1).values
    # Positives pushed out of reach so the min picks a negative.
    hardest_negative = (dist + same * 1e9).min(dim=1).values
    if margin > 0:
        return F.relu(hardest_positive - hardest_negative + margin).mean()
    return F.softplus(hardest_positive - hardest_negative).mean()


def class_scores(outputs: dict[str, torch.Tensor], weight: torch.Tensor, cfg) -> torch.Tensor:
    """``(N, C)`` float32 class scores without margins: the linear classifier's logits, or for
    ``cosface`` / ``circle`` the cosines of ``bn_features`` and ``weight`` (what fast-reid's
    accuracy reads); their argmax is the predicted class."""
    if cfg.classifier == "linear":
        return outputs["logits"].float()
    return F.linear(F.normalize(outputs["bn_features"].float()), F.normalize(weight.float()))


def class_logits(scores: torch.Tensor, targets: torch.Tensor, cfg) -> torch.Tensor:
    """``(N, C)`` float32 logits for the cross-entropy from :func:`class_scores`, by ``cfg.classifier``
    (see the module docstring); ``targets`` (N,) class indices place the margins."""
    if cfg.classifier == "linear":
        return scores  # the dot products themselves
    cos, m = scores, cfg.cls_margin
    on_target = F.one_hot(targets, cos.shape[1]).bool()
    if cfg.classifier == "cosface":
        return cfg.cls_scale * (cos - m * on_target)
    alpha_p = (1 + m - cos.detach()).clamp(min=0)
    alpha_n = (cos.detach() + m).clamp(min=0)
    return cfg.cls_scale * torch.where(on_target, alpha_p * (cos - (1 - m)), alpha_n * (cos - m))


def bot_loss(outputs: dict[str, torch.Tensor], targets: torch.Tensor, cfg, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """The weighted BoT losses of a train-mode model's ``outputs`` (``logits``, ``bn_features``, ``features``).

    ``cfg`` is a :class:`~reid.training.config.LossSection`; ``weight`` the classifier's (C, D)
    weights. Returns ``ce``, ``triplet``, their weighted sum ``total`` (scalars) and the class
    ``scores`` (N, C) without margins (:func:`class_scores`, for the training accuracy).
    """
    scores = class_scores(outputs, weight, cfg)
    ce = label_smoothed_cross_entropy(class_logits(scores, targets, cfg), targets, cfg.ce_epsilon)
    triplet = hard_triplet_loss(outputs["features"], targets, cfg.triplet_margin, cfg.triplet_norm_feat)
    return {"ce": ce, "triplet": triplet, "total": cfg.ce_weight * ce + cfg.triplet_weight * triplet,
            "scores": scores}
