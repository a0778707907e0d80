"""torchreid / BoxMOT OSNet and OSNet-AIN checkpoints load exactly: features against torchreid's own model.

The reference is torchreid 0.2.5 from PyPI (test-only, installed by the Makefile with --no-deps);
its ``osnet.py`` and ``osnet_ain.py`` are loaded by file, so torchreid's package (datasets,
engines) is never imported.
Every norm's statistics and affine parameters are randomised, so none is an identity.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from reid import Embedder
from reid.errors import CrosscamError
from reid.models.osnet import IMAGENET_MEAN, IMAGENET_STD, osnet_spec
from reid.preprocess import crops_to_tensor

ARCHITECTURES = ["osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25", "osnet_ibn_x1_0",
                 "osnet_ain_x1_0", "osnet_ain_x0_75", "osnet_ain_x0_5", "osnet_ain_x0_25"]


def torchreid_model_module(name: str = "osnet"):
    """torchreid's ``reid/models/NAME.py`` (osnet, osnet_ain), loaded alone."""
    found = importlib.util.find_spec("torchreid")
    if found is None or found.origin is None:
        pytest.skip("torchreid (the test-only reference; `make install` adds it) is not installed")
    source = Path(found.origin).parent / "reid" / "models" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"torchreid_{name}_reference", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference(name: str, seed: int = 0) -> torch.nn.Module:
    """torchreid's ``name`` with 751 classes, eval mode, every norm randomised."""
    torch.manual_seed(seed)
    module = torchreid_model_module("osnet_ain" if name.startswith("osnet_ain_") else "osnet")
    model = getattr(module, name)(num_classes=751, pretrained=False, loss="softmax")
    generator = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)):
            if module.affine:
                module.weight.data = 0.5 + torch.rand(module.weight.shape, generator=generator)
                module.bias.data = 0.2 * torch.randn(module.bias.shape, generator=generator)
            if module.running_mean is not None:
                module.running_mean.data = 0.3 * torch.randn(module.running_mean.shape, generator=generator)
                module.running_var.data = 0.5 + torch.rand(module.running_var.shape, generator=generator)
    return model.eval()


def crops(count: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(count):
        h, w = 120 + 20 * i, 50 + 7 * i
        base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
        out.append(np.kron(base, np.ones((8, 8, 1), np.uint8))[:h, :w])  # blocky: features not just noise
    return out


def reference_features(model: torch.nn.Module, images: list[np.ndarray]) -> np.ndarray:
    """torchreid's forward on the crops as crosscam resizes them: /255, ImageNet mean/std."""
    pixels = crops_to_tensor(images, (256, 128), "fast")
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model((pixels / 255.0 - mean) / std).numpy()


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_torchreid_checkpoints_give_torchreid_features(name: str, tmp_path: Path):
    model = reference(name)
    expected = reference_features(model, crops())
    state = model.state_dict()
    spec = osnet_spec(state)
    assert spec is not None and spec.describe() == name
    saved = {  # a bare state_dict (BoxMOT's .pt), torchreid's save_checkpoint, a DataParallel one
        f"{name}.pt": state,
        "model.pth.tar-60": {"state_dict": state, "epoch": 60, "rank1": 0.5},
        f"{name}_dp.pth": {f"module.{k}": v for k, v in state.items()},
    }
    scale = float(np.abs(expected).max())
    for file, payload in saved.items():
        torch.save(payload, tmp_path / file)
        embedder = Embedder.from_weights(str(tmp_path / file), device="cpu", runtime="torch")
        assert embedder.dim == 512 and embedder.input_size == (256, 128)
        got = embedder.embed(crops(), bgr=False)
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * scale, err_msg=file)


@pytest.mark.parametrize("name", ["osnet_x0_25", "osnet_ain_x0_25"])
def test_the_auto_runtime_exports_osnet_to_onnx_with_the_same_features(name: str, tmp_path: Path):
    model = reference(name, seed=5)
    torch.save(model.state_dict(), tmp_path / f"{name}_msmt17.pt")
    embedder = Embedder.from_weights(str(tmp_path / f"{name}_msmt17.pt"), device="cpu")  # runtime auto
    assert embedder.runtime == "onnxruntime"
    expected = reference_features(model, crops())
    got = embedder.embed(crops(), normalize=True)
    unit = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.abs(got - unit).max() < 1e-5


