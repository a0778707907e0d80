"""Per-camera colour normalisation (pipeline.colour) and its place in the embed stage."""

import numpy as np
import pytest

from pipeline.colour import CameraColour, apply_lut, equalizing_lut
from pipeline.types import Detections, Frame, FrameResult
from pipeline.video.chain import StageTimes, embed_stage
from pipeline.video.embedding import embed_detections
from reid import Embedder


def scene(seed: int = 0) -> np.ndarray:
    """(120, 160, 3) uint8: smooth floor and wall gradients, a few coloured figures, sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:120, 0:160]
    image = np.stack([60 + 0.5 * x, 90 + 0.6 * y, 140 - 0.3 * x + 0.2 * y], axis=-1)
    for left in (20, 70, 120):
        image[40:100, left : left + 16] = rng.uniform(20, 235, 3)
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


def cast(image: np.ndarray, gains=(0.7, 1.15, 1.3), gamma: float = 0.8) -> np.ndarray:
    """``image`` as a camera with per-channel gains (B, G, R) and a gamma would show it."""
    out = 255.0 * (image / 255.0) ** gamma * np.asarray(gains)
    return np.clip(out, 0, 255).astype(np.uint8)


def test_equalizing_lut_is_a_monotone_table_per_channel():
    lut = equalizing_lut([scene(0), scene(1)])
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert (np.diff(lut.astype(int), axis=0) >= 0).all()
    assert lut[-1].tolist() == [255, 255, 255]


def test_equalizing_removes_a_camera_colour_cast():
    """Two cameras showing one scene through different casts agree once each is equalised by itself."""
    plain, tinted = scene(), cast(scene())
    before = np.abs(plain.astype(int) - tinted.astype(int)).mean()
    after = np.abs(apply_lut(plain, equalizing_lut([plain])).astype(int)
                   - apply_lut(tinted, equalizing_lut([tinted])).astype(int)).mean()
    assert before > 20 and after < before / 5, (before, after)


def test_camera_colour_fits_once_and_round_trips_through_its_description():
    colour, image = CameraColour("equalize"), scene(3)
    assert colour.needs_fit and colour.apply(image) is image  # nothing learned yet: frames pass as they are
    colour.fit([scene(0)])
    lut = colour.lut.copy()
    colour.fit([cast(scene(1))])  # the table is learned once: a track's features must not drift
    assert np.array_equal(colour.lut, lut) and not colour.needs_fit
    again = CameraColour.from_description(colour.describe())
    assert again.mode == "equalize" and np.array_equal(again.lut, lut)
    image = scene(2)
    assert np.array_equal(again.apply(image), apply_lut(image, lut))


def test_a_blank_start_is_not_learned_from():
    """A camera that starts black (warming up) or on one flat colour gets its table from the first
    frames that show a picture, instead of a table that throws every later level to the top."""
    colour = CameraColour("equalize")
    colour.fit([np.zeros((120, 160, 3), np.uint8)] * 3)
    colour.fit([np.full((120, 160, 3), (30, 200, 90), np.uint8)])
    image = scene()
    assert colour.needs_fit and colour.apply(image) is image
    colour.fit([np.zeros((120, 160, 3), np.uint8), scene()])  # one blank frame among pictures is fine
    assert not colour.needs_fit
    assert np.array_equal(colour.lut, equalizing_lut([np.zeros((120, 160, 3), np.uint8), scene()]))


def test_no_normalisation_passes_frames_unchanged():
    colour, image = CameraColour(), scene()
    colour.fit([image])
    assert colour.apply(image) is image and colour.describe() == {"mode": "none", "lut": None}
    assert CameraColour.from_description(None).mode == "none"
    with pytest.raises(ValueError, match="'none' or 'equalize'"):
        CameraColour("grey-world")


def test_embed_stage_embeds_the_normalised_crops():
    """The embedder sees crops of the equalised frames (table from the first batch); the frames
    themselves, which sinks draw and cut thumbnails from, stay as they were."""
    embedder = Embedder.from_weights("mobilenetv2_imagenet", device="cpu")
    frames = [cast(scene(i)) for i in range(4)]
    boxes = Detections(np.array([[20, 40, 36, 100], [70, 40, 86, 100]], np.float32), np.ones(2, np.float32))

    def results():
        return (FrameResult(Frame("cam", i, i / 10, image), detections=boxes) for i, image in enumerate(frames))

    colour = CameraColour("equalize")
    out = list(embed_stage(results(), embedder, 2, 8, StageTimes(), colour))
    lut = equalizing_lut(frames[:2])
    assert np.array_equal(colour.lut, lut)
    expected = embed_detections(embedder, [(apply_lut(image, lut), boxes) for image in frames], 8)
    raw = list(embed_stage(results(), embedder, 2, 8, StageTimes()))
    for result, want, plain, image in zip(out, expected, raw, frames):
        assert result.frame.image is image
        np.testing.assert_allclose(result.detections.features, want.features, atol=1e-5)
        assert np.abs(result.detections.features - plain.detections.features).max() > 1e-2
