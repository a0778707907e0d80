"""Scale-out without a cluster: unit planning, stitching, the worker's jobs run in this process,
and joining videos. Ray itself is exercised in test_scale_ray.py."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.boxes import iou_matrix
from pipeline.cli.main import main
from pipeline.config import SourceConfig, load_pipeline_config
from pipeline.metrics import evaluate_mot
from pipeline.scale.cluster import check_reachable
from pipeline.demo import write_gt_detections
from pipeline.scale import concat
from pipeline.scale.concat import PieceSpool, concat_mp4
from pipeline.scale.overlaps import OverlapBoard
from pipeline.scale.stitch import stitch_segments
from pipeline.scale.units import lookahead_frames, plan_camera
from pipeline.scale.worker import SegmentWorker
from pipeline.video.sources import open_source
from pipeline.video.tracks_file import TrackRows
from reid.errors import CrosscamError
from samples import SceneOptions, make_scene

from conftest import REPO, read_video_frames
from test_track_cli import count_video_frames


@pytest.mark.parametrize("total", [1, 59, 60, 61, 119, 250, 1394])
def test_owned_ranges_cover_every_frame_once(total):
    units = plan_camera("c", "c.mp4", total, fps=10.0, segment_s=3.0, overlap_s=1.0)
    owned = np.concatenate([np.arange(u.owned.start, u.owned.end) for u in units])
    assert owned.tolist() == list(range(total))
    for u in units:
        assert u.frames.start <= u.owned.start < u.owned.end <= u.frames.end  # owned frames are read
    for earlier, later in zip(units, units[1:]):
        assert earlier.frames.end - later.frames.start == earlier.overlap == 10  # they share the overlap
        assert later.owned.start == earlier.frames.end  # a whole overlap to settle before owning frames
    assert all(u.frames.length <= 30 + 10 + 15 for u in units)  # a short tail joins its neighbour


@pytest.mark.parametrize("workers, expected", [(1, 5), (2, 4), (3, 6), (4, 4), (8, 8), (16, 5)])
def test_segments_even_out_over_the_workers(workers, expected):
    """The shared clip's 1394 frames in 30 s segments: 4.5 segments' worth, so five on one worker,
    a multiple of the workers where that keeps segments within half and 1.5 segment_s, and all of
    one length (the last may differ by a frame)."""
    units = plan_camera("c", "c.mp4", 1394, 10.0, 30.0, 4.0, workers)
    assert len(units) == expected and all(u.segments == expected for u in units)
    new_frames = [later.frames.start - earlier.frames.start for earlier, later in zip(units, units[1:])]
    assert max(new_frames) - min(new_frames) <= 1 and 150 <= min(new_frames) and max(new_frames) <= 450
    assert units[-1].frames.end == 1394 and units[-1].frames.length - units[0].frames.length in (-1, 0, 1)


def test_streams_unknown_lengths_and_segment_zero_are_one_unit():
    assert len(plan_camera("c", "rtsp://x/c", None, 25.0, 300.0, 4.0)) == 1
    (unit,) = plan_camera("c", "c.mp4", 10_000, 25.0, 0.0, 4.0)
    assert (unit.frames.start, unit.frames.end, unit.segments) == (0, 10_000, 1)


def _gt(rows: TrackRows) -> np.ndarray:
    """Rows as a MOTChallenge gt table (frame 1-based, x, y, w, h, flag 1, class 1, visibility 1)."""
    wh = rows.xyxy[:, 2:] - rows.xyxy[:, :2]
    return np.column_stack([rows.frame + 1, rows.track_id, rows.xyxy[:, :2], wh, np.ones((len(rows), 3))])


def idf1_against(truth: TrackRows, pred: TrackRows) -> float:
    """IDF1 of ``pred`` with ``truth`` as ground truth (1 when both are empty)."""
    if len(truth) == 0:
        return float(len(pred) == 0)
    return evaluate_mot(_gt(truth), _gt(pred)[:, :6]).idf1


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scene")
    make_scene(SceneOptions(cameras=1, people=6, seconds=10.0, seed=4, occlusion=0.3), out, progress=False)
    return out


@pytest.fixture(scope="module")
def worker() -> SegmentWorker:
    cfg = load_pipeline_config(REPO / "configs" / "demo.yaml", ["reid.runtime=torch"])
    return SegmentWorker(cfg.model_dump(mode="json"), threads=2)


def _track(worker: SegmentWorker, spec: str, segment_s: float, overlap_s: float = 1.5):
    probe = worker.probe(spec, "cam")
    units = plan_camera("cam", spec, probe.frames_total, probe.fps, segment_s, overlap_s, lookahead=lookahead_frames(worker.cfg))
    results = [worker.track(u, probe.colour) for u in units]
    return units, results


class Tally:
    """The Ray progress counter's ``add.remote(key, frames)``, in process."""

    def __init__(self):
        self.frames, self.add = 0, self

    def remote(self, key: str, frames: int) -> None:
        self.frames += frames


