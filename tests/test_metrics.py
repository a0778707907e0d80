"""Tracking metrics on hand-built cases whose scores are worked out by hand in the comments."""

import numpy as np
import pytest

from pipeline.metrics import evaluate_mot, evaluate_mtmc, read_mot_file
from reid.errors import CrosscamError


def walker(person_id: int, frames=range(1, 11), x0=10.0, lane=0, cls=1, flag=1) -> np.ndarray:
    """gt rows of one person walking right 5 px per frame, 20x40 px, in lane ``lane`` (no overlap between lanes)."""
    return np.array([[f, person_id, x0 + 5 * f, 10 + 100 * lane, 20, 40, flag, cls, 1.0] for f in frames], float)


def relabel(rows: np.ndarray, new_id: int, frames=None) -> np.ndarray:
    out = rows.copy()
    mask = np.ones(len(out), bool) if frames is None else np.isin(out[:, 0], list(frames))
    out[mask, 1] = new_id
    return out


def test_perfect_tracks_score_one():
    gt = np.concatenate([walker(1), walker(2, lane=1)])
    s = evaluate_mot(gt, gt[:, :6])
    assert (s.mota, s.idf1, s.idp, s.idr, s.hota) == (1.0, 1.0, 1.0, 1.0, pytest.approx(1.0))
    assert (s.id_switches, s.false_positives, s.misses) == (0, 0, 0)


def test_ids_swapped_mid_sequence():
    # Two people, 10 frames each (20 gt boxes); from frame 6 the tracker swaps their ids.
    # CLEAR: TP 20, FP 0, FN 0, IDSW 2 -> MOTA = 1 - 2/20 = 0.9.
    # Identity: best one-to-one map keeps 5 frames per person -> IDTP 10 -> IDF1 = 2*10/(20+20) = 0.5.
    a, b = walker(1), walker(2, lane=1)
    pred = np.concatenate([relabel(a, 2, range(6, 11)), relabel(b, 1, range(6, 11))])
    s = evaluate_mot(np.concatenate([a, b]), pred)
    assert s.mota == pytest.approx(0.9)
    assert s.idf1 == pytest.approx(0.5)
    assert s.id_switches == 2
    assert (s.recall, s.precision, s.detection_f1) == (1.0, 1.0, 1.0)  # every box is right, only ids are wrong


def test_misses_and_false_positives():
    # One person, 10 frames. The tracker follows frames 1-8 (TP 8, FN 2) and also reports a box
    # far away in frames 1-2 (FP 2). MOTA = 1 - (2+2)/10 = 0.6.
    # IDTP 8, IDFN 2, IDFP 2 -> IDP = 8/10, IDR = 8/10, IDF1 = 0.8.
    gt = walker(1)
    pred = np.concatenate([gt[:8, :6], walker(9, frames=[1, 2], lane=3)[:, :6]])
    s = evaluate_mot(gt, pred)
    assert (s.false_positives, s.misses) == (2, 2)
    assert s.mota == pytest.approx(0.6)
    assert (s.idp, s.idr, s.idf1) == (pytest.approx(0.8), pytest.approx(0.8), pytest.approx(0.8))
    # boxes: recall 8/10, precision 8/10, F1 0.8 (= IDF1: no identity error)
    assert (s.recall, s.precision, s.detection_f1) == (pytest.approx(0.8), pytest.approx(0.8), pytest.approx(0.8))


def test_fragmented_track():
    # One person split into tracker ids 1 (frames 1-4) and 2 (frames 5-10): one ID switch,
    # MOTA = 1 - 1/10 = 0.9; the longer piece carries the identity: IDTP 6 -> IDF1 = 12/20 = 0.6.
    gt = walker(1)
    s = evaluate_mot(gt, relabel(gt, 2, range(5, 11))[:, :6])
    assert s.id_switches == 1
    assert s.mota == pytest.approx(0.9)
    assert s.idf1 == pytest.approx(0.6)
    assert s.pred_ids == 2


def test_motchallenge_classes_and_flags():
    # A static person (class 7) found by the tracker is neither a miss nor a false positive:
    # the prediction matched to it is dropped. A pedestrian row with flag 0 is not scored, but a
    # prediction on it is a false positive (MOT17 rules): MOTA = 1 - 10/10 = 0.
    person = walker(1)
    static = walker(2, lane=1, cls=7, flag=0)
    s = evaluate_mot(np.concatenate([person, static]), np.concatenate([person, static])[:, :6])
    assert (s.mota, s.gt_boxes, s.pred_boxes) == (1.0, 10, 10)
    ignored = walker(2, lane=1, flag=0)
    s = evaluate_mot(np.concatenate([person, ignored]), np.concatenate([person, ignored])[:, :6])
    assert (s.false_positives, s.gt_boxes) == (10, 10)
    assert s.mota == pytest.approx(0.0)


