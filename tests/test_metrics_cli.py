"""``crosscam eval-mot`` / ``eval-mtmc`` on files written to disk, and their one-line errors."""

import json

import numpy as np
import pytest

from pipeline.cli.main import main


def write_rows(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(",".join(f"{v:g}" for v in r) + "\n" for r in rows))


def person(pid, frames, lane):
    return [[f, pid, 10 + 4 * f, 10 + 80 * lane, 20, 50, 1, 1, 1] for f in frames]


def test_eval_mot_json(tmp_path, capsys):
    # Person 1 over 10 frames; the tracker breaks it into ids 5 (frames 1-6) and 6 (7-10):
    # MOTA = 1 - 1/10 = 0.9, IDF1 = 2*6/20 = 0.6, IDP = IDR = 0.6.
    gt = person(1, range(1, 11), 0)
    pred = [[r[0], 5 if r[0] <= 6 else 6, *r[2:6], 1, -1, -1, -1] for r in gt]
    write_rows(tmp_path / "gt.txt", gt)
    write_rows(tmp_path / "pred.txt", pred)
    assert main(["eval-mot", "--gt", str(tmp_path / "gt.txt"), "--pred", str(tmp_path / "pred.txt"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mota"] == pytest.approx(0.9)
    assert out["idf1"] == pytest.approx(0.6)
    assert out["idp"] == pytest.approx(0.6) and out["idr"] == pytest.approx(0.6)
    assert out["id_switches"] == 1
    assert 0 < out["hota"] < 1


def test_eval_mot_table(tmp_path, capsys):
    write_rows(tmp_path / "gt.txt", person(1, range(1, 6), 0))
    assert main(["eval-mot", "--gt", str(tmp_path / "gt.txt"), "--pred", str(tmp_path / "gt.txt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["MOTA", "IDF1", "IDP", "IDR", "HOTA"]
    assert lines[1].split()[1:3] == ["1.000", "1.000"]
    # columns as wide as their contents: the demo's table wrapped in an 80-column terminal (95 characters)
    assert all(len(line) <= 70 for line in lines[:2]) and lines[0].index("IDSW") < lines[0].index("FN")


def make_scene(root, swap_in_cam2: bool):
    """Two cameras, people 1 and 2 in both; the run folder optionally swaps their ids in cam2."""
    for cam, frames in (("cam1", range(1, 11)), ("cam2", range(4, 14))):
        gt = person(1, frames, 0) + person(2, frames, 1)
        write_rows(root / "scene" / "gt" / f"{cam}.txt", gt)
        pred = [[r[0], (3 - r[1]) if (swap_in_cam2 and cam == "cam2") else r[1], *r[2:6], 1, -1, -1, -1] for r in gt]
        write_rows(root / "run" / cam / "tracks_global.txt", pred)
    (root / "scene" / "scene.json").write_text(json.dumps({"num_frames": 15, "cameras": [{"name": "cam1"}, {"name": "cam2"}]}))


def test_eval_mtmc_detects_swap_between_cameras(tmp_path, capsys):
    # 2 people x 10 frames x 2 cameras = 40 boxes. Swapped ids in cam2: best map keeps cam1 only,
    # IDTP 20 -> MTMC IDF1 = 40/80 = 0.5 while each camera alone scores IDF1 1.0.
    make_scene(tmp_path, swap_in_cam2=True)
    args = ["eval-mtmc", "--gt", str(tmp_path / "scene"), "--run", str(tmp_path / "run"), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mtmc_idf1"] == pytest.approx(0.5)
    assert out["cameras"]["cam1"]["idf1"] == 1.0 and out["cameras"]["cam2"]["idf1"] == 1.0
    assert set(out["cameras"]["cam2"]) >= {"mota", "idf1", "hota", "id_switches"}


def test_eval_mtmc_warns_per_camera_and_names_other_camera_names(tmp_path, capsys):
    """A run stopped early, or of other cameras, was scored without a word (eval-mot warned)."""
    make_scene(tmp_path, swap_in_cam2=False)
    args = ["eval-mtmc", "--gt", str(tmp_path / "scene"), "--run", str(tmp_path / "run"), "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and json.loads(captured.out)["warnings"] == []  # the whole, right run: no warning
    rows = (tmp_path / "run" / "cam2" / "tracks_global.txt").read_text().splitlines()
    (tmp_path / "run" / "cam2" / "tracks_global.txt").write_text("\n".join(r for r in rows if int(r.split(",")[0]) <= 6) + "\n")
    assert main(args) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["warnings"] == [captured.err.strip().removeprefix("warning: ")]
    assert captured.err.startswith("warning: camera cam2: predictions stop at frame 6, the ground truth goes on to 13")
    for cam in ("cam1", "cam2"):
        (tmp_path / "run" / cam).rename(tmp_path / "run" / f"hall{cam[-1]}")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "its cameras (hall1, hall2) are not the ground truth's (cam1, cam2)" in err and err.count("\n") == 1
    for cam in ("hall1", "hall2"):  # tracked with --no-identities: a run.json, no global ids (it spoke of those)
        (tmp_path / "run" / cam / "tracks_global.txt").unlink()
        (tmp_path / "run" / cam / "run.json").write_text("{}")
    assert main(args) == 2
    assert "its cameras (hall1, hall2) are not the ground truth's (cam1, cam2)" in capsys.readouterr().err


def test_eval_mtmc_perfect_and_missing_camera(tmp_path, capsys):
    make_scene(tmp_path, swap_in_cam2=False)
    args = ["eval-mtmc", "--gt", str(tmp_path / "scene"), "--run", str(tmp_path / "run"), "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["mtmc_idf1"] == 1.0
    (tmp_path / "run" / "cam2" / "tracks_global.txt").unlink()
    assert main(args) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["cameras"]["cam2"]["misses"] == 20
    assert "cam2" in captured.err and "warning" in captured.err


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: None, "no gt/ folder"),
        (lambda root: (root / "scene" / "gt").mkdir(parents=True), "no <camera>.txt"),
        (lambda root: write_rows(root / "scene" / "gt" / "cam1.txt", [[1, 1, 0, 0, 5]]), "need at least 6"),
        (lambda root: write_rows(root / "scene" / "gt" / "cam1.txt", person(1, range(1, 5), 0)),
         "no camera of cam1 has tracks_global.txt (a run made with --no-identities"),  # nothing would be scored
    ],
)
def test_eval_mtmc_bad_input_is_one_line(tmp_path, capsys, setup, message):
    (tmp_path / "run").mkdir()
    setup(tmp_path)
    assert main(["eval-mtmc", "--gt", str(tmp_path / "scene"), "--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_eval_mtmc_hints_are_the_right_commands(tmp_path, capsys):
    write_rows(tmp_path / "scene" / "gt" / "cam1.txt", person(1, range(1, 5), 0))
    (tmp_path / "run").mkdir()
    assert main(["eval-mtmc", "--gt", str(tmp_path / "scene" / "gt"), "--run", str(tmp_path / "run")]) == 2
    assert f"(give {tmp_path / 'scene'}?)" in capsys.readouterr().err  # the gt/ folder itself was given
    assert main(["eval-mtmc", "--gt", str(tmp_path / "scene"), "--run", str(tmp_path / "run")]) == 2
    assert f"associate it with `crosscam associate {tmp_path / 'run'}`" in capsys.readouterr().err  # said `crosscam track`


def test_eval_mot_missing_file_is_one_line(tmp_path, capsys):
    write_rows(tmp_path / "gt.txt", person(1, range(1, 3), 0))
    assert main(["eval-mot", "--gt", str(tmp_path / "gt.txt"), "--pred", str(tmp_path / "none.txt")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "none.txt" in captured.err and "pred file not found" in captured.err
    assert main(["eval-mot", "--gt", str(tmp_path / "gt.txt"), "--pred", str(tmp_path)]) == 2  # a run's folder
    assert "a folder; pass the pred file itself" in capsys.readouterr().err


def test_eval_mot_refuses_swapped_files_and_warns_of_short_predictions(tmp_path, capsys):
    """A tracks file given as --gt (its confidences read as MOT15 flags) marks nobody: refused, not
    scored 0; predictions that stop early are scored with a warning that the rest counts as missed."""
    gt = person(1, range(1, 101), 0)
    write_rows(tmp_path / "gt.txt", gt)
    write_rows(tmp_path / "tracks.txt", [[r[0], 1, *r[2:6], 0.87, -1, -1, -1] for r in gt])
    assert main(["eval-mot", "--gt", str(tmp_path / "tracks.txt"), "--pred", str(tmp_path / "gt.txt")]) == 2
    assert "check the order of --gt and --pred" in capsys.readouterr().err
    write_rows(tmp_path / "short.txt", [[r[0], 1, *r[2:6], 0.87, -1, -1, -1] for r in gt[:60]])
    assert main(["eval-mot", "--gt", str(tmp_path / "gt.txt"), "--pred", str(tmp_path / "short.txt"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["misses"] == 40
    assert captured.err.startswith("warning: predictions stop at frame 60, the ground truth goes on to 100")


def test_eval_mot_refuses_a_detections_file_and_an_empty_ground_truth(tmp_path, capsys):
    """det/det.txt given as --pred (ids -1) is named as such, not as a duplicate id 4294967295;
    an empty --gt is refused, not scored 0."""
    gt = person(1, range(1, 11), 0)
    write_rows(tmp_path / "gt.txt", gt)
    write_rows(tmp_path / "det.txt", [[r[0], -1, *r[2:6], 0.9, -1, -1, -1] for r in gt + person(2, range(1, 11), 1)])
    assert main(["eval-mot", "--gt", str(tmp_path / "gt.txt"), "--pred", str(tmp_path / "det.txt")]) == 2
    err = capsys.readouterr().err
    assert "id -1 in row 1" in err and "det/det.txt" in err and err.count("\n") == 1
    (tmp_path / "empty.txt").write_text("")
    write_rows(tmp_path / "tracks.txt", [[r[0], 1, *r[2:6], 0.9, -1, -1, -1] for r in gt])
    assert main(["eval-mot", "--gt", str(tmp_path / "empty.txt"), "--pred", str(tmp_path / "tracks.txt")]) == 2
    assert "empty.txt: no rows; pass the sequence's ground truth" in capsys.readouterr().err


def test_eval_mtmc_refuses_tracks_past_the_scene(tmp_path, capsys):
    make_scene(tmp_path, swap_in_cam2=False)
    write_rows(tmp_path / "run" / "cam2" / "tracks_global.txt", person(1, range(1, 40), 0))  # 39 frames, scene 15
    assert main(["eval-mtmc", "--gt", str(tmp_path / "scene"), "--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "camera cam2: tracks up to frame 39 but its ground truth has 15 frames" in err and "\n" not in err
    (tmp_path / "scene" / "scene.json").write_text(json.dumps({"num_frames": 12, "cameras": [{"name": "cam1"}, {"name": "cam2"}]}))
    write_rows(tmp_path / "run" / "cam2" / "tracks_global.txt", person(1, range(1, 10), 0))
    assert main(["eval-mtmc", "--gt", str(tmp_path / "scene"), "--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()  # said "a row at frame 13, past the sequence's 12 frames", naming nothing
    assert "camera cam2: ground truth up to frame 13 but the scene has 12 frames (scene.json)" in err and "\n" not in err


@pytest.mark.parametrize("case, warning", [
    ("empty", "the predictions hold no box"),
    ("another sequence", "predictions go on to frame 300, the ground truth stops at 100"),
    ("every other frame", "predictions cover 50 of the ground truth's 99 frames"),  # up to their last, 99
    ("elsewhere", "no predicted box overlaps a ground-truth box"),
])
def test_eval_mot_warns_where_the_files_are_not_one_sequence_tracked_in_full(tmp_path, capsys, case, warning):
    """Scored as asked (exit 0), with a one-line warning saying why the numbers are what they are."""
    gt = person(1, range(1, 101), 0)
    write_rows(tmp_path / "gt.txt", gt)
    rows = {
        "empty": [],
        "another sequence": [[f, 1, 10 + 4 * f, 10, 20, 50, 0.9, -1, -1, -1] for f in range(1, 301)],
        "every other frame": [[r[0], 1, *r[2:6], 0.9, -1, -1, -1] for r in gt if r[0] % 2],
        "elsewhere": [[r[0], 1, r[2], 500, 20, 50, 0.9, -1, -1, -1] for r in gt],
    }[case]
    write_rows(tmp_path / "pred.txt", rows)
    assert main(["eval-mot", "--gt", str(tmp_path / "gt.txt"), "--pred", str(tmp_path / "pred.txt")]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {warning}") and err.count("\n") == 1, err
    write_rows(tmp_path / "pred.txt", [[r[0], 1, *r[2:6], 0.9, -1, -1, -1] for r in gt])
    assert main(["eval-mot", "--gt", str(tmp_path / "gt.txt"), "--pred", str(tmp_path / "pred.txt")]) == 0
    assert capsys.readouterr().err == ""  # the same sequence tracked in full: nothing to say


def test_eval_mot_names_a_binary_file_without_printing_its_bytes(tmp_path, capsys):
    write_rows(tmp_path / "gt.txt", person(1, range(1, 5), 0))
    (tmp_path / "frame.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)))
    assert main(["eval-mot", "--gt", str(tmp_path / "gt.txt"), "--pred", str(tmp_path / "frame.jpg")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'frame.jpg'}: a binary file, not a MOTChallenge .txt; pass the pred text file\n"


def test_json_says_null_for_a_ratio_with_nothing_to_divide_by(tmp_path, capsys):
    """A camera nobody walked through scored MOTA/IDF1 0.0 in --json, which an average over cameras counted."""
    from pipeline.metrics import evaluate_mot

    scores = evaluate_mot(np.zeros((0, 9)), np.array([[1, 1, 0, 0, 10, 10, 1, -1, -1, -1.0]]), 3).as_dict()
    assert scores["mota"] is None and scores["recall"] is None and scores["idr"] is None  # no ground truth
    assert scores["precision"] == 0.0 and scores["idf1"] == 0.0 and scores["false_positives"] == 1
    empty = evaluate_mot(np.zeros((0, 9)), np.zeros((0, 10)), 3).as_dict()
    assert all(empty[key] is None for key in ("mota", "idf1", "idp", "idr", "hota", "recall", "precision", "detection_f1"))


def test_two_runs_compare_with_gt_tracks(tmp_path, capsys):
    """A run's tracks.txt as --gt was refused ('no row marks a person'): comparing runs needed awk."""
    rows = [[f, 1, 10 + f, 20, 30, 60, 0.8, -1, -1, -1] for f in range(1, 11)]
    write_rows(tmp_path / "a.txt", rows)
    write_rows(tmp_path / "b.txt", [r[:1] + [5] + r[2:] for r in rows[:8]])  # another id, two frames short
    assert main(["eval-mot", "--gt", str(tmp_path / "a.txt"), "--pred", str(tmp_path / "b.txt")]) == 2
    assert "add --gt-tracks to score against another run" in capsys.readouterr().err
    assert main(["eval-mot", "--gt", str(tmp_path / "a.txt"), "--pred", str(tmp_path / "b.txt"), "--gt-tracks", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["idf1"] == pytest.approx(2 * 8 / 18) and scores["misses"] == 2 and scores["id_switches"] == 0


def test_eval_mot_reads_a_bom_and_says_when_mot20_rules_are_wanted(tmp_path, capsys):
    """A file saved with a UTF-8 byte order mark (Windows tools) was refused at its first row."""
    gt = person(1, range(1, 11), 0) + [r[:7] + [6, 1] for r in person(2, range(1, 11), 1)]
    write_rows(tmp_path / "gt.txt", gt)
    (tmp_path / "gt.txt").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "gt.txt").read_bytes())
    write_rows(tmp_path / "pred.txt", [r[:6] for r in gt])
    args = ["eval-mot", "--gt", str(tmp_path / "gt.txt"), "--pred", str(tmp_path / "pred.txt"), "--json"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["false_positives"] == 10
    assert "10 rows of class 6 (non-MOT vehicle) are ignored as MOT17 does" in err and "--rules mot20" in err
    assert main(args + ["--rules", "mot20"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["false_positives"] == 0 and json.loads(out)["mota"] == 1.0 and err == ""
    assert main(args + ["--rules", "mot15"]) == 2
    assert capsys.readouterr().err == "error: --rules 'mot15': use one of mot17, mot20\n"


def test_eval_mot_scores_a_motchallenge_folder_per_sequence_and_combined(tmp_path, capsys):
    """BoxMOT and TrackEval users score MOT17/train at once: a row per sequence and COMBINED; the
    predictions a crosscam run (SEQ/tracks.txt) or a TrackEval tracker folder (data/SEQ.txt)."""
    mot, run, tracker = tmp_path / "MOT", tmp_path / "run", tmp_path / "tracker"
    for name, frames in (("SEQ-10", 12), ("SEQ-2", 10)):  # in the order people count: SEQ-2 first
        gt = person(1, range(1, frames + 1), 0) + person(2, range(1, frames + 1), 1)
        write_rows(mot / name / "gt" / "gt.txt", gt)
        (mot / name / "seqinfo.ini").write_text(f"[Sequence]\nname={name}\nseqLength={frames}\n")
        pred = [[r[0], r[1] if r[0] <= 5 else r[1] + 10, *r[2:6], 1, -1, -1, -1] for r in gt]  # both ids switch
        write_rows(run / name / "tracks.txt", pred)
        write_rows(tracker / "data" / f"{name}.txt", pred)
    for predictions in (run, tracker):
        assert main(["eval-mot", "--gt", str(mot), "--pred", str(predictions), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert list(out["sequences"]) == ["SEQ-2", "SEQ-10"]
        assert out["combined"]["gt_boxes"] == 44 and out["combined"]["id_switches"] == 4
        idtp = sum(s["idf1"] * s["gt_boxes"] for s in out["sequences"].values())  # equal gt and pred boxes: IDF1 = IDTP / boxes
        assert out["combined"]["idf1"] == pytest.approx(idtp / 44)
    assert main(["eval-mot", "--gt", str(mot), "--pred", str(run)]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["SEQ-2", "SEQ-10", "COMBINED"]
    write_rows(run / "SEQ-2" / "tracks.txt", [])  # no box: the warning names its sequence
    assert main(["eval-mot", "--gt", str(mot), "--pred", str(run), "--rules", "MOT20"]) == 0
    assert "warning: sequence SEQ-2: the predictions hold no box" in capsys.readouterr().err
    (run / "SEQ-10" / "tracks.txt").unlink()
    assert main(["eval-mot", "--gt", str(mot), "--pred", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --pred") and "no tracks for sequence SEQ-10" in err and "\n" not in err


def test_eval_mtmc_json_says_null_where_nothing_was_there_to_score(tmp_path, capsys):
    """An empty scene and run gave "mtmc_idf1": 0.0 beside "mtmc": {"idf1": null} (the table said n/a)."""
    for cam in ("cam1", "cam2"):
        write_rows(tmp_path / "scene" / "gt" / f"{cam}.txt", [])
        write_rows(tmp_path / "run" / cam / "tracks_global.txt", [])
    (tmp_path / "scene" / "scene.json").write_text(json.dumps({"num_frames": 5, "cameras": [{"name": "cam1"}, {"name": "cam2"}]}))
    assert main(["eval-mtmc", "--gt", str(tmp_path / "scene"), "--run", str(tmp_path / "run"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mtmc"]["idf1"] is None
    assert (out["mtmc_idf1"], out["mtmc_idp"], out["mtmc_idr"]) == (None, None, None)
