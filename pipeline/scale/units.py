"""Work units: one camera's segment of frames, the piece of work a worker takes.

A long video is cut into segments of ``segment_s`` seconds that overlap by ``overlap_s``:
segment ``k`` reads source frames ``[k * L, (k + 1) * L + V)`` (``L``, ``V``: those durations in
frames, ``L`` evened out over the video). Each segment is tracked on its own; where two segments overlap, both have tracked the
same people, which is how their tracks are stitched (:mod:`pipeline.scale.stitch`). Every frame
is *owned* by exactly one segment, the earlier one owning the whole overlap, and only owned
frames reach the camera's outputs: none is written twice, and each segment has a whole overlap
to settle (its detector's background, its tracks' confirmation) before its owned frames begin.
A segment also reads ``lookahead`` frames past its owned end (its neighbour's), so that what the
tracker settles only after a frame (a track confirmed later, back-filled; a gap closed later,
interpolated; a box smoothed with later ones: :class:`pipeline.video.refine.lookback.LookBack`)
is settled for its last owned frames as in one pass over the video.

>>> [(u.frames.start, u.frames.end, u.owned.start, u.owned.end)
...  for u in plan_camera("hall", "hall.mp4", total_frames=250, fps=10.0, segment_s=10.0, overlap_s=2.0)]
[(0, 135, 0, 135), (115, 250, 135, 250)]
>>> [(u.frames.start, u.frames.end, u.owned.start, u.owned.end)
...  for u in plan_camera("hall", "hall.mp4", 250, 10.0, 10.0, 2.0, lookahead=20)]
[(0, 155, 0, 135), (115, 250, 135, 250)]
>>> len(plan_camera("hall", "hall.mp4", total_frames=250, fps=10.0, segment_s=0.0, overlap_s=2.0))
1
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.types import FrameRange
from pipeline.video.refine.lookback import LookBack
from pipeline.video.tracks_file import TrackRows


@dataclass(frozen=True)
class WorkUnit:
    """Frames ``frames`` of camera ``camera``'s input ``spec``, of which ``owned`` reach the outputs.

    ``segment`` is the unit's position among its camera's ``segments`` (0-based, in frame order);
    ``overlap`` the frames it shares with each neighbour (its first ``overlap`` frames with the
    segment before, its last with the one after), and ``lookahead`` the frames each segment but
    the last reads past its owned end (owned by the next segment; fewer where the video ends). A
    whole input (a stream, or ``segment_s`` 0) is one unit.
    """

    camera: str
    spec: str
    frames: FrameRange
    owned: FrameRange
    segment: int = 0
    segments: int = 1
    overlap: int = 0
    lookahead: int = 0

    @property
    def key(self) -> str:
        """A name unique within a run: ``camera#segment``."""
        return f"{self.camera}#{self.segment}"

    def in_overlap(self, index: int) -> bool:
        """Whether source frame ``index`` is one this unit shares with a neighbour: its first
        ``overlap`` frames and the segment before's look-ahead past them, or its last ``overlap``
        frames and its own look-ahead."""
        head = self.segment > 0 and index < self.frames.start + self.overlap + self.lookahead
        tail = self.segment < self.segments - 1 and index >= self.owned.end - self.overlap
        return head or tail

    def queue_position(self, workers: int) -> int:
        """Where the unit goes in its camera's queue, so that each of ``workers`` takes a run of
        consecutive segments: ``workers`` 2, segments 0-3 queue as 0, 2, 1, 3 (one worker gets 0
        then 1, the other 2 then 3). A segment then starts after the neighbour that shares its
        first frames has passed them, or long before the other reaches them: one of the two
        computes the overlap and the other takes its results (:mod:`pipeline.scale.overlaps`).

        >>> [WorkUnit("c", "c.mp4", None, None, k, 4, 10).queue_position(2) for k in range(4)]
        [0, 2, 1, 3]
        """
        run = -(-self.segments // max(1, workers))  # consecutive segments per worker
        return (self.segment % run) * workers + self.segment // run

    @property
    def label(self) -> str:
        """``segment 2 of 4 (frames 300-649)``: the unit as messages name it (frames 0-based, end inclusive)."""
        end = "end" if self.frames.end is None else self.frames.end - 1
        return f"segment {self.segment + 1} of {self.segments} (frames {self.frames.start}-{end})"

    def owned_rows(self, rows: TrackRows) -> TrackRows:
        """The ``rows`` of the unit's owned frames (what it draws)."""
        end = self.owned.end if self.owned.end is not None else np.iinfo(np.int64).max
        return rows.take((rows.frame >= self.owned.start) & (rows.frame < end))


def plan_camera(camera: str, spec: str, total_frames: int | None, fps: float, segment_s: float,
                overlap_s: float, workers: int = 1, lookahead: int = 0) -> list[WorkUnit]:
    """Cut one input into overlapping segments of equal length (see the module docstring).

    ``total_frames`` is the number of source frames to process (``None``: unknown, e.g. a
    stream, which is never cut). ``segment_s`` 0 or a video shorter than one and a half segments
    (plus the overlap) gives one unit. Otherwise the count is the nearest to ``video / segment_s``,
    rounded to a multiple of ``workers`` where that is at least ``workers``: the workers then get
    equal shares of the camera instead of one of them running its last segment alone (five
    segments on two workers take as long as six). Segments stay within half and one and a half
    ``segment_s``, and longer than the overlap, which is at least one frame. Each segment but the
    last reads ``lookahead`` source frames past its owned end (:func:`lookahead_frames`).
    """
    whole = [WorkUnit(camera, spec, FrameRange(0, total_frames), FrameRange(0, total_frames))]
    if total_frames is None or segment_s <= 0:
        return whole
    length = max(1, round(segment_s * fps))
    overlap = min(max(1, round(overlap_s * fps)), length - 1) if length > 1 else 0
    span = total_frames - overlap  # the frames the segments' starts spread over
    count = max(1, _nearest(span / length))
    per_worker = _nearest(span / length / workers)
    if count > 1 and per_worker >= 1:  # one worker: per_worker is count itself
        count = workers * per_worker
    count = min(count, max(1, span // (overlap + 1)))  # each segment longer than the overlap
    if count == 1:
        return whole
    starts = [round(k * span / count) for k in range(count)]
    units = []
    for k, start in enumerate(starts):
        last = k == count - 1
        own_end = total_frames if last else starts[k + 1] + overlap
        own_start = 0 if k == 0 else start + overlap
        end = min(total_frames, own_end + (0 if last else lookahead))
        units.append(WorkUnit(camera, spec, FrameRange(start, end), FrameRange(own_start, own_end), k, count, overlap,
                              lookahead))
    return units


def lookahead_frames(cfg: PipelineConfig) -> int:
    """Source frames a segment reads past its owned end: the depth of ``cfg``'s look-back buffer
    (back-fill, the longest gap filled, smoothing's reach; in processed frames) times the stride."""
    return LookBack.for_tracker(cfg.tracker).depth * cfg.source.stride


def _nearest(x: float) -> int:
    """``x`` rounded half up (``round`` would take 2.5 to 2)."""
    return math.floor(x + 0.5)
