"""Where a camera's results go: the annotated video, MOTChallenge ``tracks.txt`` and per-track
summaries (``tracks.json`` + ``track_features.npz`` + ``thumbs/``).

Each sink is a context manager with ``write(result)`` and ``close()``. Files are written under a
temporary name and renamed by ``close()``, which ``__exit__`` always runs, so an interrupted run
still leaves a finalised video, a flushed ``tracks.txt`` and the summaries of what was seen.

>>> with MotTracksWriter("cam1/tracks.txt") as sink:  # doctest: +SKIP
...     for result in results:
...         sink.write(result)
"""

from __future__ import annotations

import shutil
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipeline.render import draw_tracks
from pipeline.types import FrameResult, TrackObservation, TrackSummary, write_track_summaries
from reid.errors import CrosscamError


class _Sink:
    """Open/close bookkeeping shared by the sinks; subclasses implement ``write`` and ``_finish``."""

    closed = False

    def write(self, result: FrameResult) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finalise the output (idempotent)."""
        if not self.closed:
            self.closed = True
            self._finish()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.stem}.partial{path.suffix}")


class AnnotatedVideoWriter(_Sink):
    """Frames with each track's box and id drawn in its colour, as ``path`` (e.g. annotated.mp4).

    Every frame that reaches the sink is written, with or without tracks, so the video has as
    many frames as were processed. ``trail_length`` > 0 draws each track's recent box bottoms.

    >>> with AnnotatedVideoWriter("annotated.mp4", fps=10.0, frame_size=(768, 432)) as video:  # doctest: +SKIP
    ...     video.write(result)
    """

    def __init__(self, path: str | Path, fps: float, frame_size: tuple[int, int], codec: str = "mp4v",
                 trail_length: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = _tmp_name(self.path)
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*codec), fps, frame_size)
        if not self._writer.isOpened():
            raise CrosscamError(f"output.codec={codec!r}: OpenCV cannot write {self.path.suffix} with it; use mp4v")
        self.frame_size = frame_size
        self.frames_written = 0
        self._trail_length = trail_length
        self._trails: dict[int, deque] = {}

    def write(self, result: FrameResult) -> None:
        tracks = result.tracks
        xyxy = np.array([t.xyxy for t in tracks], np.float32).reshape(-1, 4)
        ids = np.array([t.track_id for t in tracks], np.int64)
        image = draw_tracks(result.frame.image, xyxy, ids, trails=self._update_trails(tracks))
        if (image.shape[1], image.shape[0]) != self.frame_size:  # streams may change resolution
            image = cv2.resize(image, self.frame_size)
        self._writer.write(image)
        self.frames_written += 1

    def _update_trails(self, tracks: list[TrackObservation]) -> dict[int, deque] | None:
        if self._trail_length <= 0:
            return None
        seen = set()
        for t in tracks:
            bottom = (float(t.xyxy[0] + t.xyxy[2]) / 2.0, float(t.xyxy[3]))
            self._trails.setdefault(t.track_id, deque(maxlen=self._trail_length)).append(bottom)
            seen.add(t.track_id)
        for track_id in [k for k in self._trails if k not in seen]:  # only live tracks keep trails
            del self._trails[track_id]
        return self._trails

    def _finish(self) -> None:
        self._writer.release()
        self._tmp.replace(self.path)


class MotTracksWriter(_Sink):
    """MOTChallenge lines ``frame,id,x,y,w,h,conf,-1,-1,-1`` (frame 1-based), flushed per frame.

    >>> with MotTracksWriter("tracks.txt") as mot:  # doctest: +SKIP
    ...     mot.write(result)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = _tmp_name(self.path)
        self._file = open(self._tmp, "w")
        self.rows_written = 0

    def write(self, result: FrameResult) -> None:
        if not result.tracks:
            return
        frame = result.frame.index + 1
        lines = []
        for t in result.tracks:
            x1, y1, x2, y2 = (float(v) for v in t.xyxy)
            lines.append(f"{frame},{t.track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{t.confidence:.4f},-1,-1,-1\n")
        self._file.writelines(lines)
        self._file.flush()
        self.rows_written += len(lines)

    def _finish(self) -> None:
        self._file.close()
        self._tmp.replace(self.path)


@dataclass
class _TrackAccumulator:
    """Running state of one track: bounded whatever the track's length."""

    first_frame: int
    start_s: float
    last_frame: int = 0
    end_s: float = 0.0
    count: int = 0
    weighted_sum: np.ndarray | None = None
    candidates: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (quality, feature)
    candidate_every: int = 1
    best_quality: float = -1.0
    thumbnail: bytes | None = None


def observation_quality(obs: TrackObservation, frame_size: tuple[int, int], reference_height: float = 128.0) -> float:
    """How much to trust a detection's appearance, in (0, 1]: detector confidence, scaled down
    for small crops (less detail than the ReID input, 256 px tall) and for boxes cut by the frame
    edge (part of the person missing)."""
    w, h = frame_size
    x1, y1, x2, y2 = (float(v) for v in obs.xyxy)
    size = float(np.clip((y2 - y1) / reference_height, 0.25, 1.0))
    cut = x1 <= 1 or y1 <= 1 or x2 >= w - 1 or y2 >= h - 1
    return max(1e-3, obs.confidence) * size * (0.5 if cut else 1.0)


