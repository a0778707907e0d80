"""`crosscam serve`'s JSON API on a real demo run, through a real server process: every answer
equals `crosscam query --json` for the same question, and every bad input gets a one-line 4xx."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from pipeline.cli.main import main
from pipeline.identity.layout import run_folders
from pipeline.identity.report import last_tracked_frame
from pipeline.identity.store import CameraTracks, TrackStore
from pipeline.serve import create_app
from pipeline.video.render import color_for_id
from reid.errors import CrosscamError
from serve_runs import cli_json, demo_run, serving, serving_process, tree_state


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return demo_run(tmp_path_factory)


@pytest.fixture(scope="module")
def api(run):
    before = tree_state(run)
    with serving(run) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client
    assert tree_state(run) == before, "the server wrote into the run directory"


def one_line_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert message and "\n" not in message
    return message


def multi_camera_track(run: Path) -> tuple[str, int]:
    """The longest track of an identity seen by the most cameras."""
    tracks = TrackStore.open(run / "store").tracks()
    cams: dict[int, set[str]] = {}
    for t in tracks:
        cams.setdefault(t.identity, set()).add(t.camera)
    best = max(tracks, key=lambda t: (len(cams[t.identity]), t.num_detections))
    assert len(cams[best.identity]) > 1
    return best.camera, best.track_id


def test_status_and_cameras_describe_the_run(api, run):
    status = api.get("/api/status").json()
    assert status["run_dir"] == str(run.resolve()) and status["cameras"] == ["cam1", "cam2", "cam3"]
    assert status["generation"] == TrackStore.open(run / "store").generation() >= 1
    assert "run run" not in status["title"] and "3 cameras: cam1, cam2, cam3" in status["title"]
    assert status["clock_origin"] is None  # no cameras file
    assert (status["max_upload_bytes"], status["max_upload_pixels"]) == (10 * 2**20, 40_000_000)  # the page checks photos by them
    cameras = {c["name"]: c for c in api.get("/api/cameras").json()}
    store = TrackStore.open(run / "store")
    for record in store.cameras():
        cam = cameras[record.name]
        assert (cam["frames"], cam["fps"], cam["frame_size"]) == (80, 10.0, list(record.frame_size))
        assert cam["tracks"] == len(store.tracks(camera=record.name)) and cam["frames_from"] == "source"
        assert cam["common_clock"] is False and cam["time_offset_s"] == 0.0
        assert cam["last_tracked_frame"] == 79  # tracked to the end: the page marks no frame "not tracked"


def test_the_last_tracked_frame_follows_frames_processed_and_stride():
    assert last_tracked_frame({"frames_read": 200, "config": {"source": {"stride": 1}}}) == 199  # --max-frames 200
    assert last_tracked_frame({"frames_read": 10, "config": {"source": {"stride": 3}}}) == 27
    assert last_tracked_frame({"status": "running"}) is None and last_tracked_frame({"frames_read": 0}) is None
    # frames given up as undecodable were reached too: a complete run with 25 of them is tracked to its end
    assert last_tracked_frame({"frames_read": 975, "frames_failed": 25, "config": {"source": {"stride": 1}}}) == 999


def test_openapi_lists_the_api_and_docs_render_it_offline(api):
    paths = api.get("/openapi.json").json()["paths"]
    for path in ("/api/cameras", "/api/identities", "/api/identities/{identity}", "/api/query/track",
                 "/api/query/image", "/api/frames/{camera}/{index}", "/api/tracks/{camera}"):
        assert path in paths
    assert "multipart/form-data" in paths["/api/query/image"]["post"]["requestBody"]["content"]
    docs = api.get("/docs").text
    assert "/openapi.json" in docs and "http" not in docs.replace("http://www.w3.org", "")  # nothing from the internet


@pytest.mark.parametrize("top_k,min_score", [(5, -1.0), (2, 0.8)])
def test_track_query_equals_the_cli(api, run, capsys, top_k, min_score):
    camera, track = multi_camera_track(run)
    answer = api.get("/api/query/track", params={"camera": camera, "track": track, "top_k": top_k,
                                                 "min_score": min_score}).json()
    cli = cli_json(capsys, "query", run, "--track", f"{camera}:{track}", "--top-k", top_k, "--min-score", min_score)
    assert answer == cli
    assert len({a["camera"] for a in answer["appearances"]}) > 1 and len(answer["matches"]) <= top_k


def test_identity_query_and_gallery_equal_the_store(api, run, capsys):
    page = api.get("/api/identities").json()
    store = TrackStore.open(run / "store")
    assert page["total"] == len(store.identities()) == len(page["identities"])
    gallery = page["identities"]
    people = [o for o in gallery if o["likely_person"]]
    assert gallery[:len(people)] == people  # background and fragments last
    assert [len(o["cameras"]) for o in people] == sorted((len(o["cameras"]) for o in people), reverse=True)
    for o in gallery:
        tracks = store.tracks(identity=o["identity"])
        assert o["cameras"] == sorted({t.camera for t in tracks}) and len(o["tracks"]) == len(tracks)
        b, g, r = color_for_id(o["identity"])
        assert o["color"] == f"#{r:02x}{g:02x}{b:02x}"
        assert all(Path(t["thumbnail"]).is_file() for t in o["thumbnails"])
    first = gallery[0]["identity"]
    assert api.get(f"/api/identities/{first}").json() == cli_json(capsys, "query", run, "--identity", first)


def test_gallery_filters_by_camera_and_time(api):
    everyone = api.get("/api/identities").json()["identities"]
    cam1 = api.get("/api/identities", params={"camera": "cam1"}).json()["identities"]
    assert cam1 and [o["identity"] for o in cam1] == [o["identity"] for o in everyone if "cam1" in o["cameras"]]
    late = api.get("/api/identities", params={"start_s": 6.0, "end_s": 7.0}).json()["identities"]
    assert late and all(o["last_s"] >= 6.0 and o["first_s"] <= 7.0 for o in late) and len(late) < len(everyone)
    one_line_error(api.get("/api/identities", params={"camera": "nope"}), 404)


def test_image_queries_equal_the_cli(api, run, capsys, tmp_path):
    camera, track = multi_camera_track(run)
    thumb = run / camera / "thumbs" / f"{track}.jpg"
    with thumb.open("rb") as f:
        answer = api.post("/api/query/image", data={"camera": camera},
                          files={"image": ("person.jpg", f, "image/jpeg")}).json()
    cli = cli_json(capsys, "query", run, "--image", thumb, "--camera", camera)
    assert answer["query"] == "image person.jpg"
    assert {**answer, "query": None} == {**cli, "query": None}
    assert answer["identity"] == TrackStore.open(run / "store").track(camera, track).identity

    # A box drawn on a frame of the run: the server decodes that frame; the CLI gets it as a PNG.
    store = TrackStore.open(run / "store")
    t = store.track(camera, track)
    frame = (t.first_frame + t.last_frame) // 2
    box = api.get(f"/api/tracks/{camera}", params={"frame": frame}).json()["frames"][str(frame)]
    box = next(b["box"] for b in box if b["track_id"] == track)
    text = ",".join(str(round(v)) for v in box)
    answer = api.post("/api/query/image", data={"camera": camera, "frame": str(frame), "box": text}).json()
    cap = cv2.VideoCapture(json.loads((run / camera / "run.json").read_text())["source"])
    for _ in range(frame + 1):
        ok, image = cap.read()
    cap.release()
    cv2.imwrite(str(tmp_path / "frame.png"), image)
    cli = cli_json(capsys, "query", run, "--image", tmp_path / "frame.png", "--box", text, "--camera", camera)
    assert {**answer, "query": None} == {**cli, "query": None}
    assert answer["identity"] == t.identity


def test_frames_and_boxes_are_the_runs(api, run):
    source = json.loads((run / "cam2" / "run.json").read_text())["source"]
    cap = cv2.VideoCapture(source)
    frames = [cap.read()[1] for _ in range(80)]
    cap.release()
    for index in (0, 41, 79, 12):  # forward, then back past a keyframe
        response = api.get(f"/api/frames/cam2/{index}")
        assert response.headers["content-type"] == "image/jpeg"
        assert float(response.headers["x-video-time-s"]) == pytest.approx(index / 10.0)
        image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
        diffs = [np.abs(image.astype(int) - f.astype(int)).mean() for f in frames]
        assert int(np.argmin(diffs)) == index and diffs[index] < 3.0  # that frame, not a neighbour
    small = cv2.imdecode(np.frombuffer(api.get("/api/frames/cam2/5", params={"width": 320}).content, np.uint8), 1)
    assert small.shape[:2] == (180, 320)

    rows = np.loadtxt(run / "cam2" / "tracks.txt", delimiter=",")
    identity = {t.track_id: t.identity for t in TrackStore.open(run / "store").tracks(camera="cam2")}
    got = api.get("/api/tracks/cam2", params={"frame": 0, "count": 80}).json()["frames"]
    assert sum(len(v) for v in got.values()) == len(rows)
    for frame, tid, x, y, w, h, *_ in rows[:: max(1, len(rows) // 10)]:
        box = next(b for b in got[str(int(frame) - 1)] if b["track_id"] == int(tid))
        assert box["box"] == pytest.approx([x, y, x + w, y + h], abs=0.01)
        b, g, r = color_for_id(identity[int(tid)])
        assert box["identity"] == identity[int(tid)] and box["color"] == f"#{r:02x}{g:02x}{b:02x}"


def test_bad_input_is_a_one_line_4xx(api, run):
    assert "cam9" in one_line_error(api.get("/api/query/track", params={"camera": "cam9", "track": 1}), 404)
    assert "no track 999" in one_line_error(api.get("/api/query/track", params={"camera": "cam2", "track": 999}), 404)
    one_line_error(api.get("/api/query/track", params={"camera": "cam2", "track": "x"}), 422)
    assert "999999" in one_line_error(api.get("/api/identities/999999"), 404)
    one_line_error(api.get("/api/frames/cam2/80"), 404)
    one_line_error(api.get("/api/frames/nope/0"), 404)
    one_line_error(api.get("/api/tracks/nope", params={"frame": 0}), 404)
    one_line_error(api.get("/api/tracks/cam2", params={"frame": 0, "count": 5000}), 400)
    thumb = next((run / "cam2" / "thumbs").glob("*.jpg")).read_bytes()
    outside = api.post("/api/query/image", data={"box": "5000,5000,5100,5200"}, files={"image": ("p.jpg", thumb)})
    assert "outside" in one_line_error(outside, 400)
    tiny = api.post("/api/query/image", data={"box": "10,10,15,30"}, files={"image": ("p.jpg", thumb)})
    assert one_line_error(tiny, 400).startswith("box 10,10,15,30: 5x20 pixels") and "min_box_size" in one_line_error(tiny, 400)
    one_line_error(api.post("/api/query/image", files={"image": ("notes.txt", b"not an image at all")}), 415)
    one_line_error(api.post("/api/query/image", data={"box": "1,2,3"}, files={"image": ("p.jpg", thumb)}), 400)
    one_line_error(api.post("/api/query/image", data={"camera": "nope"}, files={"image": ("p.jpg", thumb)}), 404)
    one_line_error(api.post("/api/query/image", data={"camera": "cam2", "frame": "500", "box": "1,1,50,50"}), 404)
    one_line_error(api.post("/api/query/image", data={"camera": "cam2"}), 400)
    one_line_error(api.get("/api/nothing-here"), 404)
    # the API names its own fields, not `crosscam query`'s options
    assert one_line_error(outside, 400).startswith("box ")
    # ids past SQLite's 64-bit integers are in no run (not a 500 from the database)
    huge = str(2**63)
    assert one_line_error(api.get("/api/query/track", params={"camera": "cam2", "track": huge}), 422).startswith("track:")
    assert one_line_error(api.get(f"/api/identities/{huge}"), 422).startswith("identity:")
    one_line_error(api.get(f"/api/frames/cam2/{huge}"), 422)
    one_line_error(api.get("/api/tracks/cam2", params={"frame": huge}), 422)
    one_line_error(api.get("/api/colors", params={"identity": huge}), 422)
    assert "swap" in one_line_error(api.get("/api/identities", params={"start_s": 20, "end_s": 5}), 422)
    # NaN and infinite times gave an empty gallery ("nobody was there"); a NaN score was "more than 1"
    for params in ({"start_s": "nan"}, {"end_s": "nan"}, {"start_s": "inf"}, {"end_s": "1e400"}):
        assert "finite number" in one_line_error(api.get("/api/identities", params=params), 422), params
    assert "finite number" in one_line_error(
        api.get("/api/query/track", params={"camera": "cam2", "track": 1, "min_score": "nan"}), 422)


def test_the_folder_around_a_run_names_the_run_inside(run, tmp_path, capsys):
    """`crosscam demo --out D` writes D/run: serving or querying D says to use D/run instead."""
    shutil.copytree(run, tmp_path / "run")
    with pytest.raises(CrosscamError, match=r"not a run directory, but .*run is one"):
        create_app(tmp_path)
    assert main(["query", str(tmp_path), "--identity", "1"]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: ") and "\n" not in message
    assert "not a run directory" in message and str(tmp_path / "run") in message


def test_a_run_without_a_store_answers_409_and_shows_it_once_written(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("store"))
    client = TestClient(create_app(copy))
    assert client.get("/api/status").json()["generation"] is None
    assert len(client.get("/api/cameras").json()) == 3  # cameras show before their identities do
    assert "no track store" in one_line_error(client.get("/api/query/track", params={"camera": "cam2", "track": 1}), 409)
    one_line_error(client.get("/api/identities"), 409)
    shutil.copytree(run / "store", copy / "store")  # the store appears (a `crosscam track` finished)
    assert client.get("/api/status").json()["generation"] >= 1
    assert client.get("/api/query/track", params={"camera": "cam2", "track": 1}).status_code == 200


def test_a_source_deleted_while_serving_is_left_by_every_process(run, tmp_path):
    """A process that opened the source before it was deleted turned to annotated.mp4 only when
    restarted, so two server processes showed different frames of one camera."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("store"))
    record = json.loads((copy / "cam2" / "run.json").read_text())
    video = tmp_path / "cam2.mp4"
    shutil.copyfile(record["source"], video)
    shutil.copyfile(record["source"], copy / "cam2" / "annotated.mp4")  # (the demo run's cameras have none)
    (copy / "cam2" / "run.json").write_text(json.dumps({**record, "source": str(video)}))
    client = TestClient(create_app(copy))
    frames_from = lambda: {c["name"]: c["frames_from"] or c["frames_error"] for c in client.get("/api/cameras").json()}["cam2"]  # noqa: E731
    assert client.get("/api/frames/cam2/3").status_code == 200 and frames_from() == "source"
    video.unlink()
    assert frames_from() == "annotated.mp4" and client.get("/api/frames/cam2/3").status_code == 200
    shutil.copyfile(record["source"], video)  # put back: the source again
    assert frames_from() == "source"


