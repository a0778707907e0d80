"""Person detectors: ultralytics YOLO, OpenCV background subtraction, and replayed det.txt.

All share one method, ``detect(frames) -> list[Detections]`` (one :class:`Detections` per frame,
boxes ``xyxy`` float32 pixels of the frame, confidences in 0..1), plus ``name`` and
``fingerprint`` (what ``run.json`` records). Build one with :func:`build_detector`. With
``detector.low_confidence`` set, YOLO and replay return boxes down to it (:func:`lowest_confidence`);
the chain splits them at ``confidence``.

>>> from pipeline.config import DetectorConfig
>>> det = build_detector(DetectorConfig(model="motion"))
>>> det.name
'motion'
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Protocol, Sequence

import cv2
import numpy as np

from pipeline.config import DetectorConfig
from pipeline.types import Detections, Frame
from reid.errors import CrosscamError
from reid.onnx_backend import session_options

log = logging.getLogger(__name__)

PERSON_CLASS = 0  # COCO "person"
GLOBAL_CHANGE_FRACTION = 0.3  # foreground share of a frame above which motion means a camera change
HEAD_GAP = 0.1  # blob heights the contour between two people's heads dips below both (neck + shoulders)


def lowest_confidence(cfg: DetectorConfig) -> float:
    """The smallest confidence a detector returns: ``low_confidence`` when set (and lower), else ``confidence``."""
    return cfg.confidence if cfg.low_confidence is None else min(cfg.confidence, cfg.low_confidence)


class Detector(Protocol):
    name: str
    fingerprint: str
    # True when a frame's boxes depend on that frame alone (not on the frames before it), so two
    # chains over the same frames may share them (pipeline.video.chain.SharedFrames).
    stateless: bool

    def detect(self, frames: Sequence[Frame]) -> list[Detections]: ...


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256_json(value: dict) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def import_ultralytics_offline():
    # ultralytics pip-installs missing requirements, checks for updates and sends usage events
    # unless told otherwise; these must be set before its first import. Users can still opt in.
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_OFFLINE", "true")
    os.environ.setdefault("YOLO_VERBOSE", "false")
    import ultralytics

    return ultralytics


@lru_cache(maxsize=4)
def _load_yolo(model: str, device: str | None):
    """Load (once per process) an ultralytics model from a local file or a known model name."""
    ultralytics = import_ultralytics_offline()
    path = Path(model).expanduser()
    if not path.is_file():
        if path.suffix.lower() not in {".pt", ".onnx", ".engine", ".torchscript"} or len(path.parts) > 1:
            raise CrosscamError(
                f"--detector {model}: no such model file; pass a local .pt/.onnx path, "
                "an ultralytics model name (e.g. yolov8n.pt), motion or replay"
            )
        from ultralytics.utils.downloads import attempt_download_asset

        try:
            path = Path(attempt_download_asset(model))
        except Exception:  # noqa: BLE001 - any network failure means the same thing to the user
            path = Path(model)
        if not path.is_file():
            raise CrosscamError(
                f"--detector {model}: not on disk and could not be downloaded (offline?); "
                "pass a local .pt/.onnx path or use --detector motion"
            )
    try:
        yolo = ultralytics.YOLO(str(path), task="detect")
        # Exported models (ONNX ...) are only opened by the first prediction: do it now, so a
        # broken file fails here with one line rather than mid-run.
        yolo.predict(np.zeros((64, 64, 3), np.uint8), device=device, verbose=False)
    except Exception as exc:  # noqa: BLE001 - ultralytics raises many types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CrosscamError(f"--detector {model}: ultralytics cannot load it ({first}); pass a YOLO .pt/.onnx file") from exc
    _reopen_onnx_without_spinning(yolo, path)
    return yolo, path


def _reopen_onnx_without_spinning(yolo, path: Path) -> None:
    """Re-open the onnxruntime CPU session ultralytics made for an ``.onnx`` model with crosscam's
    :func:`reid.onnx_backend.session_options` (threads that sleep instead of spin-waiting; about
    2x faster per frame when another process holds a core). Other models are unchanged.
    ultralytics exposes no session options, hence the re-open.
    """
    backend = getattr(yolo.predictor.model, "backend", None)
    session = getattr(backend, "session", None)
    if path.suffix.lower() != ".onnx" or session is None or session.get_providers() != ["CPUExecutionProvider"]:
        return
    import onnxruntime

    backend.session = onnxruntime.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])


def _precision(half: bool) -> dict:
    """ultralytics' keyword for fp16 inference: ``quantize=16`` where it has one (8.4 on; there ``half``
    warns on every call), else ``half=True``; nothing for fp32, the default of both."""
    if not half:
        return {}
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}


class YoloDetector:
    """Any model ultralytics' ``YOLO`` loads, keeping only class 0 (person), batched over frames.

    >>> det = YoloDetector(DetectorConfig(model="../shared/weights/yolov8n_int8.onnx"))  # doctest: +SKIP
    >>> det.detect([frame])[0].xyxy.shape  # doctest: +SKIP
    (1, 4)
    """

    stateless = True

    def __init__(self, cfg: DetectorConfig):
        from reid import resolve_device  # torch: ultralytics loads it anyway

        self.cfg = cfg
        # a CUDA device without CUDA: one line, not the model file's fault; ultralytics' own names (mps, 0) pass
        self._device = None if cfg.device == "auto" else resolve_device(cfg.device) if cfg.device.startswith("cuda") else cfg.device
        self.model, path = _load_yolo(cfg.model, self._device)
        self.name = path.name
        self.fingerprint = _sha256_json(
            {"weights": _sha256_file(path), "conf": cfg.confidence, "iou": cfg.iou,
             "imgsz": cfg.image_size, "half": cfg.half, "low_conf": lowest_confidence(cfg)}
        )

    def detect(self, frames: Sequence[Frame]) -> list[Detections]:
        if not frames:
            return []
        results = self.model.predict(
            [f.image for f in frames], classes=[PERSON_CLASS], conf=lowest_confidence(self.cfg), iou=self.cfg.iou,
            imgsz=self.cfg.image_size, device=self._device, batch=len(frames), verbose=False, **_precision(self.cfg.half),
        )
        return [
            Detections(r.boxes.xyxy.cpu().numpy().astype(np.float32), r.boxes.conf.cpu().numpy().astype(np.float32))
            for r in results
        ]


class MotionDetector:
    """Moving blobs of a static camera as person boxes (no model, works offline).

    MOG2 background subtraction on a downscaled frame, shadows removed, then opening (noise) and
    a tall closing (join a walker's legs, torso and head into one blob); blobs are kept when their
    area and height/width ratio fit a standing person. A blob wider than one person (people
    walking side by side, crossing) is split into ``round(width / (height * motion_person_ratio))``
    boxes at the dips of its upper contour between heads. Confidence grows with the blob's fill
    ratio of its box. A frame that is mostly foreground (the camera moved, the lights changed)
    resets the background and yields no boxes. It keeps a background model, so use one instance
    per camera. People who merge into one blob after being tracked apart are split again by the
    chain with the tracker's predictions (``merges_people``; ``tracker.split_merged``).

    Start: MOG2 would learn the first frame, people included, as background and report ghosts
    where they stood. So each ``detect`` call, until ``motion_prime_frames`` frames have come,
    restarts the model from the per-pixel median of all frames so far, its own batch included
    (the first batch is judged against it too): a walker covers a pixel in few of them, so the
    median is the empty scene. Larger batches (``batch_size``) give a better first median.

    >>> det = MotionDetector(DetectorConfig(model="motion"))
    >>> len(det.detect([Frame("c", 0, 0.0, np.zeros((240, 320, 3), np.uint8))])[0])
    0
    """

    name = "motion"
    # A blob can be several people (one passing behind another): the chain lets the tracker split
    # it into their predicted boxes (tracker.split_merged, pipeline.video.blob_split).
    merges_people = True
    stateless = False  # its background model learns from every frame before

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        keys = ("motion_width", "motion_history", "motion_var_threshold", "motion_min_area",
                "motion_min_aspect", "motion_max_aspect", "motion_prime_frames", "motion_person_ratio",
                "confidence")
        self.fingerprint = _sha256_json({"detector": "motion", **{k: getattr(cfg, k) for k in keys}})
        self._subtractor = self._new_subtractor()
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self._start_frames: list[np.ndarray] | None = []  # downscaled first frames; None once primed
        self._seen = 0  # frames given to the background model
        # frames mostly foreground (background relearned, no boxes): how many, and the first indices of them
        self.blind_count = 0
        self.blind_frames: list[int] = []  # at most BLIND_LISTED (a moving camera's stream makes millions)

    def _new_subtractor(self):
        return cv2.createBackgroundSubtractorMOG2(
            history=self.cfg.motion_history, varThreshold=self.cfg.motion_var_threshold, detectShadows=True
        )

    def detect(self, frames: Sequence[Frame]) -> list[Detections]:
        smalls = [self._downscale(f.image) for f in frames]
        self._prime(smalls)
        found = [self._detect_one(small, f.image.shape) for small, f in zip(smalls, frames)]
        blind = [f.index for f, dets in zip(frames, found) if dets is _BLIND]
        self.blind_count += len(blind)
        self.blind_frames += blind[: max(0, BLIND_LISTED - len(self.blind_frames))]
        return found

    def _downscale(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        scale = min(1.0, self.cfg.motion_width / w)
        return cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)

    def _prime(self, smalls: list[np.ndarray]) -> None:
        """Restart MOG2 from the median of the first frames, this batch's included (so the very
        first batch is already judged against an empty scene), until ``motion_prime_frames``."""
        if self._start_frames is None:
            return
        self._start_frames.extend(smalls[: max(0, self.cfg.motion_prime_frames - len(self._start_frames))])
        if not self._start_frames:
            return
        median = np.median(np.stack(self._start_frames), axis=0).astype(np.uint8)
        self._subtractor = self._new_subtractor()
        self._subtractor.apply(median, learningRate=1.0)
        # The median is a settled background: learn at the rate of a model that saw all the
        # priming frames (MOG2's start-up rates, 1/2, 1/4, ..., absorb anyone who pauses).
        self._seen = max(self._seen, self.cfg.motion_prime_frames)
        if len(self._start_frames) >= self.cfg.motion_prime_frames:
            self._start_frames = None  # primed for good: from here on MOG2 follows the scene

    def _foreground(self, small: np.ndarray) -> np.ndarray | None:
        """(h, w) uint8 0/255 mask of moving pixels, or None after a global change."""
        self._seen += 1
        # MOG2's own rate, 1 / min(2 * frames, history), counted over all frames: a re-primed
        # model must not restart at rate 1/2 and absorb the people of the next frames.
        rate = 1.0 / min(2 * self._seen, self.cfg.motion_history)
        mask = self._subtractor.apply(small, learningRate=rate)
        mask = cv2.threshold(mask, 200, 255, cv2.THRESH_BINARY)[1]  # MOG2 marks shadows 127
        if cv2.countNonZero(mask) > GLOBAL_CHANGE_FRACTION * mask.size:
            # The camera panned or the exposure jumped: the background model is stale, not full
            # of people. Relearn it from this frame instead of reporting the whole scene.
            self._subtractor.apply(small, learningRate=1.0)
            return None
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._open)
        sh = small.shape[0]
        close = cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, sh // 60), max(5, sh // 12)))
        return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, close)

    def _detect_one(self, small: np.ndarray, shape: tuple[int, ...]) -> Detections:
        scale = small.shape[1] / shape[1]
        mask = self._foreground(small)
        if mask is None:
            return _BLIND
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        min_area = self.cfg.motion_min_area * mask.shape[0] * mask.shape[1]
        boxes, scores = [], []
        for label, (x, y, bw, bh, _) in enumerate(stats[1:count], start=1):
            blob = labels[y : y + bh, x : x + bw] == label
            for x0, x1 in _person_columns(blob, self.cfg.motion_person_ratio):
                part = blob[:, x0:x1]
                rows = np.flatnonzero(part.any(axis=1))
                if len(rows) == 0:
                    continue
                top, bottom = rows[0], rows[-1] + 1
                pw, ph = x1 - x0, bottom - top
                fill = part[top:bottom].sum() / float(pw * ph)
                if pw * ph < min_area or not self.cfg.motion_min_aspect <= ph / pw <= self.cfg.motion_max_aspect:
                    continue
                if fill < self.cfg.confidence * 0.5:  # a sparse sprinkle of noise, not a body
                    continue
                boxes.append(np.array([x + x0, y + top, x + x1, y + bottom], np.float32) / scale)
                scores.append(min(1.0, 0.5 + fill / 2.0))
        if not boxes:
            return Detections.empty()
        return Detections(np.stack(boxes).astype(np.float32), np.array(scores, np.float32))


_BLIND = Detections.empty()  # what the motion detector returns for a frame it could not judge
BLIND_LISTED = 100_000  # blind frame indices kept (their count goes on): a 300 s segment at 30 fps lists all


def _person_columns(blob: np.ndarray, person_ratio: float) -> list[tuple[int, int]]:
    """Column ranges ``[(x0, x1), ...]`` of the people side by side in one blob.

    ``blob``: (h, w) bool mask of one connected component, cropped to its box. The number of
    people is ``round(w / (h * person_ratio))`` (a standing person is ``person_ratio`` as wide as
    tall); each cut goes to the lowest point of the upper contour within half a person's width
    of the evenly spaced position, and is kept only where that point lies well below the highest
    points on both sides (a gap between two heads, not a bag or an outstretched arm).
    """
    h, w = blob.shape
    people = int(round(w / max(h * person_ratio, 1.0)))
    if people < 2:
        return [(0, w)]
    top = np.where(blob.any(axis=0), blob.argmax(axis=0), h)  # first foreground row per column; h where empty
    step = w / people
    cuts = [0]
    for k in range(1, people):
        lo = max(cuts[-1] + 1, int(round(k * step - step / 2)))
        hi = min(w - 1, int(round(k * step + step / 2)))
        if hi <= lo:
            continue
        cut = lo + int(np.argmax(top[lo:hi]))
        if top[cut] - max(top[cuts[-1] : cut].min(), top[cut:].min()) >= HEAD_GAP * h:
            cuts.append(cut)
    cuts.append(w)
    return list(zip(cuts[:-1], cuts[1:]))


class ReplayDetector:
    """Public detections from a MOTChallenge ``det.txt`` (``frame,id,x,y,w,h,conf,...``, frames
    1-based), keeping rows with ``conf >=`` :func:`lowest_confidence`. A file whose scores are not
    on 0..1 (MOT15's run from -0.5 to 139) has each score replaced by its quantile among the file's
    boxes (:func:`score_quantiles`), so ``detector.confidence`` 0.4 keeps its best-scored 60 %
    (PETS09-S2L1 with OSNet: MOTA 0.335 -> 0.857, IDF1 0.536 -> 0.827 against raw scores clipped to 1).

    >>> det = ReplayDetector(Path("MOT17-02/det/det.txt"), DetectorConfig(model="replay"))  # doctest: +SKIP
    """

    name = "replay"
    stateless = True

    def __init__(self, path: Path, cfg: DetectorConfig):
        if not path.is_file():
            raise CrosscamError(
                f"{path}: det.txt not found; set detector.replay_file=PATH or use an image folder with det/det.txt"
            )
        try:
            text = path.read_text()
            if not text.strip():  # nobody detected anywhere (numpy would warn)
                rows = np.empty((0, 7))
            else:
                rows = np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2, dtype=np.float64, usecols=range(7))
        except ValueError as exc:
            raise CrosscamError(f"{path}: not a MOTChallenge det.txt (frame,id,x,y,w,h,conf,...); fix the file") from exc
        lo, hi = (rows[:, 6].min(), rows[:, 6].max()) if len(rows) else (0.0, 1.0)
        if lo < -SCORE_SLACK or hi > 1 + SCORE_SLACK:
            rows[:, 6] = score_quantiles(rows[:, 6])
            log.warning("%s: detection scores run from %g to %g, not 0..1; each is taken as its quantile among the "
                        "file's boxes, so detector.confidence %g keeps the best-scored %.0f %%", path, lo, hi,
                        cfg.confidence, 100 * (1 - cfg.confidence))
        rows = rows[rows[:, 6] >= lowest_confidence(cfg)]
        by_frame: dict[int, list[np.ndarray]] = defaultdict(list)
        for row in rows:
            by_frame[int(row[0]) - 1].append(row)
        self._by_frame = {k: np.stack(v) for k, v in by_frame.items()}
        self._path, self._rows, self._size_checked = path, rows, False
        self.fingerprint = _sha256_json({"det": _sha256_file(path), "conf": cfg.confidence,
                                         "low_conf": lowest_confidence(cfg)})

    def _check_frame_size(self, width: int, height: int) -> None:
        """Say once when boxes of the file start outside the frames: another sequence's det.txt."""
        self._size_checked = True
        outside = self._rows[(self._rows[:, 2] >= width) | (self._rows[:, 3] >= height)]
        if len(outside):
            log.warning("%s: %d boxes start outside the %dx%d frames (first: frame %d at %g,%g); is it this "
                        "sequence's det.txt?", self._path, len(outside), width, height, int(outside[0, 0]),
                        outside[0, 2], outside[0, 3])

    def detect(self, frames: Sequence[Frame]) -> list[Detections]:
        out = []
        for frame in frames:
            if not self._size_checked:
                self._check_frame_size(frame.image.shape[1], frame.image.shape[0])
            rows = self._by_frame.get(frame.index)
            if rows is None:
                out.append(Detections.empty())
                continue
            xyxy = np.concatenate([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]], axis=1)
            out.append(Detections(xyxy.astype(np.float32), np.clip(rows[:, 6], 0, 1).astype(np.float32)))
        return out


