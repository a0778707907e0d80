"""ONNX ReID models through onnxruntime: the real OSNet, model cards, and graphs with odd shapes."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from reid import Embedder
from reid.errors import CrosscamError
from reid.onnx_backend import SPIN_ENV, OnnxReidModel, onnx_providers, session_options
from reid.preprocess import crops_to_tensor

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def crops_by_identity(market_root: Path, identities: int, per_identity: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``per_identity`` BGR crops for each of the first ``identities`` test pids with enough images."""
    files = defaultdict(list)
    for path in sorted((market_root / "bounding_box_test").glob("*.jpg")):
        files[path.name[:4]].append(path)
    chosen = [pid for pid, paths in files.items() if len(paths) >= per_identity][:identities]
    assert len(chosen) == identities
    crops = [cv2.imread(str(p)) for pid in chosen for p in files[pid][:per_identity]]
    return crops, np.repeat(np.arange(identities), per_identity)


def model_beside_card(tmp_path: Path, model: Path, card_text: str | None) -> Path:
    """A symlink to ``model`` in tmp_path, with ``card_text`` written as its YAML card."""
    link = tmp_path / "reid_model.onnx"
    link.symlink_to(model)
    if card_text is not None:
        (tmp_path / "reid_model.yaml").write_text(card_text)
    return link


def test_osnet_features_separate_identities(osnet_onnx, cuhk03_market):
    crops, labels = crops_by_identity(cuhk03_market, identities=20, per_identity=3)
    embedder = Embedder.from_weights(str(osnet_onnx), device="cpu")
    assert embedder.runtime == "onnxruntime"
    features = embedder.embed(crops, bgr=True, normalize=True)
    assert features.shape == (60, 512) and features.dtype == np.float32
    similarity = features @ features.T
    same = (labels[:, None] == labels[None, :]) & ~np.eye(len(labels), dtype=bool)
    different = labels[:, None] != labels[None, :]
    assert similarity[same].mean() > similarity[different].mean() + 0.15


def test_default_card_is_the_torchreid_convention(osnet_onnx, cuhk03_market):
    crops, _ = crops_by_identity(cuhk03_market, identities=2, per_identity=2)
    rgb = [c[..., ::-1].copy() for c in crops]
    pixels = crops_to_tensor(rgb, size=(256, 128), mode="fast").contiguous().numpy()
    session = ort.InferenceSession(str(osnet_onnx), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"images": (pixels / 255.0 - IMAGENET_MEAN) / IMAGENET_STD})[0]
    got = Embedder.from_weights(str(osnet_onnx), device="cpu").embed(rgb)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_card_beside_the_model_sets_colour_order(osnet_onnx, cuhk03_market, tmp_path):
    crops, _ = crops_by_identity(cuhk03_market, identities=2, per_identity=1)
    bgr_model = model_beside_card(tmp_path, osnet_onnx, "color: bgr\ninput_size: [256, 128]\noutput_dim: 512\n")
    as_bgr = Embedder.from_weights(str(bgr_model), device="cpu").embed(crops)
    default = Embedder.from_weights(str(osnet_onnx), device="cpu")
    np.testing.assert_allclose(as_bgr, default.embed(crops, bgr=True), rtol=1e-5, atol=1e-5)
    assert not np.allclose(as_bgr, default.embed(crops), atol=1e-3)


def test_card_changes_the_fingerprint(osnet_onnx, tmp_path):
    bgr_model = model_beside_card(tmp_path, osnet_onnx, "color: bgr\n")
    assert Embedder.from_weights(str(bgr_model)).fingerprint != Embedder.from_weights(str(osnet_onnx)).fingerprint


def test_card_input_size_disagreeing_with_graph_is_one_line_error(osnet_onnx, tmp_path):
    model = model_beside_card(tmp_path, osnet_onnx, "input_size: [384, 128]\n")
    with pytest.raises(CrosscamError) as err:
        Embedder.from_weights(str(model))
    message = str(err.value)
    assert "\n" not in message and str(model) in message and "input_size [384, 128]" in message


def test_card_output_dim_disagreeing_with_graph_is_an_error(osnet_onnx, tmp_path):
    model = model_beside_card(tmp_path, osnet_onnx, None)
    with pytest.raises(CrosscamError, match="output_dim 256"):
        Embedder.from_weights(str(model), model_card={"output_dim": 256})


@pytest.mark.parametrize(
    ("card", "complaint"),
    [("raw_pixels: true\nmean: [0, 0, 0]\n", "remove mean"), ("colour: rgb\n", "colour"), ("- a list\n", "mapping")],
)
def test_bad_cards_are_one_line_errors(osnet_onnx, tmp_path, card, complaint):
    model = model_beside_card(tmp_path, osnet_onnx, card)
    with pytest.raises(CrosscamError, match=complaint) as err:
        Embedder.from_weights(str(model))
    assert "reid_model.yaml" in str(err.value) and "\n" not in str(err.value)


