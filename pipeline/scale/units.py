"""Work units: one camera's segment of frames, the piece of work a worker takes.

A long video is cut into segments of ``segment_s`` seconds that overlap by ``overlap_s``:
segment ``k`` reads source frames ``[k * L, (k + 1) * L + V)`` (``L``, ``V``: those durations in
frames). Each segment is tracked on its own; where two segments overlap, both have tracked the
same people, which is how their tracks are stitched (:mod:`pipeline.scale.stitch`). Every frame
is *owned* by exactly one segment, the earlier one owning the whole overlap, and only owned
frames reach the camera's outputs: none is written twice, and each segment has a whole overlap
to settle (its detector's background, its tracks' confirmation) before its owned frames begin.

>>> [(u.frames.start, u.frames.end, u.owned.start, u.owned.end)
...  for u in plan_camera("hall", "hall.mp4", total_frames=250, fps=10.0, segment_s=10.0, overlap_s=2.0)]
[(0, 120, 0, 120), (100, 250, 120, 250)]
>>> len(plan_camera("hall", "hall.mp4", total_frames=250, fps=10.0, segment_s=0.0, overlap_s=2.0))
1
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.sources import FrameRange


@dataclass(frozen=True)
class WorkUnit:
    """Frames ``frames`` of camera ``camera``'s input ``spec``, of which ``owned`` reach the outputs.

    ``segment`` is the unit's position among its camera's ``segments`` (0-based, in frame order);
    ``overlap`` the frames it shares with each neighbour (its first ``overlap`` frames with the
    segment before, its last with the one after). A whole input (a stream, or ``segment_s`` 0)
    is one unit.
    """

    camera: str
    spec: str
    frames: FrameRange
    owned: FrameRange
    segment: int = 0
    segments: int = 1
    overlap: int = 0

    @property
    def key(self) -> str:
        """A name unique within a run: ``camera#segment``."""
        return f"{self.camera}#{self.segment}"

    @property
    def expected_frames(self) -> int | None:
        """Source frames the unit reads (before the stride), ``None`` if the source's length is unknown."""
        return self.frames.length


def plan_camera(camera: str, spec: str, total_frames: int | None, fps: float, segment_s: float,
                overlap_s: float) -> list[WorkUnit]:
    """Cut one input into overlapping segments (see the module docstring).

    ``total_frames`` is the number of source frames to process (``None``: unknown, e.g. a
    stream, which is never cut). ``segment_s`` 0 or a video no longer than one segment plus its
    overlap gives one unit; a last segment shorter than half a segment joins the one before. The
    overlap is at least one frame and less than a segment.
    """
    whole = [WorkUnit(camera, spec, FrameRange(0, total_frames), FrameRange(0, total_frames))]
    if total_frames is None or segment_s <= 0:
        return whole
    length = max(1, round(segment_s * fps))
    overlap = min(max(1, round(overlap_s * fps)), length - 1) if length > 1 else 0
    if total_frames <= length + overlap:
        return whole
    starts = list(range(0, total_frames - overlap, length))
    if total_frames - starts[-1] - overlap < length // 2:  # a short tail joins the segment before it
        starts.pop()
    units = []
    for k, start in enumerate(starts):
        last = k == len(starts) - 1
        end = total_frames if last else start + length + overlap
        own_start = 0 if k == 0 else start + overlap
        own_end = total_frames if last else starts[k + 1] + overlap
        units.append(WorkUnit(camera, spec, FrameRange(start, end), FrameRange(own_start, own_end), k, len(starts),
                              overlap))
    return units
