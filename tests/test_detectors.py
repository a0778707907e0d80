"""Person detectors: ultralytics YOLO (real INT8 ONNX), motion, replay of det.txt."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.config import DetectorConfig
from pipeline.types import Frame
from pipeline.video.detectors import MotionDetector, ReplayDetector, YoloDetector, build_detector
from reid.errors import CrosscamError


def hall_frames(clip: Path, indices: list[int]) -> list[Frame]:
    cap = cv2.VideoCapture(str(clip))
    frames, index = [], 0
    while index <= max(indices):
        ok, image = cap.read()
        assert ok
        if index in indices:
            frames.append(Frame("hall", index, index / 10.0, image))
        index += 1
    cap.release()
    return frames


def test_yolo_onnx_finds_the_person_batched_like_per_frame(yolo_onnx: Path, hall_clip: Path, capfd):
    # Frame 0 shows the empty hall; in frames 100 and 150 one person stands by the table.
    frames = hall_frames(hall_clip, [0, 100, 150])
    detector = build_detector(DetectorConfig(model=str(yolo_onnx), device="cpu"))
    assert isinstance(detector, YoloDetector) and detector.name == "yolov8n_int8.onnx"
    # crosscam sets YOLO_VERBOSE=false, a script that imported ultralytics first may not: let warnings print.
    loud = [logging.getLogger("ultralytics"), *logging.getLogger("ultralytics").handlers]
    levels = [each.level for each in loud]
    for each in loud:
        each.setLevel(logging.INFO)
    batched = detector.detect(frames)
    assert len(batched[0]) == 0
    for dets in batched[1:]:
        assert len(dets) == 1 and dets.xyxy.dtype == np.float32
        x1, y1, x2, y2 = dets.xyxy[0]
        assert (y2 - y1) > 1.5 * (x2 - x1) > 0  # a standing person, not a table
        assert 0.4 <= dets.confidence[0] <= 1.0
    for frame, dets in zip(frames, batched):
        single = detector.detect([frame])[0]
        np.testing.assert_allclose(single.xyxy, dets.xyxy, atol=1e-3)
    # No ultralytics warning per call (8.4 warned that 'half' is deprecated on every predict).
    for each, level in zip(loud, levels):
        each.setLevel(level)
    printed = capfd.readouterr()
    assert "deprecated" not in printed.out + printed.err
    # ultralytics was imported with installs and network checks switched off.
    assert os.environ["YOLO_AUTOINSTALL"] == "false" and os.environ["YOLO_OFFLINE"] == "true"


def test_yolo_onnx_session_sleeps_and_detects_like_plain_ultralytics(yolo_onnx: Path, hall_clip: Path):
    # crosscam re-opens ultralytics' onnxruntime CPU session only so its threads stop spin-waiting.
    detector = YoloDetector(DetectorConfig(model=str(yolo_onnx), device="cpu"))
    options = detector.model.predictor.model.backend.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    import ultralytics

    frames = hall_frames(hall_clip, [100, 150])
    plain = ultralytics.YOLO(str(yolo_onnx), task="detect").predict(
        [f.image for f in frames], classes=[0], conf=0.4, iou=0.5, device="cpu", verbose=False
    )
    for dets, result in zip(detector.detect(frames), plain):
        assert len(dets) == 1
        np.testing.assert_array_equal(dets.xyxy, result.boxes.xyxy.numpy())
        np.testing.assert_array_equal(dets.confidence, result.boxes.conf.numpy())


def test_yolo_fingerprint_follows_weights_and_thresholds(yolo_onnx: Path):
    a = YoloDetector(DetectorConfig(model=str(yolo_onnx)))
    b = YoloDetector(DetectorConfig(model=str(yolo_onnx), confidence=0.25))
    assert len(a.fingerprint) == 64 and a.fingerprint != b.fingerprint


@pytest.mark.parametrize("model", ["yolov5su.pt", "models/nothing_here.onnx", "fasterrcnn"])
def test_missing_model_offline_is_one_line_error(model: str):
    with pytest.raises(CrosscamError) as info:
        build_detector(DetectorConfig(model=model))
    message = str(info.value)
    assert "\n" not in message and model in message and "motion" in message


def test_a_file_that_is_not_a_model(tmp_path: Path):
    bogus = tmp_path / "weights.onnx"
    bogus.write_bytes(b"\x00" * 64)
    with pytest.raises(CrosscamError, match="ultralytics cannot load it"):
        build_detector(DetectorConfig(model=str(bogus))).detect([Frame("c", 0, 0.0, np.zeros((64, 64, 3), np.uint8))])


def textured_background(size=(320, 240), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(90, 170, (size[1], size[0], 3)).astype(np.uint8), (7, 7), 0)


def walker_frames(count: int, enter: int = 15) -> list[tuple[Frame, np.ndarray | None]]:
    """A textured static background; from frame ``enter`` one red 24x72 'person' walks right."""
    background = textured_background()
    out = []
    for i in range(count):
        image, box = background.copy(), None
        if i >= enter:
            x = 20 + 6 * (i - enter)
            box = np.array([x, 100, x + 24, 172], np.float32)
            image[100:172, x : x + 24] = (40, 30, 200)
        out.append((Frame("synthetic", i, i / 10.0, image), box))
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_motion_detector_boxes_a_moving_person():
    detector = MotionDetector(DetectorConfig(model="motion"))
    # MOG2 needs about ten frames to settle, so the person enters after those.
    results = [(detector.detect([frame])[0], box) for frame, box in walker_frames(50)]
    assert all(len(dets) == 0 for dets, box in results if box is None)  # static texture: nothing
    hits = [max((iou(d, box) for d in dets.xyxy), default=0.0) for dets, box in results if box is not None]
    assert np.mean(np.array(hits) > 0.5) > 0.9
    assert all(len(dets) <= 1 for dets, _ in results)


def test_motion_detector_filters_wrong_shapes_and_global_changes():
    detector = MotionDetector(DetectorConfig(model="motion"))
    background = textured_background()
    for i in range(10):
        detector.detect([Frame("c", i, 0.0, background)])
    flat = background.copy()
    flat[150:170, 40:200] = (40, 30, 200)  # a wide, low blob: a car or a shadow, not a standing person
    assert len(detector.detect([Frame("c", 10, 0.0, flat)])[0]) == 0
    brighter = cv2.add(background, (70, 70, 70, 0))  # exposure jump: the whole frame changes
    assert len(detector.detect([Frame("c", 11, 0.0, brighter)])[0]) == 0
    for i in range(12, 22):
        assert len(detector.detect([Frame("c", i, 0.0, brighter)])[0]) == 0  # the jump is not a person
    walker = brighter.copy()
    walker[60:180, 100:140] = (40, 30, 200)
    boxes = detector.detect([Frame("c", 22, 0.0, walker)])[0].xyxy
    assert len(boxes) == 1 and iou(boxes[0], np.array([100, 60, 140, 180])) > 0.7  # relearnt background


def test_motion_detector_primes_the_background_without_the_people_of_the_first_frames():
    # A person stands at the left for the first 2 frames and then walks away: plain MOG2 would
    # learn her as background and report a ghost where she stood.
    background = textured_background()
    frames = []
    for i in range(18):
        image = background.copy()
        x = 20 if i < 2 else 20 + 16 * (i - 1)
        image[100:172, x : x + 24] = (40, 30, 200)
        frames.append((Frame("c", i, i / 10.0, image), np.array([x, 100, x + 24, 172], np.float32)))
    detector = MotionDetector(DetectorConfig(model="motion", batch_size=8))
    results = []
    for start in range(0, len(frames), 8):  # batches, as the chain calls it
        batch = frames[start : start + 8]
        results += zip(detector.detect([f for f, _ in batch]), [b for _, b in batch])
    ghost = np.array([20, 100, 44, 172], np.float32)
    for index, (dets, box) in enumerate(results):
        assert len(dets) == 1 and iou(dets.xyxy[0], box) > 0.7, index  # her, from the first frame
        if index > 3:
            assert max(iou(d, ghost) for d in dets.xyxy) < 0.1  # and nothing where she stood


def test_motion_detector_splits_people_walking_side_by_side():
    detector = MotionDetector(DetectorConfig(model="motion"))
    background = textured_background()
    detector.detect([Frame("c", i, 0.0, background) for i in range(8)])
    pair = background.copy()
    truth = []
    for x in (100, 130):  # two touching 30x80 people, a 12x12 head on each
        pair[112:180, x : x + 30] = (40, 30, 200)
        pair[100:112, x + 9 : x + 21] = (60, 90, 140)
        truth.append(np.array([x, 100, x + 30, 180], np.float32))
    boxes = detector.detect([Frame("c", 8, 0.0, pair)])[0].xyxy
    assert len(boxes) == 2
    for box in truth:
        assert max(iou(b, box) for b in boxes) > 0.6


def test_motion_detector_keeps_one_wide_person_without_a_head_gap_whole():
    # A person carrying a wide bag at head height: a wide blob, but no dip between two heads.
    detector = MotionDetector(DetectorConfig(model="motion"))
    background = textured_background()
    detector.detect([Frame("c", i, 0.0, background) for i in range(8)])
    wide = background.copy()
    wide[100:180, 100:160] = (40, 30, 200)
    boxes = detector.detect([Frame("c", 8, 0.0, wide)])[0].xyxy
    assert len(boxes) == 1 and iou(boxes[0], np.array([100, 100, 160, 180])) > 0.8


def test_replay_reads_mot_det_txt(tmp_path: Path):
    det = tmp_path / "det.txt"
    det.write_text("1,-1,10,20,30,60,0.9,-1,-1,-1\n1,-1,100,20,30,60,0.2,-1,-1,-1\n3,-1,5.5,6,10,40,0.7,-1,-1,-1\n")
    detector = ReplayDetector(det, DetectorConfig(model="replay", confidence=0.4))
    frames = [Frame("c", i, 0.0, np.zeros((200, 200, 3), np.uint8)) for i in range(3)]
    first, second, third = detector.detect(frames)
    np.testing.assert_allclose(first.xyxy, [[10, 20, 40, 80]])  # ltwh -> xyxy, low score dropped
    assert len(second) == 0
    np.testing.assert_allclose(third.xyxy, [[5.5, 6, 15.5, 46]])
    assert first.confidence[0] == 0.9


def test_replay_takes_scores_of_another_scale_as_quantiles(tmp_path: Path, caplog):
    # MOT15's det.txt scores run from -0.5 to 139: 0.4 on that scale would keep nearly every box.
    det = tmp_path / "det.txt"
    scores = [-0.5, 3.0, 20.0, 20.0, 44.0, 139.0]
    det.write_text("".join(f"1,-1,{10 * i},20,30,60,{s},-1,-1,-1\n" for i, s in enumerate(scores)))
    detector = ReplayDetector(det, DetectorConfig(model="replay", confidence=0.4))
    boxes = detector.detect([Frame("c", 0, 0.0, np.zeros((200, 200, 3), np.uint8))])[0]
    # mid-rank quantiles 1/12, 3/12, 6/12 twice (a tie), 9/12, 11/12: the lowest two fall under 0.4
    np.testing.assert_allclose(boxes.confidence, [0.5, 0.5, 0.75, 11 / 12], rtol=1e-6)
    np.testing.assert_allclose(boxes.xyxy[:, 0], [20, 30, 40, 50])
    assert "scores run from -0.5 to 139" in caplog.text and "best-scored 60 %" in caplog.text
    # a file on 0..1 keeps its scores
    det.write_text("1,-1,10,20,30,60,0.3\n1,-1,50,20,30,60,1.0004\n")
    kept = ReplayDetector(det, DetectorConfig(model="replay", confidence=0.2)).detect(
        [Frame("c", 0, 0.0, np.zeros((200, 200, 3), np.uint8))])[0]
    np.testing.assert_allclose(kept.confidence, [0.3, 1.0], rtol=1e-6)


def test_replay_says_once_when_boxes_start_outside_the_frames(tmp_path: Path, caplog):
    """Another sequence's det.txt (PETS09-S2L1's 768x576 boxes on TUD-Campus's 640x480) is said, once."""
    det = tmp_path / "det.txt"
    det.write_text("1,-1,10,20,30,60,0.9\n2,-1,250,20,30,60,0.9\n2,-1,30,220,30,60,0.9\n")
    detector = ReplayDetector(det, DetectorConfig(model="replay", confidence=0.4))
    frames = [Frame("c", i, 0.0, np.zeros((200, 200, 3), np.uint8)) for i in range(2)]
    detector.detect(frames[:1])
    detector.detect(frames[1:])
    said = [r.getMessage() for r in caplog.records if "start outside" in r.getMessage()]
    assert said == [f"{det}: 2 boxes start outside the 200x200 frames (first: frame 2 at 250,20); is it this "
                    "sequence's det.txt?"]
    caplog.clear()
    ReplayDetector(det, DetectorConfig(model="replay")).detect([Frame("c", 0, 0.0, np.zeros((300, 300, 3), np.uint8))])
    assert "start outside" not in caplog.text