def test_answers_stay_whole_while_the_store_is_rewritten(run, tmp_path):
    """A writer alternates the store between two states (identity ids shifted by 1000 and back,
    as a re-association would renumber them); every answer read meanwhile is one state's, whole."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    store = TrackStore.open(copy / "store")
    summaries, ids = store.summaries()
    records = {c.name: c for c in store.cameras()}
    camera, track = multi_camera_track(copy)
    client = TestClient(create_app(copy))

    def ask() -> dict:
        # a 503 ("rewritten during each of 8 reads in a row; try again") is whole too: asked again, as the
        # page would (on a loaded machine a read can outlast the 50 ms between this test's commits)
        for _ in range(20):
            response = client.get("/api/query/track", params={"camera": camera, "track": track})
            if response.status_code != 503:
                break
        return response.json()

    def write(shift: int) -> None:
        store.write([CameraTracks(records[name], [s for s in summaries if s.camera == name],
                                  [i + shift for s, i in zip(summaries, ids) if s.camera == name]) for name in records])

    write(1000)
    shifted = ask()
    write(0)
    plain = ask()
    assert shifted["identity"] == plain["identity"] + 1000
    before = store.generation()
    stop = threading.Event()
    writes = []

    def writer():
        shift = 1000
        while not stop.wait(0.05):  # twenty writes a second: far more often than `crosscam track` writes
            write(shift)
            writes.append(shift)
            shift = 1000 - shift

    thread = threading.Thread(target=writer)
    thread.start()
    answers = []
    try:  # read until the writer has rewritten the store several times meanwhile (however fast reads are)
        deadline = time.monotonic() + 60
        while (len(answers) < 40 or len(writes) < 6) and time.monotonic() < deadline:
            answers.append(ask())
    finally:
        stop.set()
        thread.join()
    assert len(writes) >= 6, "the writer did not rewrite the store while answers were read"
    assert all(a in (plain, shifted) for a in answers), [a.get("error") for a in answers if a not in (plain, shifted)]
    assert TrackStore.open(copy / "store").generation() == before + len(writes)


def test_report_names_the_run_counts_in_singular_and_puts_non_people_last(api, run):
    page = (run / "report.html").read_text()
    title = re.search(r"<title>(.*)</title>", page).group(1)
    assert title == f"crosscam: {run.parent.name}/run (3 cameras: cam1, cam2, cam3)"
    assert not re.search(r"\b1 (tracks|cameras|identities)\b", page)
    assert re.search(r"\b1 track, 1 camera\b", page)
    gallery = api.get("/api/identities").json()["identities"]
    unlikely = [o["identity"] for o in gallery if not o["likely_person"]]
    assert unlikely  # seed 1's floor patch (1-2 frame static boxes, in all three cameras) among them
    rows = re.findall(r'<tr><td class="id"[^>]*>(\d+)<div class="meta">.*?</td>', page)
    marked = re.findall(r'<tr><td class="id"[^>]*>(\d+)<div class="meta">[^<]*(?:<br>[^<]*)*</div><div class="unlikely"', page)
    assert [int(i) for i in rows] == [o["identity"] for o in gallery]  # the gallery's order
    assert [int(i) for i in marked] == unlikely == [int(i) for i in rows[-len(unlikely):]]


def test_two_server_processes_answer_alike_and_stop_together(run):
    """--workers 2: two processes serve the socket (concurrent requests reach both, with one answer);
    Ctrl-C on the command ends them all, with 130."""
    from concurrent.futures import ThreadPoolExecutor

    psutil = pytest.importorskip("psutil")
    camera, track = multi_camera_track(run)

    def ask(url: str) -> dict:
        with httpx.Client(base_url=url, timeout=180) as client:  # a connection of its own: either process may take it
            return client.get("/api/query/track", params={"camera": camera, "track": track}).json()

    with serving_process(run, "--workers", "2") as (url, proc):
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(ask, [url] * 16))  # both processes load the run
            servers = [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
            assert len(servers) == 2
            before = [c.cpu_times().user + c.cpu_times().system for c in servers]
            answers = list(pool.map(ask, [url] * 64))
            spent = [c.cpu_times().user + c.cpu_times().system - b for c, b in zip(servers, before)]
    assert answers[0]["matches"] and all(answer == answers[0] for answer in answers)
    assert min(spent) > 0.02, spent  # each answered some: an idle process spends next to nothing
    assert proc.returncode == 130
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in servers)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_stops_the_server_with_143(run, workers):
    """SIGTERM (docker stop, systemd) stops one server process or several as Ctrl-C does, with
    128 + SIGTERM as `crosscam track` exits (Ctrl-C's 130 is checked by every `serving` block)."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "serve", str(run), "--port", "0",
                             "--workers", workers, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = json.loads(proc.stdout.readline())  # --json: the URL without parsing a sentence
        assert started["url"] == f"http://127.0.0.1:{started['port']}/" and started["processes"] == int(workers)
        httpx.get(started["url"] + "api/cameras", timeout=60).raise_for_status()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143, proc.stderr.read()[-500:]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_default_processes_one_for_a_large_exact_fp32_index(run, monkeypatch, tmp_path):
    """The CPUs (at most 4) by default; one where the store is an fp32 exact scan over the
    threshold; the CPUs again where that scan runs in bf16."""
    from pipeline.config import StoreConfig
    from pipeline.identity import exact_scan
    from pipeline.serve import processes

    cpus = min(processes.MAX_DEFAULT_WORKERS, os.cpu_count() or 1)
    fp32, bf16 = StoreConfig(bf16_scan=False), StoreConfig(bf16_scan=True)
    assert processes.default_workers(run, fp32) == cpus
    assert processes.default_workers(tmp_path, fp32) == cpus  # no store yet
    stored = len(TrackStore.open(run / "store"))
    monkeypatch.setattr(processes, "ONE_PROCESS_EXACT_TRACKS", stored)
    assert processes.default_workers(run, fp32) == 1
    monkeypatch.setattr(exact_scan, "MIN_VECTORS", stored)
    monkeypatch.setattr(exact_scan, "bf16_matmul_is_fast", lambda: True)
    assert processes.default_workers(run, bf16) == cpus
    monkeypatch.setattr(exact_scan, "bf16_matmul_is_fast", lambda: False)  # a CPU without bf16 units
    assert processes.default_workers(run, bf16) == 1
    monkeypatch.setattr(processes, "ONE_PROCESS_EXACT_TRACKS", stored + 1)
    assert processes.default_workers(run, fp32) == cpus


def test_status_gives_the_clock_origin_of_start_times(run, tmp_path):
    """The page's player clocks, timelines and gallery show dates where the cameras file gave start times."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (tmp_path / "cameras.yaml").write_text("cameras:\n" + "".join(
        f"  - {{name: {cam}, start: '2024-05-01 08:0{i}:00+02:00'}}\n" for i, cam in enumerate(("cam1", "cam2", "cam3"))))
    assert main(["associate", str(copy), "--cameras", str(tmp_path / "cameras.yaml"), "--quiet"]) == 0
    assert TestClient(create_app(copy)).get("/api/status").json()["clock_origin"] == "2024-05-01 08:00:00+02:00"


def test_set_overrides_reach_every_server_process(run, monkeypatch, capsys):
    """The README says commands with --config take --set; query and serve had none."""
    import pipeline.serve.app as app_module
    from pipeline.serve.processes import ENV_CONFIG, ENV_RUN, ENV_SET, ENV_TOKEN

    seen = {}
    monkeypatch.setattr(app_module, "create_app", lambda run_dir, token, config, loopback_only: seen.update(config=config))
    monkeypatch.setenv(ENV_RUN, str(run))
    monkeypatch.setenv(ENV_TOKEN, "")
    monkeypatch.setenv(ENV_CONFIG, "")
    monkeypatch.setenv(ENV_SET, json.dumps(["store.bf16_scan=false", "store.hnsw_m=12"]))
    app_module.app_from_environment()
    assert seen["config"].store.bf16_scan is False and seen["config"].store.hnsw_m == 12
    assert main(["serve", str(run), "--set", "store.nokey=1"]) == 2  # refused before listening
    assert "unknown config key 'store.nokey'" in capsys.readouterr().err
    camera, track = multi_camera_track(run)
    plain = cli_json(capsys, "query", run, "--track", f"{camera}:{track}")
    assert cli_json(capsys, "query", run, "--track", f"{camera}:{track}", "--set", "store.bf16_scan=false") == plain


def test_cameras_say_whose_colours_were_equalised(run, tmp_path):
    """The page offers "from camera" for a photo only where choosing one changes the answer."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    plain = json.loads((copy / "cam3" / "run.json").read_text())
    del plain["colour"]  # as tracked with reid.camera_colour: none (or by an older crosscam)
    (copy / "cam3" / "run.json").write_text(json.dumps(plain))
    cameras = TestClient(create_app(copy)).get("/api/cameras").json()
    assert {c["name"]: c["colour_normalised"] for c in cameras} == {"cam1": True, "cam2": True, "cam3": False}


def test_annotated_video_of_a_strided_run_is_shown_by_source_frame_index(tmp_path):
    """annotated.mp4 holds every stride-th source frame; with the source gone the page asked it for
    source indices, so index i showed source frame 2i and the second half of the video was missing."""
    from pipeline.serve.frames import open_frames

    writer = cv2.VideoWriter(str(tmp_path / "annotated.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 48))
    for source_frame in range(0, 10, 2):  # stride 2: source frames 0, 2, 4, 6, 8
        writer.write(np.full((48, 64, 3), 20 * source_frame, np.uint8))
    writer.release()
    frames = open_frames(tmp_path, str(tmp_path / "gone.mp4"), fps=10.0, stride=2)
    assert frames.origin == "annotated.mp4" and frames.count == 9  # source frames 0..8
    shown = [round(float(frames.image(i).mean()) / 20) for i in range(9)]
    assert shown == [0, 0, 2, 2, 4, 4, 6, 6, 8]  # each frame, or the kept one before it
    assert [round(frames.reader.time_s(i), 2) for i in (0, 3, 8)] == [0.0, 0.3, 0.8]


def test_a_store_deleted_while_serving_is_409_until_made_again(run, tmp_path):
    """Deleting store/ (to associate afresh, as the README describes) gave plain-text 500s with a
    sqlite traceback, and the page said "server not reachable"."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    client = TestClient(create_app(copy))
    before = client.get("/api/status").json()
    assert before["generation"] >= 1 and before["store_id"]
    assert client.get("/api/query/track", params={"camera": "cam2", "track": 1}).status_code == 200
    shutil.rmtree(copy / "store")
    status = client.get("/api/status").json()
    assert status["generation"] is None and status["store_id"] is None
    for path, params in (("/api/query/track", {"camera": "cam2", "track": 1}), ("/api/identities", {}), ("/api/identities/1", {})):
        response = client.get(path, params=params)
        assert response.status_code == 409 and "no track store yet" in response.json()["error"], path
    assert client.get("/api/cameras").status_code == 200
    assert main(["associate", str(copy), "--quiet"]) == 0
    after = client.get("/api/status").json()
    assert after["store_id"] and after["store_id"] != before["store_id"]  # the page reloads even at the same generation
    assert client.get("/api/query/track", params={"camera": "cam2", "track": 1}).status_code == 200


def test_a_store_damaged_while_serving_is_a_500_naming_the_fix(run, tmp_path):
    """A damaged database is the run's fault, not the request's: 500 (it was 400), one line with
    the way to build it again; the cameras and their frames still answer."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    client = TestClient(create_app(copy))
    assert client.get("/api/query/track", params={"camera": "cam2", "track": 1}).status_code == 200
    database = copy / "store" / "tracks.sqlite"
    database.write_bytes(database.read_bytes()[:4096])
    message = one_line_error(client.get("/api/query/track", params={"camera": "cam2", "track": 1}), 500)
    assert "not a readable track store" in message and "crosscam associate" in message
    assert client.get("/api/cameras").status_code == 200
    assert client.get("/api/frames/cam2/0").status_code == 200


def test_the_cameras_list_reads_the_run_folder_once(run, monkeypatch):
    """Each camera's lookups listed the whole run again: 600 cameras took 10 s a request."""
    from pipeline.serve import run_view

    listed = []
    monkeypatch.setattr(run_view, "run_folders", lambda run_dir: listed.append(run_dir) or run_folders(run_dir))
    cameras = run_view.RunView(run).cameras()
    assert len(cameras) == 3 and len(listed) == 1


def phone_video(path: Path, upright: list[np.ndarray]) -> None:
    """An MP4 as a phone writes a portrait video: frames stored sideways,
    with a display matrix in the track header saying to turn them back (90 degrees)."""
    import struct

    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.height, stream.width = upright[0].shape[1], upright[0].shape[0]
        stream.pix_fmt = "yuv420p"
        for image in upright:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(image, 1)), format="bgr24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    version = data[at + 4]
    matrix = at + 8 + (32 if version == 1 else 20) + 8 + 8  # past flags, times, id, duration; reserved, layer...
    data[matrix:matrix + 36] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)  # turn by 90 degrees
    path.write_bytes(data)


def test_a_rotated_phone_video_is_served_upright_as_it_was_tracked(tmp_path: Path):
    """serve showed a phone's portrait video sideways while its boxes (tracked upright) were portrait."""
    from pipeline.serve.frames import VideoFrames

    rng = np.random.default_rng(0)
    upright = [cv2.resize(rng.integers(0, 255, (8, 4, 3), np.uint8), (96, 160), interpolation=cv2.INTER_NEAREST)
               for _ in range(3)]
    path = tmp_path / "phone.mp4"
    phone_video(path, upright)
    capture = cv2.VideoCapture(str(path))
    ok, tracked = capture.read()
    assert ok and tracked.shape == (160, 96, 3)  # as tracking reads it: upright
    served = VideoFrames(path).image(0)
    assert served.shape == tracked.shape and np.abs(served.astype(int) - tracked.astype(int)).mean() < 8


def test_a_raw_h264_camera_is_served_from_its_annotated_video(tmp_path: Path, hall_clip: Path):
    """A raw .264 stream's packets have no timestamps: the page found 0 frames in it and showed nothing."""
    from pipeline.serve.frames import open_frames
    from test_sources import mp4_to_annexb

    raw = mp4_to_annexb(hall_clip, tmp_path / "hall.264", samples=12)
    writer = cv2.VideoWriter(str(tmp_path / "annotated.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (768, 432))
    for _ in range(12):
        writer.write(np.zeros((432, 768, 3), np.uint8))
    writer.release()
    frames = open_frames(tmp_path, str(raw), fps=10.0)
    assert frames.origin == "annotated.mp4" and frames.count == 12
