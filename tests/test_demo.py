"""`crosscam demo`, shortened: a real scene, the real offline pipeline, real metrics, one run for all tests.

The run goes through the console entry point in a subprocess, so "stdout is one JSON object" is
checked on the real stream. Annotated videos are switched off to keep the test inside its budget;
everything they do not feed (tracks, store, identities, report, metrics) runs as in `make demo`.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli.main import main
from pipeline.demo import (
    TARGET_CAMERA_IDF1, TARGET_MTMC_IDF1, DemoResult, demo_config, models_used, query_longest_track, results_table,
    run_demo, score_run,
)
from pipeline.identity.identities import update_identities
from pipeline.identity.query import query_image
from pipeline.metrics import read_mot_file
from reid.errors import CrosscamError

SECONDS = 8.0  # the demo scene's first 8 s: 80 frames per camera


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "demo", "--out", str(out), "--seconds", str(SECONDS),
         "--set", "output.video=false", "--json", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, json.loads(proc.stdout)


def test_json_has_the_documented_keys(demo_run):
    _, result = demo_run
    assert 0.0 <= result["mtmc_idf1"] <= 1.0
    assert result["mtmc"]["idf1"] == result["mtmc_idf1"] and 0 <= result["mtmc"]["mota"] <= 1  # the table's MTMC row
    assert sorted(result["cameras"]) == ["cam1", "cam2", "cam3"]
    for scores in result["cameras"].values():
        if scores["gt_boxes"] == 0:  # nobody walked through this camera: no MOTA or recall to give
            assert scores["mota"] is None and scores["recall"] is None
        else:
            assert scores["mota"] <= 1.0 and 0.0 <= scores["idf1"] <= 1.0


def test_outputs_are_written(demo_run):
    out, result = demo_run
    run = out / "run"
    assert Path(result["report"]) == (run / "report.html").resolve() and (run / "report.html").stat().st_size > 0
    assert (run / "store").is_dir()
    ids = set()
    for camera in result["cameras"]:
        assert (out / "scene" / f"{camera}.mp4").is_file()
        ids |= set(read_mot_file(run / camera / "tracks_global.txt", "pred")[:, 1].astype(int))
    assert ids and ids <= set(range(1, result["identities"] + 1))


def test_query_answers_with_the_tracks_own_camera(demo_run):
    _, result = demo_run
    query = result["query"]
    camera = query["query"].split()[1].split(":")[0]  # "track CAMERA:ID"
    assert query["identity"] is not None
    assert camera in [a["camera"] for a in query["appearances"]]
    for appearance in query["appearances"]:
        assert appearance["start_s"] <= appearance["end_s"] and appearance["start_frame"] <= appearance["end_frame"]


def test_image_query_from_a_camera_gets_that_cameras_colour_normalisation(demo_run):
    """The demo equalises each camera's colours before embedding; a crop queried as its camera's
    (``--camera``) goes through the same table and matches its own track better than raw."""
    out, result = demo_run
    run, cfg = out / "run", demo_config(["output.video=false"])
    camera, track_id = result["query"]["query"].split()[1].split(":")  # "track CAMERA:ID"
    colour = json.loads((run / camera / "run.json").read_text())["colour"]
    assert colour["mode"] == "equalize" and np.array(colour["lut"]).shape == (3, 256)
    thumbnail = run / camera / "thumbs" / f"{track_id}.jpg"
    as_camera = query_image(run, thumbnail, config=cfg, camera=camera)
    as_is = query_image(run, thumbnail, config=cfg)
    identity = result["query"]["identity"]
    assert as_camera.best.identity == identity
    raw_score = {m.identity: m.score for m in as_is.matches}.get(identity, -1.0)
    assert as_camera.best.score > raw_score, (as_camera.best.score, raw_score)


def test_image_query_cli_says_when_a_camera_would_apply(demo_run, capsys):
    out, result = demo_run
    camera, track_id = result["query"]["query"].split()[1].split(":")
    thumbnail = out / "run" / camera / "thumbs" / f"{track_id}.jpg"
    assert main(["query", str(out / "run"), "--image", str(thumbnail), "--json"]) == 0
    captured = capsys.readouterr()
    assert "equalised the colours of cam1, cam2, cam3" in captured.err and "--camera NAME" in captured.err
    assert main(["query", str(out / "run"), "--image", str(thumbnail), "--camera", camera, "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and json.loads(captured.out)["identity"] == result["query"]["identity"]


def test_demo_config_uses_offline_defaults_and_takes_overrides():
    demo, overridden = demo_config(), demo_config(["output.video=false"])
    assert demo.detector.model == "motion" and demo.reid.weights == "mobilenetv2_imagenet"
    assert demo.output.video is True and overridden.output.video is False


def test_scores_stay_above_the_measured_floor(demo_run):
    # A regression floor, not issue 6's targets (MTMC IDF1 >= 0.85, camera IDF1 >= 0.90), which the
    # offline defaults do not reach yet: on this 8 s scene they measured MTMC IDF1 0.65 and camera
    # IDF1 0.52 / 0.76 (cam1 sees nobody in these 8 s; before the tracker split merged blobs and the
    # association threshold went to 0.93: 0.64 and 0.49 / 0.77). `targets.met` must say so honestly.
    _, result = demo_run
    seen = {name: s for name, s in result["cameras"].items() if s["gt_boxes"] > 0}
    per_camera = {name: round(s["idf1"], 3) for name, s in seen.items()}
    assert len(seen) >= 2
    assert result["mtmc_idf1"] >= 0.6, f"MTMC IDF1 {result['mtmc_idf1']:.3f}; per camera {per_camera}"
    assert min(per_camera.values()) >= 0.48, f"per-camera IDF1 {per_camera}"
    for s in seen.values():  # the boxes' F1 bounds IDF1
        assert 0.0 < s["recall"] <= 1.0 and 0.0 < s["precision"] <= 1.0 and s["idf1"] <= s["detection_f1"] + 1e-9
    met = result["mtmc_idf1"] >= TARGET_MTMC_IDF1 and min(per_camera.values()) >= TARGET_CAMERA_IDF1
    assert result["targets"]["met"] is met


def test_ground_truth_detections_score_tracking_and_association_alone(tmp_path):
    # The pipeline after a perfect detector: on these 8 s it measured cameras 0.98 / 0.97, MTMC 0.96
    # (session 9; the same with reid.camera_colour none or equalize); with back-fill, interpolation and
    # re-linking (issue 20) cameras 1.0 / 0.995, MTMC 0.98.
    result = run_demo(tmp_path, seconds=SECONDS, config=demo_config(["output.video=false"]), progress=False,
                      gt_detections=True)
    seen = {name: s.idf1 for name, s in result.scores.cameras.items() if s.gt_boxes > 0}
    assert len(seen) >= 2 and min(seen.values()) >= 0.85, seen
    assert result.scores.mtmc.idf1 >= 0.85 and result.to_json()["detections"] == "ground truth"
    gt = read_mot_file(tmp_path / "scene" / "gt" / "cam2.txt", "gt")
    replayed = np.loadtxt(tmp_path / "scene" / "det" / "cam2.txt", delimiter=",", ndmin=2)
    assert len(replayed) == int((gt[:, 6] == 1).sum()) and (replayed[:, 6] == 1).all()
    assert "ground-truth boxes" in results_table(result)
    object.__setattr__(result, "meets_targets", lambda: False)  # as where the targets are missed
    assert "not met, as expected of the ImageNet embedder; the boxes are the ground truth's" in results_table(result)


def test_results_table_names_every_camera_and_the_report(demo_run):
    out, _ = demo_run
    cfg = demo_config(["output.video=false"])
    run = out / "run"
    identities = update_identities(run, cfg, progress=False)  # unchanged cameras: nothing re-associated
    scores = score_run(out / "scene", run, ["cam1", "cam2", "cam3"], int(SECONDS * 10))
    table = results_table(DemoResult(out / "scene", run, scores, identities, query_longest_track(run, cfg), {}))
    assert identities.cameras_updated == []
    for name in ("cam1", "cam2", "cam3", "MTMC", "DetF1", "report:", "query track"):
        assert name in table
    # other models given with --set: the verdict names them, and does not call a miss expected
    other = DemoResult(out / "scene", run, scores, identities, None, {}, "detector",
                       *models_used(demo_config(["detector.model=w/yolov8n_int8.onnx", "reid.weights=w/osnet.onnx"])))
    object.__setattr__(other, "meets_targets", lambda: False)
    verdict = results_table(other)
    assert "not met with detector yolov8n_int8.onnx and ReID model osnet.onnx" in verdict and "expected" not in verdict
    assert other.to_json()["models"] == "detector yolov8n_int8.onnx and ReID model osnet.onnx"


def test_refuses_a_run_folder_it_did_not_write(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("user data")
    with pytest.raises(CrosscamError, match="not written by `crosscam demo`"):
        run_demo(tmp_path, seconds=1.0, progress=False)
    assert (tmp_path / "run" / "keep.txt").read_text() == "user data"
    assert not (tmp_path / "scene").exists()


def test_refuses_a_scene_folder_it_did_not_write(tmp_path):
    (tmp_path / "scene").mkdir()
    (tmp_path / "scene" / "cam1.mp4").write_bytes(b"the user's own video")
    with pytest.raises(CrosscamError, match="not a crosscam scene"):
        run_demo(tmp_path, seconds=1.0, progress=False)
    assert (tmp_path / "scene" / "cam1.mp4").read_bytes() == b"the user's own video"
    assert not (tmp_path / "run").exists()
