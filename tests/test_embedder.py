"""reid.Embedder: batching, flip TTA, precision, normalisation, fingerprints, BoT checkpoints, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from reid import Embedder, zoo
from reid.checkpoint import to_fastreid_name
from reid.config import BotModelConfig, EmbedderConfig
from reid.embedder import IN_MODEL, resolve_runtime, weights_fingerprint
from reid.errors import CrosscamError
from reid.models.bot import build_bot_model
from reid.preprocess import crops_to_tensor


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    """Four RGB crops of different sizes with left/right-asymmetric content."""
    rng = np.random.default_rng(7)
    sizes = [(160, 64), (96, 48), (230, 100), (128, 64)]
    out = []
    for h, w in sizes:
        crop = np.zeros((h, w, 3), np.uint8)
        crop[:, : w // 3] = rng.integers(0, 256, 3)  # a coloured stripe on the left only
        crop[h // 2 :, w // 3 :] = rng.integers(0, 256, (h - h // 2, w - w // 3, 3))
        out.append(crop)
    return out


@pytest.fixture(scope="module")
def mobilenet() -> Embedder:
    return Embedder.from_weights("mobilenetv2_imagenet", device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def raw_features(mobilenet, crops) -> np.ndarray:
    return mobilenet.embed(crops)


@pytest.fixture(scope="module")
def flipped() -> Embedder:
    return Embedder.from_weights("mobilenetv2_imagenet", device="cpu", flip=True)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_raw_output_and_normalize(mobilenet, crops, raw_features):
    assert raw_features.shape == (4, mobilenet.dim) and raw_features.dtype == np.float32
    norms = np.linalg.norm(raw_features, axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-2)  # raw model output unless asked
    unit = mobilenet.embed(crops, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(unit, raw_features / norms[:, None], rtol=1e-5, atol=1e-6)


def test_empty_input_gives_zero_rows(mobilenet):
    for normalize in (False, True):
        empty = mobilenet.embed([], normalize=normalize)
        assert empty.shape == (0, mobilenet.dim) and empty.dtype == np.float32


def test_batch_size_does_not_change_features(mobilenet, crops, raw_features):
    three_then_one = copy.copy(mobilenet)  # shares the loaded network
    three_then_one.batch_size = 3
    np.testing.assert_allclose(three_then_one.embed(crops), raw_features, rtol=1e-4, atol=1e-5)


def test_flip_is_the_mean_of_normalised_image_and_mirror_features(mobilenet, flipped, crops, raw_features):
    features = flipped.embed(crops[:2])
    pixels = crops_to_tensor(crops[:2], size=mobilenet.input_size, mode="fast")
    mirror = mobilenet._features(pixels.flip(3))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    expected = (unit(raw_features[:2]) + unit(mirror)) / 2
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    assert np.all(cosine(features, raw_features[:2]) < 0.9999)  # the mirror really contributes
    assert flipped.fingerprint != mobilenet.fingerprint


def test_flip_features_barely_change_for_a_mirrored_crop(flipped, crops):
    crop = crops[3]  # 128x64: the resize to 224x224 is a plain upscale, symmetric under mirroring
    original, mirrored = flipped.embed([crop, np.ascontiguousarray(crop[:, ::-1])])
    assert cosine(original[None], mirrored[None])[0] > 0.999


def test_bf16_features_are_close_to_fp32(crops, raw_features):
    bf16 = Embedder.from_weights("mobilenetv2_imagenet", device="cpu", precision="bf16")
    features = bf16.embed(crops)
    assert features.dtype == np.float32
    assert np.all(cosine(features, raw_features) >= 0.99)
    assert not np.array_equal(features, raw_features)
    # other features, so another fingerprint (a benchmark's cache of fp32 features never stands in)
    fp16 = Embedder.from_weights("mobilenetv2_imagenet", device="cpu", precision="fp16")
    fp32 = Embedder.from_weights("mobilenetv2_imagenet", device="cpu", runtime="torch")
    assert len({bf16.fingerprint, fp16.fingerprint, fp32.fingerprint}) == 3
    assert (bf16.precision, fp16.precision, fp32.precision) == ("bf16", "fp16", "fp32")
    # fp32's is what it was before precision counted: stores made then still take its features
    path = zoo.ensure_weights(zoo.get_entry("mobilenetv2_imagenet"))
    settings = IN_MODEL | {"input_size": list(fp32.input_size), "flip": False, "preprocess": "fast", "runtime": "torch"}
    assert fp32.fingerprint == weights_fingerprint(path, settings)


def test_from_config_uses_every_key():
    embedder = Embedder.from_config(EmbedderConfig(device="cpu", batch_size=5, flip=True, preprocess="parity"))
    assert (embedder.name, embedder.batch_size, embedder.flip, embedder.preprocess) == ("mobilenetv2_imagenet", 5, True, "parity")


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"path_or_name": "no/such/model.onnx"}, "no/such/model.onnx: weights not found"),
        ({"path_or_name": "mobilenetv2_imagenet", "device": "tpu"}, "--device tpu"),
        ({"path_or_name": "mobilenetv2_imagenet", "precision": "int4"}, "precision 'int4'"),
        ({"path_or_name": "mobilenetv2_imagenet", "preprocess": "magic"}, "preprocess 'magic'"),
        ({"path_or_name": "mobilenetv2_imagenet", "batch_size": 0}, "--batch-size 0: must be at least 1"),
        ({"path_or_name": "mobilenetv2_imagenet", "model_card": {"color": "bgr"}}, "model card describes an .onnx"),
        ({"path_or_name": "mobilenetv2_imagenet", "runtime": "tensorrt"}, "runtime 'tensorrt': unknown"),
        ({"path_or_name": "mobilenetv2_imagenet", "precision": "bf16", "runtime": "onnxruntime"}, "runs fp32 only"),
        ({"path_or_name": "mobilenetv2_imagenet", "precision": "fp8", "runtime": "onnxruntime"}, "precision 'fp8': unknown"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs, complaint):
    with pytest.raises(CrosscamError, match=complaint) as err:
        Embedder.from_weights(**kwargs)
    assert "\n" not in str(err.value)


def test_unknown_file_type_is_named(tmp_path):
    weights = tmp_path / "model.h5"
    weights.write_bytes(b"\x89HDF")
    with pytest.raises(CrosscamError, match="model.h5: unknown weights format"):
        Embedder.from_weights(str(weights))


def test_bad_crop_is_named_with_its_batch(mobilenet):
    one_by_one = copy.copy(mobilenet)
    one_by_one.batch_size = 1
    with pytest.raises(CrosscamError, match="batch starting at crop 1: crop 0: empty"):
        one_by_one.embed([np.zeros((8, 4, 3), np.uint8), np.zeros((0, 5, 3), np.uint8)])


@pytest.fixture(scope="module")
def bot_checkpoint(tmp_path_factory):
    """A random BoT R50 saved by torch.save in fast-reid's current key layout, and the model itself."""
    torch.manual_seed(0)
    model = build_bot_model(BotModelConfig(stem="fastreid", num_classes=11)).eval()
    with torch.no_grad():  # non-trivial BNNeck statistics, so a dropped neck would show
        model.neck.running_mean.uniform_(-0.5, 0.5)
        model.neck.running_var.uniform_(0.5, 2.0)
    state = {to_fastreid_name(key, "c"): tensor for key, tensor in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("weights")
    path = folder / "market_bot_R50.pth"
    torch.save({"model": state}, path)
    return path, model


def test_bot_checkpoint_round_trips_through_from_weights(bot_checkpoint, crops):
    path, model = bot_checkpoint
    embedder = Embedder.from_weights(str(path), device="cpu", preprocess="parity")
    with torch.inference_mode():
        expected = model(crops_to_tensor(crops[:2], size=(256, 128), mode="parity")).numpy()
    assert embedder.dim == 2048 and embedder.input_size == (256, 128)
    np.testing.assert_allclose(embedder.embed(crops[:2]), expected, rtol=1e-4, atol=1e-4)


def test_registry_name_loads_the_bot_file_from_the_weights_folder(bot_checkpoint, crops, monkeypatch):
    path, model = bot_checkpoint
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(path.parent))  # file already there: no download
    embedder = Embedder.from_weights("market_bot_R50", device="cpu")
    assert embedder.name == "market_bot_R50" and embedder.dim == 2048
    with torch.inference_mode():
        expected = model(crops_to_tensor(crops[:1], size=(256, 128), mode="fast")).numpy()
    np.testing.assert_allclose(embedder.embed(crops[:1]), expected, rtol=1e-4, atol=1e-4)


