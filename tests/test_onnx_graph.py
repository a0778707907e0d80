"""ONNX graphs as trainable torch modules (reid.models.onnx_graph) and fine-tuning an ONNX ReID model."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from test_export import assert_works_as_reid_onnx
from torch import nn

from reid import Embedder
from reid.errors import CrosscamError
from reid.export import export_onnx
from reid.models.onnx_graph import OnnxGraphModule
from reid.preprocess import crops_to_tensor
from reid.training import load_trained_model, save_checkpoint
from reid.training.checkpoint_io import describe_model
from reid.training.config import ModelSection
from reid.training.models import build_train_model


class SmallReidNet(nn.Module):
    """Conv/BN/pooling/gating/concat/reshape/linear: the operators of CNN ReID exports."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.branch = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.gate = nn.Conv2d(8, 8, 1)
        self.mix = nn.Conv2d(16, 12, 1)
        self.fc = nn.Linear(12, 6)
        self.bn = nn.BatchNorm1d(6)

    def forward(self, x):
        x = self.pool(self.stem(x))
        y = self.branch(x) * torch.sigmoid(self.gate(x))
        x = torch.cat([x, y], dim=1)
        x = nn.functional.avg_pool2d(self.mix(x), 2)
        x = x.mean(dim=(2, 3), keepdim=True)
        x = x.reshape(x.shape[0], -1)
        return torch.clamp(self.bn(self.fc(x)), 0.0, 6.0)


def small_onnx(path) -> nn.Module:
    torch.manual_seed(0)
    net = SmallReidNet()
    with torch.no_grad():  # BN statistics away from 0/1, so folding or not matters
        for bn in (net.stem[1], net.bn):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(2, 3, 32, 16),), str(path), dynamo=False, input_names=["images"],
                          output_names=["output"], dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}},
                          opset_version=13, training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    return net


def test_graph_module_equals_onnxruntime_and_rebuilds_from_its_state_dict(tmp_path):
    small_onnx(tmp_path / "small.onnx")
    ops = {node.op_type for node in onnx.load(str(tmp_path / "small.onnx")).graph.node}
    assert {"BatchNormalization", "Conv", "MaxPool", "Concat", "Reshape", "Gemm"} <= ops
    module = OnnxGraphModule.from_file(tmp_path / "small.onnx").eval()
    images = np.random.default_rng(0).random((5, 3, 32, 16), dtype=np.float32)
    expected = ort.InferenceSession(str(tmp_path / "small.onnx")).run(None, {"images": images})[0]
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(images)).numpy(), expected, atol=1e-5, rtol=0)
        rebuilt = OnnxGraphModule.from_state_dict(module.state_dict())
        rebuilt.load_state_dict(module.state_dict(), strict=True)
        torch.testing.assert_close(rebuilt.eval()(torch.from_numpy(images)), module(torch.from_numpy(images)))


def test_graph_module_trains_every_weight_and_updates_batchnorm_statistics(tmp_path):
    small_onnx(tmp_path / "small.onnx")
    module = OnnxGraphModule.from_file(tmp_path / "small.onnx").train()
    stats = {name: buffer.clone() for name, buffer in module.named_buffers() if name.startswith("running:")}
    assert len(stats) == 4  # mean and variance of both BatchNorms
    module(torch.rand(4, 3, 32, 16)).sum().backward()
    assert all(param.grad is not None and param.grad.abs().sum() > 0 for param in module.parameters())
    assert all(not torch.equal(stats[name], buffer) for name, buffer in module.named_buffers() if name in stats)


