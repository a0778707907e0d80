"""Per-camera multi-object tracking with deep-sort-realtime, fed our own embeddings.

deep-sort-realtime's ``DeepSort`` is built with ``embedder=None`` so it never runs a network of
its own; each frame's L2-normalised features go in through ``update_tracks(..., embeds=...)``.
Out come only *confirmed* tracks that were matched to a detection in this very frame, so a
coasting track (predicted by the Kalman filter, not seen) never draws a ghost box.

>>> from pipeline.config import TrackerConfig
>>> tracker = PersonTracker(TrackerConfig(n_init=1))
>>> dets = Detections(np.array([[10, 10, 50, 110]], np.float32), np.array([0.9], np.float32),
...                   np.array([[1.0, 0.0]], np.float32))
>>> tracker.update(dets)  # a new track is tentative in its first frame
[]
>>> [(o.track_id, o.xyxy.tolist()) for o in tracker.update(dets)]
[(1, [10.0, 10.0, 50.0, 110.0])]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from deep_sort_realtime.deepsort_tracker import DeepSort

from pipeline.config import TrackerConfig
from pipeline.types import Detections, TrackObservation


@dataclass(frozen=True)
class TrackPredictions:
    """Where the recently seen confirmed tracks are expected in the next frame (Kalman prediction)."""

    track_ids: np.ndarray  # (K,) int64
    xyxy: np.ndarray  # (K, 4) float32 pixels
    features: np.ndarray  # (K, D) float32, each track's latest appearance


class PersonTracker:
    """One camera's DeepSORT state; call :meth:`update` once per processed frame, in order."""

    def __init__(self, cfg: TrackerConfig):
        self.cfg = cfg
        self._deepsort = DeepSort(
            max_age=cfg.max_age,
            n_init=cfg.n_init,
            max_iou_distance=cfg.max_iou_distance,
            max_cosine_distance=cfg.max_cosine_distance,
            nn_budget=cfg.nn_budget,
            embedder=None,
        )

    def update(self, detections: Detections) -> list[TrackObservation]:
        """Advance one frame. ``detections.features`` must hold one feature per box.

        Returns the confirmed tracks updated in this frame, each with the box, confidence and
        feature of the detection it was matched to (not the Kalman-smoothed box).
        """
        if detections.features is None:
            raise ValueError("PersonTracker.update needs detections with features (run the embed stage first)")
        # update_tracks takes ([left, top, width, height], confidence, class) tuples and silently
        # drops empty boxes, which would misalign `embeds`; drop them here instead. Each kept
        # detection's row index travels as `others`, so a track maps back to its box.
        ltwh = np.concatenate([detections.xyxy[:, :2], detections.xyxy[:, 2:] - detections.xyxy[:, :2]], axis=1)
        rows = np.flatnonzero((ltwh[:, 2] > 0) & (ltwh[:, 3] > 0))
        raw = [(ltwh[i].tolist(), float(detections.confidence[i]), "person") for i in rows]
        tracks = self._deepsort.update_tracks(
            raw, embeds=[detections.features[i] for i in rows], others=rows.tolist()
        )
        observations = []
        for track in tracks:
            row = track.get_det_supplementary()
            if not track.is_confirmed() or track.time_since_update > 0 or row is None:
                continue
            observations.append(
                TrackObservation(
                    track_id=int(track.track_id),
                    xyxy=detections.xyxy[row].copy(),
                    confidence=float(detections.confidence[row]),
                    feature=detections.features[row],
                )
            )
        return sorted(observations, key=lambda o: o.track_id)

    def predictions(self, max_missed: int = 1) -> TrackPredictions:
        """The next frame's predicted boxes of the confirmed tracks matched within the last
        ``max_missed`` + 1 frames (older ones have drifted too far to place a box), without
        changing any state."""
        tracker = self._deepsort.tracker
        tracks = [t for t in tracker.tracks if t.is_confirmed() and t.time_since_update <= max_missed]
        if not tracks:
            return TrackPredictions(np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros((0, 0), np.float32))
        boxes = []
        for track in tracks:
            mean, _ = tracker.kf.predict(track.mean, track.covariance)
            cx, cy, aspect, height = mean[:4]
            width = aspect * height
            boxes.append([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2])
        return TrackPredictions(
            np.array([int(t.track_id) for t in tracks], np.int64),
            np.array(boxes, np.float32),
            np.stack([np.asarray(t.get_feature(), np.float32) for t in tracks]),
        )
