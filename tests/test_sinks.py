"""Output writers and drawing: annotated video, MOT tracks.txt, track summaries + thumbnails."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.types import Frame, FrameResult, TrackObservation, read_track_summaries
from pipeline.video.render import color_for_id, draw_caption, draw_tracks
from pipeline.video.sinks import AnnotatedVideoWriter, MotTracksWriter, TrackSummaryWriter
from pipeline.video.track_state import farthest_point_representatives, observation_quality
from reid.errors import CrosscamError

SIZE = (160, 120)


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def result(index: int, tracks: list[tuple[int, list[float], float, np.ndarray]]) -> FrameResult:
    image = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
    image[:, :, 1] = index % 250  # each frame differs
    obs = [TrackObservation(tid, np.array(box, np.float32), conf, feat) for tid, box, conf, feat in tracks]
    return FrameResult(Frame("cam", index, index / 10.0, image), tracks=obs)


def test_colors_are_stable_and_distinct():
    colors = [color_for_id(i) for i in range(1, 41)]
    assert colors == [color_for_id(i) for i in range(1, 41)]
    assert len(set(colors)) == 40
    assert all(max(c) > 150 for c in colors)  # bright enough to see on dark footage
    first = np.array(colors[:20], int)  # ids seen together: far apart (golden-ratio hues gave 2 and 10 one lime)
    assert min(np.abs(a - b).sum() for i, a in enumerate(first) for b in first[i + 1:]) >= 70


def test_draw_tracks_colors_boxes_by_id_and_keeps_input():
    image = np.zeros((120, 160, 3), np.uint8)
    out = draw_tracks(image, np.array([[10, 30, 60, 110], [90, 30, 150, 110]], np.float32), np.array([3, 8]),
                      labels=["a", "b"], trails={3: [(20, 110), (30, 112), (35, 111)]})
    assert not image.any()
    assert tuple(out[70, 10]) == color_for_id(3) and tuple(out[70, 150]) == color_for_id(8)


def test_labels_stay_inside_the_frame_and_above_every_box():
    image = np.zeros((120, 160, 3), np.uint8)
    # box 10 at the right edge (its label "10" ran past the frame and read "1"); box 4's outline crosses
    # where box 10's label goes (a box drawn after a label painted over it)
    out = draw_tracks(image, np.array([[150, 40, 160, 100], [120, 20, 158, 60]], np.float32), np.array([10, 4]))
    label = np.all(out[:, :, :] == color_for_id(10), axis=2)[:40]  # the filled label of id 10
    columns = np.flatnonzero(label.any(axis=0))
    assert columns.max() <= 159 and columns.max() - columns.min() >= 15  # both digits' background, inside
    rows = np.flatnonzero(label.any(axis=1))
    top = out[rows.min() + 1: rows.max(), columns.min() + 1: columns.max()]
    assert not np.all(top == color_for_id(4), axis=2).any()  # box 4's outline does not cross the label


def test_mot_writer_format_and_finalise_on_error(tmp_path: Path):
    path = tmp_path / "cam" / "tracks.txt"
    feat = unit([1, 0])
    with pytest.raises(RuntimeError):
        with MotTracksWriter(path) as mot:
            mot.write(result(0, [(2, [10.5, 20, 40, 80], 0.91, feat)]))
            mot.write(result(1, []))
            mot.write(result(4, [(2, [12, 21, 42, 81], 0.8, feat), (5, [100, 10, 130, 90], 0.5, feat)]))
            assert not path.exists()  # only the partial file exists while writing
            raise RuntimeError("Ctrl-C or a crash mid-run")
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    assert rows.shape == (3, 10)
    np.testing.assert_allclose(rows[0], [1, 2, 10.5, 20, 29.5, 60, 0.91, -1, -1, -1])
    assert rows[:, 0].tolist() == [1, 5, 5] and rows[:, 1].tolist() == [2, 2, 5]
    assert not any(p.name.endswith(".partial.txt") for p in path.parent.iterdir())


def test_video_writer_writes_every_frame_and_survives_interrupt(tmp_path: Path):
    path = tmp_path / "annotated.mp4"
    feat = unit([1, 0])
    with pytest.raises(KeyboardInterrupt):
        with AnnotatedVideoWriter(path, 10.0, SIZE, trail_length=5) as video:
            for i in range(12):
                video.write(result(i, [(7, [20 + i, 20, 60 + i, 100], 0.9, feat)] if i % 3 else []))
            raise KeyboardInterrupt
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    assert len(frames) == 12 and frames[0].shape == (SIZE[1], SIZE[0], 3)
    drawn = frames[1][60, 21].astype(int)  # left edge of track 7's box in frame 1
    assert np.abs(drawn - np.array(color_for_id(7))).max() < 60  # lossy codec, same colour


def test_track_summaries_feature_representatives_and_thumbnails(tmp_path: Path):
    rng = np.random.default_rng(0)
    base = unit(rng.normal(size=16))
    feats, quals = [], []
    with TrackSummaryWriter(tmp_path, "cam", SIZE, representatives=5) as summaries:
        for i in range(300):  # a long track: the sink must not keep every feature
            feat = unit(base + 0.3 * rng.normal(size=16))
            box, conf = [30, 10, 60, 100], 0.5 + 0.4 * (i == 123)
            summaries.write(result(i, [(4, box, conf, feat)]))
            obs = TrackObservation(4, np.array(box, np.float32), conf, feat)
            feats.append(feat)
            quals.append(observation_quality(obs, SIZE))
        summaries.write(result(300, [(9, [0, 0, 20, 50], 0.7, unit(rng.normal(size=16)))]))
        acc = summaries.tracks[4]
        assert len(acc.candidates) < 4 * 5  # bounded sample of a 300-observation track
    (s4, s9) = read_track_summaries(tmp_path)
    assert (s4.track_id, s4.first_frame, s4.last_frame, s4.num_detections) == (4, 0, 299, 300)
    assert s4.start_s == pytest.approx(0.0) and s4.end_s == pytest.approx(29.9)
    expected = unit(np.sum(np.array(quals)[:, None] * np.array(feats), axis=0))
    np.testing.assert_allclose(s4.feature, expected, atol=1e-5)
    assert 2 <= len(s4.representatives) <= 5
    np.testing.assert_allclose(np.linalg.norm(s4.representatives, axis=1), 1.0, atol=1e-5)
    gram = s4.representatives @ s4.representatives.T
    assert (gram[~np.eye(len(gram), dtype=bool)] < 0.9999).all()  # distinct features
    np.testing.assert_allclose(s4.representatives[0], feats[0], atol=1e-5)  # best crop first (first sample)
    assert s9.num_detections == 1 and len(s9.representatives) == 1
    thumb = cv2.imread(str(tmp_path / s4.thumbnail))
    assert thumb is not None and thumb.shape[:2] == (90, 30)
    assert (tmp_path / "thumbs" / "9.jpg").is_file()


def test_quality_prefers_confident_large_uncut_boxes():
    feat = unit([1, 0])
    good = TrackObservation(1, np.array([30, 10, 60, 110], np.float32), 0.9, feat)
    small = TrackObservation(1, np.array([30, 10, 40, 40], np.float32), 0.9, feat)
    cut = TrackObservation(1, np.array([0, 10, 30, 110], np.float32), 0.9, feat)
    unsure = TrackObservation(1, np.array([30, 10, 60, 110], np.float32), 0.3, feat)
    q = observation_quality(good, SIZE)
    assert q > observation_quality(small, SIZE) and q > observation_quality(cut, SIZE)
    assert q > observation_quality(unsure, SIZE)


def test_farthest_point_picks_distinct_directions():
    a, b, c = unit([1, 0, 0]), unit([0, 1, 0]), unit([0, 0, 1])
    candidates = [(0.9, a), (0.5, a), (0.4, unit([1, 0.05, 0])), (0.3, b), (0.2, c)]
    reps = farthest_point_representatives(candidates, 3)
    np.testing.assert_allclose(reps, np.stack([a, b, c]), atol=1e-6)
    assert len(farthest_point_representatives([(0.5, a), (0.4, a)], 5)) == 1  # duplicates collapse


def test_no_tracks_gives_valid_empty_outputs(tmp_path: Path):
    with TrackSummaryWriter(tmp_path, "cam", SIZE) as summaries, MotTracksWriter(tmp_path / "tracks.txt") as mot:
        for i in range(3):
            summaries.write(result(i, []))
            mot.write(result(i, []))
    assert read_track_summaries(tmp_path) == []
    assert (tmp_path / "tracks.txt").read_text() == ""
    assert (tmp_path / "thumbs").is_dir()


def test_a_video_too_slow_to_write_says_which_stride(tmp_path: Path, capfd):
    """--stride 20000 on a 10 fps video: OpenCV's error lines, then 'cannot write .mp4 with mp4v; use mp4v'."""
    from reid.errors import CrosscamError

    with pytest.raises(CrosscamError, match=r"annotated.mp4 at 0.0005 frames/s \(the source's rate over --stride\) "
                                            r"cannot be written; give a smaller --stride"):
        AnnotatedVideoWriter(tmp_path / "annotated.mp4", fps=10 / 20000, frame_size=(64, 48))
    with AnnotatedVideoWriter(tmp_path / "slow.mp4", fps=10 / 5000, frame_size=(64, 48)) as video:  # the slowest written
        video.write(FrameResult(Frame("c", 0, 0.0, np.zeros((48, 64, 3), np.uint8)), tracks=[]))
    assert (tmp_path / "slow.mp4").is_file() and not (tmp_path / "annotated.mp4").exists()
    assert "ERROR" not in capfd.readouterr().err


