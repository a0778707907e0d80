"""One track's running summary as a mergeable accumulator, and the files that hold it.

A :class:`TrackAccumulator` takes a track's observations one by one (:meth:`~TrackAccumulator.add`)
and stays bounded whatever the track's length. Two accumulators of one person (two fragments
re-linked in a camera, or one track cut by a segment boundary) merge into one
(:meth:`~TrackAccumulator.merge`) as if every observation had been added to one: counts, first /
last frame and time, and the quality-weighted feature sum (so the merged mean feature is exact)
add up; the representative candidates are the evenly thinned union of both samples; the better
thumbnail wins; the boxes near both ends are the first and last of the union. Observations
without a feature (low-confidence boxes, interpolated boxes) extend the track but leave its
appearance alone.

On disk, :func:`write_track_states` writes a camera's ``tracks.json`` (each entry is the track's
:class:`~pipeline.types.TrackSummary` metadata plus ``"state"``: what merging needs beyond it),
``track_features.npz`` (features, representatives, feature sums, candidates) and ``thumbs/``;
:func:`read_track_states` reads them back as accumulators. ``read_track_summaries`` keeps
reading the summaries alone.

>>> from pipeline.types import Frame
>>> a = TrackAccumulator.start(0, 0.0)
>>> image = np.zeros((100, 60, 3), np.uint8)
>>> obs = TrackObservation(1, np.array([10, 10, 50, 90], np.float32), 0.9, np.array([1.0, 0.0], np.float32))
>>> a.add(obs, Frame("cam", 0, 0.0, image))
>>> b = TrackAccumulator.start(5, 0.5)
>>> b.add(TrackObservation(1, obs.xyxy, 0.9, np.array([0.0, 1.0], np.float32)), Frame("cam", 5, 0.5, image))
>>> m = a.merge(b)
>>> m.first_frame, m.last_frame, m.num_detections, [round(float(v), 3) for v in m.mean_feature]
(0, 5, 2, [0.707, 0.707])
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from pipeline.types import (NPZ_DAMAGE, Frame, TrackObservation, TrackSummary, read_track_summaries,
                            write_track_summaries)
from reid.errors import CrosscamError
from reid.vectors import l2_normalize

log = logging.getLogger(__name__)

ENDPOINT_BOXES = 10  # observed boxes kept at each end of a track, for re-linking's motion model
CANDIDATES_PER_REPRESENTATIVE = 4  # features sampled per representative kept


@dataclass
class TrackAccumulator:
    """Running state of one track (frames 0-based, times in seconds, boxes xyxy pixels).

    ``head`` / ``tail`` hold ``(frame, time_s, xyxy (4,) float32)`` of the first and last
    :data:`ENDPOINT_BOXES` observed (not interpolated) boxes; ``interpolated`` holds ``[first,
    last]`` frame ranges filled by interpolation (every processed frame in a range is one).
    ``candidates`` is ``(frame, quality, feature)``, a sample of every ``candidate_every``-th
    feature, thinned by half whenever it reaches ``capacity``.
    """

    first_frame: int
    last_frame: int
    start_s: float
    end_s: float
    num_detections: int = 0  # observed boxes, low-confidence ones included
    num_interpolated: int = 0  # boxes filled in by interpolation
    peak_confidence: float = 0.0  # the highest detector confidence of its observed boxes
    features_seen: int = 0  # observations that carried a feature
    feature_sum: np.ndarray | None = None  # (D,) float32, sum of quality * unit feature
    candidates: list[tuple[int, float, np.ndarray]] = field(default_factory=list)
    candidate_every: int = 1
    capacity: int = CANDIDATES_PER_REPRESENTATIVE * 5
    thumbnail: bytes | None = None  # JPEG of the best-quality crop
    thumbnail_quality: float = -1.0
    head: list[tuple[int, float, np.ndarray]] = field(default_factory=list)
    tail: list[tuple[int, float, np.ndarray]] = field(default_factory=list)
    interpolated: list[list[int]] = field(default_factory=list)
    _last_interpolated: bool = field(default=False, repr=False)

    @classmethod
    def start(cls, frame: int, time_s: float, representatives: int = 5) -> "TrackAccumulator":
        """An empty accumulator for a track first seen at ``frame`` / ``time_s``."""
        return cls(frame, frame, time_s, time_s, capacity=CANDIDATES_PER_REPRESENTATIVE * representatives)

    def add(self, obs: TrackObservation, frame: Frame, thumbnails: bool = True) -> None:
        """Add one observation of this track in ``frame`` (observations of a track in frame order)."""
        index, time_s = frame.index, frame.time_s
        if index < self.first_frame:
            self.first_frame, self.start_s = index, time_s
        if index >= self.last_frame:
            self.last_frame, self.end_s = index, time_s
        if obs.interpolated:
            self.num_interpolated += 1
            if self._last_interpolated and self.interpolated:
                self.interpolated[-1][1] = index
            else:
                self.interpolated.append([index, index])
            self._last_interpolated = True
            return
        self._last_interpolated = False
        self.num_detections += 1
        self.peak_confidence = max(self.peak_confidence, float(obs.confidence))
        box = np.asarray(obs.xyxy, np.float32).copy()
        if len(self.head) < ENDPOINT_BOXES:
            self.head.append((index, time_s, box))
        self.tail = (self.tail + [(index, time_s, box)])[-ENDPOINT_BOXES:]
        if obs.feature is None:
            return
        h, w = frame.image.shape[:2]
        quality = observation_quality(obs, (w, h))
        feature = np.asarray(obs.feature, np.float32)
        self.feature_sum = quality * feature if self.feature_sum is None else self.feature_sum + quality * feature
        if self.features_seen % self.candidate_every == 0:
            self.candidates.append((index, quality, feature))
            self._thin()
        self.features_seen += 1
        if thumbnails and quality > self.thumbnail_quality:
            crop = _encode_crop(frame.image, obs.xyxy)
            if crop is not None:
                self.thumbnail, self.thumbnail_quality = crop, quality

    def _thin(self) -> None:
        while len(self.candidates) >= self.capacity:
            self.candidates = self.candidates[::2]  # keep an even sample of the whole track
            self.candidate_every *= 2

    def merge(self, other: "TrackAccumulator") -> "TrackAccumulator":
        """One accumulator holding both tracks' observations (neither input is changed)."""
        first, last = (self, other) if (self.first_frame, self.start_s) <= (other.first_frame, other.start_s) else (other, self)
        end = self if (self.last_frame, self.end_s) >= (other.last_frame, other.end_s) else other
        sums = [s for s in (self.feature_sum, other.feature_sum) if s is not None]
        boxes = sorted(self.head + self.tail + other.head + other.tail, key=lambda b: b[0])
        unique = list({b[0]: b for b in boxes}.values())  # a short track's head and tail share boxes
        merged = replace(
            self,
            first_frame=first.first_frame, start_s=first.start_s,
            last_frame=end.last_frame, end_s=end.end_s,
            num_detections=self.num_detections + other.num_detections,
            num_interpolated=self.num_interpolated + other.num_interpolated,
            peak_confidence=max(self.peak_confidence, other.peak_confidence),
            features_seen=self.features_seen + other.features_seen,
            feature_sum=sum(sums[1:], sums[0].copy()) if sums else None,
            candidates=sorted(self.candidates + other.candidates, key=lambda c: c[0]),
            candidate_every=max(self.candidate_every, other.candidate_every),
            capacity=max(self.capacity, other.capacity),
            head=unique[:ENDPOINT_BOXES],
            tail=unique[-ENDPOINT_BOXES:],
            interpolated=_joined(sorted(self.interpolated + other.interpolated)),
            _last_interpolated=end._last_interpolated,
        )
        better = self if self.thumbnail_quality >= other.thumbnail_quality else other
        merged.thumbnail, merged.thumbnail_quality = better.thumbnail, better.thumbnail_quality
        merged._thin()
        return merged

    @property
    def mean_feature(self) -> np.ndarray | None:
        """The quality-weighted mean appearance, unit length; None for a track without features."""
        return None if self.feature_sum is None else l2_normalize(self.feature_sum)

    def is_interpolated(self, frame: int) -> bool:
        return any(a <= frame <= b for a, b in self.interpolated)

    def summary(self, camera: str, track_id: int, representatives: int) -> TrackSummary | None:
        """The track's :class:`TrackSummary`; None when no observation carried a feature."""
        if self.feature_sum is None:
            return None
        return TrackSummary(
            camera=camera,
            track_id=track_id,
            first_frame=self.first_frame,
            last_frame=self.last_frame,
            start_s=self.start_s,
            end_s=self.end_s,
            num_detections=self.num_detections,
            feature=l2_normalize(self.feature_sum),
            representatives=farthest_point_representatives([(q, f) for _, q, f in self.candidates], representatives),
            thumbnail=f"thumbs/{track_id}.jpg" if self.thumbnail is not None else None,
            num_interpolated=self.num_interpolated,
        )

    def _state_json(self) -> dict:
        def boxes(items):
            return [[f, t, *np.asarray(b, float).round(2).tolist()] for f, t, b in items]

        return {"head": boxes(self.head), "tail": boxes(self.tail), "interpolated": self.interpolated,
                "features_seen": self.features_seen, "candidate_every": self.candidate_every,
                "capacity": self.capacity, "thumbnail_quality": self.thumbnail_quality,
                "peak_confidence": self.peak_confidence}

    def _arrays(self, track_id: int) -> dict[str, np.ndarray]:
        dim = len(self.feature_sum)
        return {
            f"feature_sum_{track_id}": self.feature_sum.astype(np.float32),
            f"candidates_{track_id}": np.array([f for _, _, f in self.candidates], np.float32).reshape(-1, dim),
            f"candidate_meta_{track_id}": np.array([[fr, q] for fr, q, _ in self.candidates], np.float64).reshape(-1, 2),
        }


