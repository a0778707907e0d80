"""The chain's look-back buffer in front of the sinks: back-fill and gap interpolation, online.

:class:`LookBack` holds the last ``depth`` processed frames before they reach the sinks. While
a frame is held, later frames can still add to it:

- **back-fill**: when a track is confirmed, the boxes it had while tentative (up to
  ``n_init - 1`` frames back) are put into their frames, so a person is tracked from the frame
  they first appear in (``tracker.backfill``);
- **interpolation**: when a track is detected again after missing up to ``interpolate_max_gap``
  frames, the missed frames get interpolated boxes (``pipeline.video.refine.interpolate``), filled when
  the gap's first frame is about to leave the buffer, so the boxes after the gap that arrived by
  then take part (``tracker.interpolate``);
- **smoothing**: as a frame leaves, each of its boxes is replaced by a line fitted to its track's
  boxes around it, weighted by a Gaussian of ``sigma`` processed frames (out to ``3 sigma`` on both
  sides, the later ones still held): a detector's box jitter is averaged out without the lag of a
  filter that sees only the past, nor a mean's pull at a track's ends (``tracker.smooth_sigma``).

Frames leave in order, so every sink still sees frames in order, and memory stays bounded by
``depth`` frames. Whatever is held when the video ends (or the run is interrupted) leaves as it is.

>>> from pipeline.types import Frame
>>> buffer = LookBack(depth=2, interpolate="linear", max_gap=2)
>>> def seen(i, x):  # frame i with track 1 detected at x (or not detected: None)
...     boxes = [] if x is None else [TrackObservation(1, np.array([x, 0, x + 10, 30], np.float32), 0.9, None)]
...     return FrameResult(Frame("cam", i, i / 10, np.zeros((1, 1, 3), np.uint8)), tracks=boxes)
>>> out = [r for i, x in enumerate([0, None, None, 30, 40]) for r in buffer.push(seen(i, x))] + buffer.drain()
>>> [(r.frame.index, float(r.tracks[0].xyxy[0]), r.tracks[0].interpolated) for r in out]
[(0, 0.0, False), (1, 10.0, True), (2, 20.0, True), (3, 30.0, False), (4, 40.0, False)]
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from pipeline.config import TrackerConfig
from pipeline.types import FrameResult, TrackObservation
from pipeline.video.refine.interpolate import fill_gap

CONTEXT_BOXES = 5  # detected boxes on each side of a gap that a GSI fill looks at


@dataclass
class _Gap:
    track_id: int
    first: int  # sequence number of the first missed frame
    last: int  # sequence number of the last missed frame
    before: np.ndarray  # (B, 5) frame, x1, y1, x2, y2 of the track's detected boxes before the gap


class LookBack:
    """Hold ``depth`` frames; :meth:`push` one, get back those that leave, in frame order.

    ``interpolate``: ``none``, ``linear`` or ``gsi``; gaps of up to ``max_gap`` missed frames
    are filled (``depth`` must be at least ``max_gap`` for them to be still held). ``smooth_sigma``
    (processed frames, 0: off) smooths the boxes over the ``3 * smooth_sigma`` frames around them
    that are still held or just left.
    """

    def __init__(self, depth: int, interpolate: Literal["none", "linear", "gsi"] = "none", max_gap: int = 0,
                 smooth_sigma: float = 0.0):
        self.depth = depth
        self.interpolate = interpolate
        self.max_gap = min(max_gap, depth)
        self.smooth_sigma = smooth_sigma
        self.reach = min(math.ceil(3 * smooth_sigma), depth)  # frames each side a smoothed box looks at
        self._left: dict[int, deque] = {}  # track id -> (sequence, box) of its boxes in frames that left, as detected
        self._held: deque[tuple[int, FrameResult]] = deque()  # (sequence number, result)
        self._seq = 0
        self._recent: dict[int, deque] = {}  # track id -> (sequence, frame, box) of its latest detected boxes
        self._gaps: list[_Gap] = []
        self.backfilled = 0  # boxes put into held frames
        self.interpolated = 0  # boxes filled in

    @classmethod
    def for_tracker(cls, cfg: TrackerConfig) -> "LookBack":
        """The buffer ``cfg`` asks for: deep enough for back-fill, the longest gap filled and
        smoothing's reach."""
        # deep-sort-realtime confirms a track on an update, so at its second frame at the earliest (n_init 1 too)
        backfill = max(cfg.n_init - 1, 1) if cfg.backfill else 0
        gaps = cfg.interpolate_max_gap if cfg.interpolate != "none" else 0
        return cls(max(backfill, gaps, math.ceil(3 * cfg.smooth_sigma)), cfg.interpolate, gaps, cfg.smooth_sigma)

    def push(self, result: FrameResult) -> list[FrameResult]:
        """Add the next processed frame; returns the frames that leave the buffer (oldest first)."""
        seq, self._seq = self._seq, self._seq + 1
        self._held.append((seq, result))
        for frame, obs in result.backfill:
            self._backfill(frame, obs)
        result.backfill = []
        if self.interpolate != "none":
            for obs in result.tracks:
                self._detected(seq, result.frame.index, obs)
            for track_id in [k for k, v in self._recent.items() if seq - v[-1][0] > self.max_gap + 1]:
                del self._recent[track_id]  # gone for longer than any gap filled
        released = []
        while len(self._held) > self.depth:
            released.append(self._release())
        return released

    def drain(self) -> list[FrameResult]:
        """Every held frame, oldest first (at the end of the video, or when stopping early)."""
        return [self._release() for _ in range(len(self._held))]

    def _release(self) -> FrameResult:
        seq, result = self._held[0]
        for gap in [g for g in self._gaps if g.first == seq]:
            self._fill(gap)
        self._held.popleft()
        if self.reach:
            self._smooth(seq, result)
        return result

    def _smooth(self, seq: int, result: FrameResult) -> None:
        """Replace each box of the leaving frame ``result`` by :func:`local_line` through its
        track's boxes from ``reach`` frames before (as detected) to ``reach`` frames after (a fit
        that would leave less than a pixel of width or height keeps the box as detected)."""
        ahead: dict[int, list[tuple[int, np.ndarray]]] = {}
        for later, held in self._held:
            if later - seq > self.reach:
                break
            for obs in held.tracks:
                ahead.setdefault(obs.track_id, []).append((later, obs.xyxy))
        smoothed = []
        for obs in result.tracks:
            behind = self._left.setdefault(obs.track_id, deque(maxlen=self.reach))
            near = [(s, b) for s, b in behind if seq - s <= self.reach] + [(seq, obs.xyxy)] + ahead.get(obs.track_id, [])
            box = local_line(np.array([s - seq for s, _ in near], np.float64),
                             np.array([b for _, b in near], np.float64), self.smooth_sigma)
            behind.append((seq, obs.xyxy))
            sane = box[2] - box[0] >= 1 and box[3] - box[1] >= 1
            smoothed.append(replace(obs, xyxy=box) if sane else obs)
        result.tracks = smoothed
        for track_id in [k for k, v in self._left.items() if seq - v[-1][0] >= self.reach]:
            del self._left[track_id]  # out of reach of every later frame

    def _backfill(self, frame: int, obs: TrackObservation) -> None:
        for seq, held in self._held:
            if held.frame.index == frame:
                held.tracks = sorted(held.tracks + [obs], key=lambda o: o.track_id)
                self.backfilled += 1
                if self.interpolate != "none":
                    self._detected(seq, frame, obs)
                return

    def _detected(self, seq: int, frame: int, obs: TrackObservation) -> None:
        """Remember a detected box of a track; a return after missed frames opens a gap."""
        recent = self._recent.setdefault(obs.track_id, deque(maxlen=CONTEXT_BOXES))
        if recent and 1 < seq - recent[-1][0] <= self.max_gap + 1:
            before = np.array([[f, *b] for _, f, b in recent], np.float64)
            self._gaps.append(_Gap(obs.track_id, recent[-1][0] + 1, seq - 1, before))
        if recent and seq < recent[-1][0]:  # a back-filled box, older than what is known
            recent.appendleft((seq, frame, obs.xyxy))
        else:
            recent.append((seq, frame, obs.xyxy))

    def _fill(self, gap: _Gap) -> None:
        self._gaps.remove(gap)
        held = {seq: result for seq, result in self._held}
        after = [(r.frame.index, o.xyxy) for seq, r in sorted(held.items()) if seq > gap.last
                 for o in r.tracks if o.track_id == gap.track_id and not o.interpolated][:CONTEXT_BOXES]
        missing = [held[seq] for seq in range(gap.first, gap.last + 1)]
        boxes = fill_gap(gap.before, np.array([[f, *b] for f, b in after], np.float64),
                         np.array([r.frame.index for r in missing]), self.interpolate)
        for result, box in zip(missing, boxes):
            obs = TrackObservation(gap.track_id, box, 0.0, None, interpolated=True)
            result.tracks = sorted(result.tracks + [obs], key=lambda o: o.track_id)
        self.interpolated += len(missing)


def local_line(offsets: np.ndarray, boxes: np.ndarray, sigma: float) -> np.ndarray:
    """The value at offset 0 of a straight line fitted to ``boxes`` (K, 4) at ``offsets`` (K,)
    frames, each weighted by a Gaussian of ``sigma`` frames: unbiased for steady motion even where
    the boxes lie on one side only (a track's first and last frames); (4,) float32."""
    w = np.exp(-0.5 * (offsets / sigma) ** 2)
    sw, sd, sdd = w.sum(), (w * offsets).sum(), (w * offsets**2).sum()
    sy, sdy = w @ boxes, (w * offsets) @ boxes
    det = sw * sdd - sd**2
    if det <= 1e-9 * sw * max(sdd, 1.0):  # one frame, or all at one offset: their mean
        return (sy / sw).astype(np.float32)
    return ((sdd * sy - sd * sdy) / det).astype(np.float32)