def test_a_writer_that_does_not_open_on_a_full_disk_says_the_disk_not_the_codec(tmp_path: Path, monkeypatch):
    """OpenCV only says its writer did not open: with under 1 MiB free the error is the disk's."""
    from types import SimpleNamespace

    from pipeline.cli.main import out_of_space
    from pipeline.video import sinks
    from reid import paths

    monkeypatch.setattr(sinks, "_video_writer", lambda *args: SimpleNamespace(isOpened=lambda: False))
    with pytest.raises(CrosscamError, match="output.codec='mp4v': OpenCV cannot write .mp4"):  # space enough: the codec
        AnnotatedVideoWriter(tmp_path / "annotated.mp4", 10.0, (64, 48))
    monkeypatch.setattr(paths.os, "statvfs", lambda path: SimpleNamespace(f_bavail=100, f_frsize=4096))
    with pytest.raises(OSError) as full:
        AnnotatedVideoWriter(tmp_path / "annotated.mp4", 10.0, (64, 48))
    assert out_of_space(full.value).startswith(f"no space left on the device for {tmp_path}:")
    assert list(tmp_path.iterdir()) == []  # the probe removed


def test_labels_of_boxes_that_start_at_one_corner_do_not_cover_each_other():
    """Two people's boxes from almost the same top-left corner: one id was drawn over the other's."""
    from pipeline.video.render import place_labels

    boxes = [(100, 80, 140, 200), (102, 82, 150, 210), (98, 79, 135, 190), (101, 81, 145, 205)]
    (tw, th), base = cv2.getTextSize("1", cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)  # draw_tracks' text on a 320x240 frame
    rects = place_labels(boxes, [(tw + 4, th + base + 2)] * 4, 320, 240)
    assert all(rects[i][0] + rects[i][2] <= rects[j][0] or rects[j][0] + rects[j][2] <= rects[i][0]
               or rects[i][1] + rects[i][3] <= rects[j][1] or rects[j][1] + rects[j][3] <= rects[i][1]
               for i in range(4) for j in range(i))
    image = draw_tracks(np.full((240, 320, 3), 255, np.uint8), np.array(boxes, np.float32), np.array([1, 2, 3, 4]))
    for (left, top, w, h), track_id in zip(rects, (1, 2, 3, 4)):  # each label shows where it was placed, uncovered
        tag = image[top : top + h, left : left + w]
        assert (tag == np.array(color_for_id(track_id), np.uint8)).all(axis=2).mean() > 0.6, track_id