def observation_quality(obs: TrackObservation, frame_size: tuple[int, int], reference_height: float = 128.0) -> float:
    """How much to trust a detection's appearance, in (0, 1]: detector confidence, scaled down
    for small crops (less detail than the ReID input, 256 px tall) and for boxes cut by the frame
    edge (part of the person missing)."""
    w, h = frame_size
    x1, y1, x2, y2 = (float(v) for v in obs.xyxy)
    size = float(np.clip((y2 - y1) / reference_height, 0.25, 1.0))
    cut = x1 <= 1 or y1 <= 1 or x2 >= w - 1 or y2 >= h - 1
    return max(1e-3, obs.confidence) * size * (0.5 if cut else 1.0)


def farthest_point_representatives(candidates: list[tuple[float, np.ndarray]], count: int) -> np.ndarray:
    """Pick up to ``count`` mutually distinct unit features from ``(quality, feature)`` pairs:
    first the best-quality one, then repeatedly the one least similar to those already picked.
    Returns ``(R, D)`` float32 with ``1 <= R <= count``.
    """
    qualities = np.array([q for q, _ in candidates], np.float32)
    features = np.stack([l2_normalize(f) for _, f in candidates])
    picked = [int(np.argmax(qualities))]
    closest = features @ features[picked[0]]
    while len(picked) < min(count, len(features)):
        nxt = int(np.argmin(closest))
        if closest[nxt] >= 1.0 - 1e-6:  # nothing new left: duplicates of what is picked
            break
        picked.append(nxt)
        closest = np.maximum(closest, features @ features[nxt])
    return features[picked].astype(np.float32)


