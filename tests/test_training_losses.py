"""The BoT losses against hand-computed values and against fast-reid's own loss functions."""

from __future__ import annotations

import math

import pytest
import torch

from reid.training.config import LossSection
from reid.training.losses import class_logits, class_scores, hard_triplet_loss, label_smoothed_cross_entropy


def test_label_smoothing_puts_one_minus_eps_on_the_target_and_eps_over_c_minus_1_elsewhere():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    log_z = math.log(math.exp(2.0) + 2.0)
    expected = -(0.9 * (2.0 - log_z) + 2 * (0.1 / 2) * (0.0 - log_z))
    assert float(label_smoothed_cross_entropy(logits, torch.tensor([0]), epsilon=0.1)) == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_averages_over_rows_with_non_zero_loss():
    # The first row is classified with certainty (loss exactly 0 in float32): fast-reid leaves it out of the mean.
    logits = torch.tensor([[100.0, -100.0], [0.0, 1.0]])
    second_row = math.log(1.0 + math.e)
    loss = label_smoothed_cross_entropy(logits, torch.tensor([0, 0]), epsilon=0.0)
    assert float(loss) == pytest.approx(second_row, rel=1e-6)


def test_hard_triplet_uses_farthest_positive_and_closest_negative():
    features = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # Anchor: (hardest positive, hardest negative) = (3, 1), (3, sqrt 10), (4, 1), (4, 5).
    hinge = [3 - 1 + 0.3, 3 - math.sqrt(10) + 0.3, 4 - 1 + 0.3, max(0.0, 4 - 5 + 0.3)]
    assert float(hard_triplet_loss(features, labels, margin=0.3)) == pytest.approx(sum(hinge) / 4, rel=1e-6)
    soft = [math.log1p(math.exp(ap - an)) for ap, an in ((3, 1), (3, math.sqrt(10)), (4, 1), (4, 5))]
    assert float(hard_triplet_loss(features, labels, margin=0.0)) == pytest.approx(sum(soft) / 4, rel=1e-6)


def test_cosine_triplet_ignores_feature_scale():
    features = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(4).repeat_interleave(2)
    scaled = features * torch.linspace(0.5, 4.0, 8).unsqueeze(1)
    assert float(hard_triplet_loss(features, labels, norm_feat=True)) == pytest.approx(
        float(hard_triplet_loss(scaled, labels, norm_feat=True)), rel=1e-5
    )


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_cross_entropy_equals_fastreids(epsilon):
    from fastreid.modeling.losses.cross_entroy_loss import cross_entropy_loss

    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 751, generator=generator) * 3
    targets = torch.randint(0, 751, (16,), generator=generator)
    ours = label_smoothed_cross_entropy(logits, targets, epsilon)
    assert float(ours) == pytest.approx(float(cross_entropy_loss(logits, targets, epsilon)), rel=1e-6)


@pytest.mark.parametrize(("margin", "norm_feat"), [(0.3, False), (0.3, True), (0.0, False)])
def test_hard_triplet_equals_fastreids_loss_and_gradient(margin, norm_feat):
    from fastreid.modeling.losses.triplet_loss import triplet_loss

    generator = torch.Generator().manual_seed(2)
    base = torch.randn(64, 128, generator=generator)
    labels = torch.arange(16).repeat_interleave(4)  # a PK batch, P=16 x K=4
    ours_in, theirs_in = base.clone().requires_grad_(), base.clone().requires_grad_()
    ours = hard_triplet_loss(ours_in, labels, margin, norm_feat)
    theirs = triplet_loss(theirs_in, labels, margin, norm_feat, hard_mining=True)
    ours.backward()
    theirs.backward()
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-5)
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, rtol=1e-4, atol=1e-6)


def _unit_outputs(cos_target: float, cos_other: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One unit feature and two unit class weights at the given cosines to it (weights scaled by 3)."""
    feature = torch.tensor([[1.0, 0.0, 0.0]])
    weight = torch.tensor([[cos_target, math.sqrt(1 - cos_target**2), 0.0], [cos_other, 0.0, math.sqrt(1 - cos_other**2)]]) * 3
    return {"bn_features": feature * 2, "logits": feature @ weight.t()}, weight


def test_cosface_logits_subtract_the_margin_from_the_target_cosine():
    outputs, weight = _unit_outputs(0.8, 0.5)
    cfg = LossSection(classifier="cosface", cls_scale=10, cls_margin=0.3)
    logits = class_logits(class_scores(outputs, weight, cfg), torch.tensor([0]), cfg)
    assert logits.tolist()[0] == pytest.approx([10 * (0.8 - 0.3), 10 * 0.5], rel=1e-5)


def test_circle_logits_weight_target_and_others_by_their_distance_from_the_optimum():
    outputs, weight = _unit_outputs(0.8, 0.5)
    cfg = LossSection(classifier="circle", cls_scale=10, cls_margin=0.25)
    logits = class_logits(class_scores(outputs, weight, cfg), torch.tensor([0]), cfg)
    target = 10 * (1 + 0.25 - 0.8) * (0.8 - 0.75)
    other = 10 * (0.5 + 0.25) * (0.5 - 0.25)
    assert logits.tolist()[0] == pytest.approx([target, other], rel=1e-5)
    linear = class_logits(class_scores(outputs, weight, LossSection()), torch.tensor([0]), LossSection())
    assert torch.equal(linear, outputs["logits"])


@pytest.mark.parametrize(("kind", "fastreid_layer"), [("cosface", "CosSoftmax"), ("circle", "CircleSoftmax")])
def test_margin_logits_and_gradients_equal_fastreids(kind, fastreid_layer):
    from fastreid.layers import any_softmax

    generator = torch.Generator().manual_seed(2)
    features = torch.randn(12, 32, generator=generator)
    weight = torch.randn(20, 32, generator=generator)
    targets = torch.randint(0, 20, (12,), generator=generator)
    cfg = LossSection(classifier=kind, cls_scale=64, cls_margin=0.35)
    ours_in = features.clone().requires_grad_(True)
    ours = class_logits(class_scores({"bn_features": ours_in}, weight, cfg), targets, cfg)
    theirs_in = features.clone().requires_grad_(True)
    cos = torch.nn.functional.linear(torch.nn.functional.normalize(theirs_in), torch.nn.functional.normalize(weight))
    theirs = getattr(any_softmax, fastreid_layer)(20, 64, 0.35)(cos.clone(), targets)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    label_smoothed_cross_entropy(ours, targets).backward()
    label_smoothed_cross_entropy(theirs, targets).backward()
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, rtol=1e-4, atol=1e-6)