def test_stitched_segments_equal_the_whole_video(scene, worker):
    """A synthetic camera cut into 3 segments: the stitched tracks score IDF1 >= 0.98 against the
    unsplit run, every frame is owned once, and tracks that cross a cut keep one id."""
    spec = str(scene / "cam1.mp4")
    _, (whole,) = _track(worker, spec, 0.0)
    worker.progress = tally = Tally()
    try:
        units, parts = _track(worker, spec, 3.0)
    finally:
        worker.progress = None
    assert len(units) == 3 and tally.frames == 100  # progress counts each source frame once (overlaps counted twice)
    rows, states, joins = stitch_segments(parts)
    whole_rows = whole.rows.sorted()
    assert idf1_against(whole_rows, rows) >= 0.98
    assert sum(p.owned_frames_read for p in parts) == whole.owned_frames_read == 100
    assert sorted(states) == list(range(1, len(states) + 1))  # dense ids
    assert sum(s.num_detections + s.num_interpolated for s in states.values()) == len(rows)  # boxes + filled gaps
    crossing = tracks_through_cuts_keep_one_id(whole_rows, rows, [u.owned.start for u in units[1:]])
    assert crossing >= 2 and joins >= crossing


class BoardHere:
    """A unit's view of an :class:`OverlapBoard` held in this process (the Ray actor's state; the
    driver's :class:`pipeline.scale.overlaps.UnitOverlaps` reaches it through Ray instead)."""

    def __init__(self, unit, board: OverlapBoard):
        self.unit, self.board, self.reused = unit, board, 0

    def wanted(self, index: int) -> bool:
        return self.unit.in_overlap(index)

    def lookup(self, indices):
        found = self.board.lookup(self.unit.camera, indices)
        self.reused += len(found)
        return found

    def publish(self, found) -> None:
        self.board.publish(self.unit.camera, found)


def test_neighbouring_units_compute_their_shared_frames_once(scene):
    """Units 0 and 2 first, then 1 (two workers' order): unit 1 takes both of its overlaps from its
    neighbours instead of detecting and embedding them, and every unit's results are those it
    computes alone. The motion detector (stateful) shares nothing."""
    spec = str(scene / "cam1.mp4")
    det = write_gt_detections(scene, "cam1")
    cfg = load_pipeline_config(REPO / "configs" / "demo.yaml",
                               ["reid.runtime=torch", "detector.model=replay", f"detector.replay_file={det}"])
    replay = SegmentWorker(cfg.model_dump(mode="json"), threads=2)
    probe = replay.probe(spec, "cam1")
    units = plan_camera("cam1", spec, probe.frames_total, probe.fps, 3.0, 1.5, lookahead=lookahead_frames(cfg))
    assert len(units) == 3 and units[0].overlap == 15 and units[0].lookahead == lookahead_frames(cfg) == 20
    alone = [replay.track(u, probe.colour) for u in units]
    board = OverlapBoard()
    views = [BoardHere(u, board) for u in units]
    shared = {k: replay.track(units[k], probe.colour, views[k]) for k in (0, 2, 1)}
    # each overlap and the look-ahead past it computed once: unit 1 takes both of its neighbours',
    # and unit 2 the 6 frames of unit 0's look-ahead that reach past unit 1's first owned frames
    assert [(u.frames.start, u.frames.end) for u in units] == [(0, 63), (28, 92), (57, 100)]
    assert [v.reused for v in views] == [0, 64, 6]
    assert shared[1].reused_frames == 64
    for k, result in shared.items():
        assert np.array_equal(result.rows.xyxy, alone[k].rows.xyxy)
        assert np.array_equal(result.rows.track_id, alone[k].rows.track_id)
        # the same crops in the same batches: equal but for the last float bit (torch's kernels may
        # round a sum differently with the memory's alignment)
        assert np.allclose(result.boundary.feature, alone[k].boundary.feature, rtol=0, atol=1e-6, equal_nan=True)
        for track_id, state in result.states.items():
            assert np.allclose(state.feature_sum, alone[k].states[track_id].feature_sum, rtol=0, atol=1e-5)
    motion = SegmentWorker(load_pipeline_config(REPO / "configs" / "demo.yaml", ["reid.runtime=torch"])
                           .model_dump(mode="json"), threads=2)
    fresh = OverlapBoard()
    for unit in units[:2]:
        motion.track(unit, probe.colour, BoardHere(unit, fresh))
    assert fresh.lookup("cam1", list(range(100))) == {}


