"""The cache of exported ONNX graphs: a model is exported and checked once, then loaded as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import reid.export as export_module
from reid.export import onnxruntime_model
from reid.export_cache import cache_dir, model_key


class TinyReid(nn.Module):
    """Raw RGB 0..255 in, a 16-d feature out: enough graph to export."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x / 255.0))).mean(dim=(2, 3))


def pixels() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (4, 3, 32, 16)).astype(np.float32)


def test_a_model_is_exported_once_then_loaded_from_the_cache(monkeypatch):
    model = TinyReid()
    first = onnxruntime_model(model, (32, 16))
    cached = sorted(cache_dir().glob("*.onnx"))
    assert first.path in cached
    monkeypatch.setattr(export_module, "_trace_to_onnx", lambda *a: pytest.fail("exported again"))
    again = onnxruntime_model(model, (32, 16))
    assert again.path == first.path and again.dim == 16
    np.testing.assert_array_equal(again(pixels()), first(pixels()))


def test_the_key_covers_weights_input_size_and_opset():
    model = TinyReid()
    key = model_key(model, (32, 16), 17)
    assert model_key(TinyReid(), (32, 16), 17) == key  # the same weights: the same graph
    assert model_key(model, (64, 32), 17) != key
    assert model_key(model, (32, 16), 18) != key
    with torch.no_grad():
        model.bn.running_var[3] += 1e-3  # a buffer is part of the graph too
    assert model_key(model, (32, 16), 17) != key
    assert model_key(TinyReid(seed=1), (32, 16), 17) != key


def test_a_damaged_cache_file_is_exported_again():
    model = TinyReid(seed=2)
    first = onnxruntime_model(model, (32, 16))
    expected = first(pixels())
    first.path.write_bytes(b"not an onnx graph")
    again = onnxruntime_model(model, (32, 16))
    np.testing.assert_allclose(again(pixels()), expected, atol=1e-6)