def test_unsupported_operators_and_non_onnx_files_are_refused(tmp_path):
    node = onnx.helper.make_node("LSTM", ["images", "w", "r"], ["output"])
    graph = onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
        [onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, None)],
    )
    with pytest.raises(CrosscamError, match="operators LSTM cannot be fine-tuned"):
        OnnxGraphModule(onnx.helper.make_model(graph), "lstm.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(CrosscamError, match="not a readable ONNX model"):
        OnnxGraphModule.from_file(tmp_path / "bad.onnx")


def test_onnx_backbone_checkpoint_reloads_and_loads_in_the_embedder(tmp_path):
    small_onnx(tmp_path / "small.onnx")
    cfg = ModelSection(backbone="onnx", onnx=str(tmp_path / "small.onnx"))
    model = build_train_model(cfg, num_classes=3).train()
    model(torch.rand(6, 3, 32, 16) * 255)["logits"].sum().backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.eval()
    path = save_checkpoint(tmp_path / "model.pth", model, describe_model(cfg, (32, 16), 3, model.feat_dim))
    crops = [np.random.default_rng(i).integers(0, 256, (60, 30, 3), dtype=np.uint8) for i in range(3)]
    with torch.inference_mode():
        expected = model(crops_to_tensor(crops, (32, 16), "fast")).numpy()
        torch.testing.assert_close(load_trained_model(path)[0](crops_to_tensor(crops, (32, 16), "fast")), torch.from_numpy(expected))
    embedder = Embedder.from_weights(str(path), device="cpu")
    assert embedder.dim == 6 and embedder.input_size == (32, 16)
    np.testing.assert_allclose(embedder.embed(crops), expected, atol=1e-5, rtol=0)
    # ... and exports back to a standalone ONNX file with a symbolic batch
    result = export_onnx(path, tmp_path / "tuned.onnx")
    assert result.max_abs_diff <= 1e-4 and result.dim == 6
    assert_works_as_reid_onnx(model, tmp_path / "tuned.onnx", (32, 16))


def test_fine_tuning_starts_from_the_onnx_model_features(osnet_onnx):
    """Before training, the BoT head on OSNet ranks like OSNet: its BNNeck starts as the identity."""
    model = build_train_model(ModelSection(backbone="onnx", onnx=str(osnet_onnx)), num_classes=0).eval()
    crops = [np.random.default_rng(i).integers(0, 256, (160, 64, 3), dtype=np.uint8) for i in range(4)]
    with torch.inference_mode():
        ours = model(crops_to_tensor(crops, (256, 128), "fast")).numpy()
    reference = Embedder.from_weights(str(osnet_onnx), device="cpu").embed(crops)
    np.testing.assert_allclose(ours * np.sqrt(1 + 1e-5), reference, atol=2e-4, rtol=1e-4)


def test_gather_keeps_the_other_dimensions_like_onnxruntime(tmp_path):
    indices = onnx.helper.make_tensor("idx", onnx.TensorProto.INT64, [2], [2, 0])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Gather", ["images", "idx"], ["output"], axis=1)], "g",
        [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [2, 3, 4, 4])],
        [onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, None)], initializer=[indices],
    )
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)], ir_version=8), tmp_path / "g.onnx")
    images = np.random.default_rng(0).random((2, 3, 4, 4), dtype=np.float32)
    expected = ort.InferenceSession(str(tmp_path / "g.onnx")).run(None, {"images": images})[0]
    with torch.no_grad():
        np.testing.assert_array_equal(OnnxGraphModule.from_file(tmp_path / "g.onnx")(torch.from_numpy(images)).numpy(), expected)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_graph_module_runs_and_trains_on_its_device_with_shape_arithmetic(tmp_path, device):
    """Shape / Gather / Concat / Constant values live beside the graph's integer constants (they broke on CUDA once)."""
    small_onnx(tmp_path / "small.onnx")
    ops = {node.op_type for node in onnx.load(str(tmp_path / "small.onnx")).graph.node}
    assert {"Shape", "Gather", "Concat", "Reshape"} <= ops
    module = OnnxGraphModule.from_file(tmp_path / "small.onnx")
    images = torch.from_numpy(np.random.default_rng(1).random((4, 3, 32, 16), dtype=np.float32))
    expected = module.eval()(images).detach()
    moved = module.to(device).eval()
    torch.testing.assert_close(moved(images.to(device)).cpu(), expected, atol=1e-4, rtol=1e-4)
    moved.train()(images.to(device)).sum().backward()
    assert all(param.grad is not None and param.grad.device.type == device for param in moved.params.values())