def test_a_gap_or_a_late_start_at_a_cut_is_filled_as_in_one_pass(tmp_path):
    """A person missed in frames 40-47 around the cut at frame 45, and one first seen at frame 44:
    the segment owning the frames before the cut reads past it (its look-ahead), so the gap is
    interpolated and the late track back-filled there as in the unsplit run."""
    size, frames = (160, 120), 80
    video = cv2.VideoWriter(str(tmp_path / "seq.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    walker = {f: (5 + f, 20, 25 + f, 80) for f in range(frames)}
    late = {f: (150 - f, 30, 130 - f + 40, 100) for f in range(44, frames)}
    rows = []
    for f in range(frames):
        image = np.full((size[1], size[0], 3), 128, np.uint8)
        for colour, boxes in (((0, 0, 255), walker), ((255, 0, 0), late)):
            if f in boxes:
                x1, y1, x2, y2 = boxes[f]
                image[y1:y2, min(x1, x2):max(x1, x2)] = colour
                if boxes is late or not 40 <= f < 48:
                    rows.append(f"{f + 1},-1,{min(x1, x2)},{y1},{abs(x2 - x1)},{y2 - y1},0.9,-1,-1,-1")
        video.write(image)
    video.release()
    (tmp_path / "det.txt").write_text("\n".join(rows) + "\n")
    cfg = load_pipeline_config(REPO / "configs" / "demo.yaml", ["reid.runtime=torch", "detector.model=replay",
                                                                f"detector.replay_file={tmp_path / 'det.txt'}"])
    replay = SegmentWorker(cfg.model_dump(mode="json"), threads=2)
    _, (whole,) = _track(replay, str(tmp_path / "seq.mp4"), 0.0)
    units, parts = _track(replay, str(tmp_path / "seq.mp4"), 4.0, 1.0)
    assert [(u.owned.start, u.owned.end) for u in units] == [(0, 45), (45, 80)] and units[0].frames.end == 65
    stitched, states, _ = stitch_segments(parts)
    for person in np.unique(whole.rows.track_id):
        frames_whole = set(whole.rows.frame[whole.rows.track_id == person].tolist())
        assert frames_whole >= ({*range(0, 80)} if len(frames_whole) > 40 else {*range(44, 80)})
    assert set(zip(stitched.frame.tolist(), stitched.track_id.tolist())) == set(
        zip(whole.rows.frame.tolist(), whole.rows.track_id.tolist()))
    assert sorted(states) == [1, 2] and states[1].interpolated == whole.states[1].interpolated


def tracks_through_cuts_keep_one_id(whole: TrackRows, stitched: TrackRows, cuts: list[int]) -> int:
    """Assert that every track of the unsplit run that walks through a cut (3 frames on each
    side) has one id in the stitched rows around it; returns how many such crossings there are."""
    crossing = 0
    for track_id in np.unique(whole.track_id):
        frames = whole.frame[whole.track_id == track_id]
        for cut in cuts:
            if frames.min() < cut - 3 and frames.max() > cut + 3:
                crossing += 1
                near = (whole.track_id == track_id) & (np.abs(whole.frame - cut) <= 3)
                ids = set()
                for f, box in zip(whole.frame[near], whole.xyxy[near]):
                    same = stitched.frame == f  # the stitched box of this person: the best overlap, and a close one
                    iou = iou_matrix(box, stitched.xyxy[same])[0]
                    assert iou.size and iou.max() >= 0.7, f"track {track_id} lost at frame {f}"
                    ids.add(int(stitched.track_id[same][iou.argmax()]))
                assert len(ids) == 1, f"track {track_id} split at frame {cut}"
    return crossing


def test_stitching_the_real_clip(hall_clip, yolo_onnx, osnet_onnx):
    """The shared camera clip (first 120 frames) with the real models, in 3 segments of 4 s.

    (The motion detector is not used here: its background model depends on every frame before,
    so a segment's boxes differ from the unsplit run's wherever the clip's light changes.)"""
    cfg = load_pipeline_config(None, [f"detector.model={yolo_onnx}", f"reid.weights={osnet_onnx}",
                                      "source.max_frames=120"])
    real = SegmentWorker(cfg.model_dump(mode="json"), threads=2)
    _, (whole,) = _track(real, str(hall_clip), 0.0)
    units, parts = _track(real, str(hall_clip), 4.0, 2.0)
    assert len(units) == 3 and [p.seek for p in parts] == ["none", "seek", "seek"]
    rows, _, joins = stitch_segments(parts)
    assert len(whole.rows) > 40 and joins >= 1
    assert idf1_against(whole.rows.sorted(), rows) >= 0.98


def test_concatenated_video_has_every_frame_once(scene, worker, tmp_path):
    probe = worker.probe(str(scene / "cam1.mp4"), "cam1")
    units = plan_camera("cam1", str(scene / "cam1.mp4"), probe.frames_total, probe.fps, 3.0, 1.5,
                        lookahead=lookahead_frames(worker.cfg))
    parts = [worker.render(u, TrackRows.empty()) for u in units]
    assert len(parts) == 3 and concat_mp4(parts, tmp_path / "annotated.mp4") == 100
    assert count_video_frames(tmp_path / "annotated.mp4") == 100
    assert cv2.VideoCapture(str(tmp_path / "annotated.mp4")).get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="no frames"):
        concat_mp4([b""], tmp_path / "empty.mp4")


def test_pieces_wait_on_disk_in_any_order_and_are_joined_in_order(scene, worker, tmp_path):
    """The driver keeps a camera's pieces in hidden files beside the video until the last one comes."""
    probe = worker.probe(str(scene / "cam1.mp4"), "cam1")
    units = plan_camera("cam1", str(scene / "cam1.mp4"), probe.frames_total, probe.fps, 3.0, 1.5,
                        lookahead=lookahead_frames(worker.cfg))
    parts = [worker.render(u, TrackRows.empty()) for u in units]
    concat_mp4(parts, tmp_path / "in_order.mp4")
    spool = PieceSpool(tmp_path / "annotated.mp4", 3)
    assert [spool.add(k, parts[k]) for k in (2, 0)] == [False, False]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".annotated.piece0.mp4", ".annotated.piece2.mp4", "in_order.mp4"]
    assert spool.add(1, parts[1]) and spool.join() == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.mp4", "in_order.mp4"]
    assert np.array_equal(read_video_frames(tmp_path / "annotated.mp4"), read_video_frames(tmp_path / "in_order.mp4"))
    dropped = PieceSpool(tmp_path / "other.mp4", 3)
    dropped.add(1, parts[1])
    dropped.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.mp4", "in_order.mp4"]


