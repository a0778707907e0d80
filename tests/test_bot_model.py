"""ResNet backbone (torchvision-identical) and the BoT model: names, shapes, outputs, training bits."""

from __future__ import annotations

import pydantic
import pytest
import torch
import torchvision

from reid.config import BotModelConfig
from reid.models.bot import PIXEL_MEAN, PIXEL_STD, GeneralizedMeanPool, build_bot_model
from reid.models.resnet import ResNet, fold_batchnorm

TORCHVISION_RESNETS = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34, 50: torchvision.models.resnet50}


@pytest.fixture(scope="module")
def bot_r50():
    torch.manual_seed(0)
    model = build_bot_model(BotModelConfig(num_classes=7)).eval()
    with torch.no_grad():  # trained-looking BNNeck statistics, so the neck visibly changes features
        model.neck.running_mean.uniform_(-0.5, 0.5)
        model.neck.running_var.uniform_(0.2, 2.0)
    return model


@pytest.mark.parametrize("depth", sorted(TORCHVISION_RESNETS))
def test_resnet_state_dict_names_and_shapes_equal_torchvision(depth):
    ours = ResNet(depth).state_dict()
    theirs = {k: v for k, v in TORCHVISION_RESNETS[depth]().state_dict().items() if not k.startswith("fc.")}
    assert list(ours) == list(theirs)
    assert [tuple(v.shape) for v in ours.values()] == [tuple(v.shape) for v in theirs.values()]


def test_resnet50_forward_equals_torchvision_with_its_weights():
    torch.manual_seed(1)
    reference = torchvision.models.resnet50().eval()
    with torch.no_grad():  # non-trivial BN statistics, so every BN layer matters
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    ours = ResNet(50, last_stride=2, stem="torchvision").eval()
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")})
    trunk = torch.nn.Sequential(*list(reference.children())[:-2])
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), trunk(x), atol=1e-5)


def test_stems_differ_in_values_not_in_size():
    torch.manual_seed(2)
    torchvision_stem = ResNet(18, stem="torchvision").eval()
    fastreid_stem = ResNet(18, stem="fastreid").eval()
    fastreid_stem.load_state_dict(torchvision_stem.state_dict())
    assert fastreid_stem.maxpool.padding == 0 and fastreid_stem.maxpool.ceil_mode
    assert torchvision_stem.maxpool.padding == 1 and not torchvision_stem.maxpool.ceil_mode
    x = torch.randn(1, 3, 128, 64)
    with torch.no_grad():
        a, b = torchvision_stem(x), fastreid_stem(x)
    assert a.shape == b.shape == (1, 512, 8, 4)
    assert not torch.allclose(a, b, atol=1e-3)


@pytest.mark.parametrize(("last_stride", "size"), [(1, (8, 4)), (2, (4, 2))])
def test_last_stride_sets_the_output_resolution(last_stride, size):
    with torch.no_grad():
        out = ResNet(18, last_stride=last_stride).eval()(torch.zeros(1, 3, 128, 64))
    assert tuple(out.shape[2:]) == size


def test_resnet_rejects_unknown_depth():
    with pytest.raises(ValueError, match="depth"):
        ResNet(depth=20)


def test_eval_output_is_the_bnneck_feature_of_the_normalised_input(bot_r50):
    images = torch.rand(2, 3, 128, 64) * 255
    original = images.clone()
    with torch.no_grad():
        features = bot_r50(images)
        mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
        pooled = bot_r50.backbone((original - mean) / std).mean(dim=(2, 3))
        by_hand = bot_r50.neck(pooled)
    assert torch.equal(images, original), "the caller's tensor was modified"
    assert features.shape == (2, 2048) and features.dtype == torch.float32
    assert torch.allclose(features, by_hand, atol=1e-5)
    assert not torch.allclose(features, pooled, atol=1e-2), "the BNNeck had no effect"
    assert not torch.allclose(features.norm(dim=1), torch.ones(2)), "eval features must not be L2-normalised"


def test_train_mode_returns_features_bn_features_and_logits():
    torch.manual_seed(3)
    model = build_bot_model(BotModelConfig(depth=18, num_classes=5)).train()
    out = model(torch.rand(4, 3, 64, 32) * 255)
    assert set(out) == {"features", "bn_features", "logits"}
    assert out["features"].shape == out["bn_features"].shape == (4, 512)
    assert out["logits"].shape == (4, 5)
    assert model.classifier.bias is None