class TrackSummaryWriter(_Sink):
    """Collect each track's appearance and extent; on close write the summaries and thumbnails.

    The aggregate ``feature`` is the quality-weighted mean of the track's unit features,
    renormalised (a crop with low confidence, a small or cut-off box counts less). Up to
    ``representatives`` individual features are kept as well: a bounded, evenly thinned sample of
    the track is held, and at the end the most distinct ones are picked (farthest-point order,
    starting from the best-quality crop). The thumbnail is the best-quality crop, as JPEG.

    >>> with TrackSummaryWriter("out/cam1", "cam1", frame_size=(768, 432)) as summaries:  # doctest: +SKIP
    ...     summaries.write(result)
    """

    CANDIDATES_PER_REPRESENTATIVE = 4

    def __init__(self, folder: str | Path, camera: str, frame_size: tuple[int, int], representatives: int = 5,
                 thumbnails: bool = True):
        self.folder = Path(folder)
        self.camera = camera
        self.frame_size = frame_size
        self.representatives = representatives
        self.thumbnails = thumbnails
        self._tracks: dict[int, _TrackAccumulator] = {}
        self.summaries: list[TrackSummary] = []

    def write(self, result: FrameResult) -> None:
        frame = result.frame
        for obs in result.tracks:
            if obs.feature is None:
                raise ValueError("TrackSummaryWriter needs observations with features")
            acc = self._tracks.get(obs.track_id)
            if acc is None:
                acc = self._tracks[obs.track_id] = _TrackAccumulator(frame.index, frame.time_s)
            quality = observation_quality(obs, self.frame_size)
            feature = obs.feature.astype(np.float32)
            acc.last_frame, acc.end_s = frame.index, frame.time_s
            acc.weighted_sum = quality * feature if acc.weighted_sum is None else acc.weighted_sum + quality * feature
            if acc.count % acc.candidate_every == 0:
                self._keep_candidate(acc, quality, feature)
            acc.count += 1
            if self.thumbnails and quality > acc.best_quality:
                acc.best_quality = quality
                acc.thumbnail = _encode_crop(frame.image, obs.xyxy)

    def _keep_candidate(self, acc: _TrackAccumulator, quality: float, feature: np.ndarray) -> None:
        acc.candidates.append((quality, feature))
        if len(acc.candidates) >= self.CANDIDATES_PER_REPRESENTATIVE * self.representatives:
            acc.candidates = acc.candidates[::2]  # keep an even sample of the whole track
            acc.candidate_every *= 2

    def _summarise(self, track_id: int, acc: _TrackAccumulator) -> TrackSummary:
        feature = _unit(acc.weighted_sum)
        return TrackSummary(
            camera=self.camera,
            track_id=track_id,
            first_frame=acc.first_frame,
            last_frame=acc.last_frame,
            start_s=acc.start_s,
            end_s=acc.end_s,
            num_detections=acc.count,
            feature=feature,
            representatives=farthest_point_representatives(acc.candidates, self.representatives),
            thumbnail=f"thumbs/{track_id}.jpg" if acc.thumbnail is not None else None,
        )

    def _finish(self) -> None:
        self.summaries = [self._summarise(k, acc) for k, acc in sorted(self._tracks.items())]
        if self.thumbnails:
            self._write_thumbnails()
        write_track_summaries(self.folder, self.summaries)

    def _write_thumbnails(self) -> None:
        final = self.folder / "thumbs"
        tmp = self.folder / "thumbs.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for track_id, acc in self._tracks.items():
            if acc.thumbnail is not None:
                (tmp / f"{track_id}.jpg").write_bytes(acc.thumbnail)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)


def farthest_point_representatives(candidates: list[tuple[float, np.ndarray]], count: int) -> np.ndarray:
    """Pick up to ``count`` mutually distinct unit features from ``(quality, feature)`` pairs:
    first the best-quality one, then repeatedly the one least similar to those already picked.
    Returns ``(R, D)`` float32 with ``1 <= R <= count``.
    """
    qualities = np.array([q for q, _ in candidates], np.float32)
    features = np.stack([_unit(f) for _, f in candidates])
    picked = [int(np.argmax(qualities))]
    closest = features @ features[picked[0]]
    while len(picked) < min(count, len(features)):
        nxt = int(np.argmin(closest))
        if closest[nxt] >= 1.0 - 1e-6:  # nothing new left: duplicates of what is picked
            break
        picked.append(nxt)
        closest = np.maximum(closest, features @ features[nxt])
    return features[picked].astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def _encode_crop(image: np.ndarray, xyxy: np.ndarray) -> bytes | None:
    h, w = image.shape[:2]
    x1, y1 = max(0, int(xyxy[0])), max(0, int(xyxy[1]))
    x2, y2 = min(w, int(np.ceil(xyxy[2]))), min(h, int(np.ceil(xyxy[3])))
    if x2 <= x1 or y2 <= y1:
        return None
    ok, buf = cv2.imencode(".jpg", image[y1:y2, x1:x2], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return buf.tobytes() if ok else None