def test_a_stop_while_pieces_are_kept_or_joined_leaves_no_file_behind(scene, worker, tmp_path, monkeypatch):
    """Ctrl-C during a piece's write or during the join: neither the piece nor the half-joined
    video stays beside the outputs (the driver discards the spool when it stops)."""
    probe = worker.probe(str(scene / "cam1.mp4"), "cam1")
    units = plan_camera("cam1", str(scene / "cam1.mp4"), probe.frames_total, probe.fps, 3.0, 1.5,
                        lookahead=lookahead_frames(worker.cfg))
    parts = [worker.render(u, TrackRows.empty()) for u in units]
    spool = PieceSpool(tmp_path / "annotated.mp4", 3)
    spool.add(0, parts[0])
    write = Path.write_bytes

    def stopped_after_writing(path, data):
        write(path, data)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", stopped_after_writing)
    with pytest.raises(KeyboardInterrupt):
        spool.add(1, parts[1])
    monkeypatch.undo()
    spool.discard()
    assert list(tmp_path.iterdir()) == []

    real_open = concat.av.open

    class StopsWhileMuxing:
        """An output container that is stopped after its first packet."""

        def __init__(self, container):
            self.container = container

        def __enter__(self):
            self.container.__enter__()
            return self

        def __exit__(self, *exc):
            return self.container.__exit__(*exc)

        def add_stream_from_template(self, stream):
            return self.container.add_stream_from_template(stream)

        def mux(self, packet):
            self.container.mux(packet)
            raise KeyboardInterrupt

    monkeypatch.setattr(concat.av, "open", lambda file, mode="r", **kw: StopsWhileMuxing(real_open(file, mode, **kw))
                        if mode == "w" else real_open(file, mode, **kw))
    spool = PieceSpool(tmp_path / "annotated.mp4", 3)
    assert [spool.add(k, parts[k]) for k in range(3)] == [False, False, True]
    with pytest.raises(KeyboardInterrupt):
        spool.join()
    assert list(tmp_path.iterdir()) == []  # neither annotated.partial.mp4 nor the pieces