def test_a_video_cut_short_by_a_full_disk_is_refused_not_kept(tmp_path: Path):
    """OpenCV's writer fails silently when the disk fills up: the MP4 lacks its index and holds no
    readable frame, and crosscam called the camera complete."""
    from reid.paths import check_video_written

    frame = Frame("cam", 0, 0.0, np.zeros((48, 64, 3), np.uint8))
    with AnnotatedVideoWriter(tmp_path / "annotated.mp4", 10.0, (64, 48)) as video:
        for _ in range(20):
            video.write(FrameResult(frame))
    check_video_written(tmp_path / "annotated.mp4", 20)  # whole: passes
    cut = tmp_path / "cut.mp4"
    whole = (tmp_path / "annotated.mp4").read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])  # as a full disk leaves it: its index cut off
    with pytest.raises(CrosscamError, match=r"annotated.mp4: written incompletely \(0 of 20 frames readable\): the disk"):
        check_video_written(cut, 20, tmp_path / "annotated.mp4")


def test_each_video_says_which_ids_its_boxes_carry_in_a_caption(tmp_path: Path):
    """annotated.mp4 (track ids) and annotated_global.mp4 (identities) looked alike: nothing said which was which."""
    frames = {}
    for ids in ("tracks", "identities"):
        path = tmp_path / f"{ids}.mp4"
        with AnnotatedVideoWriter(path, 10.0, (640, 360), ids=ids) as video:
            image = np.full((360, 640, 3), 200, np.uint8)
            video.write(FrameResult(Frame("cam", 0, 0.0, image), tracks=[]))
        frames[ids] = cv2.VideoCapture(str(path)).read()[1].astype(int)
    for image in frames.values():  # a dark band with light text at the bottom left, the rest untouched
        band = image[-14:, :150]
        assert band.mean() < 120 and band.max() > 180 and np.abs(image[:300] - 200).max() < 12
    differ = np.abs(frames["tracks"] - frames["identities"]).max(axis=2) > 60
    rows, cols = np.nonzero(differ)
    assert len(rows) > 20 and rows.min() >= 330 and cols.max() < 400  # only the captions' words differ