def test_agrees_with_py_motmetrics_on_a_noisy_case():
    """MOTA, IDF1 and ID switches match py-motmetrics fed the same IoU distances (thresholded at 0.5)."""
    mm = pytest.importorskip("motmetrics")
    rng = np.random.default_rng(0)
    gt = np.concatenate([walker(p, frames=range(1, 31), lane=p % 2, x0=60.0 * p) for p in range(1, 5)])
    pred = gt[:, :6].copy()
    pred[:, 2:4] += rng.normal(0, 3, (len(pred), 2))
    pred = pred[rng.random(len(pred)) > 0.1]
    swap = (pred[:, 0] > 15) & np.isin(pred[:, 1], [1, 3])
    pred[swap, 1] = 4 - pred[swap, 1]  # ids 1 and 3 swap from frame 16
    pred[(pred[:, 0] > 22) & (pred[:, 1] == 2), 1] = 7  # id 2 fragments
    ours = evaluate_mot(gt, pred)

    acc = mm.MOTAccumulator(auto_id=True)
    for f in range(1, 31):
        g, p = gt[gt[:, 0] == f], pred[pred[:, 0] == f]
        iou = _iou_xywh(g[:, 2:6], p[:, 2:6])
        acc.update(g[:, 1].astype(int), p[:, 1].astype(int), np.where(iou >= 0.5, 1 - iou, np.nan))
    theirs = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches"], return_dataframe=False)
    assert ours.mota == pytest.approx(theirs["mota"])
    assert ours.idf1 == pytest.approx(theirs["idf1"])
    assert ours.id_switches == theirs["num_switches"]
    assert 0 < ours.idf1 < 1 and ours.id_switches >= 2


