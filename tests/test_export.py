"""ONNX export: parity with torch, dynamic batch, the model card, and use as ``--reid model.onnx``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch
import yaml

from pipeline.cli.main import main
from reid import Embedder
from reid.errors import CrosscamError
from reid.export import check_parity, export_onnx
from reid.onnx_backend import OnnxReidModel
from reid.preprocess import crops_to_tensor
from reid.training import build_train_model, save_checkpoint
from reid.training.checkpoint_io import describe_model
from reid.training.config import ModelSection


def trained_checkpoint(path, backbone: str, input_size=(64, 32)):
    """A small model after one optimisation step (BN statistics moved), saved as ``crosscam train`` does."""
    torch.manual_seed(0)
    cfg = ModelSection(backbone=backbone, pretrained=False)
    model = build_train_model(cfg, num_classes=4).train()
    model(torch.rand(8, 3, *input_size) * 255)["logits"].sum().backward()
    torch.optim.SGD(model.parameters(), lr=0.05).step()
    model.train()(torch.rand(8, 3, *input_size) * 255)  # one more BN statistics update after the step
    save_checkpoint(path, model, describe_model(cfg, input_size, 4, model.feat_dim))
    return model.eval()


def assert_works_as_reid_onnx(model, onnx_path, input_size=(64, 32)):
    """The card says raw RGB pixels, the batch is symbolic, and Embedder features equal torch's."""
    card = yaml.safe_load(onnx_path.with_suffix(".yaml").read_text())
    assert card == {"input_size": list(input_size), "color": "rgb", "raw_pixels": True, "output_dim": model.feat_dim}
    graph = onnx.load(str(onnx_path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    crops = [np.random.default_rng(i).integers(0, 256, (90 + 7 * i, 40, 3), dtype=np.uint8) for i in range(5)]
    embedder = Embedder.from_weights(str(onnx_path), device="cpu", batch_size=5)  # traced with batch 2
    with torch.inference_mode():
        expected = model(crops_to_tensor(crops, input_size, "fast")).numpy()
    np.testing.assert_allclose(embedder.embed(crops), expected, atol=1e-4, rtol=0)


def test_mobilenetv2_export_matches_torch_and_loads_as_reid_onnx(tmp_path):
    model = trained_checkpoint(tmp_path / "model.pth", "mobilenetv2")
    result = export_onnx(tmp_path / "model.pth", tmp_path / "model.onnx")
    assert result.max_abs_diff <= 1e-4 and result.dim == 1280
    assert_works_as_reid_onnx(model, tmp_path / "model.onnx")
    # copied without its .yaml, the file still says its pixels are raw: ImageNet's mean/std were applied twice
    (tmp_path / "alone").mkdir()
    alone = tmp_path / "alone" / "copy.onnx"
    shutil.copyfile(tmp_path / "model.onnx", alone)
    crops = [np.random.default_rng(i).integers(0, 256, (90, 40, 3), dtype=np.uint8) for i in range(3)]
    model_alone = OnnxReidModel(alone)
    assert model_alone.card_source == "embedded" and model_alone.card.raw_pixels and model_alone.card.output_dim == 1280
    np.testing.assert_array_equal(Embedder.from_weights(str(alone), device="cpu").embed(crops),
                                  Embedder.from_weights(str(tmp_path / "model.onnx"), device="cpu").embed(crops))
    # fine-tuning from it maps pixels the same way too
    from reid.training.models import OnnxReid

    tuned_alone, tuned = OnnxReid.from_onnx(alone).state_dict(), OnnxReid.from_onnx(tmp_path / "model.onnx").state_dict()
    for key in ("backbone.scale", "backbone.shift", "backbone.order"):
        assert torch.equal(tuned_alone[key], tuned[key]), key
    graph = onnx.load(str(alone))  # a damaged embedded card is one line
    graph.metadata_props[0].value = "{not json"
    onnx.save(graph, str(alone))
    with pytest.raises(CrosscamError, match="its embedded model card is not a JSON mapping; put a model card YAML beside it"):
        OnnxReidModel(alone)


def test_export_cli_exports_a_resnet18_and_prints_parity_as_json(tmp_path, capsys):
    model = trained_checkpoint(tmp_path / "model.pth", "resnet18")
    out = tmp_path / "exported" / "reid.onnx"
    status = main(["export", "--reid", str(tmp_path / "model.pth"), "--format", "onnx", "--out", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0
    assert report["max_abs_diff"] <= 1e-4 and report["dim"] == 512 and report["input_size"] == [64, 32]
    assert report["unit_diff"] <= 1e-4 and report["max_abs_diff"] <= report["feature_scale"] * 1e-4
    assert_works_as_reid_onnx(model, out)
    # Parity is judged on unit features, and still refuses a graph with one convolution 2% off.
    graph = onnx.load(str(out))
    conv = next(init for init in graph.graph.initializer if len(init.dims) == 4)
    conv.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(conv) * np.float32(1.02), conv.name))
    onnx.save(graph, str(tmp_path / "wrong.onnx"))
    with pytest.raises(CrosscamError, match="wrong: ONNX features differ from torch by .* on unit-normalised features") as err:
        check_parity(model, tmp_path / "wrong.onnx", (64, 32), "wrong")
    assert "not faithful" in str(err.value) and "\n" not in str(err.value)


def test_export_refuses_unknown_format_and_non_checkpoints(tmp_path, capsys):
    assert main(["export", "--reid", "x.pth", "--format", "tensorrt", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "--format tensorrt" in capsys.readouterr().err
    assert main(["export", "--reid", str(tmp_path / "x.pth"), "--format", "ONNX", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "x.pth: no such file, nor a registry name" in capsys.readouterr().err  # ONNX is onnx: the next check speaks
    with pytest.raises(CrosscamError, match="must end in .onnx"):
        export_onnx("x.pth", tmp_path / "model.bin")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CrosscamError, match="not a PyTorch checkpoint"):
        export_onnx(tmp_path / "junk.pth", tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()



def test_export_refuses_to_overwrite_a_yaml_that_is_no_model_card_and_bad_output_paths(tmp_path):
    """The model card goes beside the .onnx (same name, .yaml): a training config there is kept."""
    (tmp_path / "osnet.yaml").write_text("model:\n  backbone: osnet\n")
    with pytest.raises(CrosscamError, match="is not a crosscam model card"):
        export_onnx("x.pth", tmp_path / "osnet.onnx")
    assert (tmp_path / "osnet.yaml").read_text() == "model:\n  backbone: osnet\n"
    (tmp_path / "file").write_text("x")
    with pytest.raises(CrosscamError, match="is a file, not a folder"):
        export_onnx("x.pth", tmp_path / "file" / "m.onnx")
    with pytest.raises(CrosscamError, match="a folder; give the file to write, e.g. .*model.onnx"):
        export_onnx("x.pth", tmp_path)
    with pytest.raises(CrosscamError, match="nosuch: no such file, nor a registry name"):
        export_onnx("nosuch", tmp_path / "m.onnx")
    with pytest.raises(CrosscamError, match="a folder cannot be exported"):
        export_onnx(tmp_path, tmp_path / "m.onnx")