def test_replay_finds_det_txt_of_a_sequence_and_reports_missing(tmp_path: Path):
    (tmp_path / "det").mkdir()
    (tmp_path / "det" / "det.txt").write_text("2,-1,1,2,3,4,0.8\n")
    detector = build_detector(DetectorConfig(model="replay"), sequence_dir=tmp_path)
    assert detector.name == "replay" and len(detector.fingerprint) == 64
    with pytest.raises(CrosscamError, match="replay_file"):
        build_detector(DetectorConfig(model="replay"))
    with pytest.raises(CrosscamError, match="det.txt not found"):
        build_detector(DetectorConfig(model="replay", replay_file=str(tmp_path / "nope.txt")))
    (tmp_path / "bad.txt").write_text("frame id x\n")
    with pytest.raises(CrosscamError, match="not a MOTChallenge det.txt"):
        build_detector(DetectorConfig(model="replay", replay_file=str(tmp_path / "bad.txt")))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_cuda_device_without_cuda_is_said_as_such_not_as_a_bad_model_file():
    """ultralytics' 'Invalid CUDA device' came out as '--detector FILE: ultralytics cannot load it'."""
    with pytest.raises(CrosscamError, match=r"^--device cuda:0: CUDA is not available on this machine; use --device cpu or auto$"):
        YoloDetector(DetectorConfig(model="any.onnx", device="cuda:0"))


def test_ultralytics_device_names_other_than_cuda_still_reach_ultralytics(monkeypatch):
    """Checking CUDA devices refused ultralytics' own names (mps, 0) as 'unknown device'."""
    seen = []
    monkeypatch.setattr("pipeline.video.detectors._load_yolo", lambda model, device: (seen.append(device), (None, Path(model)))[1])
    monkeypatch.setattr("pipeline.video.detectors._sha256_file", lambda path: "0" * 64)
    for device in ("mps", "0", "cpu"):
        YoloDetector(DetectorConfig(model="any.onnx", device=device))
    assert seen == ["mps", "0", "cpu"]