def test_bnneck_bias_stays_zero_through_training():
    torch.manual_seed(4)
    model = build_bot_model(BotModelConfig(depth=18, num_classes=3)).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    out = model(torch.rand(4, 3, 64, 32) * 255)
    loss = torch.nn.functional.cross_entropy(out["logits"], torch.tensor([0, 1, 2, 0])) + out["features"].mean()
    loss.backward()
    optimizer.step()
    assert not model.neck.bias.requires_grad
    assert torch.count_nonzero(model.neck.bias) == 0
    assert model.neck.weight.grad is not None


def test_no_classifier_without_classes():
    model = build_bot_model(BotModelConfig(depth=18)).train()
    assert model.classifier is None
    assert "logits" not in model(torch.rand(2, 3, 64, 32) * 255)


def test_pixel_buffers_are_not_saved_in_the_state_dict(bot_r50):
    keys = bot_r50.state_dict().keys()
    assert "pixel_mean" not in keys and "pixel_std" not in keys
    assert {"neck.weight", "neck.bias", "neck.running_mean", "neck.running_var", "classifier.weight"} <= set(keys)


def test_gem_pooling():
    x = torch.rand(2, 8, 4, 3) + 0.1
    assert torch.allclose(GeneralizedMeanPool(p=1.0)(x), x.mean(dim=(2, 3)), atol=1e-6)
    gem3 = GeneralizedMeanPool(p=3.0)(x)
    assert torch.allclose(gem3, (x**3).mean(dim=(2, 3)) ** (1 / 3), atol=1e-6)
    assert torch.all(gem3 >= x.mean(dim=(2, 3)) - 1e-6)  # power mean >= arithmetic mean
    model = build_bot_model(BotModelConfig(depth=18, pooling="gem", gem_p=4.0)).eval()
    assert isinstance(model.pool, GeneralizedMeanPool) and model.pool.p == 4.0


def test_config_validates_and_defaults_to_bot_r50():
    cfg = BotModelConfig()
    assert (cfg.depth, cfg.last_stride, cfg.stem, cfg.pooling, cfg.num_classes) == (50, 1, "torchvision", "avg", 0)
    assert cfg.feat_dim == 2048 and BotModelConfig(depth=34).feat_dim == 512
    for bad in ({"depth": 20}, {"stem": "caffe"}, {"last_stride": 3}, {"num_classes": -1}, {"colour": "rgb"}):
        with pytest.raises(pydantic.ValidationError):
            BotModelConfig(**bad)


def test_pooling_and_bnneck_run_in_float32_under_bf16_autocast():
    torch.manual_seed(5)
    model = build_bot_model(BotModelConfig(depth=18)).eval()
    with torch.no_grad():
        model.neck.running_mean.fill_(1.0)  # pooled values sit near the mean: bf16 would cancel them
        model.neck.running_var.fill_(1e-4)
    seen = {}
    model.neck.register_forward_hook(lambda module, inputs, output: seen.update(dtype=inputs[0].dtype))
    images = torch.rand(2, 3, 64, 32) * 255
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        features = model(images)
        pooled = model.pool(model.backbone((images - model.pixel_mean) / model.pixel_std).float())
    assert features.dtype == torch.float32 and seen["dtype"] == torch.float32
    with torch.inference_mode():
        assert torch.allclose(features, model.neck(pooled.float()), atol=1e-5)


def test_a_float64_model_computes_in_float64():
    model = build_bot_model(BotModelConfig(depth=18)).eval().double()
    with torch.inference_mode():
        features = model(torch.rand(1, 3, 64, 32, dtype=torch.float64) * 255)
    assert features.dtype == torch.float64


@pytest.mark.parametrize("variant", [{}, {"ibn": True, "non_local": (0, 2, 3, 0)}], ids=["plain", "ibn-nonlocal"])
def test_folded_batchnorm_computes_the_same_function(variant):
    torch.manual_seed(6)
    net = ResNet(50, last_stride=1, **variant).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.75, 1.25)
                module.bias.uniform_(-0.1, 0.1)
    folded = fold_batchnorm(net)
    # IBN's BN half stays: it shares bn1 with the instance-norm half, which has no fixed statistics.
    ibn_halves = sum(1 for m in folded.modules() if m.__class__.__name__ == "IBN")
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) == ibn_halves
    assert isinstance(net.bn1, torch.nn.BatchNorm2d), "the original must stay untouched"
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        expected, got = net(x), folded(x)
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(net.train())