SCORE_SLACK = 1e-3  # a det.txt score this far outside 0..1 means another scale (rounding aside)


def score_quantiles(scores: np.ndarray) -> np.ndarray:
    """``(N,)`` scores on any scale -> their mid-rank quantiles in (0, 1): the share of ``scores``
    below each plus half the share equal to it (ties share one value; the order is kept)."""
    ordered = np.sort(scores)
    below = np.searchsorted(ordered, scores, side="left")
    upto = np.searchsorted(ordered, scores, side="right")
    return (below + upto) / (2.0 * len(scores))


def build_detector(cfg: DetectorConfig, sequence_dir: Path | None = None) -> Detector:
    """The detector ``cfg.model`` names: ``motion``, ``replay`` or an ultralytics model.

    ``sequence_dir`` (the source's MOTChallenge sequence, :func:`pipeline.video.sources.mot_sequence_dir`) locates ``det/det.txt``
    for ``replay`` when ``cfg.replay_file`` is not set. YOLO weights are loaded once per process.
    """
    if cfg.model == "motion":
        return MotionDetector(cfg)
    if cfg.model == "replay":
        if cfg.replay_file is not None:
            return ReplayDetector(Path(cfg.replay_file), cfg)
        if sequence_dir is None:
            raise CrosscamError("--detector replay: no det/det.txt beside this video; set detector.replay_file=PATH")
        return ReplayDetector(sequence_dir / "det" / "det.txt", cfg)
    return YoloDetector(cfg)