def test_file_that_is_not_onnx_is_named(tmp_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"definitely not a protobuf" * 10)
    with pytest.raises(CrosscamError, match="bogus.onnx: not a loadable ONNX model"):
        Embedder.from_weights(str(bogus))


def test_onnx_models_refuse_reduced_precision(osnet_onnx):
    with pytest.raises(CrosscamError, match="precision bf16"):
        Embedder.from_weights(str(osnet_onnx), precision="bf16")


def test_an_unknown_precision_is_called_unknown_for_onnx_models_too(tmp_path):
    model = mean_pool_graph(tmp_path / "m.onnx", [1, 3, 8, 4])
    with pytest.raises(CrosscamError, match="precision 'fp8': unknown; use fp32, bf16 or fp16"):
        Embedder.from_weights(str(model), precision="fp8")


def mean_pool_graph(path: Path, input_shape: list) -> Path:
    """A real ONNX graph: per-channel mean of (N, 3, H, W) -> (N, 3); dims may be names (dynamic)."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, input_shape)
    pooled = helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [input_shape[0], 3, 1, 1])
    feature = helper.make_tensor_value_info("feature", TensorProto.FLOAT, [input_shape[0], 3])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [0, 3])
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]), helper.make_node("Reshape", ["pooled", "shape"], ["feature"])],
        "mean_pool",
        [image],
        [feature],
        initializer=[shape],
        value_info=[pooled],
    )
    # IR 8 (ONNX 1.13, opset 13's era): make_model's default is the installed onnx's newest IR,
    # which older onnxruntime releases refuse.
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    return path


def test_dynamic_height_width_needs_a_card_size(tmp_path):
    model = mean_pool_graph(tmp_path / "dynamic.onnx", ["n", 3, "h", "w"])
    with pytest.raises(CrosscamError, match="dynamic height/width"):
        Embedder.from_weights(str(model))
    embedder = Embedder.from_weights(str(model), model_card={"input_size": [32, 16], "raw_pixels": True})
    assert embedder.input_size == (32, 16) and embedder.dim == 3
    grey = np.full((40, 20, 3), 200, np.uint8)
    np.testing.assert_allclose(embedder.embed([grey]), [[200.0, 200.0, 200.0]], atol=1e-3)


def test_graph_with_a_fixed_batch_of_one_takes_any_number_of_crops(tmp_path):
    model = mean_pool_graph(tmp_path / "fixed.onnx", [1, 3, 8, 4])
    embedder = Embedder.from_weights(str(model), batch_size=3, model_card={"raw_pixels": True})
    crops = [np.full((8, 4, 3), value, np.uint8) for value in (10, 20, 30, 40, 50)]
    features = embedder.embed(crops)
    np.testing.assert_allclose(features[:, 0], [10, 20, 30, 40, 50], atol=1e-3)


def test_a_detector_is_refused_as_a_reid_model(yolo_onnx):
    # YOLOv8's (1, 84, 8400) boxes once came out as one 705600-long "feature" per image
    with pytest.raises(CrosscamError) as err:
        Embedder.from_weights(str(yolo_onnx), device="cpu")
    assert str(err.value) == (
        f"{yolo_onnx}: the graph's output 'output0' is [1, 84, 8400], not (N, D) feature rows; "
        "pass a ReID model that returns one feature vector per image"
    )


def test_an_output_of_unknown_rank_is_checked_when_run(tmp_path):
    # a scalar output: onnxruntime lists its shape as [], the same as an unknown rank, so loading probes it
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 4])
    mean = helper.make_tensor_value_info("mean", TensorProto.FLOAT, [])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["image"], ["mean"], keepdims=0)], "scalar", [image], [mean])
    path = tmp_path / "scalar.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    with pytest.raises(CrosscamError, match=r"scalar.onnx: the graph's output 'mean' is \[\], not \(N, D\) feature rows"):
        OnnxReidModel(path, card={"raw_pixels": True})


def test_onnx_sessions_do_not_spin_wait(tmp_path):
    # spinning threads halve the speed of a 2-core machine as soon as another process holds a core
    model = OnnxReidModel(mean_pool_graph(tmp_path / "m.onnx", [1, 3, 8, 4]), card={"raw_pixels": True})
    options = model.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_spinning_is_an_opt_in_for_dedicated_machines(monkeypatch):
    monkeypatch.setenv(SPIN_ENV, "1")
    assert session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"
    monkeypatch.setenv(SPIN_ENV, "yes")
    with pytest.raises(CrosscamError, match="CROSSCAM_ORT_SPIN='yes': use 1"):
        session_options()


def test_providers_follow_the_device_and_onnxruntime_build():
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert onnx_providers("auto")[0] == (("CUDAExecutionProvider", {"device_id": 0}) if has_cuda else "CPUExecutionProvider")
    if has_cuda:
        assert onnx_providers("cuda:1")[0] == ("CUDAExecutionProvider", {"device_id": 1})
    else:
        with pytest.raises(CrosscamError, match="--device cuda:1: this onnxruntime has no CUDA provider"):
            onnx_providers("cuda:1")


def deploy_style_graph(path: Path, mean: list[float], std: list[float]) -> Path:
    """As fast-reid's deploy exports: (x - pixel_mean) / pixel_std inside the graph, then a per-channel mean."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 16, 8])
    feature = helper.make_tensor_value_info("feature", TensorProto.FLOAT, ["n", 3])
    constants = [helper.make_tensor("pixel_mean", TensorProto.FLOAT, [1, 3, 1, 1], mean),
                 helper.make_tensor("pixel_std", TensorProto.FLOAT, [1, 3, 1, 1], std),
                 helper.make_tensor("shape", TensorProto.INT64, [2], [0, 3])]
    nodes = [helper.make_node("Sub", ["image", "pixel_mean"], ["centred"]),
             helper.make_node("Div", ["centred", "pixel_std"], ["normed"]),
             helper.make_node("GlobalAveragePool", ["normed"], ["pooled"]),
             helper.make_node("Reshape", ["pooled", "shape"], ["feature"])]
    graph = helper.make_graph(nodes, "deploy", [image], [feature], initializer=constants)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    return path


