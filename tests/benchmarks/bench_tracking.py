"""Per-camera tracking quality on real MOTChallenge sequences: crosscam against the best trackers.

    .venv/bin/python tests/benchmarks/bench_tracking.py [--sequences PETS09-S2L1 TUD-Campus] [--clips 30 60 0]
        [--boxmot-path DIR] [--no-fps] [--out FILE.md]

One detector and one ReID model for every tracker: the shared YOLOv8n INT8 and OSNet-x0.25
(``../shared/weights``). Each sequence's frames are detected once (boxes down to confidence 0.1,
the lowest any tracker here uses) and each distinct crop is embedded once; every tracker then
gets exactly those boxes and features:

- crosscam's defaults (``configs/base.yaml``), then each refinement switched alone (back-fill,
  interpolation, re-linking, the weak-track filter, smoothing off; DeepSORT's 3 confirmation
  frames instead of 2; linear instead of GSI interpolation; low-confidence boxes and camera-motion
  compensation, off by default, on), and all of them off (DeepSORT alone, as crosscam was before
  them); the full chain runs (annotated video included);
- ultralytics' ByteTrack and BoT-SORT (their own yaml defaults, no ReID), BoT-SORT and Deep OC-SORT
  with OSNet features;
- BoxMOT's deepocsort, strongsort and botsort with OSNet features, where BoxMOT imports
  (``pip install --no-deps --target DIR boxmot filterpy gdown``, then ``--boxmot-path DIR``).

Cases: each sequence whole, and its first 30 and 60 frames as short clips (the trackers see only
those frames). All outputs are scored by TrackEval the same way (``pipeline.metrics``: HOTA, IDF1,
MOTA, ID switches). Frames/s counts the models as measured here (detector time per frame, ReID
time per crop times the crops a tracker embeds) plus the tracker's own wall time, so every row
pays for what it uses. Unless ``--no-fps``, crosscam's defaults and crosscam with every refinement
off are also run end to end on each whole sequence without any cache (real frames/s, detection
overlapped with the rest): the target is that the refinements cost under 10 %.
"""

import argparse
import hashlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline.config import PipelineConfig, load_pipeline_config  # noqa: E402
from pipeline.metrics import MotScores, evaluate_mot, read_mot_file  # noqa: E402
from pipeline.types import Detections  # noqa: E402
from pipeline.video.detectors import build_detector, lowest_confidence  # noqa: E402
from pipeline.video.run import track_camera  # noqa: E402
from pipeline.video.sources import open_source  # noqa: E402
from reid import Embedder  # noqa: E402

SHARED = REPO.parent / "shared"
MOT = SHARED / "data" / "mot"
YOLO = SHARED / "weights" / "yolov8n_int8.onnx"
OSNET = SHARED / "weights" / "osnet_x0_25_msmt17.onnx"
INPUTS = {"PETS09-S2L1": MOT / "PETS09-S2L1" / "PETS09-S2L1.mp4", "TUD-Campus": MOT / "TUD-Campus"}
LOWEST = 0.1  # the lowest confidence any tracker here takes (ByteTrack's track_low_thresh, crosscam's low_confidence)

CROSSCAM_VARIANTS = {
    "crosscam (defaults)": [],
    "crosscam, back-fill off": ["tracker.backfill=false"],
    "crosscam, interpolation off": ["tracker.interpolate=none"],
    "crosscam, linear interpolation": ["tracker.interpolate=linear"],
    "crosscam, re-linking off": ["tracker.relink=false"],
    "crosscam, low-confidence boxes on (0.1)": [f"detector.low_confidence={LOWEST}"],
    "crosscam, weak tracks kept": ["tracker.min_peak_confidence=null"],
    "crosscam, smoothing off": ["tracker.smooth_sigma=0"],
    "crosscam, confirmed after 3 frames (DeepSORT's n_init)": ["tracker.n_init=3"],
    "crosscam, camera motion (flow)": ["tracker.camera_motion=flow"],
    "crosscam, all refinements off": ["tracker.backfill=false", "detector.low_confidence=null",
                                      "tracker.interpolate=none", "tracker.relink=false",
                                      "tracker.min_peak_confidence=null", "tracker.smooth_sigma=0", "tracker.n_init=3"],
}
ALL_OFF = "crosscam, all refinements off"


@dataclass
class Sequence:
    """One sequence's cached model outputs and the time the models took."""

    name: str
    spec: str
    fps: float
    frames: int
    detections: dict[int, Detections]  # frame index -> boxes with confidence >= LOWEST
    detect_s_per_frame: float
    gt: np.ndarray


