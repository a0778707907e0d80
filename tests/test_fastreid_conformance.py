"""crosscam's BoT R50 gives fast-reid's features, from checkpoints in all three fast-reid key layouts.

The reference is fast-reid itself (PyPI ``fastreid`` 1.4.0, test-only): its BoT R50 configured
like ``configs/Base-bagtricks.yml`` (BN, last stride 1, no IBN/SE/non-local, average pooling,
BNNeck, 751 classes), randomly initialised with a fixed seed, its BN statistics calibrated on
real crops so that every BN layer, the BNNeck included, shapes the output. crosscam must give the
same features (max abs difference <= 1e-4) on real crops through its parity preprocessing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED
from PIL import Image

from reid.checkpoint import detect_generation, load_bot_checkpoint
from reid.config import BotModelConfig
from reid.preprocess import crops_to_tensor

TOLERANCE = 1e-4
NUM_CLASSES = 751


def fastreid_bot_r50(num_classes: int = NUM_CLASSES) -> torch.nn.Module:
    """fast-reid's own BoT R50 (Base-bagtricks: BN, last stride 1, average pooling, BNNeck), its default init."""
    pytest.importorskip("fastreid")
    from fastreid.config import get_cfg
    from fastreid.modeling import build_model

    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "Baseline"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.BACKBONE.DEPTH = "50x"
    cfg.MODEL.BACKBONE.NORM = "BN"
    cfg.MODEL.BACKBONE.LAST_STRIDE = 1
    cfg.MODEL.BACKBONE.FEAT_DIM = 2048
    cfg.MODEL.BACKBONE.WITH_IBN = False
    cfg.MODEL.BACKBONE.WITH_SE = False
    cfg.MODEL.BACKBONE.WITH_NL = False
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.HEADS.NAME = "EmbeddingHead"
    cfg.MODEL.HEADS.NORM = "BN"
    cfg.MODEL.HEADS.WITH_BNNECK = True
    cfg.MODEL.HEADS.POOL_LAYER = "GlobalAvgPool"
    cfg.MODEL.HEADS.NECK_FEAT = "before"
    cfg.MODEL.HEADS.CLS_LAYER = "Linear"
    cfg.MODEL.HEADS.EMBEDDING_DIM = 0
    cfg.MODEL.HEADS.NUM_CLASSES = num_classes
    return build_model(cfg)


def build_fastreid_bot_r50(calibration_images: torch.Tensor) -> torch.nn.Module:
    """fast-reid's BoT R50 (Base-bagtricks), eval mode, random weights from a fixed seed.

    BN affine parameters are randomised, then every BN's running statistics are set from one
    train-mode pass over ``calibration_images`` (N, 3, 256, 128) RGB 0..255: activations and
    features then have the magnitudes of a trained model (features of order 1), so the 1e-4
    tolerance means what it would on real weights.
    """
    torch.manual_seed(2020)
    model = fastreid_bot_r50()
    generator = torch.Generator().manual_seed(7)
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in batch_norms:
            bn.weight.copy_(torch.rand(bn.num_features, generator=generator) * 0.5 + 0.75)
            if bn.bias.requires_grad:  # the BNNeck's bias is frozen at 0, as in training
                bn.bias.copy_(torch.randn(bn.num_features, generator=generator) * 0.1)
            bn.momentum = None  # cumulative average: one pass sets the running statistics exactly
        model.train()
        fmap = model.backbone(model.preprocess_image(calibration_images.contiguous().clone()))
        model.heads.bottleneck(model.heads.pool_layer(fmap))
        for bn in batch_norms:
            bn.momentum = 0.1
    return model.eval()


def person_crops(first: int = 0) -> list[np.ndarray]:
    """Six real person crops of different people (CUHK03 query images), or textured stand-ins."""
    query = SHARED / "data" / "cuhk03-market" / "query"
    if query.is_dir():
        files = sorted(query.glob("*.jpg"))[first::31][:6]
        return [np.asarray(Image.open(path).convert("RGB")) for path in files]
    rng = np.random.default_rng(first)
    sizes = [(192, 60), (300, 110), (120, 45), (256, 128), (180, 90), (400, 160)]
    return [_textured_crop(rng, h, w) for h, w in sizes]


def batch_of_crops(count: int) -> list[np.ndarray]:
    """``count`` crops: :func:`person_crops` of successive offsets (repeats once the crops run out)."""
    crops: list[np.ndarray] = []
    first = 0
    while len(crops) < count:
        crops += person_crops(first)
        first += 1
    return crops[:count]