def test_truncated_checkpoint_is_named(bot_checkpoint, tmp_path):
    path, _ = bot_checkpoint
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(CrosscamError, match="truncated.pth"):
        Embedder.from_weights(str(truncated))


def test_a_zoo_file_under_another_architectures_name_is_refused(bot_checkpoint, tmp_path, monkeypatch):
    """A BoT R50 file in the weights folder under SBS's or an IBN trunk's registry name, or loaded by
    a path that keeps such a zoo file name, is named as what it holds, not run as that network."""
    path, _ = bot_checkpoint
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path))
    for name in ("market_sbs_R50", "market_bot_R50-ibn"):
        (tmp_path / f"{name}.pth").write_bytes(path.read_bytes())
        with pytest.raises(CrosscamError, match=rf"holds a ResNet-50 network with average pooling, not the "
                                                rf"{name.removeprefix('market_')} that {name} names"):
            Embedder.from_weights(name, device="cpu")
        with pytest.raises(CrosscamError, match=f"crosscam weights download {name} --force"):
            Embedder.from_weights(str(tmp_path / f"{name}.pth"), device="cpu")


def test_a_zoo_file_loaded_by_its_path_gets_its_registry_input_size(tmp_path):
    """SBS files were trained at 384x128, which their keys cannot tell: the zoo file name does."""
    model = build_bot_model(BotModelConfig(stem="fastreid", pooling="gem_learned", non_local=(0, 2, 3, 0))).eval()
    state = {to_fastreid_name(key, "c"): tensor for key, tensor in model.state_dict().items()}
    torch.save({"model": state}, tmp_path / "market_sbs_R50.pth")
    torch.save({"model": state}, tmp_path / "mine.pth")
    assert Embedder.from_weights(str(tmp_path / "market_sbs_R50.pth"), device="cpu", runtime="torch").input_size == (384, 128)
    assert Embedder.from_weights(str(tmp_path / "mine.pth"), device="cpu", runtime="torch").input_size == (256, 128)