def test_a_graph_that_normalises_raw_pixels_itself_is_fed_raw_pixels(tmp_path):
    """A fast-reid deploy export takes 0..255 pixels: fed ImageNet-normalised ones (the torchreid
    default) its rank-1 fell from 33 % to 1 %, silently."""
    model = deploy_style_graph(tmp_path / "deploy.onnx", [123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
    embedder = Embedder.from_weights(str(model))
    grey = np.full((16, 8, 3), 200, np.uint8)
    np.testing.assert_allclose(embedder.embed([grey]), [[(200 - 123.675) / 58.395, (200 - 116.28) / 57.12,
                                                         (200 - 103.53) / 57.375]], atol=1e-4)
    assert "raw 0..255 rgb (no model card: the graph normalises them itself" in embedder.pixels
    # a graph that centres 0..1 pixels itself (means below 1) gets pixels / 255 alone, not normalised twice
    unit = Embedder.from_weights(str(deploy_style_graph(tmp_path / "unit.onnx", [0.485, 0.456, 0.406], [1, 1, 1])))
    assert "rgb /255, mean [0.0, 0.0, 0.0] std [1.0, 1.0, 1.0] (no model card: the graph normalises" in unit.pixels
    np.testing.assert_allclose(unit.embed([grey]), [[200 / 255 - 0.485, 200 / 255 - 0.456, 200 / 255 - 0.406]], atol=1e-5)
    # torchreid's transforms exported in front (x / 255, then mean/std): raw pixels too
    scaled = Embedder.from_weights(str(scaled_graph(tmp_path / "scaled.onnx")))
    np.testing.assert_allclose(scaled.embed([grey]), [[200 / 255] * 3], atol=1e-5)
    assert "raw 0..255" in scaled.pixels
    plain = Embedder.from_weights(str(mean_pool_graph(tmp_path / "plain.onnx", ["n", 3, 16, 8])))
    assert "no model card: the torchreid/BoxMOT export convention" in plain.pixels
    assert "model card given" in Embedder.from_weights(str(model), model_card={"raw_pixels": True}).pixels


def scaled_graph(path: Path) -> Path:
    """x / 255 first, then a per-channel mean: a model exported with torchreid's ToTensor in front."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 16, 8])
    feature = helper.make_tensor_value_info("feature", TensorProto.FLOAT, ["n", 3])
    constants = [helper.make_tensor("scale", TensorProto.FLOAT, [], [255.0]),
                 helper.make_tensor("shape", TensorProto.INT64, [2], [0, 3])]
    nodes = [helper.make_node("Div", ["image", "scale"], ["unit"]),
             helper.make_node("GlobalAveragePool", ["unit"], ["pooled"]),
             helper.make_node("Reshape", ["pooled", "shape"], ["feature"])]
    graph = helper.make_graph(nodes, "scaled", [image], [feature], initializer=constants)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    return path