def _iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a_xyxy = np.concatenate([a[:, :2], a[:, :2] + a[:, 2:]], 1)[:, None]
    b_xyxy = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)[None]
    wh = np.clip(np.minimum(a_xyxy[..., 2:], b_xyxy[..., 2:]) - np.maximum(a_xyxy[..., :2], b_xyxy[..., :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (a[:, None, 2] * a[:, None, 3] + b[None, :, 2] * b[None, :, 3] - inter)


def three_people_two_cameras():
    gt = {"cam1": np.concatenate([walker(p, lane=p) for p in (1, 2, 3)])}
    gt["cam2"] = np.concatenate([walker(p, frames=range(5, 15), lane=p) for p in (1, 2, 3)])
    return gt


def test_mtmc_perfect_global_ids():
    gt = three_people_two_cameras()
    s = evaluate_mtmc(gt, {c: rows[:, :6] for c, rows in gt.items()})
    assert (s.mtmc.idf1, s.mtmc.idp, s.mtmc.idr) == (1.0, 1.0, 1.0)
    assert all(c.idf1 == 1.0 and c.mota == 1.0 for c in s.cameras.values())


def test_mtmc_identity_swapped_between_cameras():
    # 3 people x 10 frames x 2 cameras = 60 gt boxes. In cam2 the global ids of people 1 and 2 are
    # swapped: each camera alone is perfect, but across cameras id 1 covers person 1 in cam1 and
    # person 2 in cam2. Best map: 1->1 (10), 2->2 (10), 3->3 (20): IDTP 40 -> IDF1 = 80/120 = 2/3.
    gt = three_people_two_cameras()
    cam2 = gt["cam2"].copy()
    cam2[gt["cam2"][:, 1] == 1, 1] = 2
    cam2[gt["cam2"][:, 1] == 2, 1] = 1
    s = evaluate_mtmc(gt, {"cam1": gt["cam1"][:, :6], "cam2": cam2[:, :6]})
    assert s.cameras["cam1"].idf1 == 1.0 and s.cameras["cam2"].idf1 == 1.0
    assert s.mtmc.idf1 == pytest.approx(2 / 3)
    assert s.mtmc.idp == pytest.approx(2 / 3) and s.mtmc.idr == pytest.approx(2 / 3)


def test_mtmc_person_not_linked_across_cameras():
    # Person 3 gets a fresh id (7) in cam2 instead of its cam1 id: IDTP = 20 + 20 + 10 = 50 of
    # 60 gt and 60 predicted boxes -> IDF1 = 100/120 = 5/6. A missing camera costs its boxes as misses.
    gt = three_people_two_cameras()
    cam2 = gt["cam2"].copy()
    cam2[cam2[:, 1] == 3, 1] = 7
    s = evaluate_mtmc(gt, {"cam1": gt["cam1"][:, :6], "cam2": cam2[:, :6]})
    assert s.mtmc.idf1 == pytest.approx(5 / 6)
    only_cam1 = evaluate_mtmc(gt, {"cam1": gt["cam1"][:, :6]})
    assert only_cam1.cameras["cam2"].misses == 30
    assert only_cam1.mtmc.idr == pytest.approx(0.5) and only_cam1.mtmc.idp == pytest.approx(1.0)


def test_mtmc_rejects_predictions_for_unknown_camera():
    gt = three_people_two_cameras()
    with pytest.raises(CrosscamError, match="cam9"):
        evaluate_mtmc(gt, {"cam9": gt["cam1"][:, :6]})


def test_read_mot_file_pads_short_rows(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("1,1,10,20,30,40\n2,1,11,20,30,40,0,7,0.5\n")
    rows = read_mot_file(path, "gt")
    assert rows.shape == (2, 9)
    assert rows[0, 6:].tolist() == [1, 1, 1]  # defaults: consider, pedestrian, visible
    assert rows[1, 6:].tolist() == [0, 7, 0.5]
    pred = tmp_path / "pred.txt"
    pred.write_text("")
    assert read_mot_file(pred, "pred").shape == (0, 10)


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,1,10,20,30\n", "need at least 6"),
        ("1,1,10,20,30,abc\n", ":1: not a MOTChallenge row"),
        ("0,1,10,20,30,40\n", "frames are integers from 1"),
        ("1,1,10,20,-30,40\n", "negative"),
        ("1,1,nan,20,30,40\n", "row 1 has x = nan"),  # said 'a negative or non-finite box size'
        ("1,1,10,20,30,inf\n", "row 1 has h = inf"),
        ("1,1,10,20,30,40\n1,1,50,20,30,40\n", "appears twice in frame 1"),
        ("2,1,10,20,30,40\n1,4294967297,50,20,30,40\n", None),  # id 2^32 + 1 read as frame 2's id 1
    ],
)
def test_read_mot_file_rejects_bad_rows(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    if message is None:
        assert len(read_mot_file(path, "pred")) == 2
        return
    with pytest.raises(CrosscamError, match=message) as info:
        read_mot_file(path, "pred")
    assert "\n" not in str(info.value)


def test_read_mot_file_missing(tmp_path):
    with pytest.raises(CrosscamError, match="gt file not found"):
        read_mot_file(tmp_path / "nope.txt", "gt")


@pytest.mark.parametrize(
    "row, message",
    [
        ("1,1,10,20,30,40,1,-1,1", "class -1 in row 1; MOTChallenge classes are whole numbers 1-12"),
        ("1,1,10,20,30,40,1,0,1", "class 0 in row 1"),
        ("1,1,10,20,30,40,1,14,1", "class 14 in row 1"),
        ("1,1,10,20,30,40,nan,1,1", "row 1 has flag = nan"),  # counted as a person to find
        ("1,1,10,20,30,40,1,nan,1", "row 1 has class = nan"),
    ],
)
def test_ground_truth_labels_trackeval_cannot_use_are_one_line(tmp_path, capfd, row, message):
    """TrackEval printed the bad class on stdout (into --json output) and raised a paragraph."""
    path = tmp_path / "gt.txt"
    path.write_text(row + "\n")
    with pytest.raises(CrosscamError, match=message) as info:
        read_mot_file(path, "gt")
    assert "\n" not in str(info.value) and capfd.readouterr().out == ""


def test_frames_far_apart_cost_nothing_and_score_as_dense_ones():
    """Frames are renumbered densely before TrackEval: a frame 10^12 allocated 7 TiB, and frame
    numbers in the millions took minutes, while frames without rows add nothing to any score."""
    a, b = walker(1), walker(2, lane=1)
    pred = np.concatenate([relabel(a, 2, range(6, 11)), relabel(b, 1, range(6, 11)), walker(9, [3], lane=3)])[:, :6]
    gt = np.concatenate([a, b])
    dense = evaluate_mot(gt, pred)
    spread = lambda rows: np.column_stack([rows[:, 0] * 1_000_003 + 10**12, rows[:, 1:]])  # noqa: E731
    far = evaluate_mot(spread(gt), spread(pred))
    assert far == dense and dense.id_switches == 2 and dense.false_positives == 1
    gaps = evaluate_mot(gt, np.concatenate([pred, [[10**12, 5, 0, 0, 10, 10]]]))  # one false box far past the rest
    assert gaps.false_positives == 2 and gaps.idf1 < dense.idf1
    with pytest.raises(CrosscamError, match="a row at frame 11, past the sequence's 10 frames"):
        evaluate_mot(gt, walker(1, [11])[:, :6], 10)


def test_motp_is_undefined_without_a_matched_box():
    scores = evaluate_mot(walker(1), walker(1, lane=2)[:, :6]).as_dict()
    assert scores["motp"] is None and scores["mota"] == pytest.approx(-1.0) and scores["false_positives"] == 10
    assert evaluate_mot(walker(1), walker(1)[:, :6]).as_dict()["motp"] == pytest.approx(1.0)


def test_mot20_rules_make_vehicles_distractors():
    """Class 6 (non-MOT vehicle) is ignored by both rules; a prediction on it is false under MOT17's
    rules only."""
    person, vehicle = walker(1), walker(2, lane=1, cls=6, flag=0)
    pred = np.concatenate([person, vehicle])[:, :6]
    mot17 = evaluate_mot(np.concatenate([person, vehicle]), pred)
    mot20 = evaluate_mot(np.concatenate([person, vehicle]), pred, rules="mot20")
    assert (mot17.false_positives, mot17.gt_boxes) == (10, 10) and mot17.mota == pytest.approx(0.0)
    assert (mot20.false_positives, mot20.pred_boxes, mot20.mota) == (0, 10, 1.0)


def _noisy_sequence(seed: int, people: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = np.concatenate([walker(p, frames=range(1, frames + 1), lane=p % 3, x0=50.0 * p) for p in range(1, people + 1)])
    pred = gt[:, :6].copy()
    pred[:, 2:4] += rng.normal(0, 4, (len(pred), 2))
    pred = pred[rng.random(len(pred)) > 0.15]
    pred[(pred[:, 0] > frames // 2) & (pred[:, 1] == 1), 1] = 9  # a fragment
    return gt, pred


def test_combined_sequences_equal_trackevals_own_combined_row(tmp_path):
    """eval-mot over a MOT folder: each sequence and the COMBINED row as TrackEval's evaluator gives them."""
    import trackeval

    from pipeline.metrics import COMBINED, evaluate_mot_sequences, write_mot_rows

    sequences = {"SEQ-A": _noisy_sequence(1, 4, 30), "SEQ-B": _noisy_sequence(2, 2, 20)}
    ours = evaluate_mot_sequences({name: (gt, pred, None) for name, (gt, pred) in sequences.items()})
    for name, (gt, pred) in sequences.items():
        padded = np.column_stack([gt[:, :6], np.ones((len(gt), 3))])
        write_mot_rows(tmp_path / "gt" / name / "gt" / "gt.txt", padded)
        write_mot_rows(tmp_path / "trackers" / "t" / "data" / f"{name}.txt",
                       np.column_stack([pred, np.ones(len(pred)), -np.ones((len(pred), 3))]))
    quiet = {"PRINT_CONFIG": False, "PRINT_RESULTS": False, "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False,
             "PLOT_CURVES": False, "PRINT_ONLY_COMBINED": True, "TIME_PROGRESS": False, "DISPLAY_LESS_PROGRESS": True}
    dataset = trackeval.datasets.MotChallenge2DBox({
        "GT_FOLDER": str(tmp_path / "gt"), "TRACKERS_FOLDER": str(tmp_path / "trackers"), "TRACKERS_TO_EVAL": ["t"],
        "SEQ_INFO": {"SEQ-A": 30, "SEQ-B": 20}, "SKIP_SPLIT_FOL": True, "PRINT_CONFIG": False})
    metrics = [trackeval.metrics.HOTA({"PRINT_CONFIG": False}), trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
               trackeval.metrics.Identity({"PRINT_CONFIG": False})]
    results, _ = trackeval.Evaluator(quiet).evaluate([dataset], metrics)
    theirs = results["MotChallenge2DBox"]["t"]
    for name, key in (("SEQ-A", "SEQ-A"), ("SEQ-B", "SEQ-B"), (COMBINED, "COMBINED_SEQ")):
        got, want = ours[name], theirs[key]["pedestrian"]
        assert got.mota == pytest.approx(want["CLEAR"]["MOTA"]) and got.idf1 == pytest.approx(want["Identity"]["IDF1"])
        assert got.hota == pytest.approx(float(np.mean(want["HOTA"]["HOTA"])))
        assert got.id_switches == want["CLEAR"]["IDSW"]
    assert list(ours) == ["SEQ-A", "SEQ-B", COMBINED] and 0 < ours[COMBINED].idf1 < 1