def test_broken_files_name_what_to_do(bot_checkpoint, tmp_path, monkeypatch):
    path, _ = bot_checkpoint
    state = torch.load(path)["model"]
    state[next(key for key in state if key.endswith("conv1.weight"))][0, 0, 0, 0] = float("nan")
    torch.save({"model": state}, tmp_path / "nan.pth")
    for runtime in ("torch", "onnxruntime"):  # before: NaN features (torch), or a temporary ONNX file named
        with pytest.raises(CrosscamError, match=r"nan.pth: 1 tensor\(s\) hold NaN or infinite values \(.*conv1.weight"):
            Embedder.from_weights(str(tmp_path / "nan.pth"), device="cpu", runtime=runtime)
    torch.save({"model": {}}, tmp_path / "empty.pth")
    with pytest.raises(CrosscamError, match="empty.pth: holds no weights"):
        Embedder.from_weights(str(tmp_path / "empty.pth"), device="cpu")
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path))
    (tmp_path / "market_bot_R50.pth").write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(CrosscamError, match=r"truncated or corrupt .*\(`crosscam weights download market_bot_R50 --force`\)"):
        Embedder.from_weights("market_bot_R50", device="cpu")
    monkeypatch.chdir(tmp_path / "..")
    with pytest.raises(CrosscamError, match=r"weights not found; .*did you mean the registry name duke_bot_R50\?"):
        Embedder.from_weights(str(tmp_path / "elsewhere" / "duke_bot_R50.pth"), device="cpu")
    with pytest.raises(CrosscamError, match=r"market_bot_R5: weights not found; .*did you mean the registry name market_bot_R50\?"):
        Embedder.from_weights("market_bot_R5", device="cpu")  # a typo of a name, as --reid gets it
    # a bare registry file name that is not here is the registry's (BoxMOT spells its weights so): fetched there
    monkeypatch.setattr(zoo, "download_entry", lambda entry, progress=True, force=False: (_ for _ in ()).throw(
        CrosscamError(f"would download {entry.name}")))
    with pytest.raises(CrosscamError, match="would download duke_bot_R50"):
        Embedder.from_weights("duke_bot_R50.pth", device="cpu")


@pytest.mark.parametrize(
    ("runtime", "device", "precision", "chosen"),
    [
        ("auto", "cpu", "fp32", "onnxruntime"),
        ("auto", "cpu", "bf16", "torch"),
        ("auto", "cuda", "fp32", "torch"),
        ("torch", "cpu", "fp32", "torch"),
        ("onnxruntime", "cuda", "fp32", "onnxruntime"),
    ],
)
def test_auto_runtime_is_onnxruntime_for_fp32_on_the_cpu(runtime, device, precision, chosen):
    assert resolve_runtime(runtime, device, precision) == chosen


def test_both_runtimes_give_the_checkpoints_features(bot_checkpoint, crops):
    path, model = bot_checkpoint
    with torch.inference_mode():
        expected = model(crops_to_tensor(crops[:3], size=(256, 128), mode="parity")).numpy()
    embedders = {
        runtime: Embedder.from_weights(str(path), device="cpu", preprocess="parity", runtime=runtime)
        for runtime in ("torch", "onnxruntime")
    }
    for runtime, embedder in embedders.items():
        assert embedder.runtime == runtime
        np.testing.assert_allclose(embedder.embed(crops[:3]), expected, rtol=1e-4, atol=1e-4)
    # Engines agree to float32 rounding only, so cached features of one never stand in for the other.
    assert embedders["torch"].fingerprint != embedders["onnxruntime"].fingerprint


def test_fp32_torch_runtime_folds_batchnorm_and_autocast_does_not(bot_checkpoint):
    path, _ = bot_checkpoint
    fp32 = Embedder.from_weights(str(path), device="cpu", runtime="torch")
    bf16 = Embedder.from_weights(str(path), device="cpu", precision="bf16")
    assert isinstance(fp32._features.module.backbone.bn1, torch.nn.Identity)
    assert isinstance(bf16._features.module.backbone.bn1, torch.nn.BatchNorm2d)