@pytest.mark.parametrize("damage", ["removed", "renamed", "reshaped"])
@pytest.mark.parametrize(("name", "key"), [
    ("osnet_x0_25", "conv3.0.conv2a.conv1.weight"),  # the key a block was once counted by
    ("osnet_ain_x0_25", "conv3.1.IN.weight"),  # an instance norm inside a block's residual
    ("osnet_ain_x0_25", "pool2.0.conv.weight"),  # the halving OSNet-AIN keeps beside its stage
])
def test_a_damaged_osnet_checkpoint_is_refused_in_one_line(name: str, key: str, damage: str, tmp_path: Path):
    state = reference(name).state_dict()
    renamed = key.rsplit(".", 1)[0] + ".kernel"
    if damage == "removed":
        del state[key]
    elif damage == "renamed":
        state[renamed] = state.pop(key)
    else:
        state[key] = state[key][:-1]
    torch.save(state, tmp_path / "osnet.pt")
    with pytest.raises(CrosscamError, match=f"does not match torchreid's {name}") as err:
        Embedder.from_weights(str(tmp_path / "osnet.pt"), device="cpu", runtime="torch")
    assert key in str(err.value) and "\n" not in str(err.value)
    if damage == "renamed":  # one key missing and one unexpected, not a whole block misread
        assert f"missing {key} (1 key); unexpected {renamed} (1 key)" in str(err.value)


def test_boxmot_names_load_from_the_weights_folder_and_must_hold_their_osnet(tmp_path: Path, monkeypatch):
    """BoxMOT's names (osnet_x0_25_msmt17, or osnet_x0_25_msmt17.pt as it spells them) are registry
    entries; a file under one of them must hold that OSNet."""
    monkeypatch.setenv("CROSSCAM_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path / "..")
    model = reference("osnet_x0_25")
    torch.save(model.state_dict(), tmp_path / "osnet_x0_25_msmt17.pt")
    expected = reference_features(model, crops(2))
    for name in ("osnet_x0_25_msmt17", "osnet_x0_25_msmt17.pt"):
        embedder = Embedder.from_weights(name, device="cpu", runtime="torch")
        np.testing.assert_allclose(embedder.embed(crops(2)), expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    torch.save(reference("osnet_x0_5").state_dict(), tmp_path / "osnet_x0_25_market1501.pt")
    with pytest.raises(CrosscamError, match="holds osnet_x0_5, not osnet_x0_25 as osnet_x0_25_market1501 should"):
        Embedder.from_weights("osnet_x0_25_market1501", device="cpu", runtime="torch")
    torch.save({"heads.bnneck.weight": torch.ones(4)}, tmp_path / "osnet_x1_0_msmt17.pt")
    with pytest.raises(CrosscamError, match="not a torchreid OSNet state_dict, which osnet_x1_0_msmt17 is"):
        Embedder.from_weights("osnet_x1_0_msmt17", device="cpu", runtime="torch")
    torch.save(reference("osnet_x1_0").state_dict(), tmp_path / "osnet_ain_x1_0_msmt17.pt")
    with pytest.raises(CrosscamError, match="holds osnet_x1_0, not osnet_ain_x1_0 as osnet_ain_x1_0_msmt17 should"):
        Embedder.from_weights("osnet_ain_x1_0_msmt17", device="cpu", runtime="torch")
    ain = reference("osnet_ain_x1_0")
    torch.save(ain.state_dict(), tmp_path / "osnet_ain_x1_0_msmt17.pt")
    expected = reference_features(ain, crops(2))
    embedder = Embedder.from_weights("osnet_ain_x1_0_msmt17", device="cpu", runtime="torch")
    np.testing.assert_allclose(embedder.embed(crops(2)), expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_export_takes_torchreid_checkpoint_names_too(tmp_path: Path):
    from pipeline.cli.main import main

    model = reference("osnet_x0_25", seed=2)
    torch.save({"state_dict": model.state_dict(), "epoch": 60}, tmp_path / "model.pth.tar-60")
    assert main(["export", "--reid", str(tmp_path / "model.pth.tar-60"), "--out", str(tmp_path / "osnet.onnx")]) == 0
    exported = Embedder.from_weights(str(tmp_path / "osnet.onnx"), device="cpu")
    expected = reference_features(model, crops(2))
    assert np.abs(exported.embed(crops(2)) - expected).max() < 1e-4 * np.abs(expected).max()


def test_an_osnet_crosscam_does_not_build_is_told_to_go_through_onnx(tmp_path: Path):
    # torchreid's feature_dim=None leaves out the fc layer: the classifier reads the pooled conv5
    no_fc = torchreid_model_module("osnet_ain").osnet_ain_x0_25(num_classes=10, pretrained=False, feature_dim=None)
    torch.save(no_fc.state_dict(), tmp_path / "ain.pt")
    with pytest.raises(CrosscamError, match="an OSNet variant in torchreid's layout .* export it to ONNX") as err:
        Embedder.from_weights(str(tmp_path / "ain.pt"), device="cpu")
    assert "\n" not in str(err.value)
