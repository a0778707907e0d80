"""Per-camera multi-object tracking with deep-sort-realtime, fed our own embeddings.

deep-sort-realtime's ``DeepSort`` is built with ``embedder=None`` so it never runs a network of
its own; each frame's L2-normalised features go in through ``update_tracks(..., embeds=...)``.
Out come only *confirmed* tracks that were matched to a detection in this very frame, so a
coasting track (predicted by the Kalman filter, not seen) never draws a ghost box. Around it,
:mod:`pipeline.video.refine`'s online refinements: low-confidence boxes extend confirmed tracks, a
moving camera is compensated, and a track's tentative boxes are kept for back-fill.

>>> from pipeline.config import TrackerConfig
>>> tracker = PersonTracker(TrackerConfig(n_init=2))
>>> dets = Detections(np.array([[10, 10, 50, 110]], np.float32), np.array([0.9], np.float32),
...                   np.array([[1.0, 0.0]], np.float32))
>>> tracker.update(dets)  # a new track is tentative in its first frame
[]
>>> [(o.track_id, o.xyxy.tolist()) for o in tracker.update(dets)]
[(1, [10.0, 10.0, 50.0, 110.0])]
>>> [(frame, o.track_id) for frame, o in tracker.take_backfill()]  # its tentative box, now under its id
[(0, 1)]
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from deep_sort_realtime.deepsort_tracker import DeepSort

from pipeline.config import TrackerConfig
from pipeline.types import Detections, TrackObservation
from pipeline.video.refine.camera_motion import CameraMotion, warp_state
from pipeline.video.refine.low_confidence import match_by_iou


@dataclass(frozen=True)
class TrackPredictions:
    """Where the recently seen confirmed tracks are expected in the next frame (Kalman prediction)."""

    track_ids: np.ndarray  # (K,) int64
    xyxy: np.ndarray  # (K, 4) float32 pixels
    features: np.ndarray  # (K, D) float32, each track's latest appearance


class PersonTracker:
    """One camera's DeepSORT state; call :meth:`update` once per processed frame, in order.

    Output ids are handed out when a track is confirmed, densely from 1 in the order tracks are
    confirmed, which is the order they appeared in (every track is confirmed ``n_init`` frames
    after its first). With ``cfg.backfill`` the boxes a track had while tentative are kept and,
    once it is confirmed, returned by :meth:`take_backfill`.
    """

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
        self._ids: dict[str, int] = {}  # DeepSORT id -> output id
        self._tentative: dict[str, list[tuple[int, TrackObservation]]] = {}  # boxes of unconfirmed tracks
        self._backfill: list[tuple[int, TrackObservation]] = []
        self._motion = None if cfg.camera_motion == "none" else CameraMotion(cfg.camera_motion)
        self._frames = 0

    def update(self, detections: Detections, low: Detections | None = None, image: np.ndarray | None = None,
               frame: int | None = None) -> list[TrackObservation]:
        """Advance one frame. ``detections.features`` must hold one feature per box.

        Returns the confirmed tracks updated in this frame, each with the box, confidence and
        feature of the detection it was matched to (not the Kalman-smoothed box). ``low``: boxes
        under the detector's confidence (no features), matched to confirmed tracks DeepSORT left
        unmatched (returned without a feature). ``image``: the frame, for ``cfg.camera_motion``.
        ``frame``: this frame's index, which back-filled boxes are tagged with (default: a count of
        the calls).
        """
        if detections.features is None:
            raise ValueError("PersonTracker.update needs detections with features (run the embed stage first)")
        frame = self._frames if frame is None else frame
        self._frames += 1
        self._compensate_camera_motion(image)
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
        for track in sorted(tracks, key=lambda t: int(t.track_id)):
            row = track.get_det_supplementary()
            if track.time_since_update > 0 or row is None:
                continue
            obs = TrackObservation(0, detections.xyxy[row].copy(), float(detections.confidence[row]),
                                   detections.features[row])
            if track.is_tentative():
                if self.cfg.backfill:
                    self._tentative.setdefault(track.track_id, []).append((frame, obs))
                continue
            if track.is_confirmed():
                observations.append(self._output(track.track_id, obs))
        if low is not None and len(low):
            observations += self._extend_with_low_confidence(tracks, low)
        live = {t.track_id for t in tracks}
        self._tentative = {k: v for k, v in self._tentative.items() if k in live}
        return sorted(observations, key=lambda o: o.track_id)

    def _output(self, deepsort_id: str, obs: TrackObservation) -> TrackObservation:
        """``obs`` under the track's output id, handing out the next id (and queueing the track's
        tentative boxes for back-fill) the first time the track is output."""
        if deepsort_id not in self._ids:
            self._ids[deepsort_id] = len(self._ids) + 1
            for frame, earlier in self._tentative.pop(deepsort_id, []):
                self._backfill.append((frame, replace(earlier, track_id=self._ids[deepsort_id])))
        return replace(obs, track_id=self._ids[deepsort_id])

    def take_backfill(self) -> list[tuple[int, TrackObservation]]:
        """``(frame, observation)`` of the tentative boxes of the tracks confirmed since the last
        call, under their output ids (empty without ``cfg.backfill``)."""
        out, self._backfill = self._backfill, []
        return out

    def _extend_with_low_confidence(self, tracks, low: Detections) -> list[TrackObservation]:
        """Match ``low`` to the confirmed tracks missed in this frame but matched in the one
        before (ByteTrack's second association) and update them with those boxes."""
        missed = [t for t in tracks if t.is_confirmed() and t.time_since_update == 1]
        predicted = np.array([t.to_ltrb() for t in missed], np.float32).reshape(-1, 4)
        kf = self._deepsort.tracker.kf
        out = []
        for k, m in match_by_iou(predicted, low.xyxy, self.cfg.low_confidence_iou):
            track, box = missed[k], low.xyxy[m]
            ltwh = np.concatenate([box[:2], box[2:] - box[:2]]).astype(np.float64)
            xyah = np.array([ltwh[0] + ltwh[2] / 2, ltwh[1] + ltwh[3] / 2, ltwh[2] / ltwh[3], ltwh[3]])
            # Track.update without the feature: a low-confidence crop would spoil the appearance gallery.
            track.mean, track.covariance = kf.update(track.mean, track.covariance, xyah)
            track.hits += 1
            track.time_since_update = 0
            out.append(self._output(track.track_id, TrackObservation(0, box.copy(), float(low.confidence[m]), None)))
        return out

    def _compensate_camera_motion(self, image: np.ndarray | None) -> None:
        if self._motion is None or image is None:
            return
        affine = self._motion.estimate(image)
        if affine is None:
            return
        for track in self._deepsort.tracker.tracks:
            track.mean, track.covariance = warp_state(track.mean, track.covariance, affine)

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
