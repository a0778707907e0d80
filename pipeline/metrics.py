"""Tracking metrics on MOTChallenge files: per-camera MOTA / IDF1 / IDP / IDR / HOTA / ID switches,
and cross-camera (MTMC) identity metrics over all cameras jointly.

The metrics themselves come from TrackEval (``trackeval`` 1.3, the maintained fork that runs on
NumPy 2), with the MOTChallenge pedestrian protocol of its ``MotChallenge2DBox`` dataset:
predictions matched (IoU >= 0.5) to gt rows of a distractor class (person on vehicle, static
person, distractor, reflection) are dropped, and only gt rows of class 1 with a non-zero
"consider" flag are scored; the visibility column is carried but not filtered on, as in MOT17.
py-motmetrics 1.4.0 is not used: its IoU distance calls ``np.asfarray``, removed in NumPy 2.

MTMC identity metrics fuse ``(camera, frame)`` into one time key: the cameras' frames are laid
end to end in one sequence, so one predicted global id can only be matched to one gt person
over every camera, and a person given another id in one camera costs IDTP there.

>>> gt = np.array([[1, 1, 0, 0, 10, 20, 1, 1, 1.0]])
>>> evaluate_mot(gt, gt[:, :6]).idf1
1.0
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import trackeval

from pipeline.boxes import intersection_matrix
from pipeline.text import counting_order
from reid.errors import CrosscamError

# What a row holds when a file has only the first columns: gt rows count as pedestrians (flag 1,
# class 1, fully visible); prediction rows get confidence 1 and no world coordinates.
_FULL_ROW = {
    "gt": np.array([0, 0, 0, 0, 0, 0, 1, 1, 1], np.float64),  # frame, id, x, y, w, h, flag, class, visibility
    "pred": np.array([0, 0, 0, 0, 0, 0, 1, -1, -1, -1], np.float64),  # frame, id, x, y, w, h, conf, x, y, z
}
RULES = ("mot17", "mot20")  # TrackEval's MOT17 (= MOT16) and MOT20 ground-truth rules
MOT_CLASSES = 12  # MOT16/17/20 gt classes: 1 pedestrian ... 12 occluder full
NON_MOT_VEHICLE = 6  # a distractor class under MOT20's rules only
_SEQ = "seq"
COMBINED = "COMBINED"  # the row of all sequences together, as TrackEval names it
_TRACKER = "pred"


@dataclass(frozen=True)
class MotScores:
    """Tracking scores of one sequence (one camera, or all cameras fused for MTMC).

    Ratios are in 0..1 (MOTA can be negative); counts are numbers of boxes or events.
    ``detection_f1`` is the F1 of the boxes alone, 2 TP / (gt boxes + predicted boxes), and the
    ceiling of IDF1 = 2 IDTP / (the same): a box matched under its identity is a matched box.

    >>> rows = np.array([[1, 7, 0, 0, 10, 20], [2, 7, 1, 0, 10, 20]])
    >>> evaluate_mot(rows, rows).as_dict()["id_switches"]
    0
    """

    mota: float
    motp: float  # mean IoU of matched boxes
    idf1: float
    idp: float
    idr: float
    recall: float  # matched gt boxes / gt boxes (IoU >= 0.5)
    precision: float  # matched predicted boxes / predicted boxes
    detection_f1: float
    hota: float
    deta: float
    assa: float
    id_switches: int
    false_positives: int
    misses: int
    gt_boxes: int
    pred_boxes: int
    gt_ids: int
    pred_ids: int

    def as_dict(self) -> dict:
        """The scores by name; a ratio with nothing to divide by (no ground-truth boxes for recall,
        no boxes at all for IDF1: a camera nobody walked through) is None, not 0."""
        scores = asdict(self)
        for key, counts in _RATIO_NEEDS.items():
            if not any(scores[count] for count in counts):
                scores[key] = None
        if scores["gt_boxes"] == scores["misses"]:  # MOTP: the mean IoU of matched boxes, and none matched
            scores["motp"] = None
        return scores


# the boxes a ratio divides by: with none of them it is undefined, not 0
_RATIO_NEEDS = {"mota": ("gt_boxes",), "idr": ("gt_boxes",), "recall": ("gt_boxes",), "idp": ("pred_boxes",),
                "precision": ("pred_boxes",), "idf1": ("gt_boxes", "pred_boxes"), "hota": ("gt_boxes", "pred_boxes"),
                "deta": ("gt_boxes", "pred_boxes"), "assa": ("gt_boxes", "pred_boxes"),
                "detection_f1": ("gt_boxes", "pred_boxes")}


@dataclass(frozen=True)
class MtmcScores:
    """Cross-camera scores: identity metrics over all cameras jointly plus each camera's scores.

    >>> rows = np.array([[1, 7, 0, 0, 10, 20]])
    >>> evaluate_mtmc({"cam1": rows, "cam2": rows}, {"cam1": rows, "cam2": rows}).as_dict()["mtmc_idf1"]
    1.0
    """

    mtmc: MotScores
    cameras: dict[str, MotScores]

    def as_dict(self) -> dict:
        """``mtmc_idf1`` / ``_idp`` / ``_idr`` (null where undefined, as in ``mtmc``), ``mtmc`` (the joint
        scores) and ``cameras`` (each camera's), as :meth:`MotScores.as_dict` gives them."""
        mtmc = self.mtmc.as_dict()
        return {
            "mtmc_idf1": mtmc["idf1"],
            "mtmc_idp": mtmc["idp"],
            "mtmc_idr": mtmc["idr"],
            "mtmc": mtmc,
            "cameras": {name: s.as_dict() for name, s in self.cameras.items()},
        }


_TABLE_RATIOS = [("MOTA", "mota"), ("IDF1", "idf1"), ("IDP", "idp"), ("IDR", "idr"), ("HOTA", "hota"),
                 ("Rcll", "recall"), ("Prcn", "precision"), ("DetF1", "detection_f1")]
_TABLE_COUNTS = [("IDSW", "id_switches"), ("FP", "false_positives"), ("FN", "misses")]


def scores_table(rows: dict[str, MotScores]) -> str:
    """A plain-text table of scores, one line per named sequence (a camera, or "MTMC").

    A ratio with nothing to divide by (no ground-truth boxes for recall, no boxes at all for IDF1)
    shows ``n/a``.

    >>> rows = np.array([[1, 7, 0, 0, 10, 20]])
    >>> print(scores_table({"cam1": evaluate_mot(rows, rows)}).splitlines()[0].split())
    ['MOTA', 'IDF1', 'IDP', 'IDR', 'HOTA', 'Rcll', 'Prcn', 'DetF1', 'IDSW', 'FP', 'FN']
    >>> print(scores_table({"cam2": evaluate_mot(rows[:0], rows[:0])}).splitlines()[1].split())
    ['cam2', 'n/a', 'n/a', 'n/a', 'n/a', 'n/a', 'n/a', 'n/a', 'n/a', '0', '0', '0']
    """

    values = [scores.as_dict() for scores in rows.values()]
    columns = [(title, [f"{v[key]:.3f}" if v[key] is not None else "n/a" for v in values]) for title, key in _TABLE_RATIOS]
    columns += [(title, [str(v[key]) for v in values]) for title, key in _TABLE_COUNTS]
    widths = [max(len(title), *map(len, cells)) for title, cells in columns]  # as narrow as the column allows
    width = max(len(name) for name in rows)
    lines = [f"{'':{width}}" + "".join(f" {title:>{w}}" for (title, _), w in zip(columns, widths))]
    for i, name in enumerate(rows):
        lines.append(f"{name:{width}}" + "".join(f" {cells[i]:>{w}}" for (_, cells), w in zip(columns, widths)))
    return "\n".join(lines)


def read_mot_file(path: str | Path, kind: str) -> np.ndarray:
    """Read a MOTChallenge text file into a float64 array.

    ``kind="gt"`` gives ``(N, 9)`` rows ``frame, id, x, y, w, h, flag, class, visibility``; files
    with only 6 or 7 columns get flag 1, class 1 (pedestrian) and visibility 1 where missing.
    A 10-column gt row is MOT15-style (``frame, id, x, y, w, h, conf, wx, wy, wz``: world
    coordinates, not class and visibility): it becomes class 1, visibility 1, flag = its conf.
    ``kind="pred"`` gives ``(N, 10)`` rows ``frame, id, x, y, w, h, conf, -1, -1, -1``.
    Frames are 1-based, boxes in pixels (left, top, width, height). An empty file gives 0 rows.
    Raises :class:`CrosscamError` naming the file and line for anything malformed.
    """
    path = Path(path)
    if kind not in ("gt", "pred"):
        raise ValueError(f"kind must be 'gt' or 'pred', not {kind!r}")
    if path.is_dir():
        raise CrosscamError(f"{path}: a folder; pass the {kind} file itself (a MOTChallenge .txt, e.g. "
                            f"{'SEQ/gt/gt.txt' if kind == 'gt' else 'RUN_DIR/CAMERA/tracks.txt'})")
    if not path.is_file():
        raise CrosscamError(f"{path}: {kind} file not found; pass an existing MOTChallenge .txt file")
    with open(path, "rb") as handle:
        if b"\0" in handle.read(4096):  # an image, an .npz, ...: its bytes are no use in the message
            raise CrosscamError(f"{path}: a binary file, not a MOTChallenge .txt; pass the {kind} text file")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = [float(f) for f in line.replace(",", " ").split()]
        except ValueError:
            raise CrosscamError(
                f"{path}:{number}: not a MOTChallenge row ({line.strip()[:60]!r}); "
                "expected comma-separated numbers frame,id,x,y,w,h,..."
            ) from None
        if len(values) < 6:
            raise CrosscamError(f"{path}:{number}: {len(values)} columns, need at least 6 (frame,id,x,y,w,h)")
        if kind == "gt" and len(values) == 10:  # MOT15: columns 8-10 are world coordinates
            values = values[:7] + [1.0, 1.0]
        rows.append(_full_rows(np.array([values]), kind)[0])
    table = np.array(rows, np.float64).reshape(len(rows), len(_FULL_ROW[kind]))
    _check_table(path, table)
    if kind == "gt":
        _check_gt_labels(path, table)
    return table


def _check_gt_labels(path: Path, table: np.ndarray) -> None:
    """Flags, classes and visibilities TrackEval can use (it printed a bad class on stdout and
    said it in a paragraph; a NaN flag counted as 1)."""
    bad = np.flatnonzero(~np.isfinite(table[:, 6:9]).all(axis=1))
    if len(bad):
        at = int(np.flatnonzero(~np.isfinite(table[bad[0], 6:9]))[0])
        raise CrosscamError(f"{path}: row {bad[0] + 1} has {('flag', 'class', 'visibility')[at]} = {table[bad[0], 6 + at]:g}; "
                            "gt columns 7-9 are flag, class (1-12) and visibility, finite numbers")
    classes = table[:, 7]
    bad = np.flatnonzero((classes < 1) | (classes > MOT_CLASSES) | (classes != np.round(classes)))
    if len(bad):
        raise CrosscamError(f"{path}: class {classes[bad[0]]:g} in row {bad[0] + 1}; MOTChallenge classes are whole "
                            f"numbers 1-{MOT_CLASSES} (1: pedestrian)")


def _check_table(path: Path, table: np.ndarray) -> None:
    if not len(table):
        return
    frames, ids = table[:, 0], table[:, 1]
    bad = np.flatnonzero((frames < 1) | (frames != np.round(frames)))
    if len(bad):
        raise CrosscamError(f"{path}: frame {table[bad[0], 0]:g} in row {bad[0] + 1}; frames are integers from 1")
    bad = np.flatnonzero(ids != np.round(ids))
    if len(bad):
        raise CrosscamError(f"{path}: id {table[bad[0], 1]:g} in row {bad[0] + 1} is not an integer")
    bad = np.flatnonzero(ids < 0)
    if len(bad):
        raise CrosscamError(f"{path}: id {table[bad[0], 1]:g} in row {bad[0] + 1}; ids are 0 or more (a detections file "
                            "such as det/det.txt has -1 in every row): pass a tracks file")
    bad = np.flatnonzero(~np.isfinite(table[:, 2:6]).all(axis=1))
    if len(bad):
        at = int(np.flatnonzero(~np.isfinite(table[bad[0], 2:6]))[0])
        raise CrosscamError(f"{path}: row {bad[0] + 1} has {'xywh'[at]} = {table[bad[0], 2 + at]:g}; boxes are x,y,w,h in pixels")
    bad = np.flatnonzero((table[:, 4] < 0) | (table[:, 5] < 0))
    if len(bad):
        raise CrosscamError(f"{path}: row {bad[0] + 1} has a negative box size; boxes are x,y,w,h")
    order = np.lexsort((ids, frames))
    frames, ids = frames[order], ids[order]
    dup = np.flatnonzero((frames[1:] == frames[:-1]) & (ids[1:] == ids[:-1]))
    if len(dup):
        raise CrosscamError(f"{path}: id {ids[dup[0]]:.0f} appears twice in frame {frames[dup[0]]:.0f}; ids are unique per frame")


def tracks_as_ground_truth(rows: np.ndarray) -> np.ndarray:
    """A run's tracks (``read_mot_file(..., "pred")`` rows) as ground truth to score another run
    against: every box a person to find, ``(N, 9)`` ``frame, id, x, y, w, h, 1, 1, 1``.

    >>> tracks_as_ground_truth(np.array([[3, 7, 1, 2, 10, 20, 0.4, -1, -1, -1]])).tolist()
    [[3.0, 7.0, 1.0, 2.0, 10.0, 20.0, 1.0, 1.0, 1.0]]
    """
    return np.column_stack([rows[:, :6], np.ones((len(rows), 3))]) if len(rows) else np.zeros((0, 9))


def check_comparable(gt_path: Path, gt: np.ndarray, pred: np.ndarray, rules: str = "mot17") -> list[str]:
    """Refuse empty ground truth and ground truth that marks nobody (flag 1), as a tracks file given as ``--gt`` does
    (its confidences are read as MOT15 flags); else one-line warnings where the two files do not
    look like one sequence tracked in full: no predictions, predictions that stop well before the
    ground truth or go well past it, predictions on only some of its frames (a ``--stride`` run),
    no predicted box overlapping any ground-truth box, class-6 rows (MOT20's) under the MOT17 rules."""
    if not len(gt):
        raise CrosscamError(f"{gt_path}: no rows; pass the sequence's ground truth (SEQ/gt/gt.txt)")
    if not (gt[:, 6] == 1).any():
        raise CrosscamError(f"{gt_path}: no row marks a person (flag / MOT15 confidence 1); is it a tracks file? "
                            "check the order of --gt and --pred, or add --gt-tracks to score against another run")
    warnings = []
    vehicles = int((gt[:, 7] == NON_MOT_VEHICLE).sum())
    if rules == "mot17" and vehicles:
        warnings.append(f"warning: {gt_path}: {vehicles} rows of class {NON_MOT_VEHICLE} (non-MOT vehicle) are ignored as "
                        "MOT17 does, and the predictions on them count as false; MOT20's ground truth wants --rules mot20")
    if not len(pred):
        return warnings + ["warning: the predictions hold no box: every person of the ground truth counts as missed"]
    gt_end, pred_end = int(gt[:, 0].max(initial=0)), int(pred[:, 0].max(initial=0))
    if pred_end < 0.9 * gt_end:
        warnings.append(f"warning: predictions stop at frame {pred_end}, the ground truth goes on to {gt_end}: its "
                        f"people in frames {pred_end + 1}-{gt_end} count as missed")
    if pred_end > 1.1 * gt_end:
        warnings.append(f"warning: predictions go on to frame {pred_end}, the ground truth stops at {gt_end}: "
                        "another sequence's? their boxes past it count as false")
    people = gt[gt[:, 6] == 1]
    shared = np.unique(people[people[:, 0] <= pred_end, 0])
    covered = np.intersect1d(shared, pred[:, 0])
    if len(shared) >= 10 and len(covered) < 0.6 * len(shared):
        warnings.append(f"warning: predictions cover {len(covered)} of the ground truth's {len(shared)} frames with "
                        "people up to their last frame (a --stride run?): the people of the others count as missed")
    if len(people) and not _any_overlap(people, pred):
        warnings.append("warning: no predicted box overlaps a ground-truth box in any frame: another sequence, "
                        "or boxes in another format (x,y,w,h in pixels)?")
    return warnings


def _any_overlap(gt: np.ndarray, pred: np.ndarray) -> bool:
    """Whether some predicted box overlaps some ground-truth box of its frame (rows frame,id,x,y,w,h...)."""

    def xyxy(rows: np.ndarray, frame: float) -> np.ndarray:
        ltwh = rows[rows[:, 0] == frame, 2:6]
        return np.hstack([ltwh[:, :2], ltwh[:, :2] + ltwh[:, 2:]])

    frames = np.intersect1d(gt[:, 0], pred[:, 0])
    sample = frames[:: max(1, len(frames) // 200)]  # a sample of frames is enough to tell
    return any((intersection_matrix(xyxy(gt, f), xyxy(pred, f)) > 0).any() for f in sample)


def evaluate_mot(gt: np.ndarray, pred: np.ndarray, num_frames: int | None = None, rules: str = "mot17") -> MotScores:
    """Score one sequence.

    ``gt`` is ``(N, >=6)`` (see :func:`read_mot_file`), ``pred`` ``(M, >=6)``; ``num_frames``
    defaults to the last frame in either (a row past it is an error). Ids may be any integers.
    ``rules``: ``mot17`` (MOT16/17's distractor classes) or ``mot20`` (also class 6, non-MOT vehicles).
    Only frames holding a row are handed to TrackEval, renumbered densely: a frame with neither
    ground truth nor predictions adds nothing to any score, and frame numbers far apart (a
    timestamp as the frame) cost no time.
    """
    return _scores(_sequence_results(*_checked_rows(gt, pred, num_frames, rules), rules))


def evaluate_mot_sequences(sequences: dict[str, tuple[np.ndarray, np.ndarray, int | None]],
                           rules: str = "mot17") -> dict[str, MotScores]:
    """Score several sequences (``{name: (gt, pred, num_frames)}``, as :func:`evaluate_mot` takes
    them) and all of them together as TrackEval's ``COMBINED`` row does (its metrics' own
    ``combine_sequences``: counts summed, HOTA's from the summed matches); that row comes last."""
    results = {}
    for name, (gt, pred, frames) in sequences.items():
        try:
            results[name] = _sequence_results(*_checked_rows(gt, pred, frames, rules), rules)
        except CrosscamError as exc:  # which of the sequences
            raise CrosscamError(f"sequence {name}: {exc}") from None
    scores = {name: _scores(result) for name, result in results.items()}
    if results:
        quiet = {"PRINT_CONFIG": False}
        combined = tuple(metric(quiet).combine_sequences({name: result[i] for name, result in results.items()})
                         for i, metric in enumerate((trackeval.metrics.CLEAR, trackeval.metrics.Identity,
                                                     trackeval.metrics.HOTA)))
        counts = {key: sum(result[3][key] for result in results.values()) for key in next(iter(results.values()))[3]}
        scores[COMBINED] = _scores((*combined, counts))
    return scores


def _checked_rows(gt: np.ndarray, pred: np.ndarray, num_frames: int | None, rules: str) -> tuple[np.ndarray, np.ndarray]:
    """``gt`` and ``pred`` as full rows, checked against ``rules`` and ``num_frames`` (see :func:`evaluate_mot`)."""
    if rules not in RULES:
        raise ValueError(f"rules must be one of {', '.join(RULES)}, not {rules!r}")
    gt, pred = _full_rows(gt, "gt"), _full_rows(pred, "pred")
    last = int(max(gt[:, 0].max(initial=0), pred[:, 0].max(initial=0), 1))
    if num_frames is not None and last > num_frames:
        raise CrosscamError(f"a row at frame {last}, past the sequence's {num_frames} frames")
    return gt, pred


def _sequence_results(gt: np.ndarray, pred: np.ndarray, rules: str) -> tuple[dict, dict, dict, dict]:
    """TrackEval's CLEAR, Identity and HOTA results of one sequence and its box and id counts,
    its frames renumbered densely (see :func:`evaluate_mot`)."""
    frames = np.union1d(gt[:, 0], pred[:, 0])
    gt, pred = gt.copy(), pred.copy()
    gt[:, 0], pred[:, 0] = (np.searchsorted(frames, rows[:, 0]) + 1 for rows in (gt, pred))
    with tempfile.TemporaryDirectory(prefix="crosscam-eval-") as tmp:
        data = _trackeval_sequence(Path(tmp), gt, pred, max(len(frames), 1), rules)
    quiet = {"PRINT_CONFIG": False}
    counts = {"gt_boxes": int(data["num_gt_dets"]), "pred_boxes": int(data["num_tracker_dets"]),
              "gt_ids": int(data["num_gt_ids"]), "pred_ids": int(data["num_tracker_ids"])}
    return (trackeval.metrics.CLEAR(quiet).eval_sequence(data), trackeval.metrics.Identity(quiet).eval_sequence(data),
            trackeval.metrics.HOTA(quiet).eval_sequence(data), counts)


def evaluate_mtmc(
    gt_by_camera: dict[str, np.ndarray],
    pred_by_camera: dict[str, np.ndarray],
    frames_by_camera: dict[str, int] | None = None,
    rules: str = "mot17",
) -> MtmcScores:
    """Score per camera and jointly over all cameras with global ids.

    Both dicts map a camera name to MOT rows whose ids are **global** (the same person has the same
    id in every camera). A camera missing from ``pred_by_camera`` counts as having no predictions;
    predictions for cameras without gt are an error. ``frames_by_camera`` gives each camera's
    length (default: its last frame in gt or predictions); ``rules`` as :func:`evaluate_mot`'s.
    """
    extra = sorted(set(pred_by_camera) - set(gt_by_camera), key=counting_order)
    if extra:
        raise CrosscamError(f"predictions for camera(s) {', '.join(extra)} have no ground truth; check the camera names")
    cameras = sorted(gt_by_camera, key=counting_order)
    empty = np.zeros((0, 6))
    gts = {c: _full_rows(gt_by_camera[c], "gt") for c in cameras}
    preds = {c: _full_rows(pred_by_camera.get(c, empty), "pred") for c in cameras}
    lengths = {
        c: (frames_by_camera or {}).get(c)
        or int(max(gts[c][:, 0].max(initial=0), preds[c][:, 0].max(initial=0), 1))
        for c in cameras
    }
    for c in cameras:
        if gts[c][:, 0].max(initial=0) > lengths[c]:
            raise CrosscamError(f"camera {c}: ground truth up to frame {int(gts[c][:, 0].max())} but the scene has "
                                f"{lengths[c]} frames (scene.json); is scene.json this ground truth's?")
        if preds[c][:, 0].max(initial=0) > lengths[c]:
            raise CrosscamError(f"camera {c}: tracks up to frame {int(preds[c][:, 0].max())} but its ground truth has "
                                f"{lengths[c]} frames; is --gt the scene this run was tracked from?")
    per_camera = {c: evaluate_mot(gts[c], preds[c], lengths[c], rules) for c in cameras}
    offsets = np.cumsum([0] + [lengths[c] for c in cameras])[:-1]
    fused_gt = np.concatenate([_shift_frames(gts[c], o) for c, o in zip(cameras, offsets)])
    fused_pred = np.concatenate([_shift_frames(preds[c], o) for c, o in zip(cameras, offsets)])
    fused = evaluate_mot(fused_gt, fused_pred, int(sum(lengths.values())), rules)
    return MtmcScores(mtmc=fused, cameras=per_camera)


def _shift_frames(table: np.ndarray, offset: int) -> np.ndarray:
    shifted = table.copy()
    shifted[:, 0] += offset
    return shifted


def _full_rows(rows: np.ndarray, kind: str) -> np.ndarray:
    """Pad ``(N, >=6)`` rows to the full gt / prediction width with :data:`_FULL_ROW` defaults."""
    rows = np.asarray(rows, np.float64)
    rows = rows.reshape(len(rows), rows.shape[-1] if rows.ndim == 2 else 6)
    template = _FULL_ROW[kind]
    full = np.tile(template, (len(rows), 1))
    # Prediction files carry world coordinates after the confidence, which are never scored.
    keep = min(rows.shape[1], len(template) if kind == "gt" else 7)
    full[:, :keep] = rows[:, :keep]
    return full


def write_mot_rows(path: Path, rows: np.ndarray) -> None:
    """Write ``(N, C)`` MOTChallenge rows as text: frame and id as integers, the rest with 6 decimals."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for r in rows:
            f.write(",".join(f"{int(v)}" if i < 2 else f"{v:.6f}" for i, v in enumerate(r)) + "\n")


def _trackeval_sequence(tmp: Path, gt: np.ndarray, pred: np.ndarray, num_frames: int, rules: str) -> dict:
    """Stage the rows in TrackEval's MOTChallenge layout and return its preprocessed sequence."""
    # TrackEval relabels ids through an array indexed by id, so map them to small non-negatives.
    gt = gt.copy()
    pred = pred.copy()
    gt[:, 1] = np.unique(gt[:, 1], return_inverse=True)[1] if len(gt) else gt[:, 1]
    pred[:, 1] = np.unique(pred[:, 1], return_inverse=True)[1] if len(pred) else pred[:, 1]
    write_mot_rows(tmp / "gt" / _SEQ / "gt" / "gt.txt", gt)
    write_mot_rows(tmp / "trackers" / _TRACKER / "data" / f"{_SEQ}.txt", pred)
    dataset = trackeval.datasets.MotChallenge2DBox(
        {
            "GT_FOLDER": str(tmp / "gt"),
            "TRACKERS_FOLDER": str(tmp / "trackers"),
            "TRACKERS_TO_EVAL": [_TRACKER],
            "SEQ_INFO": {_SEQ: num_frames},
            "SKIP_SPLIT_FOL": True,
            "PRINT_CONFIG": False,
            "BENCHMARK": rules.upper(),
        }
    )
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # TrackEval prints what it then raises
            raw = dataset.get_raw_seq_data(_TRACKER, _SEQ)
            return dataset.get_preprocessed_seq_data(raw, "pedestrian")
    except trackeval.utils.TrackEvalException as exc:
        raise CrosscamError(f"ground truth / predictions rejected by TrackEval: {exc}; check the files") from None


def _scores(results: tuple[dict, dict, dict, dict]) -> MotScores:
    """:class:`MotScores` from :func:`_sequence_results` (or their combination)."""
    clear, identity, hota, counts = results
    return MotScores(
        mota=float(clear["MOTA"]),
        motp=float(clear["MOTP"]),
        idf1=float(identity["IDF1"]),
        idp=float(identity["IDP"]),
        idr=float(identity["IDR"]),
        recall=float(clear["CLR_Re"]),
        precision=float(clear["CLR_Pr"]),
        detection_f1=float(clear["CLR_F1"]),
        # HOTA, DetA and AssA are averaged over TrackEval's 19 IoU thresholds 0.05..0.95.
        hota=float(np.mean(hota["HOTA"])),
        deta=float(np.mean(hota["DetA"])),
        assa=float(np.mean(hota["AssA"])),
        id_switches=int(clear["IDSW"]),
        false_positives=int(clear["CLR_FP"]),
        misses=int(clear["CLR_FN"]),
        **counts,
    )
