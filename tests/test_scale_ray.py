"""``crosscam track --workers N`` on real Ray clusters: the embedded one (``ray.init()`` on this
machine) and a two-node cluster started here with ``ray start``; equality with the
single-process run, segments stitched back, a worker killed mid-unit, an undecodable input,
Ctrl-C, and Ray missing.

The 3-camera synthetic scene is tracked as MOTChallenge image folders (split by file) with its
ground-truth boxes replayed as detections: a stateless detector, so the unsplit and the
segmented runs see the same boxes and differ only where tracking does. (The motion detector's
background model depends on every earlier frame: see test_scale.py and the README.)

Every Ray process a test starts is found by its temp folder (a test's own) and killed by pid at
the end, also when the test fails; ``ray stop`` is never used (it stops every Ray of the user)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest

from pipeline.cli.main import main
from pipeline.config import load_pipeline_config
from pipeline.demo import write_gt_detections
from pipeline.identity.identities import GLOBAL_VIDEO_STAMP, update_identities
from pipeline.identity.query import query_track
from pipeline.video.tracks_file import read_tracks_file
from samples import SceneOptions, make_scene

from conftest import REPO, read_video_frames
from test_scale import idf1_against, tracks_through_cuts_keep_one_id
from test_track_cli import count_video_frames

pytest.importorskip("ray", reason="Ray is the optional extra crosscam[ray]; make test installs it")

CAMERAS = ("cam1", "cam2", "cam3")
# The demo's settings, with the torch runtime: a worker starts in under a second (no ONNX export).
SETTINGS = ["--config", str(REPO / "configs" / "demo.yaml"), "--set", "reid.runtime=torch", "--quiet"]
REPLAY = ["--detector", "replay"]
SEGMENTS = ["--segment-s", "2", "--set", "scale.overlap_s=1.5"]  # 80 frames -> 4 segments per camera on 2 workers
RAY_BIN = Path(sys.executable).with_name("ray")


def ray_processes(marker: str) -> list[psutil.Process]:
    """Processes whose command line names ``marker`` (a test's Ray temp folder), and their children."""
    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid != os.getpid() and any(marker in arg for arg in proc.info["cmdline"] or []):
            found.add(proc)
            try:
                found.update(proc.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
    return list(found)


def kill_processes(marker: str) -> None:
    procs = ray_processes(marker)
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=15)


def crosscam(args: list[str], env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def track(out: Path, inputs: Path, extra: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """Track the three cameras of ``inputs`` (videos, or the MOT image folders with ``REPLAY``)."""
    folders = (inputs / "cam1").is_dir()
    specs = [str(inputs / (c if folders else f"{c}.mp4")) for c in CAMERAS]
    return crosscam(["track", *specs, "--out", str(out), *SETTINGS, "--json", *(REPLAY if folders else []), *extra],
                    env)


def idf1(truth: Path, pred: Path) -> float:
    """IDF1 of the tracks file ``pred`` with the tracks file ``truth`` as ground truth."""
    return idf1_against(read_tracks_file(truth), read_tracks_file(pred))


@pytest.fixture
def ray_tmp():
    """A short temp folder for an embedded Ray (its socket paths must stay under 108 bytes)."""
    folder = tempfile.mkdtemp(prefix="cc-ray-", dir="/tmp")
    try:
        yield folder
    finally:
        kill_processes(folder)
        shutil.rmtree(folder, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scene")
    make_scene(SceneOptions(cameras=3, people=6, seconds=8.0, seed=6, occlusion=0.3), out, progress=False)
    return out


@pytest.fixture(scope="module")
def sequences(scene, tmp_path_factory) -> Path:
    """The scene's cameras as MOTChallenge sequences: img1/ JPEGs, seqinfo.ini, det/det.txt (the gt boxes)."""
    root = tmp_path_factory.mktemp("sequences")
    for cam in CAMERAS:
        seq = root / cam
        (seq / "img1").mkdir(parents=True)
        (seq / "det").mkdir()
        cap = cv2.VideoCapture(str(scene / f"{cam}.mp4"))
        index = 0
        while True:
            ok, image = cap.read()
            if not ok:
                break
            index += 1
            cv2.imwrite(str(seq / "img1" / f"{index:06d}.jpg"), image)
        shutil.copyfile(write_gt_detections(scene, cam), seq / "det" / "det.txt")
        (seq / "seqinfo.ini").write_text(f"[Sequence]\nname={cam}\nimDir=img1\nframeRate=10\nseqLength={index}\n")
    return root


@pytest.fixture(scope="module")
def single(sequences, tmp_path_factory) -> tuple[Path, dict]:
    """The single-process run every Ray run is compared with, and its --json result."""
    out = tmp_path_factory.mktemp("single") / "run"
    proc = track(out, sequences, [])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A real two-node Ray cluster on this machine (1 CPU each, own temp folders, token auth)."""
    root = Path(tempfile.mkdtemp(prefix="cc-ray-", dir="/tmp"))
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    common = ["--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run([str(RAY_BIN), "start", "--head", f"--port={port}", f"--temp-dir={root / 'head'}",
                        "--include-dashboard=false", *common], env=env, check=True, capture_output=True, timeout=120)
        address = f"127.0.0.1:{port}"
        subprocess.run([str(RAY_BIN), "start", f"--address={address}", f"--temp-dir={root / 'node2'}", *common],
                       env=env, check=True, capture_output=True, timeout=120)
        yield address, {"RAY_AUTH_MODE": "token"}
    finally:
        kill_processes(str(root))
        assert not ray_processes(str(root))
        shutil.rmtree(root, ignore_errors=True)


def test_workers_give_the_single_process_run(sequences, single, ray_tmp, tmp_path):
    """--workers 2 --segment-s 0 on the embedded Ray: the same tracks, identities and answers. A
    1-CPU `ray start` cluster in the same RAY_TMPDIR is not joined (Ray's own default would)."""
    reference, reference_result = single
    out = tmp_path / "run"
    subprocess.run([str(RAY_BIN), "start", "--head", f"--port={free_port()}", "--num-cpus=1", "--include-dashboard=false",
                    "--disable-usage-stats"], env={**os.environ, "RAY_TMPDIR": ray_tmp}, check=True, capture_output=True,
                   timeout=120)
    decoy = set(ray_processes(ray_tmp))
    proc = track(out, sequences, ["--workers", "2", "--segment-s", "0"], {"RAY_TMPDIR": ray_tmp})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Token authentication is enabled" not in proc.stderr  # Ray's notice on every run is dropped
    result = json.loads(proc.stdout)
    for cam in CAMERAS:
        assert idf1(reference / cam / "tracks.txt", out / cam / "tracks.txt") >= 0.99
        record = json.loads((out / cam / "run.json").read_text())
        assert record["status"] == "complete" and len(record["segments"]) == 1
        assert record["frames_read"] == 80 and record["scale"]["workers"] == 2
    assert result["identities"]["identities"] == reference_result["identities"]["identities"]
    assert answers(out) == answers(reference)
    assert set(ray_processes(ray_tmp)) <= decoy  # the embedded Ray is shut down with the run


def answers(run: Path) -> list:
    """Each camera's longest track asked about (``crosscam query --track``'s function): every
    match's appearances as (camera, first frame, last frame)."""
    out = []
    for cam in CAMERAS:
        tracks = json.loads((run / cam / "tracks.json").read_text())
        longest = max(tracks, key=lambda t: (t["num_detections"], -t["first_frame"]))
        result = query_track(run, cam, longest["track_id"])
        out.append([sorted((a.camera, a.start_frame, a.end_frame) for a in match.appearances)
                    for match in result.matches])
    return out


@pytest.fixture(scope="module")
def segmented(sequences, cluster, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The scene in 4 segments per camera on the two-node cluster."""
    address, env = cluster
    out = tmp_path_factory.mktemp("segmented") / "run"
    return out, track(out, sequences, ["--ray-address", address, *SEGMENTS], env)


def test_segments_on_a_two_node_cluster(segmented, single):
    """4 segments per camera on two nodes: stitched tracks against the unsplit run, every frame
    once in the video, and people walking through a cut keep their id."""
    out, proc = segmented
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference, _ = single
    nodes, crossing, reused = set(), 0, []
    for cam in CAMERAS:
        assert idf1(reference / cam / "tracks.txt", out / cam / "tracks.txt") >= 0.98
        record = json.loads((out / cam / "run.json").read_text())
        assert record["status"] == "complete" and record["frames_read"] == 80
        segments = [(s["start_frame"], s["end_frame"], s["owned_start_frame"], s["owned_end_frame"])
                    for s in record["segments"]]
        # each segment but the last reads 20 frames (tracker.interpolate_max_gap) past its owned end
        assert segments == [(0, 51, 0, 31), (16, 67, 31, 47), (32, 80, 47, 64), (49, 80, 64, 80)]
        nodes |= {s["worker"].split(":")[0] for s in record["segments"]}
        reused.append(sum(s["reused_frames"] for s in record["segments"]))
        assert count_video_frames(out / cam / "annotated.mp4") == 80
        assert count_video_frames(out / cam / "annotated_global.mp4") == 80  # drawn by the workers too
        crossing += tracks_through_cuts_keep_one_id(read_tracks_file(reference / cam / "tracks.txt"),
                                                    read_tracks_file(out / cam / "tracks.txt"), [40, 65])
    assert crossing >= 3
    assert len(nodes) == 2  # both nodes ran segments
    print("overlap frames taken from a neighbour, per camera:", reused)
    # 3 overlaps of 15 frames and 20 of look-ahead a camera; a neighbour computes each (unless both reach it at once)
    assert all(r <= 3 * 35 for r in reused) and sum(reused) >= 45
    assert json.loads(proc.stdout)["identities"]["identities"] >= 6


SESSION = """
import json, sys
from pipeline.config import load_pipeline_config
from pipeline.identity.identities import GlobalVideo, update_identities
from pipeline.scale.driver import RaySession
config, out, address, *sequences = sys.argv[1:]
cfg = load_pipeline_config(config, ["reid.runtime=torch", "detector.model=replay", "scale.segment_s=2",
                                    "scale.overlap_s=1.5"])
queued_at_read = []  # pieces waiting in the queue each time a camera's rows were read for drawing
with RaySession(cfg, address=address) as session:
    runs = session.track(sequences, out, progress=False)
    read = GlobalVideo.rows
    GlobalVideo.rows = lambda job: (queued_at_read.append(session.pool.queued()), read(job))[1]
    update_identities(out, cfg, progress=False, render_videos=session.render_global_videos)
print(json.dumps({"status": [run.status for run in runs], "drawn_on_workers": session.drawn_on_workers,
                  "queued_at_read": queued_at_read}))
"""


def test_a_session_draws_the_global_videos_on_its_workers(sequences, cluster, tmp_path):
    """In a session on the two-node cluster (as `crosscam track --ray-address` runs), association
    has the workers draw annotated_global.mp4 in each camera's 4 units, joined into every frame
    once: the picture this process draws alone. A camera's rows are read only when the queue runs
    short (not every camera's at once), and no piece is left beside the videos."""
    address, env = cluster
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", SESSION, str(REPO / "configs" / "demo.yaml"), str(out), address,
                           str(sequences / "cam1"), str(sequences / "cam2")], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["status"] == ["complete", "complete"] and result["drawn_on_workers"] == {"cam1": 4, "cam2": 4}
    # cam1's 4 pieces are queued at once; cam2's rows are read once fewer than the 2 workers' worth wait
    assert result["queued_at_read"] == [0, 1]
    assert not [p.name for p in out.rglob(".*piece*")]
    drawn = read_video_frames(out / "cam1" / "annotated_global.mp4")
    (out / "cam1" / GLOBAL_VIDEO_STAMP).unlink()  # drawn again, here
    cfg = load_pipeline_config(REPO / "configs" / "demo.yaml", ["reid.runtime=torch"])
    update_identities(out, cfg, progress=False)
    here = read_video_frames(out / "cam1" / "annotated_global.mp4")
    assert len(drawn) == len(here) == 80
    # mp4v is lossy and each piece starts with a key frame: a mean difference of about 2 levels, but
    # no pixel far off (the boxes and labels drawn on these frames are 850-1650 pixels each)
    assert max(int((np.abs(a.astype(np.int16) - b).max(axis=2) > 60).sum()) for a, b in zip(drawn, here)) < 50


def kill_a_worker_mid_unit(done: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first worker process seen running a track job (its Ray process title says so),
    then the driver's progress counter."""
    for title in ("ray::SegmentWorker.track", "ray::ProgressCounter"):
        while not done.is_set() and len(killed) < (1 if title.endswith("track") else 2):
            for proc in psutil.process_iter(["cmdline"]):
                if (proc.info["cmdline"] or [""])[0].startswith(title):
                    time.sleep(0.3)  # well inside the unit
                    try:
                        proc.kill()
                        killed.append(proc.pid)
                    except psutil.NoSuchProcess:
                        continue
                    break
            else:
                time.sleep(0.05)


def test_a_worker_killed_mid_unit_costs_only_that_unit(sequences, cluster, segmented, tmp_path):
    address, env = cluster
    clean, clean_proc = segmented
    assert clean_proc.returncode == 0
    faulty = tmp_path / "faulty"
    done, killed = threading.Event(), []
    killer = threading.Thread(target=kill_a_worker_mid_unit, args=(done, killed))
    killer.start()
    try:
        proc = track(faulty, sequences, ["--ray-address", address, *SEGMENTS], env)
    finally:
        done.set()
        killer.join()
    assert len(killed) == 2, "no worker was seen running a unit, or no progress counter"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the progress counter's process died" in proc.stderr  # it cost the count only
    assert re.search(r"cam\d: segment \d of 4 \(frames \d+-\d+\): its worker died \(\w+\); running it again", proc.stderr)
    records = [json.loads((faulty / cam / "run.json").read_text()) for cam in CAMERAS]
    retried = [s for r in records for s in r["segments"] if s["retries"]]
    assert len(retried) == 1 and retried[0]["retries"] == 1 and retried[0]["lost_workers"]
    for cam in CAMERAS:  # nothing written twice, nothing lost: the fault-free files
        assert (faulty / cam / "tracks.txt").read_text() == (clean / cam / "tracks.txt").read_text()
        assert count_video_frames(faulty / cam / "annotated.mp4") == 80


def test_an_undecodable_input_fails_its_camera_only(scene, cluster, tmp_path):
    address, env = cluster
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    out = tmp_path / "run"
    proc = crosscam(["track", str(scene / "cam1.mp4"), str(broken), "--out", str(out), *SETTINGS,
                     "--ray-address", address], env)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken" in errors[0] and "not a readable video" in errors[0]
    good = json.loads((out / "cam1" / "run.json").read_text())
    bad = json.loads((out / "broken" / "run.json").read_text())
    assert good["status"] == "complete" and (out / "cam1" / "tracks.txt").is_file()
    assert bad["status"] == "failed" and "\n" not in bad["error"]
    # cam1 tracked again from the broken file: it fails, and cam1's complete outputs stay as they were
    before = {p.name: p.read_bytes() for p in (out / "cam1").iterdir() if p.is_file()}
    proc = crosscam(["track", str(broken), "--camera", "cam1", "--out", str(out), *SETTINGS, "--ray-address", address], env)
    assert proc.returncode == 2 and "cam1: stopped; its earlier complete outputs are kept" in proc.stderr
    assert {p.name: p.read_bytes() for p in (out / "cam1").iterdir() if p.is_file()} == before
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_ctrl_c_stops_the_workers_and_keeps_finished_cameras(ray_tmp, tmp_path):
    """Ctrl-C while a long camera runs: the short camera keeps its outputs, the long one its first
    segments (status interrupted), and the embedded Ray and its workers are gone."""
    make_scene(SceneOptions(cameras=1, people=4, seconds=60.0, seed=2), tmp_path / "scene", progress=False)
    short = tmp_path / "short"
    make_scene(SceneOptions(cameras=1, people=2, seconds=3.0, seed=3, lookalikes=0), short, progress=False)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pipeline.cli.main", "track", str(short / "cam1.mp4"),
           str(tmp_path / "scene" / "cam1.mp4"), "--camera", "short", "--camera", "long", "--out", str(out),
           *SETTINGS[:-1], "--workers", "2", "--segment-s", "6", "--set", "scale.overlap_s=2"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": ray_tmp},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 180
        # the long camera's first segment must be done: an interrupted camera keeps its segments
        # from the first on, in order (a later one finished before it is dropped)
        while 0 not in [s["segment"] for s in json.loads(_read(out / "long" / "run.json") or "{}").get("segments", [])] \
                or json.loads(_read(out / "short" / "run.json") or "{}").get("status") != "complete":
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err[-3000:]
        short_record = json.loads((out / "short" / "run.json").read_text())
        long_record = json.loads((out / "long" / "run.json").read_text())
        assert short_record["status"] == "complete"
        assert long_record["status"] == "interrupted" and 0 < long_record["frames_read"] < 600
        assert (out / "long" / "tracks.txt").is_file() and not list(out.glob("*/*.partial*"))
        assert not list(out.glob("*/.*piece*"))  # no video piece left waiting
        time.sleep(2)
        assert not ray_processes(ray_tmp), "Ray processes outlived the driver"
    finally:
        proc.kill()


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, ValueError):
        return None


def test_without_ray_the_options_say_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    assert main(["track", "cam1.mp4", "--out", str(tmp_path / "run"), "--workers", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --workers / --ray-address need Ray, which is not installed; pip install -e '.[ray]' in crosscam's source tree")


def test_a_missing_input_is_refused_before_a_local_ray_starts(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "000001.jpg"), np.zeros((64, 48, 3), np.uint8))
    started = time.monotonic()
    assert main(["track", str(tmp_path / "frames"), str(tmp_path / "gone.mp4"), "--out", str(tmp_path / "run"), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "gone.mp4: no such file or folder" in err and "\n" not in err
    assert time.monotonic() - started < 20 and not (tmp_path / "run").exists()


def test_a_cluster_asking_for_its_token_says_so_in_one_line(scene, cluster, tmp_path):
    """Without RAY_AUTH_MODE=token Ray logged a warning a second for 20 s, and the error named the
    address's other IP and the token last of four guesses."""
    address, _ = cluster
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "track", str(scene / "cam1.mp4"), "--out",
                           str(tmp_path / "run"), *SETTINGS, "--ray-address", address], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: --ray-address {address}: cannot join the Ray cluster: it asks for its token, "
                                   "which Ray sends only with RAY_AUTH_MODE=token (and the cluster's ~/.ray/auth_token, "
                                   "or RAY_AUTH_TOKEN)")


def test_an_empty_ray_address_is_refused(capsys, tmp_path):
    assert main(["track", "cam1.mp4", "--out", str(tmp_path / "run"), "--ray-address", " "]) == 2
    assert "--ray-address '': give the cluster's HOST:PORT" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_segment_options_need_workers(capsys, tmp_path):
    assert main(["track", "cam1.mp4", "--out", str(tmp_path / "run"), "--segment-s", "60"]) == 2
    assert "add --workers N or --ray-address ADDR" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("segment, words", [
    ("inf", "--segment-s inf: give a finite number of seconds"),  # named '--set scale.segment_s=Infinity'
    ("3", "--segment-s 3: not longer than the segments' overlap (scale.overlap_s 4)"),  # one segment, silently
])
def test_segment_lengths_that_cannot_cut_are_refused_before_ray_starts(capsys, tmp_path, segment, words):
    assert main(["track", "cam1.mp4", "--out", str(tmp_path / "run"), "--workers", "2", "--segment-s", segment]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_address_from_the_environment_is_named_as_such(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "nonsense")
    video = tmp_path / "cam1.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    assert main(["track", str(video), "--out", str(tmp_path / "run"), "--workers", "2", "--detector", "motion"]) == 2
    assert "RAY_ADDRESS nonsense: cannot join the Ray cluster" in capsys.readouterr().err  # said '--ray-address'
    assert not (tmp_path / "run").exists()  # an empty run folder was left
