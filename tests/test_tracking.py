"""DeepSORT with our embeddings, the embed stage, and the lazy, bounded generator chain."""

from __future__ import annotations

import itertools
import threading
import weakref

import numpy as np
import pytest

from pipeline.config import DetectorConfig, TrackerConfig
from pipeline.types import Detections, Frame
from pipeline.video.chain import StageTimes, build_chain, prefetch
from pipeline.video.detectors import MotionDetector
from pipeline.video.embedding import clip_boxes, embed_detections
from pipeline.video.tracking import PersonTracker
from reid import Embedder

from conftest import shared_path


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def two_walkers(frame: int) -> Detections:
    """Two people crossing paths at constant speed, each with their own appearance."""
    a = [10 + 4 * frame, 50, 40 + 4 * frame, 130]
    b = [200 - 4 * frame, 60, 230 - 4 * frame, 140]
    return Detections(np.array([a, b], np.float32), np.array([0.9, 0.8], np.float32),
                      np.stack([unit([1, 0.1, 0]), unit([0, 0.1, 1])]))


def test_tracks_are_confirmed_integer_ids_on_the_detection_boxes():
    tracker = PersonTracker(TrackerConfig(n_init=3))
    outputs = [tracker.update(two_walkers(f)) for f in range(30)]
    assert outputs[0] == [] and outputs[1] == []  # tentative until n_init hits
    ids = {o.track_id for frame in outputs for o in frame}
    assert len(ids) == 2 and all(isinstance(i, int) and i >= 1 for i in ids)
    for f, frame in enumerate(outputs[2:], start=2):
        dets = two_walkers(f)
        assert len(frame) == 2
        for obs in frame:
            row = int(np.argmax(dets.features @ obs.feature))
            np.testing.assert_array_equal(obs.xyxy, dets.xyxy[row])  # the detection's box, not the filter's
            assert obs.confidence == pytest.approx(float(dets.confidence[row]))
    # The same person keeps the same id through the crossing (appearance tells them apart).
    by_feature = {}
    for frame in outputs[2:]:
        for obs in frame:
            by_feature.setdefault(int(np.argmax(obs.feature)), set()).add(obs.track_id)
    assert all(len(v) == 1 for v in by_feature.values())


def test_coasting_tracks_are_not_reported():
    tracker = PersonTracker(TrackerConfig(n_init=2, max_age=10))
    for f in range(5):
        assert len(tracker.update(two_walkers(f))) == (2 if f >= 1 else 0)
    only_a = two_walkers(5)
    only_a = Detections(only_a.xyxy[:1], only_a.confidence[:1], only_a.features[:1])
    reported = tracker.update(only_a)
    assert len(reported) == 1  # b is still alive in DeepSORT but was not seen: no ghost box
    back = tracker.update(two_walkers(6))
    assert len(back) == 2 and {o.track_id for o in back} == {o.track_id for o in tracker.update(two_walkers(7))}


def test_empty_frames_and_degenerate_boxes():
    tracker = PersonTracker(TrackerConfig(n_init=1))
    empty = Detections.empty()
    empty.features = np.zeros((0, 3), np.float32)
    assert tracker.update(empty) == []
    # A zero-width box must not shift the other rows' embeddings onto the wrong box.
    dets = Detections(np.array([[5, 5, 5, 50], [60, 10, 90, 90]], np.float32), np.array([0.9, 0.7], np.float32),
                      np.stack([unit([1, 0, 0]), unit([0, 1, 0])]))
    tracker.update(dets)
    (obs,) = tracker.update(dets)
    np.testing.assert_array_equal(obs.xyxy, dets.xyxy[1])
    np.testing.assert_array_equal(obs.feature, dets.features[1])
    with pytest.raises(ValueError, match="features"):
        tracker.update(Detections.empty())


@pytest.fixture(scope="module")
def osnet() -> Embedder:
    return Embedder.from_weights(str(shared_path("weights/osnet_x0_25_msmt17.onnx")), device="cpu")


def test_clip_boxes():
    clipped = clip_boxes(np.array([[-5, -3, 50, 400], [10, 10, 20, 20]], np.float32), width=40, height=300)
    np.testing.assert_array_equal(clipped, [[0, 0, 40, 300], [10, 10, 20, 20]])


