"""``crosscam track`` end to end: the real hall clip with YOLO + OSNet, motion, replay, bad input, Ctrl-C."""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.cli.main import main
from pipeline.config import DetectorConfig, SourceConfig
from pipeline.identity.store import EmbedderInfo, TrackStore
from pipeline.types import read_track_summaries
from pipeline.video.detectors import MotionDetector
from pipeline.video.sources import VideoFileSource
from reid.errors import CrosscamError

from conftest import REPO, read_video_frames, shared_path
from test_detectors import iou

HALL_FRAMES = 200


def count_video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    return count


def read_mot(path: Path) -> np.ndarray:
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    return rows.reshape(-1, 10)


@pytest.fixture(scope="module")
def hall_run(tmp_path_factory) -> tuple[dict, Path]:
    """The issue's real run, once per module: 200 frames, YOLOv8n INT8 ONNX + OSNet ONNX."""
    clip = shared_path("videos/one-by-one-person-detection.mp4")
    out = tmp_path_factory.mktemp("hall") / "run"
    argv = ["track", str(clip), "--out", str(out), "--max-frames", str(HALL_FRAMES),
            "--detector", str(shared_path("weights/yolov8n_int8.onnx")),
            "--reid", str(shared_path("weights/osnet_x0_25_msmt17.onnx")), "--json", "--quiet"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    return json.loads(stdout.getvalue()), out / clip.stem


def test_real_run_outputs(hall_run):
    result, folder = hall_run
    (camera,) = result["cameras"]
    assert result["status"] == camera["status"] == "complete" and camera["frames_read"] == HALL_FRAMES
    assert count_video_frames(folder / "annotated.mp4") == HALL_FRAMES
    rows = read_mot(folder / "tracks.txt")
    assert rows.shape[1] == 10 and (rows[:, 0] >= 1).all() and (rows[:, 0] <= HALL_FRAMES).all()
    assert (rows[:, 7:] == -1).all() and (rows[:, 4:6] > 0).all()
    # One person walks in, stands at the table and walks out in these 200 frames (10 s of video):
    # she gets a track that follows her, and ids do not explode.
    ids, counts = np.unique(rows[:, 1], return_counts=True)
    assert 1 <= len(ids) <= 3
    assert counts.max() >= 100
    summaries = read_track_summaries(folder)
    assert sorted(s.track_id for s in summaries) == ids.astype(int).tolist()
    for s in summaries:
        assert s.camera == folder.name and s.num_detections + s.num_interpolated == counts[ids == s.track_id][0]
        assert s.feature.shape == (512,) and abs(np.linalg.norm(s.feature) - 1) < 1e-4
        assert 1 <= len(s.representatives) <= 5
        assert cv2.imread(str(folder / s.thumbnail)) is not None


def test_real_run_json(hall_run):
    _, folder = hall_run
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "complete" and record["frames_read"] == HALL_FRAMES
    assert Path(record["source"]).is_absolute() and Path(record["source"]).is_file()
    assert record["fps"] == pytest.approx(10.0) and record["frame_size"] == [768, 432]
    assert record["time_offset_s"] == 0.0
    assert record["config"]["source"]["max_frames"] == HALL_FRAMES
    assert Path(record["config"]["detector"]["model"]).is_absolute()
    assert {"ultralytics", "deep-sort-realtime", "onnxruntime", "torch"} <= set(record["versions"])
    assert len(record["models"]["detector"]["fingerprint"]) == 64
    assert record["models"]["reid"]["name"] == "osnet_x0_25_msmt17.onnx" and record["models"]["reid"]["dim"] == 512
    assert set(record["stage_seconds"]) == {"decode", "detect", "embed", "track", "refine", "write", "finalise"}
    assert set(record["relinked"]) == {"links", "ids_changed", "dropped", "video_redrawn"}


def test_motion_detector_finds_the_walkers(hall_run, hall_clip: Path):
    # Reference: where the YOLO tracks put the person in each frame of the real run.
    _, folder = hall_run
    rows = read_mot(folder / "tracks.txt")
    reference = {int(r[0]) - 1: np.array([r[2], r[3], r[2] + r[4], r[3] + r[5]]) for r in rows}
    detector = MotionDetector(DetectorConfig(model="motion"))
    found = []
    with VideoFileSource(hall_clip, "hall", SourceConfig(max_frames=HALL_FRAMES)) as source:
        for frame in source:
            boxes = detector.detect([frame])[0].xyxy
            if frame.index in reference and any(iou(b, reference[frame.index]) > 0.4 for b in boxes):
                found.append(frame.index)
    # She is found while walking in (first frames of her track) and while walking out (last ones);
    # standing still she becomes background, which is what a motion detector does.
    first, last = min(reference), max(reference)
    assert sum(f < first + 20 for f in found) >= 3
    assert sum(f > last - 20 for f in found) >= 3


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_video(path: Path, count: int, walker: bool, size=(320, 240)) -> Path:
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(60, 200, (size[1], size[0], 3)).astype(np.uint8), (5, 5), 0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    for i in range(count):
        image = background.copy()
        if walker and i >= 15:
            x = 10 + (4 * (i - 15)) % (size[0] - 50)
            image[60:190, x : x + 40] = (30, 40, 210)
        writer.write(image)
    writer.release()
    return path


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "folder", "detector"])
def test_bad_input_is_one_error_line(tmp_path: Path, capsys, kind: str):
    video = write_video(tmp_path / "ok.avi", 5, walker=False)
    inputs = {
        "missing": [str(tmp_path / "nope.mp4")],
        "empty": [str((tmp_path / "empty.mp4").write_bytes(b"") or tmp_path / "empty.mp4")],
        "text": [str((tmp_path / "x.mp4").write_text("not a video " * 40) and tmp_path / "x.mp4")],
        "folder": [str(tmp_path / "missing-folder") + "/"],
        "detector": [str(video)],
    }[kind]
    extra = ["--detector", "yolov5su.pt"] if kind == "detector" else ["--detector", "motion"]
    code, out, err = run_cli(["track", *inputs, "--out", str(tmp_path / "run"), *extra], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_every_unreadable_input_is_named_in_one_line(tmp_path: Path, capsys):
    """With three inputs, two of them broken, only the first broken one was named."""
    video = write_video(tmp_path / "ok.avi", 5, walker=False)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "x.mp4").write_text("not a video " * 40)
    inputs = [str(tmp_path / "empty.mp4"), str(video), str(tmp_path / "x.mp4")]
    code, out, err = run_cli(["track", *inputs, "--out", str(tmp_path / "run"), "--detector", "motion"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: 2 of the 3 inputs cannot be read: ")
    assert "empty.mp4: file is empty" in lines[0] and "x.mp4: not a readable video" in lines[0]
    assert not (tmp_path / "run").exists()


def test_camera_names_must_match_inputs(tmp_path: Path, capsys):
    video = write_video(tmp_path / "a.avi", 3, walker=False)
    code, _, err = run_cli(["track", str(video), str(video), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "used twice" in err
    code, _, err = run_cli(["track", str(video), "--camera", "x", "--camera", "y", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "--camera" in err


def test_videos_without_people_give_valid_empty_outputs(tmp_path: Path, capsys, osnet_onnx: Path):
    first = write_video(tmp_path / "empty_hall.avi", 30, walker=False)
    second = write_video(tmp_path / "empty_door.avi", 12, walker=False)
    code, out, _ = run_cli(["track", str(first), str(second), "--out", str(tmp_path / "run"), "--camera", "lobby",
                            "--camera", "door", "--detector", "motion", "--reid", str(osnet_onnx), "--json",
                            "--quiet"], capsys)
    assert code == 0
    result = json.loads(out)
    cams = result["cameras"]
    assert [(c["camera"], c["frames_read"], c["tracks"]) for c in cams] == [("lobby", 30, 0), ("door", 12, 0)]
    assert result["identities"]["identities"] == 0 and Path(result["identities"]["report"]).is_file()
    for cam in cams:
        folder = tmp_path / "run" / cam["camera"]
        assert count_video_frames(folder / "annotated.mp4") == cam["frames_read"]
        assert (folder / "tracks.txt").read_text() == ""
        assert read_track_summaries(folder) == []
        assert json.loads((folder / "run.json").read_text())["status"] == "complete"


def test_mot_folder_with_replayed_detections_and_stride(tmp_path: Path, capsys, osnet_onnx: Path):
    seq = tmp_path / "SEQ-01"
    (seq / "img1").mkdir(parents=True)
    (seq / "det").mkdir()
    (seq / "seqinfo.ini").write_text("[Sequence]\nname=SEQ-01\nframeRate=20\n")
    rng = np.random.default_rng(3)
    background = rng.integers(60, 200, (180, 240, 3)).astype(np.uint8)
    lines = []
    for i in range(30):
        image = background.copy()
        x = 20 + 5 * i
        image[40:150, x : x + 40] = (200, 60, 30)
        cv2.imwrite(str(seq / "img1" / f"{i + 1:06d}.png"), image)
        lines.append(f"{i + 1},-1,{x},40,40,110,0.95,-1,-1,-1")
    (seq / "det" / "det.txt").write_text("\n".join(lines) + "\n")
    code, out, _ = run_cli(["track", str(seq), "--out", str(tmp_path / "run"), "--detector", "replay",
                            "--reid", str(osnet_onnx), "--stride", "2", "--set", "tracker.n_init=2",
                            "--json", "--quiet"], capsys)
    assert code == 0
    result = json.loads(out)
    (cam,) = result["cameras"]
    assert cam["camera"] == "SEQ-01" and cam["frames_read"] == 15 and cam["tracks"] == 1
    assert result["identities"]["identities"] == 1 and result["identities"]["cameras"] == ["SEQ-01"]
    global_rows = read_mot(tmp_path / "run" / "SEQ-01" / "tracks_global.txt")
    assert set(global_rows[:, 1].astype(int)) == {1}
    rows = read_mot(tmp_path / "run" / "SEQ-01" / "tracks.txt")
    assert ((rows[:, 0] - 1) % 2 == 0).all()  # only strided frames, 1-based source numbers
    frame = rows[-1]
    assert frame[2] == pytest.approx(20 + 5 * (frame[0] - 1)) and frame[4] == pytest.approx(40)
    record = json.loads((tmp_path / "run" / "SEQ-01" / "run.json").read_text())
    assert record["fps"] == 20.0 and record["models"]["detector"]["name"] == "replay"


@pytest.mark.parametrize("stop, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_leaves_valid_outputs(tmp_path: Path, osnet_onnx: Path, stop, status):
    """Ctrl-C, and SIGTERM as `timeout`, `docker stop` or a scheduler sends it (it killed the run with
    run.json 'running' and no tracks.json), stop cleanly: valid outputs, 'interrupted'."""
    video = write_video(tmp_path / "long.avi", 1500, walker=True)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pipeline.cli.main", "track", str(video), "--out", str(out),
           "--detector", "motion", "--reid", str(osnet_onnx), "--quiet"]
    # A runner started as a background job (`cmd &` in a script) ignores SIGINT, and children inherit
    # that: give the CLI the default disposition, as in a terminal, so Python turns Ctrl-C into KeyboardInterrupt.
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    folder = out / "long"
    deadline = time.monotonic() + 120
    while not (folder / "tracks.partial.txt").exists() or (folder / "tracks.partial.txt").stat().st_size == 0:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err.decode()[-2000:]
    assert "interrupted" in err.decode()
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "interrupted" and 0 < record["frames_read"] < 1500
    written = count_video_frames(folder / "annotated.mp4")
    assert 0 < written == record["frames_read"]  # not the frames decoded ahead of tracking
    rows = read_mot(folder / "tracks.txt")
    assert len(rows) > 0 and rows[:, 0].max() <= written
    summaries = read_track_summaries(folder)
    assert len(summaries) >= 1 and len(summaries) == record["num_tracks"]
    assert not list(folder.glob("*.partial*"))


def test_ctrl_c_before_any_output_says_nothing_was_written(tmp_path: Path, capsys, osnet_onnx: Path, monkeypatch):
    """Ctrl-C while the models loaded claimed 'RUN keeps what was written' of a folder never made."""
    import pipeline.video.run

    monkeypatch.setattr(pipeline.video.run.Embedder, "from_config", ctrl_c)
    video = write_video(tmp_path / "hall.avi", 5, walker=True)
    code, printed, err = run_cli(["track", str(video), "--out", str(tmp_path / "run"), "--detector", "motion",
                                  "--reid", str(osnet_onnx), "--quiet", "--json"], capsys)
    assert code == 130 and err.strip() == f"interrupted before anything was written to {tmp_path / 'run'}"
    assert json.loads(printed)["cameras"] == [] and not (tmp_path / "run").exists()


def ctrl_c(*args, **kwargs):
    """A stand-in for a step that Ctrl-C interrupts."""
    raise KeyboardInterrupt


def tracked_hall(tmp_path: Path, capsys, osnet_onnx: Path):
    """A run with camera ``hall`` tracked completely: the track command's arguments, the run
    folder, and a snapshot function of the camera folder's files (name -> bytes)."""
    video = write_video(tmp_path / "hall.avi", 40, walker=True)
    out = tmp_path / "run"
    args = ["track", str(video), "--out", str(out), "--detector", "motion", "--reid", str(osnet_onnx), "--quiet"]
    assert run_cli(args, capsys)[0] == 0
    return args, out, lambda: {p.name: p.read_bytes() for p in (out / "hall").iterdir() if p.is_file()}


@pytest.mark.parametrize("limit_kb", [6, 40])
def test_a_full_disk_is_one_line_and_keeps_what_was_written(tmp_path: Path, capsys, osnet_onnx: Path, limit_kb: int):
    """A file size limit (as a full disk: writes fail) while a second camera is tracked: one line,
    no half-written file beside the outputs, and the first camera, store and report untouched."""
    args, out, snapshot = tracked_hall(tmp_path, capsys, osnet_onnx)
    before = snapshot(), (out / "report.html").read_bytes(), (out / "store" / "tracks.sqlite").read_bytes()
    limit = limit_kb * 1024
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args[:1], args[1], "--camera", "door", *args[2:]],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    # whichever write meets the limit first (the annotated video, read back, or a file the limit stops)
    assert last.startswith("error: ") and "file size limit (ulimit -f)" in last and "what was written before is kept" in last
    assert before == (snapshot(), (out / "report.html").read_bytes(), (out / "store" / "tracks.sqlite").read_bytes())
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial")]
    assert run_cli(["query", str(out), "--track", "hall:1", "--json"], capsys)[0] == 0


def test_a_read_only_store_is_refused_before_tracking(tmp_path: Path, capsys, osnet_onnx: Path):
    args, out, _ = tracked_hall(tmp_path, capsys, osnet_onnx)
    database = out / "store" / "tracks.sqlite"
    if subprocess.run(["chattr", "+i", str(database)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i (an immutable file: read-only even for root) is not supported here")
    try:
        code, _, err = run_cli([*args[:2], "--camera", "door", *args[2:]], capsys)
        assert code == 2 and "cannot write the track store (attempt to write a readonly database)" in err, err
        assert not (out / "door").exists()  # said before the camera was tracked
    finally:
        subprocess.run(["chattr", "-i", str(database)], check=True)


def test_a_camera_tracked_again_is_replaced_only_when_complete(tmp_path: Path, capsys, osnet_onnx: Path, monkeypatch,
                                                              caplog):
    """Bad input found after tracking used to cost the camera's earlier outputs: a cameras file
    and the run's embedder are checked first, and Ctrl-C while tracking again keeps them."""
    import pipeline.video.run

    args, out, snapshot = tracked_hall(tmp_path, capsys, osnet_onnx)
    folder = out / "hall"
    before = snapshot()
    assert (folder / "tracks.txt").read_text()

    def refused(extra: list[str], words: str) -> None:
        code, _, err = run_cli([*args, *extra], capsys)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
        assert snapshot() == before and sorted(p.name for p in out.iterdir()) == names

    names = sorted(p.name for p in out.iterdir())
    refused(["--cameras", str(tmp_path / "nope.yaml")], "cameras file not found")
    refused(["--cameras", str(tmp_path)], "a folder, not a cameras file")
    (tmp_path / "door.yaml").write_text("cameras:\n  - {name: door, offset_s: 0}\n")
    refused(["--cameras", str(tmp_path / "door.yaml")], "no entry for camera(s) hall")
    other = out / "door"  # a camera of the run tracked with another embedder
    other.mkdir()
    (other / "tracks.json").write_text("[]")
    (other / "run.json").write_text(json.dumps({"status": "complete", "models": {"reid": {
        "name": "other-model", "fingerprint": "f" * 64, "dim": 512}}}))
    names = sorted(p.name for p in out.iterdir())
    refused([], "door were tracked with (other-model")
    refused(["--no-identities"], "door were tracked with (other-model")  # a later associate would refuse the run
    refused(["--workers", "2"], "door were tracked with (other-model")  # on Ray too, before Ray starts
    shutil.rmtree(other)
    names = sorted(p.name for p in out.iterdir())
    # the run's store: another embedder's, or damaged, was said after the whole video was tracked
    (out / "store").rename(tmp_path / "store.kept")
    TrackStore.create(out / "store", EmbedderInfo("e" * 64, "other-model", 512))
    refused([], "store was built with embedder other-model")
    shutil.rmtree(out / "store")
    (out / "store").mkdir()
    (out / "store" / "tracks.sqlite").write_bytes(b"garbage, not SQLite")
    refused([], "tracks.sqlite: not a readable track store")
    shutil.rmtree(out / "store")
    (tmp_path / "store.kept").rename(out / "store")

    real_chain = pipeline.video.run.camera_chain

    def stopped_chain(*a, **k):  # Ctrl-C after 10 frames of tracking the camera again
        for i, result in enumerate(real_chain(*a, **k)):
            if i == 10:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(pipeline.video.run, "camera_chain", stopped_chain)
    code, printed, err = run_cli([*args, "--max-frames", "30", "--json"], capsys)
    assert code == 130 and "earlier complete outputs are kept" in caplog.text
    kept = json.loads((folder / "run.json").read_text())
    assert json.loads(printed) == {  # --json printed nothing, then a shorter object than a finished run's
        "run_dir": str(out.resolve()), "status": "interrupted", "identities": None,
        "cameras": [{"camera": "hall", "folder": str(folder.resolve()), "status": "complete", "error": None,
                     "frames_read": kept["frames_read"], "frames_failed": 0, "tracks": kept["num_tracks"],
                     "waiting_in": None}]}
    assert snapshot() == before and sorted(p.name for p in out.iterdir()) == names
    monkeypatch.setattr(pipeline.video.run, "camera_chain", real_chain)
    code, out_text, _ = run_cli([*args, "--max-frames", "30"], capsys)
    assert code == 0  # complete: it replaces the earlier outputs
    assert "hall: 30 frames, " in out_text and " of 1 camera -> " in out_text  # counted in the singular
    assert json.loads((folder / "run.json").read_text())["frames_read"] == 30
    assert sorted(p.name for p in out.iterdir()) == names


def test_a_camera_tracked_again_replaces_its_folder_as_the_store_takes_it(tmp_path: Path, capsys, osnet_onnx: Path,
                                                                          monkeypatch):
    """The camera's folder and the store change together: while association runs, the folder still
    holds the outputs the store has; Ctrl-C during association keeps both as they were."""
    import pipeline.identity.identities

    args, out, snapshot = tracked_hall(tmp_path, capsys, osnet_onnx)
    folder = out / "hall"
    stored = lambda: [(t.track_id, t.first_frame, t.last_frame) for t in TrackStore.open(out / "store").tracks()]  # noqa: E731
    before, before_store = snapshot(), stored()
    real = pipeline.identity.identities._associated
    seen = []

    monkeypatch.setattr(pipeline.identity.identities, "_associated", ctrl_c)
    code, _, err = run_cli([*args, "--max-frames", "30"], capsys)
    assert code == 130 and "identities not updated" in err
    assert snapshot() == before and stored() == before_store
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".hall.retrack"]  # for the next association

    def watched(*a, **k):  # the folder during association: still the outputs the store has
        seen.append(snapshot() == before)
        return real(*a, **k)

    monkeypatch.setattr(pipeline.identity.identities, "_associated", watched)
    assert run_cli(["associate", str(out), "--quiet"], capsys)[0] == 0  # the waiting outputs, with the store
    assert seen == [True] and snapshot() != before and stored() != before_store
    assert json.loads((folder / "run.json").read_text())["frames_read"] == 30
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_a_cut_short_video_is_reported_once_and_in_the_summary(hall_clip: Path, tmp_path: Path, osnet_onnx: Path):
    """The frames a cut-short file lacks are said once (not again when the global-id video is drawn)
    and counted in the camera's summary line."""
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(hall_clip.read_bytes()[:300_000])
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "track", str(cut), "--out", str(tmp_path / "run"),
                           "--detector", "motion", "--reid", str(osnet_onnx), "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "run" / "cut" / "run.json").read_text())
    assert record["frames_failed"] > 0
    assert proc.stderr.count("could not be decoded; the rest of the file was skipped") == 1, proc.stderr
    assert f"({record['frames_failed']} frames could not be decoded)" in proc.stdout


def test_camera_names_and_the_run_directory_are_checked_first(tmp_path: Path, capsys):
    video = write_video(tmp_path / "a.avi", 3, walker=False)
    (tmp_path / "file").write_text("x")
    cases = [
        (["--camera", "..", "--out", str(tmp_path / "r")], "plain folder name"),
        (["--camera", "a/b", "--out", str(tmp_path / "r")], "plain folder name"),
        (["--camera", "store", "--out", str(tmp_path / "r")], "plain folder name"),
        # the run's own files: a camera took report.html's place and association crashed
        (["--camera", "report.html", "--out", str(tmp_path / "r")], "plain folder name"),
        (["--camera", "cameras.yaml", "--out", str(tmp_path / "r")], "plain folder name"),
        (["--camera", "Store", "--out", str(tmp_path / "r")], "plain folder name"),  # the store on a case-blind disk
        (["--camera", "y" * 247, "--out", str(tmp_path / "r")], "at most 200 bytes"),  # .NAME.retrack: over 255
        (["--camera", "", "--out", str(tmp_path / "r")], "an empty camera name"),  # was the file's name, silently
        (["--out", str(tmp_path / "file")], "is a file"),
        (["--out", str(tmp_path / "file" / "sub")], "is a file"),
        (["--out", ""], "--out: empty"),
    ]
    for extra, words in cases:
        code, out, err = run_cli(["track", str(video), "--detector", "motion", *extra], capsys)
        assert code == 2 and out == "" and words in err and len(err.strip().splitlines()) == 1, (extra, err)
    code, _, err = run_cli(["track", str(video), str(video), "--camera", "x", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "1 name for 2 inputs" in err
    named = write_video(tmp_path / "store.avi", 3, walker=False)  # the name comes from the file: say so
    code, _, err = run_cli(["track", str(named), "--detector", "motion", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and f"camera name 'store' (from {named}): a camera name must be" in err
    named.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.avi", "file"]  # nothing written anywhere


def test_help_lists_the_options(capsys):
    code, out, _ = run_cli(["track", "--help"], capsys)
    assert code == 0
    for option in ("--out", "--camera", "--config", "--set", "--detector", "--reid", "--max-frames", "--stride",
                   "--device", "--json"):
        assert option in out


def test_a_camera_another_command_is_tracking_is_refused_and_its_work_is_left_alone(tmp_path: Path, capsys,
                                                                                  osnet_onnx: Path):
    """Two commands tracking one camera into one run both wrote its folder (and the second deleted
    the first's .hall.retrack): the second is refused in one line now; other cameras go ahead."""
    from pipeline.run_folders import claim_camera, release

    args, out, snapshot = tracked_hall(tmp_path, capsys, osnet_onnx)
    before = snapshot()
    held = claim_camera(out, "hall")  # as another command tracking hall holds it
    work = out / ".hall.retrack"
    work.mkdir()  # that command's work in progress, complete already while it tracks other cameras
    (work / "run.json").write_text('{"status": "complete"}')
    try:
        code, _, err = run_cli([*args, "--max-frames", "20"], capsys)
        # (it said the outputs "wait ... delete that folder to drop them": the other command's, in use)
        assert code == 2 and "camera hall: another crosscam command is tracking it" in err, err
        assert len(err.strip().splitlines()) == 1 and snapshot() == before and work.is_dir()
        code, _, err = run_cli([*args, "--max-frames", "20", "--camera", "hall2"], capsys)
        assert code == 0, err
    finally:
        shutil.rmtree(work)
        release([held])
    assert not (out / ".hall.lock").exists()
    assert run_cli([*args, "--max-frames", "20"], capsys)[0] == 0  # released: tracked again
    assert json.loads((out / "hall" / "run.json").read_text())["frames_read"] == 20
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_ctrl_c_after_the_store_took_the_cameras_says_so(tmp_path: Path, capsys, osnet_onnx: Path, monkeypatch):
    """A stop while the report was written said "identities not updated ... as it was before" when
    the store had the new tracks and the folder the new outputs: the message now says what is true."""
    import pipeline.identity.identities

    args, out, snapshot = tracked_hall(tmp_path, capsys, osnet_onnx)
    before = snapshot()
    store_tracks = lambda: [(t.track_id, t.last_frame) for t in TrackStore.open(out / "store").tracks()]  # noqa: E731
    before_store = store_tracks()

    monkeypatch.setattr(pipeline.identity.identities, "write_report", ctrl_c)
    code, printed, err = run_cli([*args, "--max-frames", "30", "--json"], capsys)
    assert code == 130 and "the store and identities include this run's cameras" in err, err
    assert json.loads(printed)["status"] == "interrupted"  # --json printed nothing when stopped in the association
    assert f"`crosscam associate {out}` writes them now" in err
    assert "not updated" not in err and len(err.strip().splitlines()) == 1
    assert snapshot() != before and store_tracks() != before_store  # both hold the new run
    assert json.loads((out / "hall" / "run.json").read_text())["frames_read"] == 30
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_a_camera_name_reused_for_another_video_is_refused_unless_named(tmp_path: Path, capsys, osnet_onnx: Path,
                                                                        caplog):
    """Two sites' hall.avi became one camera, the first one's tracks and identities gone with a warning."""
    args, out, snapshot = tracked_hall(tmp_path, capsys, osnet_onnx)
    assert run_cli([*args, "--max-frames", "20"], capsys)[0] == 0  # the same video again: nothing to say
    assert "was tracked from" not in caplog.text
    (tmp_path / "other").mkdir()
    other = write_video(tmp_path / "other" / "hall.avi", 20, walker=True)  # same stem, another file
    before = snapshot()
    code, _, err = run_cli(["track", str(other), "--out", str(out), "--detector", "motion", "--reid", str(osnet_onnx),
                            "--quiet"], capsys)
    assert code == 2 and err.strip() == (
        f"error: camera hall (named from {other}) was tracked from {tmp_path / 'hall.avi'}; give this input its own "
        "--camera NAME, or --camera hall to track it in that camera's place")
    assert snapshot() == before
    code, _, err = run_cli(["track", str(other), "--camera", "hall", "--out", str(out), "--detector", "motion",
                            "--reid", str(osnet_onnx), "--quiet"], capsys)  # named: meant, and warned
    assert code == 0, err
    assert f"camera hall was tracked from {tmp_path / 'hall.avi'}; this run of {other} replaces its tracks" in caplog.text
    caplog.clear()  # a source the run holds under another name: everyone in it twice, at the same moments
    code, _, err = run_cli([*args, "--camera", "lobby", "--max-frames", "20"], capsys)
    assert code == 0, err
    assert (f"camera hall of this run was tracked from {other} too" not in caplog.text
            and "camera lobby of this run" not in caplog.text)  # hall is the other video now: nothing to say
    code, _, err = run_cli(["track", str(other), "--camera", "door", "--out", str(out), "--detector", "motion",
                            "--reid", str(osnet_onnx), "--quiet"], capsys)
    assert code == 0 and f"camera hall of this run was tracked from {other} too" in caplog.text
    (tmp_path / "moved").mkdir()
    moved = other.rename(tmp_path / "moved" / "hall.avi")  # the same camera's video, moved since
    caplog.clear()
    code, _, err = run_cli(["track", str(moved), "--out", str(out), "--detector", "motion", "--reid", str(osnet_onnx),
                            "--quiet"], capsys)
    assert code == 0 and "replaces its tracks" not in caplog.text, err


def test_associate_builds_a_deleted_store_and_the_report_from_the_cameras_outputs(tmp_path: Path, capsys,
                                                                                 osnet_onnx: Path):
    args, out, snapshot = tracked_hall(tmp_path, capsys, osnet_onnx)
    before = [(t.camera, t.track_id, t.first_frame, t.last_frame) for t in TrackStore.open(out / "store").tracks()]
    shutil.rmtree(out / "store")
    (out / "report.html").unlink()
    code, _, err = run_cli(["query", str(out), "--identity", "1"], capsys)
    assert code == 2 and f"`crosscam associate {out}` builds it" in err
    code, text, err = run_cli(["associate", str(out), "--json", "--quiet"], capsys)
    assert code == 0, err
    result = json.loads(text)["identities"]
    assert result["cameras"] == ["hall"] and result["cameras_updated"] == ["hall"] and (out / "report.html").is_file()
    after = [(t.camera, t.track_id, t.first_frame, t.last_frame) for t in TrackStore.open(out / "store").tracks()]
    assert after == before and result["tracks"] == len(before)
    assert run_cli(["query", str(out), "--track", "hall:1", "--json"], capsys)[0] == 0
    index = next((out / "store").glob("index-*.faiss"))
    index.write_bytes(index.read_bytes()[:100])  # damaged: associate writes it again, though nothing else is new
    code, text, _ = run_cli(["associate", str(out), "--quiet"], capsys)
    assert code == 0 and "1 camera" in text and TrackStore.open(out / "store").index_is_intact()
    assert "no such run directory" in run_cli(["associate", str(tmp_path / "nope")], capsys)[2]
    assert "a file, not a run directory" in run_cli(["associate", str(out / "hall" / "run.json")], capsys)[2]
    assert "no such run directory" in run_cli(["associate", ""], capsys)[2]
    assert f"a camera's folder, not a run directory; give its run, {out.resolve()}" in run_cli(
        ["associate", str(out / "hall")], capsys)[2]


def test_ctrl_c_between_tracking_and_association_says_so_and_leaves_nothing_staged(tmp_path: Path, capsys,
                                                                                   osnet_onnx: Path, monkeypatch, caplog):
    """A stop there fell through to click: exit 130 without a word, .hall.retrack and .hall.lock left.
    The camera's new outputs were complete: they wait for `crosscam associate` (they were thrown away)."""
    import pipeline.cli.track_cmds

    args, out, snapshot = tracked_hall(tmp_path, capsys, osnet_onnx)
    before = snapshot()

    monkeypatch.setattr(pipeline.cli.track_cmds, "_identities", ctrl_c)
    code, printed, err = run_cli([*args, "--max-frames", "30", "--json"], capsys)
    assert code == 130 and f"before association: `crosscam associate {out}` associates the cameras tracked" in err, err
    assert "hall: tracked again completely; its new outputs wait in .hall.retrack until `crosscam associate" \
        in caplog.text
    assert snapshot() == before  # the folder stays the store's until an association takes the new outputs
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".hall.retrack"]  # no lock left
    (camera,) = json.loads(printed)["cameras"]  # the folder's run, as its run.json says
    assert camera["folder"] == str((out / "hall").resolve()) and camera["status"] == "complete"
    assert camera["frames_read"] == 40 and camera["error"] is None
    assert camera["waiting_in"] == str((out / ".hall.retrack").resolve())  # the new outputs, stopped before association
    # tracking hall again would drop them (when stopped too, silently): refused until they are in place
    monkeypatch.undo()
    code, _, err = run_cli([*args, "--max-frames", "20"], capsys)
    assert code == 2 and f"camera hall: its complete new outputs, not associated yet, wait in {out / '.hall.retrack'}" in err
    assert snapshot() == before and (out / ".hall.retrack").is_dir()
    shutil.rmtree(out / "hall")  # and the earlier outputs deleted meanwhile: the waiting ones still take the place
    code, _, err = run_cli(["associate", str(out), "--quiet"], capsys)
    assert code == 0 and "hall: its new outputs that waited for an association are in place now" in err
    assert "its folder" not in err and "is gone" not in err  # it warned of a gone folder that was being replaced
    assert json.loads((out / "hall" / "run.json").read_text())["frames_read"] == 30 and snapshot() != before
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert TrackStore.open(out / "store").cameras()[0].frames_read == 30


def test_ctrl_c_keeps_the_cameras_tracked_again_completely_before_it(tmp_path: Path, capsys, osnet_onnx: Path,
                                                                     monkeypatch, caplog):
    """Ctrl-C while tracking the second of two cameras again threw away the first's finished
    outputs too: they wait beside it now, and the next association puts them in place with the
    store (the folder and the store stay one run's)."""
    import pipeline.video.run

    video = write_video(tmp_path / "hall.avi", 40, walker=True)
    out = tmp_path / "run"
    args = ["track", str(video), str(video), "--camera", "hall", "--camera", "door", "--out", str(out),
            "--detector", "motion", "--reid", str(osnet_onnx), "--quiet"]
    assert run_cli(args, capsys)[0] == 0
    door_before = (out / "door" / "tracks.txt").read_bytes()
    real_chain, seen = pipeline.video.run.camera_chain, []

    def chain_stopping_door(source, *a, **k):
        seen.append(source.camera)
        for i, result in enumerate(real_chain(source, *a, **k)):
            if source.camera == "door" and i == 10:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(pipeline.video.run, "camera_chain", chain_stopping_door)
    code, _, err = run_cli([*args, "--max-frames", "30"], capsys)
    assert code == 130 and seen == ["hall", "door"], err
    assert "hall: tracked again completely; its new outputs wait in .hall.retrack" in caplog.text
    assert "door: stopped; its earlier complete outputs are kept" in caplog.text
    assert (out / "door" / "tracks.txt").read_bytes() == door_before
    assert json.loads((out / "door" / "run.json").read_text())["status"] == "complete"
    assert json.loads((out / "hall" / "run.json").read_text())["frames_read"] == 40  # the store's, until associated
    monkeypatch.setattr(pipeline.video.run, "camera_chain", real_chain)
    assert run_cli(["associate", str(out), "--quiet"], capsys)[0] == 0  # puts hall's new outputs in with the store
    assert json.loads((out / "hall" / "run.json").read_text())["frames_read"] == 30
    assert {c.name: c.frames_read for c in TrackStore.open(out / "store").cameras()} == {"door": 40, "hall": 30}
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_a_file_system_without_locks_warns_and_tracks(tmp_path: Path, monkeypatch, caplog):
    import fcntl

    from pipeline.run_folders import claim_camera, release

    def no_locks(fd, operation):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    claim = claim_camera(tmp_path, "hall")
    assert "cannot be locked (Function not implemented)" in caplog.text
    release([claim])
    assert not (tmp_path / ".hall.lock").exists()


def test_frames_the_motion_detector_could_not_judge_are_said_and_counted(tmp_path: Path, capsys, osnet_onnx: Path,
                                                                         caplog):
    """A crowd or a moving camera makes most of the picture move: the motion detector relearns its
    background and finds no one there. That was silent (45 frames without a box in a crowd)."""
    video = write_video(tmp_path / "hall.avi", 40, walker=True)
    frames = read_video_frames(video)
    writer = cv2.VideoWriter(str(tmp_path / "flash.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (320, 240))
    for i, image in enumerate(frames):
        writer.write(255 - image if 20 <= i < 23 else image)  # the lights change for 3 frames, and back
    writer.release()
    out = tmp_path / "run"
    code, _, _ = run_cli(["track", str(tmp_path / "flash.avi"), "--out", str(out), "--detector", "motion",
                          "--reid", str(osnet_onnx), "--quiet", "--no-identities"], capsys)
    assert code == 0
    record = json.loads((out / "flash" / "run.json").read_text())
    assert record["detector_blind_frames"] >= 2
    assert "from frame 20) most of the picture moved, so the motion detector relearned" in caplog.text


def test_a_camera_name_from_a_file_name_not_in_utf8_is_one_line():
    """A Latin-1 file name gives a camera name the store cannot keep: said, not a traceback."""
    from pipeline.video.run import check_camera_names

    with pytest.raises(CrosscamError, match=r"not UTF-8 text; give it a --camera"):
        check_camera_names(["caf\udce9.mp4"], None, ["caf\udce9"])


def test_a_users_files_in_a_camera_folder_stay_when_it_is_tracked_again(tmp_path: Path, capsys, osnet_onnx: Path):
    """Tracking a camera again deleted the files a user kept in its folder: notes, the camera's own video."""
    folder = tmp_path / "run" / "hall"
    folder.mkdir(parents=True)
    video = write_video(folder / "hall.avi", 30, walker=True)  # kept where its outputs go
    names = ("notes.txt", ".notes", "site.tmp.txt", ".run.json.bak", "tracks.tmp.csv")  # not crosscam's own names
    for name in names:
        (folder / name).write_text("door left open")
    args = ["track", str(video), "--out", str(tmp_path / "run"), "--detector", "motion", "--reid", str(osnet_onnx),
            "--quiet", "--max-frames", "20"]
    for _ in range(2):  # the second one replaces the folder with its new outputs
        code, _, err = run_cli(args, capsys)
        assert code == 0, err
    assert all((folder / name).read_text() == "door left open" for name in names)
    assert video.is_file()
    assert json.loads((folder / "run.json").read_text())["frames_read"] == 20
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".hall")]
    mine = tmp_path / "run" / "door"  # not crosscam's, with a file by one of its outputs' names
    mine.mkdir()
    (mine / "tracks.txt").write_text("mine")
    code, _, err = run_cli([*args, "--camera", "door"], capsys)
    assert code == 2 and f"{mine}: holds tracks.txt, which crosscam did not write (no run.json of its own)" in err
    (mine / "run.json").write_text('{"project": "mine"}')  # a run.json, not crosscam's: the same
    assert run_cli([*args, "--camera", "door"], capsys)[0] == 2 and (mine / "tracks.txt").read_text() == "mine"
    assert (mine / "tracks.txt").read_text() == "mine"


def test_a_stopped_camera_stopped_again_keeps_the_tracks_the_store_holds(tmp_path: Path, capsys, osnet_onnx: Path,
                                                                          monkeypatch):
    """A second stopped run of a camera whose first run was stopped too (and associated) emptied its
    folder in place while the store still held its tracks: queries named thumbnails that were gone."""
    import pipeline.video.run

    video = write_video(tmp_path / "hall.avi", 60, walker=True)
    out, folder = tmp_path / "run", tmp_path / "run" / "hall"
    args = ["track", str(video), "--out", str(out), "--detector", "motion", "--reid", str(osnet_onnx), "--quiet"]
    real_chain = pipeline.video.run.camera_chain

    def stopped_after(frames: int):
        def chain(*a, **k):
            for i, result in enumerate(real_chain(*a, **k)):
                if i == frames:
                    raise KeyboardInterrupt
                yield result
        return chain

    monkeypatch.setattr(pipeline.video.run, "camera_chain", stopped_after(45))
    assert run_cli(args, capsys)[0] == 130
    assert run_cli(["associate", str(out)], capsys)[0] == 0
    files = lambda: {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}  # noqa: E731
    before = files()
    in_store = [(t.track_id, t.first_frame, t.last_frame, t.thumbnail) for t in TrackStore.open(out / "store").tracks()]
    assert in_store and json.loads((folder / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(pipeline.video.run, "camera_chain", stopped_after(5))
    assert run_cli(args, capsys)[0] == 130
    assert files() == before  # the outputs the store describes, thumbnails included
    assert all((out / thumbnail).is_file() for *_, thumbnail in in_store if thumbnail)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".hall")]
    door = [*args, "--camera", "door", "--no-identities"]  # stopped twice, never associated: the newer run stays
    monkeypatch.setattr(pipeline.video.run, "camera_chain", stopped_after(10))
    assert run_cli(door, capsys)[0] == 130
    first = json.loads((out / "door" / "run.json").read_text())["frames_read"]
    monkeypatch.setattr(pipeline.video.run, "camera_chain", stopped_after(30))
    assert run_cli(door, capsys)[0] == 130
    assert json.loads((out / "door" / "run.json").read_text())["frames_read"] > first


def test_no_identities_leaves_a_camera_the_store_holds_as_the_store_describes_it(tmp_path: Path, capsys,
                                                                                  osnet_onnx: Path, caplog):
    """--no-identities put a camera's new outputs in place while the store held its old tracks: a query
    named frames and a thumbnail of the earlier run (another person in the new thumbs/8.jpg)."""
    args, out, snapshot = tracked_hall(tmp_path, capsys, osnet_onnx)
    before = snapshot()
    code, printed, err = run_cli([*args, "--max-frames", "20", "--no-identities", "--json"], capsys)
    assert code == 0, err
    assert snapshot() == before and "new outputs wait in .hall.retrack until `crosscam associate" in caplog.text
    (camera,) = json.loads(printed)["cameras"]
    assert camera["frames_read"] == 20 and camera["waiting_in"] == str((out / ".hall.retrack").resolve())
    assert run_cli(["associate", str(out)], capsys)[0] == 0  # puts them in place with the store
    assert json.loads((out / "hall" / "run.json").read_text())["frames_read"] == 20
    assert {t.last_frame for t in TrackStore.open(out / "store").tracks()} <= set(range(20))
    code, _, err = run_cli([*args, "--camera", "door", "--max-frames", "20", "--no-identities"], capsys)
    assert code == 0 and (out / "door" / "tracks.json").is_file()  # not in the store: in place at once


def test_out_inside_another_runs_camera_folder_or_store_is_refused(tmp_path: Path, capsys, osnet_onnx: Path,
                                                                   monkeypatch):
    """--out RUN/cam1 (or RUN/store) wrote a run no command could read inside the other one, and a
    retrack of cam1 deleted it."""
    args, out, snapshot = tracked_hall(tmp_path, capsys, osnet_onnx)
    before = snapshot()
    for inside, what in ((out / "hall", "inside camera folder"), (out / "hall" / "thumbs", "inside camera folder"),
                         (out / "store" / "x", "inside the track store")):
        code, _, err = run_cli([*args[:3], str(inside), *args[4:]], capsys)
        assert code == 2 and err.startswith(f"error: --out {inside}: {what}") and "\n" not in err.strip(), err
    assert snapshot() == before and not (out / "store" / "x").exists()
    (tmp_path / "run.json").write_text("{}")  # a project's own run.json above the runs: not a camera's
    code, _, err = run_cli([*args[:3], str(out / "hall" / ".."), *args[4:], "--camera", "lobby"], capsys)
    assert code == 0, err  # RUN/hall/.. is the run itself
    monkeypatch.chdir(out / "hall")  # from the camera's own folder, which is replaced: "..", then the folder, go away
    code, _, err = run_cli([*args[:3], "..", *args[4:], "--max-frames", "20"], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert json.loads((out / "hall" / "run.json").read_text())["frames_read"] == 20 and (out / "report.html").is_file()
    assert Path.cwd() == (out / "hall").resolve() and not [p for p in out.iterdir() if p.name.startswith(".hall")]
    (out / "door").write_text("a file where camera door's folder goes")
    code, _, err = run_cli([*args, "--camera", "door"], capsys)
    assert code == 2 and err.strip().endswith("move what is there, or give this input another --camera"), err


def test_a_file_that_cannot_be_written_during_association_is_one_line(tmp_path: Path, capsys, osnet_onnx: Path,
                                                                         monkeypatch):
    """A camera folder made read-only (or a folder where report.html goes) gave a 40-line traceback."""
    import pipeline.identity.identities

    args, out, _ = tracked_hall(tmp_path, capsys, osnet_onnx)
    target = out / "hall" / "tracks_global.partial.txt"

    def refused(folder, identity_of):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(pipeline.identity.identities, "write_global_tracks", refused)
    code, _, err = run_cli(["associate", str(out), "--set", "association.threshold=0.5"], capsys)
    assert code == 2 and err.strip().splitlines()[-1] == (f"error: {target}: Permission denied; check its permissions "
                                                          "(or whether its disk is read-only) and run the command again")
    assert "Traceback" not in err
    monkeypatch.undo()
    assert run_cli(["associate", str(out), "--set", "association.threshold=0.5"], capsys)[0] == 0  # and it finishes


def test_a_camera_input_is_checked_against_its_earlier_source_as_the_same_frames(tmp_path: Path):
    """A Ray run gives the image folder as typed (SEQ), a run.json records SEQ/img1: a retrack of the
    camera was refused as another input's."""
    from pipeline.run_folders import check_camera_input

    (tmp_path / "SEQ" / "img1").mkdir(parents=True)
    folder = tmp_path / "run" / "SEQ"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"camera": "SEQ", "source": str(tmp_path / "SEQ" / "img1")}))
    check_camera_input(folder, str(tmp_path / "SEQ"), named=False)  # the same frames: nothing to say
    (tmp_path / "OTHER" / "img1").mkdir(parents=True)
    with pytest.raises(CrosscamError, match="camera SEQ .* was tracked from"):
        check_camera_input(folder, str(tmp_path / "OTHER"), named=False)
    check_camera_input(folder, str(tmp_path / "OTHER"), named=True)  # --camera SEQ: meant
    (folder / "run.json").write_text(json.dumps({"camera": "SEQ", "source": "rtsp://cam/1"}))
    with pytest.raises(CrosscamError, match="was tracked from rtsp://cam/1"):  # a stream is never "moved"
        check_camera_input(folder, "rtsp://cam/2", named=False)


def test_a_camera_folder_that_is_a_link_is_tracked_again_twice(tmp_path: Path, capsys, osnet_onnx: Path):
    """A camera folder linked to another disk: the first retrack left the link as .hall.old, the second
    crashed after the store was written and every later command was stuck."""
    args, out, _ = tracked_hall(tmp_path, capsys, osnet_onnx)
    (tmp_path / "elsewhere").mkdir()
    (out / "hall").rename(tmp_path / "elsewhere" / "hall")
    (out / "hall").symlink_to(tmp_path / "elsewhere" / "hall")
    (tmp_path / "elsewhere" / "hall" / "notes.txt").write_text("mine")
    for frames in ("20", "30"):
        code, _, err = run_cli([*args, "--max-frames", frames], capsys)
        assert code == 0 and "Traceback" not in err, err
        assert json.loads((out / "hall" / "run.json").read_text())["frames_read"] == int(frames)
    assert (out / "hall" / "notes.txt").read_text() == "mine"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".hall")]
