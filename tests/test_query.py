import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.cli.main import main
from pipeline.config import AssociationConfig, DetectorConfig, PipelineConfig
from pipeline.identity.identities import update_identities
from pipeline.identity.query import query_identity, query_track
from pipeline.identity.store import CameraRecord, CameraTracks, EmbedderInfo, TrackStore
from pipeline.run_folders import claim_camera, release
from pipeline.types import Frame, TrackSummary
from pipeline.video.detectors import build_detector
from reid import Embedder

from identity_runs import summary, unit, write_camera

E = np.eye(8, dtype=np.float32)
PEOPLE = range(1001, 1009)


def crosscam_json(capsys, *args) -> dict:
    assert main(["query", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def crosscam_error(capsys, *args) -> str:
    assert main(["query", *map(str, args)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


@pytest.fixture
def synthetic_run(tmp_path: Path) -> Path:
    """P in hall (two fragments) and door, Q only in hall."""
    run = tmp_path / "run"
    write_camera(run, "hall", [summary("hall", 1, 0.0, 3.0, E[0]), summary("hall", 2, 1.0, 4.0, E[1]),
                               summary("hall", 3, 6.0, 8.0, unit(E[0] + 0.2 * E[4]))], video=False)
    write_camera(run, "door", [summary("door", 4, 2.0, 5.0, unit(E[0] + 0.3 * E[3]))], video=False)
    # P's two hall fragments share an identity: same-camera joins on (off by default)
    update_identities(run, PipelineConfig(association=AssociationConfig(join_same_camera=True)), progress=False)
    return run


def test_query_by_track_returns_every_camera_of_its_identity(synthetic_run: Path, capsys):
    out = crosscam_json(capsys, synthetic_run, "--track", "door:4")
    store = TrackStore.open(synthetic_run / "store")
    assert out["identity"] == store.track("door", 4).identity == store.track("hall", 1).identity
    by_camera = {a["camera"]: a for a in out["appearances"]}
    assert set(by_camera) == {"hall", "door"}
    assert by_camera["door"]["score"] == pytest.approx(1.0, abs=1e-5)  # the query track itself
    hall = by_camera["hall"]
    assert hall["track_ids"] == [1, 3]  # one visit: the gap between the fragments is short
    assert (hall["start_s"], hall["end_s"], hall["start_frame"], hall["end_frame"]) == (0.0, 8.0, 0, 80)
    assert Path(hall["thumbnail"]).is_file() and Path(hall["thumbnail"]).is_absolute()
    assert [a["camera"] for a in out["appearances"]] == ["hall", "door"]  # in time order, though door scores best
    assert [m["identity"] for m in out["matches"]][0] == out["identity"]


def test_track_and_identity_queries_load_no_model_libraries(synthetic_run: Path):
    """A query by track or identity answers from the store alone: loading torch and the tracker
    took 2.5 of `crosscam query`'s 2.9 s on the demo run."""
    heavy = ("torch", "onnxruntime", "ultralytics", "deep_sort_realtime", "scipy")
    code = (
        "import json, sys\n"
        "from pipeline.cli.main import main\n"
        f"codes = [main(['query', {str(synthetic_run)!r}, '--track', 'door:4', '--json']),\n"
        f"         main(['query', {str(synthetic_run)!r}, '--identity', '1', '--json'])]\n"
        f"print(json.dumps([codes, sorted(m for m in {heavy!r} if m in sys.modules)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    codes, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert codes == [0, 0], done.stderr
    assert loaded == []


def test_times_are_said_without_float_noise(tmp_path: Path, capsys):
    # index / fps gives 71 / 10 = 7.1000000000000005 s; the store keeps microseconds, and the table's
    # frames column stays aligned when frame numbers change width.
    run = tmp_path / "run"
    write_camera(run, "hall", [summary("hall", 1, 0.0, 71 / 10, E[0]), summary("hall", 2, 0.1 * 3, 12.3, E[1])],
                 video=False)
    write_camera(run, "door", [summary("door", 1, 1.0, 3.3000000000000003, unit(E[0] + 0.1 * E[3]))], video=False)
    update_identities(run, PipelineConfig(), progress=False)
    out = crosscam_json(capsys, run, "--track", "hall:1", "--min-score", "-1")
    times = [t for m in out["matches"] for a in m["appearances"] for t in (a["start_s"], a["end_s"])]
    assert 7.1 in times and 3.3 in times and 0.3 in times and all(t == round(t, 6) for t in times)
    assert main(["query", str(run), "--track", "hall:1", "--min-score", "-1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "frames " in line and line.startswith("  ")]
    assert len(rows) == 3 and len({row.index("track") for row in rows}) == 1  # the columns after frames line up


def test_min_score_top_k_and_identity_queries(synthetic_run: Path, capsys):
    identity = TrackStore.open(synthetic_run / "store").track("door", 4).identity
    strict = crosscam_json(capsys, synthetic_run, "--track", "door:4", "--min-score", "0.99")
    assert [a["camera"] for a in strict["appearances"]] == ["door"]
    assert len(crosscam_json(capsys, synthetic_run, "--track", "hall:2", "--top-k", "1")["matches"]) == 1
    assert len(crosscam_json(capsys, synthetic_run, "--track", "hall:2", "--top-k", "3")["matches"]) == 2
    # asking for more than the store holds (FAISS was asked for 10x top-k results: 37 GiB, or a ValueError)
    for huge in ("1000000000", "999999999999999999"):
        assert len(crosscam_json(capsys, synthetic_run, "--identity", "1", "--top-k", huge)["matches"]) == 2
    by_id = crosscam_json(capsys, synthetic_run, "--identity", identity)
    assert by_id["identity"] == identity and {a["camera"] for a in by_id["appearances"]} == {"hall", "door"}
    assert main(["query", str(synthetic_run), "--identity", str(identity)]) == 0
    table = capsys.readouterr().out
    assert f"identity {identity}" in table and "hall" in table and "no cameras file" in table
    assert re.search(r"frames 0-80 +track", table) and "frames: 0-based indices" in table  # hall tracks 1, 3: tracks.txt rows 1..81
    assert " tracks 1, 3 " in table and " track 4 " in table and "tracks 4" not in table  # door: one track


def test_top_k_identities_even_when_one_holds_every_nearest_track(tmp_path: Path):
    """One person seen 60 times, nearer the query than anyone else: the other identities still come
    (the first fetch of nearest tracks held only that person's)."""
    rng = np.random.default_rng(0)
    for c in range(6):
        tracks = [summary(f"c{c}", t + 1, 10.0 * t, 10.0 * t + 5, E[0] + 0.02 * rng.standard_normal(8)) for t in range(10)]
        tracks += [summary(f"c{c}", 11, 200.0, 205.0, E[1 + c]), summary(f"c{c}", 12, 210.0, 215.0, E[1 + c] + E[7])]
        write_camera(tmp_path, f"c{c}", tracks, video=False)
    raw = PipelineConfig().model_copy(update={"association": AssociationConfig(center_cameras=False)})
    update_identities(tmp_path, raw, progress=False)  # raw cosines: the others stay apart
    identities = {t.identity for t in TrackStore.open(tmp_path / "store").tracks()}
    assert len(identities) >= 10
    for top_k in (2, 3, 50):
        result = query_track(tmp_path, "c0", 1, top_k=top_k)
        assert len({m.identity for m in result.matches}) == len(result.matches) == min(top_k, len(identities))


def test_identity_query_keeps_other_identities_when_its_own_misses_min_score(tmp_path: Path):
    """Identity 7 = hall:1 (E0) + door:1 (E1): its mean is 0.71 from each; identity 12 lies on the mean.
    The asked identity is the answer with all its appearances (the store says where it was; with
    min_score dropping them the answer was 'no identity'), min_score filters the others."""
    store = TrackStore.create(tmp_path / "store", EmbedderInfo("ab" * 32, "synthetic", 8))
    hall, door = (CameraRecord(name, 0.0, False, "/v.mp4", 10.0, (64, 48), 200, "digest") for name in ("hall", "door"))
    store.write([
        CameraTracks(hall, [summary("hall", 1, 0.0, 3.0, E[0]), summary("hall", 2, 0.0, 3.0, E[0] + E[1])], [7, 12]),
        CameraTracks(door, [summary("door", 1, 9.0, 12.0, E[1])], [7]),
    ])
    assert [m.identity for m in query_identity(tmp_path, 7, top_k=2).matches] == [7, 12]
    strict = query_identity(tmp_path, 7, top_k=2, min_score=0.9)
    assert [(m.identity, round(m.score, 4)) for m in strict.matches] == [(7, 0.7071), (12, 1.0)]
    assert len(strict.best.appearances) == 2
    assert [m.identity for m in query_identity(tmp_path, 7, top_k=1).matches] == [7]


def test_bad_queries_are_one_line_and_change_nothing(synthetic_run: Path, tmp_path: Path, capsys):
    db = (synthetic_run / "store" / "tracks.sqlite").read_bytes()
    assert "unknown camera 'lobby'" in crosscam_error(capsys, synthetic_run, "--track", "lobby:1")
    assert "has no track 99" in crosscam_error(capsys, synthetic_run, "--track", "hall:99")
    assert "CAMERA:TRACK_ID" in crosscam_error(capsys, synthetic_run, "--track", "hall")
    message = crosscam_error(capsys, synthetic_run, "--identity", "77")
    known = TrackStore.open(synthetic_run / "store").identities()
    assert "no such identity" in message and f"{len(known)} identit" in message and str(known[0]) in message
    assert "exactly one of" in crosscam_error(capsys, synthetic_run)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image")
    assert "cannot read it as an image" in crosscam_error(capsys, synthetic_run, "--image", garbage)
    assert f"--image {tmp_path}: a folder, not an image; pass a JPEG/PNG file" in crosscam_error(capsys, synthetic_run, "--image", tmp_path)
    assert "--image " + str(tmp_path / "nope.jpg") + ": no such file" in crosscam_error(
        capsys, synthetic_run, "--image", tmp_path / "nope.jpg")  # said 'cannot read it as an image'
    thumb = synthetic_run / "hall" / "thumbs" / "1.jpg"
    for box in ("nan,0,5,5", "inf,0,5,5"):  # were a ValueError / OverflowError traceback
        assert "expected four finite numbers" in crosscam_error(capsys, synthetic_run, "--image", thumb, "--box", box)
    assert "no such run directory" in crosscam_error(capsys, tmp_path / "elsewhere", "--identity", "1")
    (tmp_path / "partial" / "hall").mkdir(parents=True)  # a camera's run.json, no store: an interrupted run
    (tmp_path / "partial" / "hall" / "run.json").write_text('{"status": "interrupted"}')
    assert "no track store: `crosscam associate" in crosscam_error(capsys, tmp_path / "partial", "--identity", "1")
    (tmp_path / "partial" / "store").mkdir()  # stopped as association began: the folder, no database yet
    assert "no track store: `crosscam associate" in crosscam_error(capsys, tmp_path / "partial", "--identity", "1")
    message = crosscam_error(capsys, synthetic_run / "hall", "--track", "hall:1")
    assert "one camera's outputs, not a run directory; give the run directory" in message
    assert str(synthetic_run.resolve()) in message
    (synthetic_run / "west").mkdir()  # tracked, stopped, never associated
    (synthetic_run / "west" / "run.json").write_text('{"status": "interrupted"}')
    message = crosscam_error(capsys, synthetic_run, "--track", "west:1")
    assert "camera west is in" in message and "(run.json: interrupted) but not in the track store yet; `crosscam " \
        "associate" in message
    (synthetic_run / "west" / "run.json").write_text('{"status": "running"}')
    assert "its run was stopped outright (killed, or a full disk); track it again" in crosscam_error(
        capsys, synthetic_run, "--track", "west:1")  # nobody holds the camera
    held = claim_camera(synthetic_run, "west")
    try:
        assert "a crosscam command is tracking it now: wait for it to finish" in crosscam_error(
            capsys, synthetic_run, "--track", "west:1")
    finally:
        release([held])
    (synthetic_run / "west" / "run.json").write_text(  # association refuses it: it said "associate adds it"
        '{"status": "complete", "models": {"reid": {"name": "mobilenetv2_imagenet", "fingerprint": "0123", "dim": 1280}}}')
    message = crosscam_error(capsys, synthetic_run, "--track", "west:1")
    assert "camera west was tracked with embedder mobilenetv2_imagenet" in message and "not comparable" in message
    shutil.rmtree(synthetic_run / "west")
    assert "only meaningful with --image" in crosscam_error(capsys, synthetic_run, "--track", "hall:1", "--camera", "hall")
    assert "not a camera of this run; use one of door, hall" in crosscam_error(
        capsys, synthetic_run, "--image", synthetic_run / "hall" / "thumbs" / "1.jpg", "--camera", "lobby")
    assert (synthetic_run / "store" / "tracks.sqlite").read_bytes() == db


def test_a_damaged_store_database_is_one_line_saying_how_to_rebuild_it(synthetic_run: Path, capsys):
    (synthetic_run / "store" / "tracks.sqlite").write_bytes(b"garbage, not SQLite")
    message = crosscam_error(capsys, synthetic_run, "--identity", "1")
    assert "tracks.sqlite: not a readable track store" in message and f"`crosscam associate {synthetic_run}`" in message


def test_empty_store_is_one_line(tmp_path: Path, capsys):
    write_camera(tmp_path / "run", "hall", [], video=False)
    update_identities(tmp_path / "run", PipelineConfig(), progress=False)
    assert "empty" in crosscam_error(capsys, tmp_path / "run", "--identity", "1")
    # a camera with tracks the store does not have yet (its association did not finish): associate, not track
    write_camera(tmp_path / "run", "door", [summary("door", 1, 0.0, 3.0, E[0])], video=False)
    message = crosscam_error(capsys, tmp_path / "run", "--identity", "1")
    assert "the track store is empty, but camera door has tracks: `crosscam associate" in message


@pytest.fixture(scope="module")
def osnet(osnet_onnx: Path) -> Embedder:
    return Embedder.from_weights(str(osnet_onnx), device="cpu")


@pytest.fixture(scope="module")
def osnet_onnx() -> Path:  # module scope for the embedder fixture above
    from conftest import shared_path

    return shared_path("weights/osnet_x0_25_msmt17.onnx")


@pytest.fixture(scope="module")
def cuhk_run(tmp_path_factory, osnet: Embedder, osnet_onnx: Path) -> Path:
    """Real people: 8 CUHK03 identities, each a track in camera c1 and in c2, OSNet features."""
    from conftest import shared_path

    gallery = shared_path("data/cuhk03-market/bounding_box_test")
    run = tmp_path_factory.mktemp("cuhk") / "run"
    reid = {"weights": str(osnet_onnx), "device": "cpu", "batch_size": 32, "precision": "fp32",
            "flip": False, "preprocess": "fast", "trust_checkpoint": False}
    for cam in ("c1", "c2"):
        tracks = []
        for k, pid in enumerate(PEOPLE):
            paths = sorted(gallery.glob(f"{pid}_{cam}s*.jpg"))
            feats = osnet.embed([cv2.imread(str(p)) for p in paths], bgr=True, normalize=True)
            start = 20.0 * k + (8.0 if cam == "c2" else 0.0)
            tracks.append(TrackSummary(cam, pid, int(start * 10), int(start * 10) + 40, start, start + 4.0,
                                       len(paths), unit(feats.mean(0)), feats, f"thumbs/{pid}.jpg"))
        folder = write_camera(run, cam, tracks, fingerprint=osnet.fingerprint, video=False, reid_config=reid)
        for pid in PEOPLE:
            shutil.copy(sorted(gallery.glob(f"{pid}_{cam}s*.jpg"))[0], folder / "thumbs" / f"{pid}.jpg")
    update_identities(run, PipelineConfig(), progress=False)
    return run


def test_query_by_real_person_crop_finds_that_person(cuhk_run: Path, capsys):
    from conftest import shared_path

    store = TrackStore.open(cuhk_run / "store")
    hits = 0
    for pid in PEOPLE:
        crop = shared_path("data/cuhk03-market/query") / next(
            p.name for p in sorted(shared_path("data/cuhk03-market/query").glob(f"{pid}_c1s*.jpg")))
        out = crosscam_json(capsys, cuhk_run, "--image", crop, "--top-k", "3")
        hits += out["identity"] == store.track("c1", pid).identity
        assert out["appearances"] and max(a["score"] for a in out["appearances"]) > 0.5
    assert hits >= 7  # held-out crops of a person the camera saw: nearly always found first


def test_query_with_a_frame_and_a_box(cuhk_run: Path, tmp_path: Path, capsys):
    from conftest import shared_path

    crop = cv2.imread(str(sorted(shared_path("data/cuhk03-market/query").glob("1003_c1s*.jpg"))[0]))
    frame = np.full((400, 600, 3), 90, np.uint8)
    frame[100:100 + crop.shape[0], 300:300 + crop.shape[1]] = crop
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), frame)
    box = f"300,100,{300 + crop.shape[1]},{100 + crop.shape[0]}"
    by_box = crosscam_json(capsys, cuhk_run, "--image", path, "--box", box)
    cv2.imwrite(str(tmp_path / "crop.png"), crop)
    by_crop = crosscam_json(capsys, cuhk_run, "--image", tmp_path / "crop.png")
    assert by_box["identity"] == by_crop["identity"]
    assert by_box["score"] == pytest.approx(by_crop["score"], abs=1e-4)
    assert "outside" in crosscam_error(capsys, cuhk_run, "--image", path, "--box", "700,10,800,90")


def test_image_query_with_a_detector_refuses_an_image_without_a_person(tmp_path: Path, capsys, osnet, osnet_onnx, yolo_onnx):
    run = tmp_path / "run"
    reid = {"weights": str(osnet_onnx), "device": "cpu"}
    detector = {"model": str(yolo_onnx), "image_size": 320}
    write_camera(run, "hall", [summary("hall", 1, 0.0, 1.0, np.ones(osnet.dim))], video=False,
                 fingerprint=osnet.fingerprint, reid_config=reid, detector_config=detector)
    update_identities(run, PipelineConfig(), progress=False)
    empty = tmp_path / "wall.png"
    cv2.imwrite(str(empty), np.full((240, 320, 3), 128, np.uint8))
    assert "no person found" in crosscam_error(capsys, run, "--image", empty)


def test_image_query_with_a_detector_takes_the_runs_own_thumbnails_as_person_crops(cuhk_run: Path, tmp_path: Path,
                                                                                    capsys, yolo_onnx):
    """The detector finds nobody in most of these tight crops (a person filling the image):
    being taller than wide, each is embedded whole and finds its own track's identity."""
    run = tmp_path / "run"
    shutil.copytree(cuhk_run, run)
    for cam in ("c1", "c2"):
        run_json = run / cam / "run.json"
        data = json.loads(run_json.read_text())
        data["config"]["detector"] = {"model": str(yolo_onnx), "image_size": 320}
        run_json.write_text(json.dumps(data))
    detector = build_detector(DetectorConfig(model=str(yolo_onnx), image_size=320))
    thumbs = [run / "c1" / "thumbs" / f"{pid}.jpg" for pid in PEOPLE]
    missed = [t for t in thumbs if len(detector.detect([Frame("q", 0, 0.0, cv2.imread(str(t)))])[0]) == 0]
    assert len(missed) >= 3  # the case at hand: crops where the detector sees no person
    store = TrackStore.open(run / "store")
    for thumb in missed:
        out = crosscam_json(capsys, run, "--image", thumb)
        assert out["identity"] == store.track("c1", int(thumb.stem)).identity


def test_image_query_against_a_store_of_another_embedder_is_refused(synthetic_run: Path, capsys, osnet_onnx):
    for cam in ("hall", "door"):
        run_json = synthetic_run / cam / "run.json"
        data = json.loads(run_json.read_text())
        data["config"]["reid"] = {"weights": str(osnet_onnx), "device": "cpu"}
        run_json.write_text(json.dumps(data))
    crop = synthetic_run / "hall" / "thumbs" / "1.jpg"
    assert "built with embedder synthetic" in crosscam_error(capsys, synthetic_run, "--image", crop)


def test_scores_do_not_depend_on_the_number_of_threads(tmp_path_factory):
    """A server process (one thread each with --workers 2) and `crosscam query` (every core)
    must give the same answer to the last bit: fp32 sums of a product split over threads did not."""
    import torch

    from serve_runs import demo_run

    run = demo_run(tmp_path_factory)
    store = TrackStore.open(run / "store")
    threads = torch.get_num_threads()
    answers = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            answers[n] = [query_track(run, t.camera, t.track_id, store=store).to_json() for t in store.tracks()[:6]]
    finally:
        torch.set_num_threads(threads)
    assert any(len(a["matches"]) > 1 for a in answers[1])  # other identities' scores are compared too
    assert answers[1] == answers[2]


def test_camera_of_a_run_without_colour_tables_is_said_to_change_nothing(cuhk_run: Path, capsys, caplog):
    thumb = next((cuhk_run / "c1" / "thumbs").iterdir())
    plain = crosscam_json(capsys, cuhk_run, "--image", thumb)
    assert crosscam_json(capsys, cuhk_run, "--image", thumb, "--camera", "c1")["matches"] == plain["matches"]
    assert "--camera c1: the run embedded c1's crops as they were (reid.camera_colour none)" in caplog.text


def test_associate_keeps_the_runs_own_association_settings_unless_told_otherwise(tmp_path: Path, capsys):
    """A run associated with --set association.* (or a --config) kept them only until the next bare
    `crosscam associate`, which went back to configs/base.yaml's and joined other people."""
    run = tmp_path / "run"
    write_camera(run, "hall", [summary("hall", 1, 0.0, 3.0, E[0]), summary("hall", 2, 6.0, 8.0, unit(E[0] + 0.2 * E[4]))],
                 video=False)

    def identities(*args: str) -> tuple[int, str]:
        assert main(["associate", str(run), "--json", "--quiet", *args]) == 0
        captured = capsys.readouterr()
        return json.loads(captured.out)["identities"]["identities"], captured.err

    assert identities()[0] == 2  # the default: one camera's two tracks stay apart
    assert identities("--set", "association.join_same_camera=true")[0] == 1
    count, err = identities()  # nothing named: the run's own settings
    assert count == 1 and f"note: association: {run}'s own settings" in err
    count, err = identities("--set", "association.threshold=0.8")  # one key changed, the others kept
    assert count == 1
    assert identities("--set", "association={join_same_camera: false}")[0] == 2  # the section set whole: its keys given
    assert identities("--set", "association.join_same_camera=true")[0] == 1
    base = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"
    assert identities("--config", str(base))[0] == 2  # a config names them all
    count, err = identities()
    assert count == 2 and "own settings" not in err  # kept as base's now: nothing to say


def test_settings_kept_by_an_older_store_are_read_key_by_key(tmp_path: Path):
    """A store written before join_same_camera existed made its identities with same-camera joins; one
    key this crosscam lacks threw every kept value away."""
    import sqlite3

    from pipeline.identity.identities import with_kept_association

    run = tmp_path / "run"
    write_camera(run, "hall", [summary("hall", 1, 0.0, 3.0, E[0])], video=False)
    update_identities(run, PipelineConfig(association=AssociationConfig(threshold=0.7)), progress=False)
    db = run / "store" / "tracks.sqlite"
    with sqlite3.connect(db) as conn:
        kept = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'setting.association'").fetchone()[0])
        del kept["association"]["join_same_camera"]
        kept["association"]["min_track_s"] = 1.0  # a key of some other crosscam
        conn.execute("UPDATE meta SET value = ? WHERE key = 'setting.association'", (json.dumps(kept),))
    cfg, differs = with_kept_association(run, PipelineConfig())
    assert differs and cfg.association.threshold == 0.7 and cfg.association.join_same_camera is True
    cfg, _ = with_kept_association(run, PipelineConfig(), overridden={"join_same_camera"})
    assert cfg.association.join_same_camera is False and cfg.association.threshold == 0.7
