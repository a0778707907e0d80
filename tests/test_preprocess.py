"""Crops -> model batch: the parity path equals fast-reid's test loader, the fast path is close."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from reid.errors import CrosscamError
from reid.preprocess import crops_to_tensor


def read_crops(folder: Path, count: int, step: int = 7) -> list[np.ndarray]:
    files = sorted(folder.glob("*.jpg"))[::step][:count]
    return [np.asarray(Image.open(path).convert("RGB")) for path in files]


@pytest.fixture
def real_crops(cuhk03_market) -> list[np.ndarray]:
    """24 CUHK03 crops, 192 px tall and 40..100 px wide (enlarged to 256x128)."""
    return read_crops(cuhk03_market / "query", 24)


@pytest.fixture
def large_crops(real_crops) -> list[np.ndarray]:
    """The same people at 3x size with hard pixel edges (shrunk to 256x128: aliasing shows)."""
    return [cv2.resize(c, (c.shape[1] * 3, c.shape[0] * 3), interpolation=cv2.INTER_NEAREST) for c in real_crops]


def fastreid_to_tensor():
    """fast-reid's own ``to_tensor`` (PIL -> float 0..255), loaded from its file: importing the
    ``fastreid.data`` package pulls in modules that no longer import on current torch."""
    fastreid = pytest.importorskip("fastreid")
    source = Path(fastreid.__file__).parent / "data" / "transforms" / "functional.py"
    spec = importlib.util.spec_from_file_location("fastreid_transforms_functional", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.to_tensor


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
@pytest.mark.parametrize("which", ["real_crops", "large_crops"])
def test_parity_equals_fastreids_test_transform_bit_for_bit(request, which):
    crops = request.getfixturevalue(which)
    to_tensor = fastreid_to_tensor()
    # fast-reid's build_transforms(cfg, is_train=False) with SIZE_TEST [256, 128], no crop:
    resize = T.Resize([256, 128], interpolation=3)
    expected = torch.stack([to_tensor(resize(Image.fromarray(crop))) for crop in crops])
    got = crops_to_tensor(crops, size=(256, 128), mode="parity")
    assert got.dtype == torch.float32 and got.shape == (len(crops), 3, 256, 128)
    assert torch.equal(got, expected)


def osnet_features(session: ort.InferenceSession, batch: torch.Tensor) -> np.ndarray:
    """L2-normalised OSNet features of a (N, 3, 256, 128) 0..255 batch (its card: /255, ImageNet stats)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = ((batch / 255 - mean) / std).contiguous().numpy()
    features = session.run(None, {session.get_inputs()[0].name: x})[0]
    return features / np.linalg.norm(features, axis=1, keepdims=True)


@pytest.mark.parametrize("which", ["real_crops", "large_crops"])
def test_fast_is_close_to_parity(request, osnet_onnx, which):
    crops = request.getfixturevalue(which)
    parity = crops_to_tensor(crops, mode="parity")
    fast = crops_to_tensor(crops, mode="fast")
    assert fast.dtype == torch.float32 and fast.shape == parity.shape
    mean_abs_diff = (fast - parity).abs().mean().item()
    assert 0 < mean_abs_diff < 1.5, "close to PIL's bicubic, but not bit-identical"
    session = ort.InferenceSession(str(osnet_onnx), providers=["CPUExecutionProvider"])
    cosine = (osnet_features(session, fast) * osnet_features(session, parity)).sum(axis=1)
    assert cosine.min() > 0.995, f"a real ReID model sees the two resizes as different: {cosine.min():.4f}"


@pytest.mark.parametrize("mode", ["parity", "fast"])
def test_callers_arrays_are_not_modified(mode):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    crops = [frame[10:200, 30:110], frame[::-1, ::2][:100, :50], frame[50:60, 40:45].copy()]
    before = [crop.copy() for crop in crops]
    frame_before = frame.copy()
    batch = crops_to_tensor(crops, size=(128, 64), mode=mode)
    assert batch.shape == (3, 3, 128, 64)
    assert all(np.array_equal(a, b) for a, b in zip(crops, before))
    assert np.array_equal(frame, frame_before)
    batch.add_(1.0)  # the batch owns its memory: writing it cannot reach the caller's frame
    assert np.array_equal(frame, frame_before)


@pytest.mark.parametrize("mode", ["parity", "fast"])
def test_values_stay_in_pixel_units_and_layout_is_channels_last(mode):
    crop = np.zeros((256, 128, 3), np.uint8)
    crop[..., 0] = 255  # pure red, already at the target size: resizing must keep it exactly
    batch = crops_to_tensor([crop], mode=mode)
    assert torch.equal(batch[0, 0], torch.full((256, 128), 255.0))
    assert torch.count_nonzero(batch[0, 1:]) == 0
    assert batch.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("mode", ["parity", "fast"])
def test_no_crops_give_an_empty_batch(mode):
    assert crops_to_tensor([], size=(256, 128), mode=mode).shape == (0, 3, 256, 128)


@pytest.mark.parametrize(
    ("crop", "message"),
    [
        (np.zeros((50, 20), np.uint8), "crop 1: expected an (H, W, 3) uint8"),
        (np.zeros((50, 20, 4), np.uint8), "crop 1: expected an (H, W, 3) uint8"),
        (np.zeros((50, 20, 3), np.float32), "float32"),
        (np.zeros((0, 20, 3), np.uint8), "crop 1: empty"),
        ([[1, 2, 3]], "got a list"),
    ],
)
def test_bad_crops_are_one_line_errors(crop, message):
    good = np.zeros((30, 10, 3), np.uint8)
    with pytest.raises(CrosscamError, match=message.replace("(", r"\(").replace(")", r"\)")):
        crops_to_tensor([good, crop])


def test_unknown_mode():
    with pytest.raises(CrosscamError, match="preprocess mode"):
        crops_to_tensor([np.zeros((4, 4, 3), np.uint8)], mode="bilinear")