@pytest.mark.parametrize("size", [(1080, 1920), (240, 180), (16, 16)])
def test_a_caption_fits_its_frame_or_is_left_out(size):
    image = np.full((size[1], size[0], 3), 200, np.uint8)
    text = "a-long-camera-name | frame 123456 | video 01:02:03.4 | ids: identities across cameras"
    draw_caption(image, text)
    if min(size) < 200:  # too small to read: nothing drawn
        assert not (image != 200).any()
    else:  # the text ends before the frame's edge (not cut), in a band below 8 % of its height
        text_columns = np.nonzero((image > 230).all(axis=2).any(axis=0))[0]
        assert 0 < text_columns.max() < size[0] - 1 and (image != 200).any(axis=(1, 2)).sum() < 0.08 * size[1]


def test_a_long_camera_name_shortens_the_caption_before_it_goes():
    """At 320x240 a 30-character camera name left no caption at all: not even which ids the boxes carry."""
    image = np.full((240, 320, 3), 200, np.uint8)
    long_name = "entrance north parking lvl2 east"
    draw_caption(image, [f"{long_name} | frame 12 | video 00:00:01.2 | ids: this camera's tracks", "frame 12 | ids: this camera's tracks"])
    assert (image[-20:] != 200).any() and not (image[:-20] != 200).any()  # drawn: the short one, in the bottom band
