"""Strict, safe loading of fast-reid BoT checkpoints: every key generation, and every bad file.

Most cases use a ResNet-18 BoT (small files, fast); fast-reid's own R50 is in
tests/test_fastreid_conformance.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid.checkpoint import detect_generation, load_bot_checkpoint, to_fastreid_name
from reid.config import BotModelConfig
from reid import zoo
from reid.errors import CrosscamError
from reid.models.bot import PIXEL_MEAN, PIXEL_STD, build_bot_model

R18 = BotModelConfig(depth=18, stem="fastreid")
NUM_CLASSES = 11


@pytest.fixture(scope="module")
def source_model():
    """A BoT R18 with a classifier and non-trivial BN statistics."""
    torch.manual_seed(0)
    model = build_bot_model(R18.model_copy(update={"num_classes": NUM_CLASSES}))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def fastreid_state_dict(model, generation: str, with_classifier: bool = True) -> dict[str, torch.Tensor]:
    """``model``'s weights under fast-reid's key names of one generation (a copy)."""
    state = {
        to_fastreid_name(key, generation): tensor.clone()
        for key, tensor in model.state_dict().items()
        if with_classifier or key != "classifier.weight"
    }
    if generation == "a":
        state["pixel_mean"] = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
        state["pixel_std"] = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return state


def save(obj, tmp_path, name="model.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def load_error(path, cfg=R18, **kwargs) -> str:
    with pytest.raises(CrosscamError) as info:
        load_bot_checkpoint(path, cfg, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize(
    ("generation", "wrap"),
    [("a", "model_dict"), ("b", "model_dict"), ("c", "model_dict"), ("a", "bare"), ("c", "module_prefix")],
)
def test_every_generation_and_wrapping_loads_every_tensor(source_model, tmp_path, generation, wrap):
    state = fastreid_state_dict(source_model, generation)
    assert detect_generation(state) == generation
    if wrap == "module_prefix":
        state = {f"module.{key}": value for key, value in state.items()}
    path = save({"model": state, "iteration": 100} if wrap == "model_dict" else state, tmp_path)
    loaded = load_bot_checkpoint(path, R18)
    assert not loaded.training
    assert loaded.cfg.num_classes == NUM_CLASSES
    expected = source_model.state_dict()
    got = loaded.state_dict()
    assert list(got) == list(expected)
    assert all(torch.equal(got[key], expected[key]) for key in expected)


def test_classifier_is_optional_at_inference(source_model, tmp_path):
    path = save(fastreid_state_dict(source_model, "c", with_classifier=False), tmp_path)
    loaded = load_bot_checkpoint(path, R18)
    assert loaded.classifier is None and loaded.cfg.num_classes == 0
    assert torch.equal(loaded.neck.running_var, source_model.neck.running_var)


def test_resnet18_file_into_a_configured_resnet50_is_named(source_model, tmp_path):
    path = save(fastreid_state_dict(source_model, "c"), tmp_path)
    message = load_error(path, BotModelConfig())
    assert "a ResNet-18 checkpoint but the model is configured as ResNet-50" in message
    assert load_bot_checkpoint(path).cfg.depth == 18  # left to crosscam, the keys give the depth


def test_missing_bnneck_tensor_is_named(source_model, tmp_path):
    state = fastreid_state_dict(source_model, "a")
    del state["heads.bnneck.running_var"]
    message = load_error(save(state, tmp_path))
    assert "missing heads.bnneck.running_var (1 key)" in message


def test_many_missing_keys_show_the_first_few_and_the_count(source_model, tmp_path):
    state = fastreid_state_dict(source_model, "c")
    layer4 = [key for key in state if key.startswith("backbone.layer4.")]
    for key in layer4:
        del state[key]
    # num_batches_tracked may be absent (it does not change features); the other 25 are reported.
    dropped = [key for key in layer4 if not key.endswith("num_batches_tracked")]
    message = load_error(save(state, tmp_path))
    assert f"({len(dropped)} keys)" in message and dropped[0] in message and dropped[-1] not in message


def test_unexpected_key_is_named(source_model, tmp_path):
    state = fastreid_state_dict(source_model, "b")
    state["heads.pool_layer.p"] = torch.tensor([3.0])
    message = load_error(save(state, tmp_path))
    assert "unexpected heads.pool_layer.p (1 key)" in message


def test_wrong_shape_is_named(source_model, tmp_path):
    state = fastreid_state_dict(source_model, "c")
    state["backbone.layer2.0.conv2.weight"] = torch.zeros(128, 128, 1, 1)
    message = load_error(save(state, tmp_path))
    assert "shape mismatch" in message and "backbone.layer2.0.conv2.weight (128, 128, 1, 1) vs (128, 128, 3, 3)" in message


def test_classifier_size_must_match_a_configured_class_count(source_model, tmp_path):
    path = save(fastreid_state_dict(source_model, "c"), tmp_path)
    message = load_error(path, R18.model_copy(update={"num_classes": 751}))
    assert "heads.weight (11, 512) vs (751, 512)" in message


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_truncated_file(source_model, tmp_path, keep):
    whole = save(fastreid_state_dict(source_model, "c"), tmp_path).read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(whole[: int(len(whole) * keep)])
    message = load_error(path)
    assert "truncated or corrupt" in message and "replace it with a whole copy" in message  # not a registry file


def test_missing_file(tmp_path):
    assert "not found" in load_error(tmp_path / "absent.pth")


@pytest.mark.parametrize("content", [b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200), b"", b"model: not a checkpoint\n"])
def test_non_checkpoint_file(tmp_path, content):
    path = tmp_path / "photo.pth"
    path.write_bytes(content)
    assert "not a PyTorch checkpoint" in load_error(path)


def test_a_registry_file_that_is_no_checkpoint_names_its_download(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
    path = zoo.get_entry("market_bot_R50").local_path()
    path.parent.mkdir()
    path.write_bytes(b"<html>Rate limit exceeded</html>")
    assert load_error(path).endswith("download it again: `crosscam weights download market_bot_R50 --force`")
    elsewhere = tmp_path / path.name  # the same name elsewhere: a download would not replace it
    elsewhere.write_bytes(path.read_bytes())
    assert load_error(elsewhere).endswith("pass a fast-reid .pth file")


def test_checkpoint_that_is_not_a_state_dict(tmp_path):
    assert "holds a list" in load_error(save([torch.zeros(2)], tmp_path))
    assert "not tensors" in load_error(save({"backbone.conv1.weight": "abc"}, tmp_path))


def test_file_needing_full_unpickling_is_refused_unless_trusted(source_model, tmp_path):
    # fast-reid's Checkpointer also saves numpy scalars and optimizer state: not loadable weights-only.
    path = save({"model": fastreid_state_dict(source_model, "c"), "iteration": np.int64(5)}, tmp_path)
    message = load_error(path)
    assert "--trust-checkpoint" in message and "trust_checkpoint" in message
    assert load_bot_checkpoint(path, R18, trust=True).cfg.num_classes == NUM_CLASSES


@pytest.mark.parametrize(
    ("extra_key", "shape", "named"),
    [
        ("backbone.layer1.0.bn1.IN.weight", (32,), "a ResNet-18-IBN checkpoint but the model is configured as ResNet-18;"),
        ("backbone.NL_2.0.g.weight", (1, 128, 1, 1), "ResNet-18 with non-local blocks (0, 1, 0, 0) checkpoint"),
        ("backbone.layer1.0.se.fc.0.weight", (4, 64), "squeeze-excitation"),
    ],
)
def test_other_backbones_are_named(source_model, tmp_path, extra_key, shape, named):
    state = fastreid_state_dict(source_model, "c")
    state[extra_key] = torch.zeros(shape)
    assert named in load_error(save(state, tmp_path))


def test_checkpoint_without_a_bnneck_or_backbone(source_model, tmp_path):
    state = {k: v for k, v in fastreid_state_dict(source_model, "c").items() if not k.startswith("heads.bottleneck")}
    state.pop("heads.weight")
    assert "no BNNeck" in load_error(save(state, tmp_path))
    assert "no backbone" in load_error(save({"heads.bottleneck.0.weight": torch.ones(512)}, tmp_path))


@pytest.mark.parametrize(
    ("name", "value", "expect"),
    [
        ("pixel_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), "crosscam normalises with"),
        ("pixel_std", torch.tensor([1.0, 1.0, 1.0]).view(1, 3, 1, 1), "crosscam normalises with"),
        ("pixel_mean", torch.tensor(PIXEL_MEAN).view(3, 1, 1), "has shape (3, 1, 1)"),
        ("pixel_mean", torch.zeros(4), "has shape (4,)"),
    ],
)
def test_stored_pixel_statistics_must_match(source_model, tmp_path, name, value, expect):
    state = fastreid_state_dict(source_model, "a")
    state[name] = value
    assert expect in load_error(save(state, tmp_path))


def test_stored_pixel_statistics_may_be_flat(source_model, tmp_path):
    state = fastreid_state_dict(source_model, "a")
    state["pixel_mean"] = torch.tensor(PIXEL_MEAN)
    state["pixel_std"] = torch.tensor(PIXEL_STD)
    assert load_bot_checkpoint(save(state, tmp_path), R18).cfg.depth == 18