@pytest.fixture
def closed_port():
    """A local port that refuses connections: bound (so nothing else takes it) but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_an_unreachable_ray_address_fails_at_once_in_one_line(closed_port, monkeypatch, capsys, tmp_path):
    """Ray itself would retry a dead HOST:PORT for minutes; the run stops within seconds instead."""
    pytest.importorskip("ray", reason="Ray is the optional extra crosscam[ray]")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    started = time.perf_counter()
    assert main(["track", "cam1.mp4", "--out", str(tmp_path / "run"), "--ray-address", f"127.0.0.1:{closed_port}"]) == 2
    assert time.perf_counter() - started < 30
    assert capsys.readouterr().err.splitlines() == [
        f"error: --ray-address: no Ray cluster answers at 127.0.0.1:{closed_port} (Connection refused); "
        "start the cluster (`ray start --head` on that host) or fix the address"]


@contextmanager
def answering(reply: bytes):
    """A local port whose server reads what comes and sends ``reply`` (nothing: it stays silent)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        def serve():
            connection, _ = server.accept()
            with connection, suppress(ConnectionError):  # the client may reset it once it has seen enough
                connection.recv(64)
                if reply:
                    connection.sendall(reply)
                connection.recv(64)  # held open until the client closes

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield server.getsockname()[1]
        thread.join(timeout=5)


def test_the_reachability_check_names_ray_address_and_leaves_other_forms_to_ray(closed_port):
    with pytest.raises(CrosscamError, match=f"^RAY_ADDRESS: no Ray cluster answers at 127.0.0.1:{closed_port} "):
        check_reachable(f"127.0.0.1:{closed_port}", "RAY_ADDRESS")
    settings = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # an empty HTTP/2 SETTINGS frame, what a gRPC server sends first
    with answering(settings) as port:  # a gRPC server (the GCS) passes
        check_reachable(f"127.0.0.1:{port}", "--ray-address")
    for reply in (b"HTTP/1.0 400 Bad request\r\n\r\n", b""):  # a web server (the dashboard's 8265), a silent one
        with answering(reply) as port:
            with pytest.raises(CrosscamError, match=f"127.0.0.1:{port} accepts connections but is not a Ray cluster"):
                check_reachable(f"127.0.0.1:{port}", "--ray-address", timeout=1.0)
    for address in ("auto", "local", f"ray://127.0.0.1:{closed_port}"):
        check_reachable(address, "--ray-address")  # Ray's own forms: not probed, so no error here


def test_drawing_a_unit_again_does_not_repeat_its_sources_warnings(worker, tmp_path, caplog):
    """Ray runs said each skipped frame once per pass: when tracked, then when each video was drawn."""
    folder = tmp_path / "seq" / "img1"
    folder.mkdir(parents=True)
    for i in range(6):
        cv2.imwrite(str(folder / f"{i + 1:06d}.jpg"), np.full((48, 64, 3), 40 * i, np.uint8))
    (folder / "000003.jpg").write_bytes(b"not a jpeg")
    unit = plan_camera("seq", str(folder), 6, 10.0, 0.0, 0.0)[0]
    with caplog.at_level("WARNING"):
        worker.render(unit, TrackRows.empty())
    assert "skipped" not in caplog.text
    with caplog.at_level("WARNING"), open_source(str(folder), "seq", SourceConfig()) as source:
        list(source)  # tracking reads it, and says so
    assert "frame 2 skipped (000003.jpg is not a readable image)" in caplog.text


def test_ctrl_c_while_the_workers_stop_lets_them_stop_and_is_noted():
    """Ctrl-C as the Ray workers stopped after a complete run ended it with exit 130, no JSON and no
    word, possibly leaving Ray processes: the stop finishes, and the session notes the interrupt."""
    import os
    import signal

    from pipeline.scale.driver import RaySession

    class Pool:
        closed = False

        def close(self):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of stopping
            time.sleep(0.2)
            self.closed = True

    session = RaySession(load_pipeline_config(None, []))
    session.pool = pool = Pool()
    session.close()
    assert pool.closed and session.interrupted_at_close and session.pool is None


def test_segments_of_a_variable_rate_matroska_file_are_planned_from_its_frames(tmp_path, worker):
    """OpenCV estimates a Matroska file's frames (duration x mean rate): a 40-frame file with a pause
    was planned as 70 frames, its last segment past the end, 30 frames 'not decoded', progress at 57 %."""
    from test_sources import write_mkv

    path = write_mkv(tmp_path / "cam.mkv", [100 * i for i in range(20)] + [5000 + 100 * i for i in range(20)])
    probe = worker.probe(str(path), "cam")
    assert probe.frames_total == 40
    units = plan_camera("cam", str(path), probe.frames_total, probe.fps, 2.0, 0.5)
    results = [worker.track(u, probe.colour) for u in units]
    assert sum(r.owned_frames_read for r in results) == 40 and sum(r.owned_frames_failed for r in results) == 0
