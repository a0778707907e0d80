"""Every fast-reid person model-zoo architecture loads exactly: BoT, AGW, SBS on R50, R50-ibn, S50,
R101-ibn, and MGN R50-ibn.

The reference is fast-reid itself (PyPI ``fastreid`` 1.4.0, test-only, tests/fastreid_reference.py):
each architecture built as its zoo config describes, every BN/IN/GeM/non-local parameter random and
the BN statistics set from real crops, saved in the zoo's key generation (a) (with the zoo era's
forward: torchvision stem, undilated ResNeSt layer4 with non-local blocks, MGN reduction heads) and
in fast-reid 1.4.0's own generation (c). crosscam loads each file with the architecture read from
its keys and embeds real crops (CUHK03 through the parity preprocessing; textured stand-ins
without ../shared).

Exactness is checked twice: in float64 crosscam equals fast-reid to 1e-9 of the feature scale (the
same function), and in float32 it stays within twice fast-reid's own float32 error against that
float64 forward (for these random, BN-calibrated nets fast-reid's own fp32 error is about 1e-4 of
features of magnitude 5-30: a BNNeck fed by similar crops divides small differences by small
deviations). Inputs are half the zoo size (128x64, SBS/MGN 192x64) to keep the suite fast; the
architecture is the same at any size (tests/benchmarks/bench_fastreid_zoo.py runs the full size).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from fastreid_reference import ZOO, Reference, input_size
from test_fastreid_conformance import person_crops

from reid.checkpoint import (
    bot_model_from_payload,
    build_fastreid_model,
    detect_generation,
    load_bot_checkpoint,
    to_fastreid_name,
)
from reid.config import BotModelConfig
from reid.errors import CrosscamError
from reid.export import raw_pixel_card, write_checked_onnx
from reid.models.bot import PIXEL_MEAN, PIXEL_STD
from reid.onnx_backend import OnnxReidModel
from reid.preprocess import crops_to_tensor
from reid.vectors import l2_normalize

ARCHS = list(ZOO)
# One architecture per layer family the ONNX export must carry: IBN + non-local + learned GeM,
# ResNeSt split attention, MGN's stripes and heads (all 13 at full size: the benchmark script).
ONNX_ARCHS = {"sbs_R50-ibn", "bot_S50", "mgn_R50-ibn"}


def half_size(arch: str) -> tuple[int, int]:
    height, width = input_size(arch)
    return height // 2, width // 2


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    """Eight real person crops: BN statistics come from all of them, features are compared on the first two."""
    return person_crops()[:2] + person_crops(first=15)


def features64(module, images: torch.Tensor) -> torch.Tensor:
    """``module(images)`` in float64, leaving ``module`` in float32."""
    try:
        with torch.inference_mode():
            return module.double()(images.double())
    finally:
        module.float()


@pytest.mark.parametrize("arch", ARCHS)
def test_zoo_architecture_gives_fastreids_features(arch, crops, tmp_path):
    size = half_size(arch)
    images = crops_to_tensor(crops[:2], size, mode="parity")
    reference = Reference(arch, crops_to_tensor(crops, size, mode="parity"))
    eras = {}
    for generation, era in (("a", "zoo"), ("c", "modern")):
        state = reference.state_dict(generation)
        assert detect_generation(state) == generation
        overrides = {"input_size": size}
        if arch == "agw_S50" and generation == "c":
            overrides["pooling"] = "gem"  # 1.4.0's ResNeSt drops AGW's non-local blocks: keys alone say BoT
        if generation == "a":  # the zoo's files, through a real file
            path = tmp_path / f"{arch}.pth"
            torch.save({"model": state, "iteration": 0}, path)
            model = load_bot_checkpoint(path, overrides=overrides)
        else:
            model = bot_model_from_payload({"model": state}, tmp_path / "c.pth", overrides=overrides)
        assert model.cfg.num_classes == 751 and model.cfg.input_size == size
        with torch.inference_mode():
            expected = reference.model(images.clone()) if era == "modern" else reference.features(images, era)
            got = model(images)
        assert got.shape == expected.shape == (2, 2048)
        exact = features64(_Forward(reference, era), images[:1])
        scale = exact.abs().max().item()
        assert (features64(model, images[:1]) - exact).abs().max().item() <= 1e-9 * scale, "not the same function"
        fastreid_rounding = (expected[:1].double() - exact).abs().max().item()
        assert (got[:1].double() - exact).abs().max().item() <= 2 * fastreid_rounding + 1e-6 * scale
        assert (got - expected).abs().max().item() <= 1e-3 * expected.abs().max().item()
        eras[era] = expected
        if arch in ONNX_ARCHS and generation == "a":
            assert_onnx_export_embeds_the_same(model, images, size, tmp_path / f"{arch}.onnx")
    # The two eras differ far beyond rounding: each file really needs its own forward.
    assert (eras["zoo"] - eras["modern"]).abs().max().item() > 1e-2 * eras["zoo"].abs().max().item()


class _Forward(torch.nn.Module):
    """One era of a :class:`Reference` as a module (so :func:`features64` can cast it)."""

    def __init__(self, reference: Reference, era: str) -> None:
        super().__init__()
        self.model, self.extras, self.reference, self.era = reference.model, reference.extras, reference, era

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.reference.features(images, self.era)


def assert_onnx_export_embeds_the_same(model, images: torch.Tensor, size: tuple[int, int], path) -> None:
    """Export parity (unit features) <= 1e-4, and the written file embeds the crops as the checkpoint does."""
    parity = write_checked_onnx(model, size, path, path.name)
    assert parity.unit_diff <= 1e-4 and parity.dim == 2048
    exported = OnnxReidModel(path, card=raw_pixel_card(size, parity.dim), device="cpu")
    with torch.inference_mode():
        expected = model(images).numpy()
    assert np.abs(l2_normalize(exported(images.numpy())) - l2_normalize(expected)).max() <= 1e-4


def zoo_shapes(arch: str) -> dict[str, torch.Tensor]:
    """An empty-valued zoo file (generation a) of ``arch``: every key and shape, no weights computed."""
    method, backbone = ZOO[arch]
    cfg = BotModelConfig(
        depth=101 if backbone == "R101-ibn" else 50,
        backbone="resnest" if backbone == "S50" else "resnet",
        ibn=backbone.endswith("ibn"),
        non_local=(0, 2, 3, 0) if method in ("agw", "sbs") else (0, 0, 0, 0),
        pooling="gem_learned" if method != "bot" else "avg",
        meta="mgn" if method == "mgn" else "baseline",
        mgn_head="reduction",
        num_classes=751,
    )
    with torch.device("meta"):
        state = build_fastreid_model(cfg).state_dict()
    meta = "mgn" if method == "mgn" else "baseline"
    files = {to_fastreid_name(key, "a", meta): torch.empty(value.shape, dtype=value.dtype) for key, value in state.items()}
    return files | {"pixel_mean": torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), "pixel_std": torch.tensor(PIXEL_STD).view(1, 3, 1, 1)}


# The tensor each architecture's test damages: one only that architecture has, when it has one.
SIGNATURE_KEYS = [r"\.NL_3\.2\.W\.1\.running_var$", r"^b33_pool\.2\.running_mean$", r"\.conv2\.fc1\.bias$", r"\.bn1\.IN\.weight$",
                  r"^heads\.bnneck\.running_var$"]


@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_refuses_a_damaged_file(arch, tmp_path):
    state = zoo_shapes(arch)
    key = next(k for pattern in SIGNATURE_KEYS for k in reversed(state) if re.search(pattern, k))
    removed = {k: v for k, v in state.items() if k != key}
    renamed = {(k + "_old" if k == key else k): v for k, v in state.items()}
    reshaped = dict(state) | {key: torch.empty(state[key].numel() + 1)}
    for damage, payload, expect in (("removed", removed, "missing"), ("renamed", renamed, "unexpected"), ("reshaped", reshaped, "shape mismatch")):
        path = tmp_path / f"{damage}.pth"
        with pytest.raises(CrosscamError) as err:
            bot_model_from_payload({"model": payload}, path)
        message = str(err.value)
        assert "\n" not in message and str(path) in message and expect in message and key in message, (damage, message)
