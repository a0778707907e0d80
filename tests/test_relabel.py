"""Finalising a camera: mergeable track accumulators, applying an id map, redrawing a video."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import SourceConfig
from pipeline.types import Frame, FrameResult, TrackObservation, read_track_summaries
from pipeline.video.annotate import render_tracks_video
from pipeline.video.relabel import DROPPED, apply_id_map, dense_id_map
from pipeline.video.render import color_for_id
from pipeline.video.sinks import MotTracksWriter, TrackSummaryWriter
from pipeline.video.sources import open_source
from pipeline.video.track_state import TrackAccumulator, read_track_states, write_track_states
from pipeline.video.tracks_file import read_camera_tracks, read_tracks_file

from conftest import read_video_frames

SIZE = (160, 120)


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def frame(index: int) -> Frame:
    image = np.full((SIZE[1], SIZE[0], 3), 60, np.uint8)
    image[:, :, 2] = (index * 7) % 250
    return Frame("cam", index, index / 10.0, image)


def walker_observations(rng, count: int, track_id: int = 1):
    """(frame, observation) of one walker; every 7th box low-confidence without a feature, frames
    20-22 interpolated."""
    base = unit(rng.normal(size=8))
    out = []
    for i in range(count):
        box = np.array([10 + i % 50, 10, 40 + i % 50, 100], np.float32)
        if 20 <= i <= 22:
            obs = TrackObservation(track_id, box, 0.0, None, interpolated=True)
        elif i % 7 == 3:
            obs = TrackObservation(track_id, box, 0.2, None)
        else:
            obs = TrackObservation(track_id, box, 0.5 + 0.4 * rng.random(), unit(base + 0.3 * rng.normal(size=8)))
        out.append((frame(i), obs))
    return out


def accumulate(observations) -> TrackAccumulator:
    acc = None
    for f, obs in observations:
        acc = acc or TrackAccumulator.start(f.index, f.time_s)
        acc.add(obs, f)
    return acc


def test_merging_two_pieces_equals_accumulating_the_whole_track():
    observations = walker_observations(np.random.default_rng(0), 200)
    whole = accumulate(observations)
    for cut in (1, 21, 97, 199):
        merged = accumulate(observations[:cut]).merge(accumulate(observations[cut:]))
        reverse = accumulate(observations[cut:]).merge(accumulate(observations[:cut]))
        for m in (merged, reverse):
            assert (m.first_frame, m.last_frame, m.start_s, m.end_s) == (0, 199, 0.0, pytest.approx(19.9))
            assert (m.num_detections, m.num_interpolated, m.features_seen) == (197, 3, whole.features_seen)
            np.testing.assert_allclose(m.feature_sum, whole.feature_sum, rtol=1e-5)
            np.testing.assert_allclose(m.mean_feature, whole.mean_feature, atol=1e-6)
            assert [h[0] for h in m.head] == [h[0] for h in whole.head] == list(range(10))
            assert [t[0] for t in m.tail] == [t[0] for t in whole.tail] == list(range(190, 200))
            assert m.interpolated == [[20, 22]] and m.is_interpolated(21) and not m.is_interpolated(23)
            assert len(m.candidates) < m.capacity  # still bounded
            assert m.thumbnail_quality == whole.thumbnail_quality and m.thumbnail == whole.thumbnail
    assert whole.num_detections == 197 and whole.features_seen == 197 - sum(i % 7 == 3 for i in range(200) if not 20 <= i <= 22)


def test_featureless_observations_alone_give_no_summary():
    acc = TrackAccumulator.start(4, 0.4)
    acc.add(TrackObservation(3, np.array([0, 0, 10, 30], np.float32), 0.15, None), frame(4))
    assert acc.num_detections == 1 and acc.mean_feature is None and acc.summary("cam", 3, 5) is None


def test_states_round_trip_through_the_files(tmp_path: Path):
    rng = np.random.default_rng(1)
    states = {1: accumulate(walker_observations(rng, 60)), 4: accumulate(walker_observations(rng, 5, 4))}
    summaries = write_track_states(tmp_path, "cam", states, representatives=3)
    assert [s.track_id for s in summaries] == [1, 4] and summaries[0].num_interpolated == 3
    back = read_track_states(tmp_path)
    for tid, state in states.items():
        got = back[tid]
        np.testing.assert_allclose(got.feature_sum, state.feature_sum, rtol=1e-6)
        assert [c[0] for c in got.candidates] == [c[0] for c in state.candidates]
        assert (got.first_frame, got.last_frame, got.num_detections, got.interpolated) == (
            state.first_frame, state.last_frame, state.num_detections, state.interpolated)
        np.testing.assert_allclose(got.tail[-1][2], state.tail[-1][2], atol=0.01)
        assert got.thumbnail == state.thumbnail
    assert [s.track_id for s in read_track_summaries(tmp_path)] == [1, 4]


def write_camera(folder: Path, tracks: dict[int, list[int]], rng) -> dict[int, list]:
    """Sinks' outputs for tracks ``{id: frames}``; returns each track's (frame, observation) list."""
    observations = {}
    for tid, frames in tracks.items():
        base = unit(rng.normal(size=8))
        observations[tid] = [
            (frame(i), TrackObservation(tid, np.array([5 + 10 * tid, 10, 35 + 10 * tid, 100], np.float32), 0.8,
                                        unit(base + 0.2 * rng.normal(size=8)), interpolated=(i == frames[1])))
            for i in frames
        ]
    last = max(i for frames in tracks.values() for i in frames)
    with TrackSummaryWriter(folder, "cam", SIZE) as summaries, MotTracksWriter(folder / "tracks.txt") as mot:
        for i in range(last + 1):
            obs = [o for tid in sorted(observations) for f, o in observations[tid] if f.index == i]
            result = FrameResult(frame(i), tracks=obs)
            summaries.write(result)
            mot.write(result)
    return observations


def test_apply_id_map_merges_fragments_consistently(tmp_path: Path):
    rng = np.random.default_rng(2)
    observations = write_camera(tmp_path, {2: list(range(0, 10)), 5: list(range(3, 8)), 9: list(range(14, 30))}, rng)
    ids = dense_id_map({9: 2}, {2: 0, 5: 3, 9: 14})
    assert ids == {2: 1, 9: 1, 5: 2}
    summaries = apply_id_map(tmp_path, ids)
    rows = read_tracks_file(tmp_path / "tracks.txt")
    assert sorted(set(rows.track_id.tolist())) == [1, 2] == [s.track_id for s in summaries]
    assert (rows.frame[rows.track_id == 1] == list(range(10)) + list(range(14, 30))).all()
    order = np.lexsort((rows.track_id, rows.frame))
    assert (order == np.arange(len(rows))).all()  # frame, then id order
    expected = accumulate(observations[2] + observations[9])
    (one, two) = read_track_summaries(tmp_path)
    assert (one.first_frame, one.last_frame, one.num_detections, one.num_interpolated) == (0, 29, 24, 2)
    np.testing.assert_allclose(one.feature, expected.mean_feature, atol=1e-6)
    assert two.num_detections == 4 and two.first_frame == 3
    assert sorted(p.name for p in (tmp_path / "thumbs").iterdir()) == ["1.jpg", "2.jpg"]
    marked = read_camera_tracks(tmp_path)
    assert sorted(marked.frame[marked.interpolated].tolist()) == [1, 4, 15]
    states = read_track_states(tmp_path)
    assert states[1].interpolated == [[1, 1], [15, 15]]


def test_a_dropped_id_leaves_every_output(tmp_path: Path):
    tracks = {1: list(range(0, 8)), 2: list(range(2, 9)), 3: list(range(5, 12))}
    write_camera(tmp_path, tracks, np.random.default_rng(5))
    summaries = apply_id_map(tmp_path, {2: DROPPED, 3: 2})
    rows = read_tracks_file(tmp_path / "tracks.txt")
    assert sorted(set(rows.track_id.tolist())) == [1, 2] == [s.track_id for s in summaries]
    assert (rows.frame[rows.track_id == 2] == list(range(5, 12))).all()  # track 3's rows, relabelled
    assert sorted(read_track_states(tmp_path)) == [1, 2]
    assert sorted(p.name for p in (tmp_path / "thumbs").iterdir()) == ["1.jpg", "2.jpg"]


def test_the_peak_confidence_survives_merging_and_the_files(tmp_path: Path):
    rng = np.random.default_rng(6)
    observations = walker_observations(rng, 40)
    a, b = accumulate(observations[:20]), accumulate(observations[20:])
    assert a.merge(b).peak_confidence == b.merge(a).peak_confidence == accumulate(observations).peak_confidence
    assert accumulate(observations).peak_confidence == max(o.confidence for _, o in observations if not o.interpolated)
    write_track_states(tmp_path, "cam", {7: a}, representatives=3)
    assert read_track_states(tmp_path)[7].peak_confidence == a.peak_confidence


def test_weak_tracks_are_judged_by_their_whole_chain():
    from pipeline.config import PipelineConfig
    from pipeline.video.finalise import final_ids, weak_tracks

    states = {tid: TrackAccumulator.start(first, first / 10.0) for tid, first in ((1, 0), (2, 40), (3, 5), (4, 60))}
    for tid, peak in ((1, 0.9), (2, 0.5), (3, 0.5), (4, 0.69)):
        states[tid].peak_confidence = peak
    assert weak_tracks(states, {2: 1}, 0.7) == {3, 4}  # 2 is a fragment of 1's chain, which reached 0.9
    assert weak_tracks(states, {}, 0.7) == {2, 3, 4} and weak_tracks(states, {2: 1}, None) == set()
    cfg = PipelineConfig.model_validate({"tracker": {"relink": False}})
    # without re-linking too, the kept ids are 1..N again and all in the map (a redrawn video draws only those)
    assert final_ids(states, cfg) == ({}, {1: 1, 2: DROPPED, 3: DROPPED, 4: DROPPED})


def test_an_id_map_that_puts_one_id_twice_in_a_frame_is_refused(tmp_path: Path):
    write_camera(tmp_path, {1: list(range(0, 6)), 2: list(range(4, 9))}, np.random.default_rng(3))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="two boxes of track 1 in frame 5"):
        apply_id_map(tmp_path, {2: 1})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    with pytest.raises(ValueError, match=">= 1"):
        apply_id_map(tmp_path, {2: -1})


def test_render_draws_mapped_ids_over_a_frame_range(tmp_path: Path):
    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, SIZE)
    for i in range(12):
        writer.write(frame(i).image)
    writer.release()
    write_camera(tmp_path / "cam", {3: list(range(0, 12)), 4: list(range(2, 6))}, np.random.default_rng(4))
    rows = read_camera_tracks(tmp_path / "cam")
    with open_source(str(video), "cam", SourceConfig()) as source:
        written = render_tracks_video(source, rows, tmp_path / "out.mp4", {3: 17}, frames=(4, 10))
    frames = read_video_frames(tmp_path / "out.mp4")
    assert written == len(frames) == 6
    left = 5 + 10 * 3  # track 3's box: x from 35
    drawn = frames[1][60, left].astype(int)  # frame 5: detected, solid edge in id 17's colour
    assert np.abs(drawn - np.array(color_for_id(17))).max() < 60
    track4 = 5 + 10 * 4
    assert np.abs(frames[1][60, track4 + 15].astype(int) - frames[1][60, track4 - 20].astype(int)).max() < 40  # 4 not drawn
    # a drawing stopped part-way (Ctrl-C while annotated_global.mp4 is drawn) leaves the earlier video
    before = (tmp_path / "out.mp4").read_bytes()
    with open_source(str(video), "cam", SourceConfig()) as source, pytest.raises(KeyboardInterrupt):
        render_tracks_video(_Stopping(source, 6), rows, tmp_path / "out.mp4", {3: 5})
    assert (tmp_path / "out.mp4").read_bytes() == before and sorted(p.name for p in tmp_path.glob("out*")) == ["out.mp4"]


class _Stopping:
    """A source whose iteration is stopped by Ctrl-C at frame ``at``."""

    def __init__(self, source, at: int):
        self.source, self.at = source, at
        self.fps, self.cfg, self.frame_size, self.frames_expected = source.fps, source.cfg, source.frame_size, source.frames_expected

    def __iter__(self):
        for f in self.source:
            if f.index == self.at:
                raise KeyboardInterrupt
            yield f
