"""Merged blobs split with the tracker's predictions (pipeline.video.blob_split, PersonTracker.predictions, the chain)."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from pipeline.config import DetectorConfig, TrackerConfig
from pipeline.types import Detections, Frame
from pipeline.video.blob_split import split_by_predictions
from pipeline.video.chain import StageTimes, build_chain
from pipeline.video.detectors import MotionDetector
from pipeline.video.tracking import PersonTracker

FEATURES = np.eye(3, dtype=np.float32)


def blob(xyxy, confidence=0.8) -> Detections:
    boxes = np.array(xyxy, np.float32).reshape(-1, 4)
    return Detections(boxes, np.full(len(boxes), confidence, np.float32), np.tile(FEATURES[2], (len(boxes), 1)))


def test_a_blob_covering_two_predictions_becomes_their_boxes_refined_to_it():
    predicted = np.array([[12, 20, 42, 110], [35, 8, 62, 100]], np.float32)  # two people, the second behind
    out = split_by_predictions(blob([10, 5, 60, 112], 0.7), predicted, FEATURES[:2], min_cover=0.6)
    # Clipped to the blob, and the outermost box on each side reaches the blob's edge there.
    np.testing.assert_array_equal(out.xyxy, [[10, 20, 42, 112], [35, 5, 60, 100]])
    np.testing.assert_array_equal(out.features, FEATURES[:2])  # each track's own appearance, not the blob's
    np.testing.assert_allclose(out.confidence, [0.7, 0.7])


def test_blobs_of_one_tracked_person_and_loose_predictions_are_kept():
    dets = blob([[0, 0, 40, 100], [100, 0, 140, 100]])
    predicted = np.array([
        [2, 2, 38, 98],  # inside the first blob, alone
        [90, 0, 118, 100],  # half inside the second blob: below min_cover
        [200, 0, 240, 100],  # in no blob
    ], np.float32)
    out = split_by_predictions(dets, predicted, FEATURES, min_cover=0.6)
    np.testing.assert_array_equal(out.xyxy, dets.xyxy)
    np.testing.assert_array_equal(out.features, dets.features)
    assert split_by_predictions(Detections.empty(), predicted, FEATURES, 0.6).xyxy.shape == (0, 4)
    assert split_by_predictions(dets, predicted[:1], FEATURES[:1], 0.6) is dets


def test_two_tracks_on_one_person_do_not_split_a_blob():
    predicted = np.array([[10, 10, 40, 100], [10, 11, 40, 101]], np.float32)  # IoU > 0.9: a duplicate
    out = split_by_predictions(blob([8, 8, 44, 104]), predicted, FEATURES[:2], 0.6)
    np.testing.assert_array_equal(out.xyxy, [[8, 8, 44, 104]])


def test_a_degenerate_prediction_is_ignored_without_warnings():
    predicted = np.array([[10, 10, 10, 60], [12, 20, 30, 90], [30, 15, 50, 95]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = split_by_predictions(blob([10, 10, 52, 96]), predicted, FEATURES, 0.6)
    assert len(out) == 2
    np.testing.assert_array_equal(out.features, FEATURES[1:])


def walker(frame: int, x0: float, speed: float, feature) -> list:
    return [x0 + speed * frame, 40, x0 + speed * frame + 30, 120], feature


def test_predictions_are_the_next_boxes_of_recently_seen_confirmed_tracks_and_change_nothing():
    tracker, twin = PersonTracker(TrackerConfig(n_init=2)), PersonTracker(TrackerConfig(n_init=2))
    assert len(tracker.predictions().xyxy) == 0 and tracker.predictions().features.shape[0] == 0
    for f in range(12):
        dets = Detections(np.array([[10 + 4 * f, 40, 40 + 4 * f, 120]], np.float32), np.array([0.9], np.float32),
                          FEATURES[:1])
        tracker.update(dets)
        twin.update(dets)
    predicted = tracker.predictions()
    predicted_again = tracker.predictions()
    np.testing.assert_array_equal(predicted.xyxy, predicted_again.xyxy)
    assert predicted.track_ids.tolist() == [1]
    np.testing.assert_allclose(predicted.xyxy[0], [58, 40, 88, 120], atol=1.5)  # one more 4 px step
    np.testing.assert_allclose(predicted.features[0], FEATURES[0])
    # Asking changed no state: the tracker goes on exactly like its twin.
    nxt = Detections(np.array([[58, 40, 88, 120]], np.float32), np.array([0.9], np.float32), FEATURES[:1])
    a, b = tracker.update(nxt), twin.update(nxt)
    assert [(o.track_id, o.xyxy.tolist()) for o in a] == [(o.track_id, o.xyxy.tolist()) for o in b]
    # A new (tentative) track predicts nothing; a track unseen for two frames neither.
    far = Detections(np.array([[200, 40, 230, 120]], np.float32), np.array([0.9], np.float32), FEATURES[1:2])
    tracker.update(far)
    assert tracker.predictions().track_ids.tolist() == [1]
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 3), np.float32))
    tracker.update(empty)
    tracker.update(empty)
    assert tracker.predictions().track_ids.tolist() == []


class ColourEmbedder:
    """A stand-in ReID model: the unit mean colour of the crop (people here are flat colours)."""

    name, fingerprint, dim = "colour", "colour", 3

    def embed(self, crops, bgr=True, normalize=True):
        if not crops:
            return np.zeros((0, 3), np.float32)
        means = np.stack([c.reshape(-1, 3).mean(axis=0) for c in crops]).astype(np.float32)
        return means / np.linalg.norm(means, axis=1, keepdims=True)


RED, BLUE = (40, 40, 220), (220, 60, 40)


def crossing_frames(count: int = 70):
    """Two people (24 x 72 px) on a textured floor walk towards each other and pass, one in front
    of the other, merging into one foreground blob around frames 38-48."""
    rng = np.random.default_rng(3)
    floor = cv2.GaussianBlur(rng.integers(90, 170, (240, 320, 3)).astype(np.uint8), (7, 7), 0)
    for i in range(count):
        image = floor.copy()
        xb = int(276 - 3 * i)
        xa = int(20 + 3 * i)
        image[80:152, xb : xb + 24] = BLUE  # behind
        image[84:156, xa : xa + 24] = RED  # in front
        yield Frame("crossing", i, i / 10.0, image)


def track_crossing(split: bool, interpolate: str = "gsi") -> list[list]:
    tracker = PersonTracker(TrackerConfig(n_init=2, split_merged=split, interpolate=interpolate))
    chain = build_chain(crossing_frames(), MotionDetector(DetectorConfig(model="motion")), ColourEmbedder(), tracker,
                        [], batch_size=8, min_box_size=8, times=StageTimes())
    return [r.tracks for r in chain]


def test_people_merged_into_one_blob_keep_their_tracks_through_the_merge():
    tracks = track_crossing(split=True)
    merged = range(40, 47)
    before = {int(np.argmax(o.feature)): o.track_id for o in tracks[34]}
    after = {int(np.argmax(o.feature)): o.track_id for o in tracks[60]}
    assert len(before) == 2 and after == before  # nobody swapped or restarted
    for f in merged:
        assert {o.track_id for o in tracks[f]} == set(before.values()), f"frame {f}"
        boxes = sorted(o.xyxy[0] for o in tracks[f])
        truth = sorted([20 + 3 * f, 276 - 3 * f])
        np.testing.assert_allclose(boxes, truth, atol=4)  # each box where its person is
    # Without the split, the blob is one box: someone goes unreported while merged (unless the
    # gap is interpolated afterwards, pipeline.video.refine.lookback: so without that too).
    unsplit = track_crossing(split=False, interpolate="none")
    assert sum(len(unsplit[f]) for f in merged) < 2 * len(merged)


@pytest.mark.parametrize("split", [True, False])
def test_only_detectors_that_merge_people_get_the_split_stage(split):
    class OneBoxPerPerson:
        name, fingerprint = "boxes", "boxes"

        def detect(self, frames):
            return [Detections(np.array([[10, 10, 40, 100]], np.float32), np.array([0.9], np.float32)) for _ in frames]

    times = StageTimes()
    frames = (Frame("c", i, i / 10, np.full((120, 80, 3), 100, np.uint8)) for i in range(3))
    list(build_chain(frames, OneBoxPerPerson(), ColourEmbedder(), PersonTracker(TrackerConfig(split_merged=split)),
                     [], batch_size=2, min_box_size=8, times=times))
    assert "split" not in times
    times = StageTimes()
    list(build_chain(crossing_frames(3), MotionDetector(DetectorConfig(model="motion")), ColourEmbedder(),
                     PersonTracker(TrackerConfig(split_merged=split)), [], batch_size=2, min_box_size=8, times=times))
    assert ("split" in times) is split