def _textured_crop(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour blobs plus noise: image-like statistics rather than white noise."""
    coarse = rng.integers(0, 256, (8, 4, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR)).astype(np.int16)
    return np.clip(smooth + rng.integers(-20, 21, smooth.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fastreid_model():
    calibration = crops_to_tensor(person_crops(first=15), size=(256, 128), mode="parity")
    return build_fastreid_bot_r50(calibration)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return crops_to_tensor(person_crops()[:4], size=(256, 128), mode="parity")


@pytest.fixture(scope="module")
def reference(fastreid_model, images) -> dict[str, torch.Tensor]:
    """fast-reid's eval features with its own stem and with the torchvision stem (zoo-era)."""
    features = {}
    with torch.inference_mode():
        # fast-reid normalises in place, so it gets its own copy.
        features["fastreid"] = fastreid_model(images.contiguous().clone())
        own_pool = fastreid_model.backbone.maxpool
        fastreid_model.backbone.maxpool = torch.nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        try:
            features["torchvision"] = fastreid_model(images.contiguous().clone())
        finally:
            fastreid_model.backbone.maxpool = own_pool
    return features


@pytest.fixture(scope="module")
def checkpoint_files(fastreid_model, tmp_path_factory) -> dict[str, Path]:
    """fast-reid's weights saved in each key layout: (c) as fast-reid 1.4.0 writes it, (b), (a)."""
    folder = tmp_path_factory.mktemp("fastreid_layouts")
    layout_c = fastreid_model.state_dict()
    layout_b = {("heads.classifier.weight" if k == "heads.weight" else k): v for k, v in layout_c.items()}
    layout_a = {k.replace("heads.bottleneck.0.", "heads.bnneck."): v for k, v in layout_b.items()}
    layout_a["pixel_mean"] = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    layout_a["pixel_std"] = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    files = {}
    for name, state in (("a", layout_a), ("b", layout_b), ("c", layout_c)):
        files[name] = folder / f"bot_r50_layout_{name}.pth"
        torch.save({"model": state, "iteration": 0}, files[name])
    return files


def crosscam_features(path: Path, cfg: BotModelConfig | None, images: torch.Tensor):
    """Load ``path`` and embed ``images``, in fast-reid's (contiguous) memory layout.

    Same weights and same operations give the same float32 results; a channels-last forward
    reorders the sums, which moves features by fp32 rounding (about as far as fast-reid's own
    forward is from a float64 one; tests/benchmarks/bench_bot_embedder.py measures both).
    """
    model = load_bot_checkpoint(path, cfg)
    with torch.inference_mode():
        return model, model(images.contiguous())


def test_fastreid_140_is_the_model_we_think(fastreid_model):
    keys = fastreid_model.state_dict().keys()
    assert "heads.weight" in keys and "heads.bottleneck.0.running_var" in keys
    assert "pixel_mean" not in keys, "fast-reid 1.4.0 does not save its pixel buffers"
    pool = fastreid_model.backbone.maxpool
    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 0, True)


def test_reference_features_depend_on_the_bnneck_and_the_stem(fastreid_model, reference):
    bnneck = fastreid_model.heads.bottleneck[0]
    assert bnneck.running_mean.abs().mean() > 0.01 and bnneck.running_var.std() > 0.01
    features = reference["fastreid"]
    assert 0.1 < features.abs().mean() < 10, "features should have a trained model's magnitude"
    assert (features - reference["torchvision"]).abs().max() > 100 * TOLERANCE


@pytest.mark.parametrize(
    ("layout", "cfg"),
    [
        ("a", BotModelConfig(stem="fastreid")),
        ("b", BotModelConfig(stem="fastreid")),
        ("c", None),  # the default for a layout-(c) file is fast-reid's current stem
    ],
)
def test_each_layout_gives_fastreids_features(checkpoint_files, images, reference, layout, cfg):
    model, features = crosscam_features(checkpoint_files[layout], cfg, images)
    assert detect_generation(torch.load(checkpoint_files[layout], weights_only=True)["model"]) == layout
    assert model.backbone.stem == "fastreid"
    assert model.cfg.num_classes == NUM_CLASSES
    assert features.shape == reference["fastreid"].shape == (len(images), 2048)
    assert (features - reference["fastreid"]).abs().max().item() <= TOLERANCE


def test_zoo_layout_loads_with_the_default_stem(checkpoint_files, images, reference):
    model, features = crosscam_features(checkpoint_files["a"], None, images)
    assert model.backbone.stem == "torchvision"
    assert (features - reference["torchvision"]).abs().max().item() <= TOLERANCE