def write_track_states(folder: str | Path, camera: str, states: dict[int, TrackAccumulator], representatives: int,
                       thumbnails: bool = True) -> list[TrackSummary]:
    """Write the tracks' summaries and mergeable state into ``folder``; returns the summaries, by id.

    ``thumbs/`` is replaced as a whole (written beside, then renamed). A track without any feature
    (only featureless observations, which no track of a complete run has) gets no summary and is
    left out with a warning.
    """
    folder = Path(folder)
    summaries, extra_json, extra_arrays = [], {}, {}
    for track_id, state in sorted(states.items()):
        summary = state.summary(camera, track_id, representatives)
        if summary is None:
            log.warning("%s: track %d has no appearance feature; left out of the summaries", camera, track_id)
            continue
        summaries.append(summary)
        extra_json[track_id] = state._state_json()
        extra_arrays.update(state._arrays(track_id))
    if thumbnails:
        _write_thumbnails(folder, {s.track_id: states[s.track_id].thumbnail for s in summaries})
    write_track_summaries(folder, summaries, extra_json, extra_arrays)
    return summaries


def read_track_states(folder: str | Path) -> dict[int, TrackAccumulator]:
    """The accumulators :func:`write_track_states` wrote into ``folder``, by track id."""
    folder = Path(folder)
    meta = {m["track_id"]: m for m in json.loads((folder / "tracks.json").read_text())}
    states = {}
    try:
        with np.load(folder / "track_features.npz") as arrays:
            for summary in read_track_summaries(folder):
                tid = summary.track_id
                state = meta[tid].get("state")
                if state is None:
                    raise CrosscamError(f"{folder}/tracks.json: track {tid} has no merge state (written by an older "
                                        "crosscam); re-run `crosscam track` for this camera")
                thumb = folder / summary.thumbnail if summary.thumbnail else None
                meta_rows = arrays[f"candidate_meta_{tid}"]
                states[tid] = TrackAccumulator(
                    first_frame=summary.first_frame, last_frame=summary.last_frame,
                    start_s=summary.start_s, end_s=summary.end_s,
                    num_detections=summary.num_detections, num_interpolated=summary.num_interpolated,
                    peak_confidence=state.get("peak_confidence", 1.0),  # written before it was kept: never dropped
                    features_seen=state["features_seen"], feature_sum=arrays[f"feature_sum_{tid}"],
                    candidates=[(int(fr), float(q), f) for (fr, q), f in zip(meta_rows, arrays[f"candidates_{tid}"])],
                    candidate_every=state["candidate_every"], capacity=state["capacity"],
                    thumbnail=thumb.read_bytes() if thumb is not None and thumb.is_file() else None,
                    thumbnail_quality=state["thumbnail_quality"],
                    head=[(int(f), float(t), np.array(b, np.float32)) for f, t, *b in state["head"]],
                    tail=[(int(f), float(t), np.array(b, np.float32)) for f, t, *b in state["tail"]],
                    interpolated=[list(r) for r in state["interpolated"]],
                )
        return states
    except NPZ_DAMAGE as exc:
        raise ValueError(f"track_features.npz: {exc}") from None


def _write_thumbnails(folder: Path, thumbnails: dict[int, bytes | None]) -> None:
    final = folder / "thumbs"
    tmp = folder / "thumbs.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for track_id, jpeg in thumbnails.items():
        if jpeg is not None:
            (tmp / f"{track_id}.jpg").write_bytes(jpeg)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def _joined(ranges: list[list[int]]) -> list[list[int]]:
    """Sorted ``[first, last]`` ranges with touching ones joined (a range cut where a track was cut)."""
    out: list[list[int]] = []
    for first, last in ranges:
        if out and first <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], last)
        else:
            out.append([first, last])
    return out


def _encode_crop(image: np.ndarray, xyxy: np.ndarray) -> bytes | None:
    h, w = image.shape[:2]
    x1, y1 = max(0, int(xyxy[0])), max(0, int(xyxy[1]))
    x2, y2 = min(w, int(np.ceil(xyxy[2]))), min(h, int(np.ceil(xyxy[3])))
    if x2 <= x1 or y2 <= y1:
        return None
    ok, buf = cv2.imencode(".jpg", image[y1:y2, x1:x2], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return buf.tobytes() if ok else None
