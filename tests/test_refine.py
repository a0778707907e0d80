"""The refinements of recorded video on synthetic tracks: back-fill, low-confidence boxes,
interpolation and re-linking (units), then back-fill, interpolation and re-linking through the
real chain and CLI on a synthetic MOT sequence (replayed boxes, OSNet features)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.cli.main import main
from pipeline.config import TrackerConfig
from pipeline.types import Detections, Frame, FrameResult, TrackObservation, read_track_summaries
from pipeline.video.refine.camera_motion import CameraMotion, warp_state
from pipeline.video.refine.interpolate import fill_gap
from pipeline.video.refine.lookback import LookBack
from pipeline.video.refine.relink import TrackEnds, link_fragments
from pipeline.video.render import color_for_id
from pipeline.video.tracking import PersonTracker
from pipeline.video.tracks_file import read_camera_tracks

from conftest import shared_path


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


WALKER, GHOST = unit([1, 0.2, 0, 0]), unit([0, 0.1, 1, 0.3])


def walker_box(frame: int) -> list[float]:
    return [10 + 3 * frame, 40, 40 + 3 * frame, 130]


def test_low_confidence_boxes_extend_a_confirmed_track_and_never_start_one():
    tracker = PersonTracker(TrackerConfig(n_init=3))
    outputs = []
    for f in range(30):
        high = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 4), np.float32))
        low_boxes, low_conf = [[200, 20, 230, 110]], [0.3]  # the ghost: only ever low-confidence
        if 10 <= f < 15:  # the walker's boxes dip below the detector's confidence for 5 frames
            low_boxes.append(walker_box(f))
            low_conf.append(0.2)
        else:
            high = Detections(np.array([walker_box(f)], np.float32), np.array([0.9], np.float32), WALKER[None])
        low = Detections(np.array(low_boxes, np.float32), np.array(low_conf, np.float32))
        outputs.append(tracker.update(high, low))
    assert {o.track_id for frame in outputs for o in frame} == {1}  # one id, and no track for the ghost
    for f in range(10, 15):
        (obs,) = outputs[f]
        assert obs.feature is None and obs.confidence == pytest.approx(0.2)
        np.testing.assert_array_equal(obs.xyxy, walker_box(f))
    assert all(len(outputs[f]) == 1 for f in range(2, 30))
    # Without them the walker coasts unseen through the dip.
    plain = PersonTracker(TrackerConfig(n_init=3))
    dip = [plain.update(Detections(np.array([walker_box(f)], np.float32), np.array([0.9], np.float32), WALKER[None])
                        if not 10 <= f < 15 else Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                                                            np.zeros((0, 4), np.float32))) for f in range(30)]
    assert all(dip[f] == [] for f in range(10, 15))


def result(index: int, boxes: dict[int, list[float]]) -> FrameResult:
    obs = [TrackObservation(tid, np.array(b, np.float32), 0.9, None) for tid, b in sorted(boxes.items())]
    return FrameResult(Frame("cam", index, index / 10.0, np.zeros((2, 2, 3), np.uint8)), tracks=obs)


def test_lookback_back_fills_and_interpolates_in_frame_order():
    buffer = LookBack.for_tracker(TrackerConfig(n_init=3, interpolate="linear", interpolate_max_gap=4, smooth_sigma=0))
    assert buffer.depth == 4
    out = []
    for f in range(30):
        boxes = {}
        if f not in (5, 6, 7) and not 14 <= f < 20:  # gaps of 3 (filled) and 6 frames (longer than 4: left)
            boxes[1] = [float(f), 0, f + 10.0, 30]
        r = result(f, {k: v for k, v in boxes.items()})
        if f == 24:  # track 2 confirmed here: its tentative boxes of frames 22-23 come back
            r.tracks.append(TrackObservation(2, np.array([50, 0, 60, 30], np.float32), 0.9, None))
            r.backfill = [(22, TrackObservation(2, np.array([48, 0, 58, 30], np.float32), 0.9, None)),
                          (23, TrackObservation(2, np.array([49, 0, 59, 30], np.float32), 0.9, None))]
        elif f > 24:
            r.tracks.append(TrackObservation(2, np.array([50, 0, 60, 30], np.float32), 0.9, None))
        out += buffer.push(r)
    out += buffer.drain()
    assert [r.frame.index for r in out] == list(range(30))
    one = {r.frame.index: o for r in out for o in r.tracks if o.track_id == 1}
    assert [f for f in range(30) if f not in one] == list(range(14, 20))  # the 6-frame gap stays open
    for f in (5, 6, 7):
        assert one[f].interpolated and one[f].feature is None
        np.testing.assert_allclose(one[f].xyxy, [f, 0, f + 10, 30], atol=1e-5)  # on the straight line
    two = sorted(r.frame.index for r in out for o in r.tracks if o.track_id == 2)
    assert two == list(range(22, 30))
    assert (buffer.backfilled, buffer.interpolated) == (2, 3)


def test_smoothing_takes_out_box_jitter_and_keeps_steady_motion_exact_to_the_ends():
    rng = np.random.default_rng(7)
    buffer = LookBack.for_tracker(TrackerConfig(n_init=3, interpolate="none", smooth_sigma=3))
    assert (buffer.depth, buffer.reach) == (9, 9)
    truth = {f: np.array([2.0 * f, 10, 2.0 * f + 20, 70]) for f in range(40)}  # walker 1: 2 px per frame
    noisy = {f: box + rng.normal(0, 2.0, 4) for f, box in truth.items()}
    out = []
    for f in range(45):
        boxes = {1: noisy[f].tolist()} if f < 40 else {}
        boxes.update({2: [100.0 + f, 5, 130.0 + f, 80]} if 30 <= f else {})  # walker 2: exact, to the end
        out += buffer.push(result(f, boxes))
    out += buffer.drain()
    assert [r.frame.index for r in out] == list(range(45))
    one = {r.frame.index: o.xyxy for r in out for o in r.tracks if o.track_id == 1}
    two = {r.frame.index: o.xyxy for r in out for o in r.tracks if o.track_id == 2}
    raw_error = np.mean([np.abs(noisy[f] - truth[f]).mean() for f in range(40)])
    smooth_error = np.mean([np.abs(one[f] - truth[f]).mean() for f in range(40)])
    assert smooth_error < 0.6 * raw_error  # jitter averaged out, the ends included
    for f in range(30, 45):  # a straight line stays on itself, at its first and last frames too
        np.testing.assert_allclose(two[f], [100.0 + f, 5, 130.0 + f, 80], atol=1e-3)
    off = LookBack.for_tracker(TrackerConfig(n_init=3, interpolate="none", smooth_sigma=0))
    raw = [r for f in range(5) for r in off.push(result(f, {1: noisy[f].tolist()}))] + off.drain()
    np.testing.assert_allclose(raw[2].tracks[0].xyxy, noisy[2], atol=1e-4)  # off: boxes as detected


def test_gsi_follows_a_curve_better_than_a_line():
    frames = np.arange(0, 30)
    x = 100 + 40 * np.sin(frames / 8.0)  # a walker turning
    rows = np.stack([frames, x, 0 * x, x + 20, 0 * x + 60], axis=1)
    gap = np.arange(12, 18)
    before, after = rows[7:12], rows[18:23]
    errors = {m: np.abs(fill_gap(before, after, gap, m)[:, 0] - x[gap]).mean() for m in ("linear", "gsi")}
    assert errors["gsi"] < 0.75 * errors["linear"], errors


def ends(track_id, first, last, start_box, end_box, feature, fps=10.0, step=(3.0, 0.0)):
    """A track walking at ``step`` pixels per frame, with head/tail rows from its end boxes."""
    head = np.array([[first / fps + k / fps, *(np.array(start_box) + k * np.array([*step, *step]))] for k in range(5)])
    tail = np.array([[last / fps - (4 - k) / fps, *(np.array(end_box) - (4 - k) * np.array([*step, *step]))]
                     for k in range(5)])
    return TrackEnds(track_id, first, last, first / fps, last / fps, head, tail, feature)


def test_relinking_joins_fragments_of_one_person_only():
    a1 = ends(1, 0, 40, [0, 0, 30, 90], [120, 0, 150, 90], WALKER)
    a2 = ends(4, 60, 90, [180, 0, 210, 90], [270, 0, 300, 90], unit(WALKER + 0.1 * GHOST))  # 2 s later, further on
    a3 = ends(6, 110, 150, [330, 0, 360, 90], [450, 0, 480, 90], WALKER)
    stranger = ends(5, 62, 90, [160, 5, 190, 95], [250, 5, 280, 95], GHOST)  # near, but looks different
    far = ends(7, 45, 60, [600, 0, 630, 90], [640, 0, 670, 90], WALKER)  # looks the same, too far to walk to
    links = link_fragments([a1, a2, a3, stranger, far], max_gap_s=5.0, max_speed=1.5, max_cosine_distance=0.3)
    assert links == {4: 1, 6: 1}
    assert link_fragments([a1, a2], max_gap_s=1.0, max_speed=1.5, max_cosine_distance=0.3) == {}  # gap too long


def test_relinking_is_a_global_assignment_not_greedy():
    # A's best match is C, but only A can continue as B; D can only continue as C. Greedy would
    # give A -> C and leave B and D apart; the assignment gives A -> B and D -> C.
    f = unit([1, 0, 0, 0])
    a = ends(1, 0, 20, [0, 0, 30, 90], [60, 0, 90, 90], f)
    d = ends(2, 0, 20, [100, 0, 130, 90], [160, 0, 190, 90], unit([1, 0.3, 0, 0]))
    b = ends(3, 25, 40, [70, 0, 100, 90], [110, 0, 140, 90], unit([1, 0.45, 0, 0]))
    c = ends(4, 25, 40, [175, 0, 205, 90], [215, 0, 245, 90], unit([1, 0.05, 0, 0]))
    links = link_fragments([a, d, b, c], max_gap_s=0.6, max_speed=0.5, max_cosine_distance=0.3)
    assert links == {3: 1, 4: 2}


def random_fragments(n: int, seconds: float, seed: int) -> list[TrackEnds]:
    """``n`` short tracks of a few look-alike people spread over ``seconds`` of one camera."""
    rng = np.random.default_rng(seed)
    people = [unit(rng.normal(size=4) + [3, 0, 0, 0]) for _ in range(6)]
    out = []
    for track_id in range(1, n + 1):
        first = int(rng.uniform(0, seconds * 10))
        last = first + int(rng.integers(5, 30))
        x, y = rng.uniform(0, 400), rng.uniform(0, 40)
        feature = unit(people[rng.integers(len(people))] + 0.05 * rng.normal(size=4))
        out.append(ends(track_id, first, last, [x, y, x + 30, y + 90], [x + 3 * (last - first), y,
                                                                        x + 30 + 3 * (last - first), y + 90], feature))
    return out


def test_relinking_scores_only_pairs_within_the_gap_and_links_as_one_assignment(monkeypatch):
    """The same links as one assignment over every pair of tracks, from a number of pairs scored
    that grows with the tracks, not with their square (3,500 tracks took 24 s and a 3,500^2 matrix)."""
    from scipy.optimize import linear_sum_assignment

    import pipeline.video.refine.relink as relink

    settings = dict(max_gap_s=3.0, max_speed=1.5, max_cosine_distance=0.3)
    for seed in range(3):
        fragments = random_fragments(120, 60.0, seed)
        cost = np.full((120, 120), 1e6)
        for i, a in enumerate(fragments):
            for j, b in enumerate(fragments):
                c = relink.link_cost(a, b, **settings) if i != j else np.inf
                cost[i, j] = c if np.isfinite(c) else 1e6
        successor = {fragments[i].track_id: fragments[j].track_id
                     for i, j in zip(*linear_sum_assignment(cost)) if cost[i, j] < 1e6}
        expected = relink.chain_links(fragments, successor)
        assert expected and relink.link_fragments(fragments, **settings) == expected  # look-alikes: chains form
    calls = []
    original = relink.link_cost
    monkeypatch.setattr(relink, "link_cost", lambda *a, **k: calls.append(1) or original(*a, **k))
    relink.link_fragments(random_fragments(2000, 2000.0, 7), **settings)
    assert len(calls) < 20 * 2000  # every pair would be 4 million


def test_camera_motion_moves_tracks_with_the_picture():
    rng = np.random.default_rng(0)
    scene = cv2.GaussianBlur(rng.integers(0, 255, (300, 420, 3), dtype=np.uint8), (31, 31), 0)  # smooth, as photos are
    for method in ("ecc", "flow"):
        motion = CameraMotion(method)
        assert motion.estimate(scene[20:260, 20:340]) is None
        affine = motion.estimate(scene[20:260, 26:346])  # the camera panned 6 px right: content moves left
        np.testing.assert_allclose(affine[:, 2], [-6, 0], atol=0.5)
        mean, cov = warp_state(np.array([100, 50, 0.4, 80, 1, 0, 0, 0], float), np.eye(8), affine)
        assert mean[0] == pytest.approx(94, abs=0.5) and cov.shape == (8, 8)


# --- through the chain: a synthetic MOT sequence, replayed boxes, OSNet features ---------------

def make_sequence(folder: Path, hidden: range, sign: float | None = None, walker_confidence: float = 0.95) -> Path:
    """Two people on a textured floor: A walks right from frame 10 on (hidden by a "pillar", no
    box, in ``hidden``; its boxes at ``walker_confidence``, 0.95 in its frame 40); B stands still
    from frame 0. With ``sign``, a small grey sign at the bottom is detected in every frame with
    that confidence. 60 frames of 240x180 at 10 fps."""
    seq = folder / "SEQ"
    (seq / "img1").mkdir(parents=True)
    (seq / "det").mkdir()
    (seq / "seqinfo.ini").write_text("[Sequence]\nname=SEQ\nframeRate=10\n")
    rng = np.random.default_rng(5)
    background = cv2.GaussianBlur(rng.integers(60, 200, (180, 240, 3)).astype(np.uint8), (5, 5), 0)
    lines = []
    for i in range(60):
        image = background.copy()
        image[30:150, 190:220] = (40, 200, 40)
        lines.append(f"{i + 1},-1,190,30,30,120,0.95,-1,-1,-1")
        if sign is not None:
            image[155:175, 120:140] = (128, 128, 128)
            lines.append(f"{i + 1},-1,120,155,20,20,{sign},-1,-1,-1")
        if i >= 10:
            x = 3 * (i - 10)
            image[40:150, x : x + 30] = (200, 60, 30)
            image[40:70, x : x + 30] = (30, 30, 200)
            if i not in hidden:
                lines.append(f"{i + 1},-1,{x},40,30,110,{0.95 if i == 40 else walker_confidence},-1,-1,-1")
        cv2.imwrite(str(seq / "img1" / f"{i + 1:06d}.png"), image)
    (seq / "det" / "det.txt").write_text("\n".join(lines) + "\n")
    return seq


def track(seq: Path, out: Path, osnet: Path, *sets: str) -> Path:
    argv = ["track", str(seq), "--out", str(out), "--detector", "replay", "--reid", str(osnet), "--no-identities",
            "--quiet", "--json"]
    for item in sets:
        argv += ["--set", item]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    return out / "SEQ"


def mot_rows(folder: Path) -> np.ndarray:
    return np.loadtxt(folder / "tracks.txt", delimiter=",", ndmin=2).reshape(-1, 10)


def test_backfill_and_interpolation_reach_every_output(tmp_path: Path, osnet_onnx: Path):
    seq = make_sequence(tmp_path, hidden=range(30, 34))
    folder = track(seq, tmp_path / "on", osnet_onnx)
    rows = mot_rows(folder)
    assert (np.diff(rows[:, 0]) >= 0).all()  # frame order
    walker = rows[rows[:, 2] < 185]
    assert len(set(walker[:, 1])) == 1 and walker[:, 0].min() == 11  # from the frame A appears (1-based 11)
    assert sorted(walker[:, 0].astype(int)) == list(range(11, 61))  # the hidden frames are filled in too
    (summary,) = [s for s in read_track_summaries(folder) if s.track_id == int(walker[0, 1])]
    assert (summary.first_frame, summary.num_interpolated, summary.num_detections) == (10, 4, 46)
    entry = [e for e in json.loads((folder / "tracks.json").read_text()) if e["track_id"] == summary.track_id][0]
    assert entry["state"]["interpolated"] == [[30, 33]]
    marked = read_camera_tracks(folder)
    assert sorted(marked.frame[marked.interpolated].tolist()) == [30, 31, 32, 33]
    frames = read_video(folder / "annotated.mp4")
    assert len(frames) == 60
    edge = frames[10][100, 0:3].astype(int).mean(axis=0)  # A's left edge in its first frame: drawn
    assert np.abs(edge - np.array(color_for_id(int(walker[0, 1])))).max() < 70
    off = mot_rows(track(seq, tmp_path / "off", osnet_onnx, "tracker.backfill=false", "tracker.interpolate=none"))
    walker_off = off[off[:, 2] < 185]
    assert walker_off[:, 0].min() == 12 and not set(range(31, 35)) & set(walker_off[:, 0].astype(int))  # from its n_init-th (2nd) frame
    # n_init 1 without gaps or smoothing: the buffer still holds the frame before confirmation
    once = mot_rows(track(seq, tmp_path / "n1", osnet_onnx, "tracker.n_init=1", "tracker.interpolate=none",
                          "tracker.smooth_sigma=0"))
    assert once[once[:, 2] < 185][:, 0].min() == 11


def test_relinking_keeps_one_id_through_a_long_occlusion_and_redraws_the_video(tmp_path: Path, osnet_onnx: Path):
    seq = make_sequence(tmp_path, hidden=range(25, 40))  # hidden 1.5 s, longer than max_age below
    short = ("tracker.max_age=5", "tracker.interpolate=none")
    apart = mot_rows(track(seq, tmp_path / "apart", osnet_onnx, *short, "tracker.relink=false"))
    assert len(set(apart[apart[:, 2] < 185][:, 1])) == 2  # DeepSORT alone: a new track after the pillar
    folder = track(seq, tmp_path / "linked", osnet_onnx, *short)
    rows = mot_rows(folder)
    walker = rows[rows[:, 2] < 185]
    assert len(set(walker[:, 1])) == 1 and set(rows[:, 1]) == {1, 2}  # one id, ids dense by first appearance
    record = json.loads((folder / "run.json").read_text())
    assert record["relinked"] == {"links": 1, "ids_changed": 1, "dropped": 0, "video_redrawn": True}
    assert sorted(s.track_id for s in read_track_summaries(folder)) == [1, 2]
    late = read_video(folder / "annotated.mp4")[50]  # after the pillar: drawn with the re-linked id, as tracks.txt says
    x = int(walker[walker[:, 0] == 51][0, 2])
    assert np.abs(late[100, x : x + 2].astype(int).mean(axis=0) - np.array(color_for_id(int(walker[0, 1])))).max() < 70
    assert not list(folder.glob("*.relinked*")) and not list(folder.glob("*.partial*"))


def test_a_track_the_detector_was_never_sure_of_is_dropped_from_every_output(tmp_path: Path, osnet_onnx: Path):
    # The sign's boxes pass detector.confidence (0.4) but none reaches tracker.min_peak_confidence
    # (0.7); the walker's reach it in one frame only and its weaker boxes stay.
    seq = make_sequence(tmp_path, hidden=range(0), sign=0.55, walker_confidence=0.5)
    kept = mot_rows(track(seq, tmp_path / "all", osnet_onnx, "tracker.min_peak_confidence=null"))
    assert len(set(kept[:, 1])) == 3 and (kept[:, 3] == 155).sum() == 60  # the sign, tracked
    folder = track(seq, tmp_path / "filtered", osnet_onnx)
    rows = mot_rows(folder)
    assert not (rows[:, 3] == 155).any() and set(rows[:, 1]) == {1, 2}  # no sign; ids dense again
    walker = rows[rows[:, 2] < 185]
    assert len(set(walker[:, 1])) == 1 and sorted(walker[:, 0].astype(int)) == list(range(11, 61))
    assert sorted(s.track_id for s in read_track_summaries(folder)) == [1, 2]
    relinked = json.loads((folder / "run.json").read_text())["relinked"]
    # the sign dropped, one kept track renumbered (ids_changed counted the dropped one too)
    assert relinked == {"links": 0, "ids_changed": 1, "dropped": 1, "video_redrawn": True}
    drawn, filtered = (read_video(f / "annotated.mp4") for f in (tmp_path / "all" / "SEQ", folder))
    assert len(drawn) == len(filtered) == 60
    edge = (165, slice(119, 122))  # the sign's left edge: its box drawn in one video only
    assert np.abs(drawn[30][edge].astype(int) - filtered[30][edge].astype(int)).max() > 60
    assert np.abs(filtered[30][edge].astype(int) - filtered[30][165, 110:113].astype(int)).max() < 40
    # without re-linking too: ids dense again, and the kept tracks drawn in the redrawn video
    apart = track(seq, tmp_path / "no-relink", osnet_onnx, "tracker.relink=false")
    rows = mot_rows(apart)
    assert set(rows[:, 1]) == {1, 2} and not (rows[:, 3] == 155).any()
    walker_id = int(rows[rows[:, 2] < 185][0, 1])
    left_edge = read_video(apart / "annotated.mp4")[30][100, 60:63].astype(int).mean(axis=0)  # the walker's, x = 60
    assert np.abs(left_edge - np.array(color_for_id(walker_id))).max() < 70


def read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    images = []
    while (got := cap.read())[0]:
        images.append(got[1])
    return images