def test_embed_stage_clips_skips_tiny_and_batches_across_frames(osnet: Embedder):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(3)]
    dets = [
        Detections(np.array([[-20, 10, 40, 110], [50, 50, 53, 90]], np.float32), np.array([0.9, 0.8], np.float32)),
        Detections.empty(),
        Detections(np.array([[100, 0, 150, 119], [10, 10, 60, 100]], np.float32), np.array([0.7, 0.6], np.float32)),
    ]
    out = embed_detections(osnet, list(zip(images, dets)), min_size=8)
    assert [len(d) for d in out] == [1, 0, 2]  # the 3-pixel-wide box was dropped
    np.testing.assert_array_equal(out[0].xyxy, [[0, 10, 40, 110]])
    assert out[1].features.shape == (0, osnet.dim)
    all_features = np.concatenate([d.features for d in out])
    np.testing.assert_allclose(np.linalg.norm(all_features, axis=1), 1.0, atol=1e-5)
    # One call over three frames gives the features of three separate calls.
    for image, det, batched in zip(images, dets, out):
        single = embed_detections(osnet, [(image, det)], min_size=8)[0]
        np.testing.assert_allclose(single.features, batched.features, atol=1e-4)
    # The crop is the clipped box of the BGR image, converted to RGB by the embedder.
    expected = osnet.embed([images[2][10:100, 10:60, ::-1].copy()], normalize=True)
    np.testing.assert_allclose(out[2].features[1], expected[0], atol=1e-4)


def moving_square_frames(count: int | None = None):
    """An endless (or ``count``-long) stream of frames with one person-sized block walking."""
    rng = np.random.default_rng(2)
    background = rng.integers(80, 180, (180, 240, 3), dtype=np.uint8)
    for i in itertools.count() if count is None else range(count):
        image = background.copy()
        if i >= 15:  # after the background model has settled
            x = 10 + (3 * (i - 15)) % 180
            image[40:130, x : x + 30] = (30, 30, 220)
        yield Frame("synthetic", i, i / 25.0, image)


class Recorder:
    def __init__(self):
        self.results = []

    def write(self, result):
        self.results.append(result.frame.index)


def test_chain_is_lazy_and_tracks_the_walker(osnet: Embedder):
    times = StageTimes()
    sink = Recorder()
    chain = build_chain(moving_square_frames(), MotionDetector(DetectorConfig(model="motion")), osnet,
                        PersonTracker(TrackerConfig()), [sink], batch_size=4, min_box_size=8, times=times)
    first = list(itertools.islice(chain, 50))  # an endless source: only laziness lets this return
    assert [r.frame.index for r in first] == list(range(50)) and sink.results == list(range(50))
    ids = {t.track_id for r in first for t in r.tracks}
    assert len(ids) == 1 and sum(bool(r.tracks) for r in first) > 15
    assert set(times) == {"decode", "detect", "embed", "split", "track", "refine", "write"}
    assert all(v >= 0 for v in times.values())


def test_chain_memory_stays_bounded(osnet: Embedder):
    alive = []

    def watched():
        for frame in moving_square_frames(100):
            alive.append(weakref.ref(frame.image))
            yield frame

    chain = build_chain(watched(), MotionDetector(DetectorConfig(model="motion")), osnet,
                        PersonTracker(TrackerConfig()), [], batch_size=8, min_box_size=8, times=StageTimes())
    peak = 0
    for _ in chain:
        peak = max(peak, sum(ref() is not None for ref in alive))
    held = TrackerConfig().interpolate_max_gap  # the look-back buffer in front of the sinks
    assert len(alive) == 100 and peak <= 2 * 8 + held + 2  # at most a batch in each buffering stage



def test_prefetched_chain_gives_the_same_tracks(osnet: Embedder):
    def run(prefetch_frames: int):
        chain = build_chain(moving_square_frames(60), MotionDetector(DetectorConfig(model="motion")), osnet,
                            PersonTracker(TrackerConfig()), [], batch_size=4, min_box_size=8, times=StageTimes(),
                            prefetch_frames=prefetch_frames)
        return [(r.frame.index, [(t.track_id, *t.xyxy.tolist()) for t in r.tracks]) for r in chain]

    assert run(8) == run(0)


def test_prefetch_runs_ahead_by_at_most_depth_and_stops_when_closed():
    produced = []

    def numbers():
        for n in itertools.count():
            produced.append(n)
            yield n

    ahead = prefetch(numbers(), depth=3)
    assert [next(ahead) for _ in range(5)] == [0, 1, 2, 3, 4]
    ahead.close()  # joins the thread
    assert not any(t.name == "crosscam-prefetch" for t in threading.enumerate())
    assert len(produced) <= 5 + 3 + 1  # consumed + queued + the one in hand


def test_prefetch_raises_the_background_error_in_the_consumer():
    def failing():
        yield 1
        raise ValueError("bad frame 2")

    ahead = prefetch(failing(), depth=2)
    assert next(ahead) == 1
    with pytest.raises(ValueError, match="bad frame 2"):
        next(ahead)