class CachedDetector:
    """The shared YOLOv8n's boxes of each frame, computed once, cut at the config's lowest confidence."""

    def __init__(self, seq: Sequence, cfg: PipelineConfig):
        self.seq, self.lowest = seq, lowest_confidence(cfg.detector)
        self.name, self.fingerprint = YOLO.name, f"cached-{self.lowest}"

    def detect(self, frames) -> list[Detections]:
        out = []
        for frame in frames:
            d = self.seq.detections.get(frame.index, Detections.empty())
            keep = d.confidence >= self.lowest
            out.append(Detections(d.xyxy[keep], d.confidence[keep]))
        return out


class CachingEmbedder:
    """OSNet through ``reid.Embedder``, each distinct crop embedded once; counts the crops asked for."""

    def __init__(self, embedder: Embedder):
        self.inner = embedder
        self.name, self.fingerprint, self.dim, self.runtime = embedder.name, embedder.fingerprint, embedder.dim, embedder.runtime
        self.cache: dict[bytes, np.ndarray] = {}
        self.crops_asked = 0
        self.seconds = 0.0
        self.crops_embedded = 0

    def embed(self, crops, bgr: bool = False, normalize: bool = False) -> np.ndarray:
        keys = [hashlib.sha1(np.ascontiguousarray(c).tobytes() + str(c.shape).encode()).digest() for c in crops]
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        if missing:
            start = time.perf_counter()
            feats = self.inner.embed([crops[i] for i in missing], bgr=bgr, normalize=normalize)
            self.seconds += time.perf_counter() - start
            self.crops_embedded += len(missing)
            for i, f in zip(missing, feats):
                self.cache[keys[i]] = f
        self.crops_asked += len(crops)
        return np.stack([self.cache[k] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)

    @property
    def seconds_per_crop(self) -> float:
        return self.seconds / max(self.crops_embedded, 1)


def base_config(extra: list[str], frames: int | None) -> PipelineConfig:
    overrides = [f"detector.model={YOLO}", f"reid.weights={OSNET}", "detector.device=cpu", "reid.device=cpu"]
    if frames:
        overrides.append(f"source.max_frames={frames}")
    return load_pipeline_config(None, overrides + extra)


def load_sequence(name: str) -> Sequence:
    """Detect every frame once with the shared YOLOv8n (boxes down to ``LOWEST``)."""
    cfg = base_config([f"detector.low_confidence={LOWEST}"], None)
    detector = build_detector(cfg.detector)
    detections, seconds = {}, 0.0
    with open_source(str(INPUTS[name]), name, cfg.source) as source:
        fps = source.fps
        for frame in source:
            start = time.perf_counter()
            detections[frame.index] = detector.detect([frame])[0]
            seconds += time.perf_counter() - start
    gt = read_mot_file(MOT / name / "gt" / "gt.txt", "gt")
    return Sequence(name, str(INPUTS[name]), fps, len(detections), detections, seconds / len(detections), gt)


def score(seq: Sequence, rows: np.ndarray, frames: int) -> MotScores:
    gt = seq.gt[seq.gt[:, 0] <= frames]
    rows = rows[rows[:, 0] <= frames] if len(rows) else np.zeros((0, 10))
    return evaluate_mot(gt, rows, frames)


def run_crosscam(seq: Sequence, extra: list[str], frames: int, embedder: CachingEmbedder, out: Path) -> tuple[np.ndarray, float]:
    """Tracks of one crosscam config through the whole chain on cached models; returns rows and frames/s."""
    cfg = base_config(extra + ["detector.prefetch=0"], frames)
    asked, embedded = embedder.crops_asked, embedder.crops_embedded
    with open_source(seq.spec, seq.name, cfg.source) as source:
        start = time.perf_counter()
        track_camera(source, CachedDetector(seq, cfg), embedder, out, cfg, progress=False)
        wall = time.perf_counter() - start
    fresh = embedder.crops_embedded - embedded
    own = wall - fresh * embedder.seconds_per_crop  # the cache's first pass embedded for real: count it once
    models = frames * seq.detect_s_per_frame + (embedder.crops_asked - asked) * embedder.seconds_per_crop
    return read_mot_file(out / "tracks.txt", "pred"), frames / (own + models)


def ultralytics_trackers(with_reid_feats) -> dict:
    """Factories of ultralytics trackers by row name (their yaml defaults; ReID rows take OSNet features)."""
    from ultralytics.trackers.bot_sort import BOTSORT
    from ultralytics.trackers.byte_tracker import BYTETracker
    from ultralytics.trackers.deep_oc_sort import DeepOCSORT
    from ultralytics.utils import YAML, IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml

    def args(name: str, **changes):
        values = YAML.load(check_yaml(f"{name}.yaml"))
        values.update(changes, device="cpu")
        return IterableSimpleNamespace(**values)

    return {
        "ultralytics ByteTrack": (lambda: BYTETracker(args("bytetrack")), False),
        "ultralytics BoT-SORT": (lambda: BOTSORT(args("botsort")), False),
        "ultralytics BoT-SORT + OSNet": (lambda: BOTSORT(args("botsort", with_reid=True, model="auto")), True),
        "ultralytics Deep OC-SORT + OSNet": (lambda: DeepOCSORT(args("deepocsort", with_reid=True, model="auto")), True),
    }


def crop_features(embedder: CachingEmbedder, image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    """OSNet features of the boxes' crops (clipped to the frame), as crosscam's embed stage cuts them."""
    h, w = image.shape[:2]
    crops = []
    for x1, y1, x2, y2 in np.round(xyxy).astype(int):
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        crops.append(image[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)])
    return embedder.embed(crops, bgr=True, normalize=True)


def run_peer(seq: Sequence, frames: int, embedder: CachingEmbedder, make, reid: bool, step) -> tuple[np.ndarray, float]:
    """A peer tracker fed the cached boxes (and OSNet features when ``reid``) frame by frame;
    ``step(tracker, boxes, scores, feats, image) -> [(id, xyxy)]``."""
    tracker = make()
    rows, own, crops = [], 0.0, 0
    with open_source(seq.spec, seq.name, base_config([], frames).source) as source:
        for frame in source:
            d = seq.detections.get(frame.index, Detections.empty())
            feats = crop_features(embedder, frame.image, d.xyxy) if reid and len(d) else None
            crops += len(d) if reid else 0
            start = time.perf_counter()
            for track_id, box in step(tracker, d.xyxy, d.confidence, feats, frame.image):
                x1, y1, x2, y2 = (float(v) for v in box)
                rows.append([frame.index + 1, track_id, x1, y1, x2 - x1, y2 - y1, 1, -1, -1, -1])
            own += time.perf_counter() - start
    models = frames * seq.detect_s_per_frame + crops * embedder.seconds_per_crop
    return np.array(rows, np.float64).reshape(-1, 10), frames / (own + models)


def ultralytics_step(tracker, xyxy, scores, feats, image):
    from ultralytics.engine.results import Boxes

    data = np.concatenate([xyxy, scores[:, None], np.zeros((len(xyxy), 1))], axis=1).astype(np.float32)
    out = tracker.update(Boxes(data, image.shape[:2]), image, feats)
    return [(int(r[4]), r[:4]) for r in out]


def boxmot_trackers(path: Path | None) -> dict | str:
    if path is not None:
        sys.path.append(str(path))  # after the project's own packages, so BoxMOT cannot replace them
    try:
        import torch
        from boxmot.structures import Detections as BoxmotDetections
        from boxmot.structures.geometry import Boxes as BoxmotBoxes
        from boxmot.trackers import TrackerSpec, create_tracker
    except ImportError as exc:
        return f"BoxMOT not importable ({exc}); install it with pip --no-deps --target DIR and pass --boxmot-path DIR"

    def step(tracker, xyxy, scores, feats, image):
        step.count += 1
        dets = BoxmotDetections(BoxmotBoxes(torch.from_numpy(np.ascontiguousarray(xyxy, np.float32))),
                                torch.from_numpy(np.ascontiguousarray(scores, np.float32)),
                                torch.zeros(len(xyxy), dtype=torch.int64), f"f{step.count}",
                                embeddings=None if feats is None else torch.from_numpy(np.asarray(feats, np.float32)))
        out = tracker.update(dets, image)
        return [(int(t) + 1, b.tolist()) for t, b in zip(out.track_ids, out.geometry.values)]

    step.count = 0
    return {f"BoxMOT {name}": (lambda name=name: create_tracker(TrackerSpec(name)), True, step)
            for name in ("deepocsort", "strongsort", "botsort")}


def real_fps(seq: Sequence, extra: list[str], embedder: Embedder, out: Path) -> tuple[float, float]:
    """End-to-end frames/s of a crosscam config (real detector and ReID, detection running ahead)
    and the process's CPU seconds per frame (steadier than wall time while other work shares the cores)."""
    cfg = base_config(extra, None)
    with open_source(seq.spec, seq.name, cfg.source) as source:
        cpu = time.process_time()
        run = track_camera(source, build_detector(cfg.detector), embedder, out, cfg, progress=False)
        cpu = time.process_time() - cpu
    return run.frames_per_second, cpu / max(run.frames_read, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    parser.add_argument("--clips", nargs="+", type=int, default=[30, 60, 0], help="first N frames; 0: the whole sequence")
    parser.add_argument("--boxmot-path", type=Path, help="folder BoxMOT was pip-installed into with --target")
    parser.add_argument("--no-fps", action="store_true", help="skip the uncached end-to-end frames/s runs")
    parser.add_argument("--only", nargs="+", help="run only the rows whose name contains one of these")
    parser.add_argument("--out", type=Path, help="also write the tables here (markdown)")
    args = parser.parse_args()
    missing = [p for p in (YOLO, OSNET, *(INPUTS[s] for s in args.sequences)) if not p.exists()]
    if missing:
        sys.exit(f"needs {', '.join(map(str, missing))} (../shared beside the checkout)")
    lines = [f"load average at start: {os.getloadavg()}"]
    print(lines[0], flush=True)
    osnet = Embedder.from_weights(str(OSNET), device="cpu")
    embedder = CachingEmbedder(osnet)
    peers = {name: (make, reid, ultralytics_step) for name, (make, reid) in ultralytics_trackers(None).items()}
    boxmot = boxmot_trackers(args.boxmot_path)
    if isinstance(boxmot, str):
        lines.append(f"- {boxmot}")
    else:
        peers.update(boxmot)
    keep = (lambda name: any(o in name for o in args.only)) if args.only else (lambda name: True)
    table = ["| case | tracker | HOTA | IDF1 | MOTA | IDSW | Rcll | Prcn | frames/s |", "|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sequences:
            seq = load_sequence(name)
            print(f"{name}: {seq.frames} frames detected, {seq.detect_s_per_frame * 1000:.0f} ms/frame", flush=True)
            for clip in args.clips:
                frames = min(clip or seq.frames, seq.frames)
                case = f"{name} {'all ' if not clip else 'first '}{frames}"
                results: dict[str, tuple[MotScores, float]] = {}
                for label, extra in CROSSCAM_VARIANTS.items():
                    if keep(label):
                        rows, fps = run_crosscam(seq, extra, frames, embedder, Path(tmp) / f"{name}-{frames}-{len(results)}")
                        results[label] = (score(seq, rows, frames), fps)
                for label, (make, reid, step) in peers.items():
                    if keep(label):
                        rows, fps = run_peer(seq, frames, embedder, make, reid, step)
                        results[label] = (score(seq, rows, frames), fps)
                for label, (s, fps) in results.items():
                    row = (f"| {case} | {label} | {s.hota:.3f} | {s.idf1:.3f} | {s.mota:.3f} | {s.id_switches} | "
                           f"{s.recall:.3f} | {s.precision:.3f} | {fps:.1f} |")
                    table.append(row)
                    print(row, flush=True)
                verdicts.append(verdict(case, results))
            if not args.no_fps:
                real = {label: real_fps(seq, CROSSCAM_VARIANTS[label], osnet, Path(tmp) / f"{name}-real-{i}")
                        for i, label in enumerate(("crosscam (defaults)", ALL_OFF))}
                (ours, ours_cpu), (off, off_cpu) = real["crosscam (defaults)"], real[ALL_OFF]
                ratio, cpu_ratio = ours / off, ours_cpu / off_cpu
                verdicts.append(f"- {name}, end to end without caches: defaults {ours:.2f} frames/s ({ours_cpu * 1000:.0f} ms "
                                f"CPU per frame), all refinements off {off:.2f} frames/s ({off_cpu * 1000:.0f} ms) -> "
                                f"{ratio:.3f}x the rate, {cpu_ratio:.3f}x the CPU time "
                                f"({'within' if cpu_ratio <= 1.1 else 'NOT within'} 10 % by CPU time)")
                print(verdicts[-1], flush=True)
    lines += ["", *table, "", *verdicts, "", f"load average at end: {os.getloadavg()}"]
    print("\n".join(lines[1:]))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


def verdict(case: str, results: dict[str, tuple[MotScores, float]]) -> str:
    """How crosscam's defaults stand against the best peer of a case (target: +0.03 IDF1 and HOTA)."""
    ours = results.get("crosscam (defaults)")
    peers = {k: v for k, v in results.items() if not k.startswith("crosscam")}
    if ours is None or not peers:
        return f"- {case}: no comparison"
    best_idf1 = max(peers.items(), key=lambda kv: kv[1][0].idf1)
    best_hota = max(peers.items(), key=lambda kv: kv[1][0].hota)
    d_idf1, d_hota = ours[0].idf1 - best_idf1[1][0].idf1, ours[0].hota - best_hota[1][0].hota
    met = d_idf1 >= 0.03 and d_hota >= 0.03
    return (f"- {case}: IDF1 {ours[0].idf1:.3f} vs best peer {best_idf1[1][0].idf1:.3f} ({best_idf1[0]}) -> {d_idf1:+.3f}; "
            f"HOTA {ours[0].hota:.3f} vs {best_hota[1][0].hota:.3f} ({best_hota[0]}) -> {d_hota:+.3f}; "
            f"target +0.03 {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
