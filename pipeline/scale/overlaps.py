"""Overlap frames computed once: what one segment detected and embedded there, its neighbour takes.

Consecutive segments of a video share their overlap's frames (:mod:`pipeline.scale.units`), so
without sharing each of those frames goes through the detector and the embedder twice. Whichever
of the two units reaches a shared frame first publishes its detections (with their features) to
:class:`OverlapBoard`, one small Ray actor per run; the other unit looks them up before running its
models and takes them. Both units batch the shared frames alike (``pipeline.video.chain._batches``)
with the same models and thread counts, so the taken results are the ones the unit would have
computed (to the last float bit, which some kernels round with the memory's alignment): the
outputs do not depend on which unit came first.

The board is an optimisation only: a unit that finds nothing computes, and a board whose process
died (:class:`UnitOverlaps` warns once) leaves every unit computing its own frames.
"""

from __future__ import annotations

import logging

from pipeline.scale.units import WorkUnit
from pipeline.types import Detections

log = logging.getLogger(__name__)

FrameDetections = tuple[Detections, Detections | None]  # (boxes with features, low-confidence boxes)


class OverlapBoard:
    """Detections of shared frames, by camera and source frame (a Ray actor's state; no Ray here)."""

    def __init__(self):
        self._frames: dict[str, dict[int, FrameDetections]] = {}

    def publish(self, camera: str, found: dict[int, FrameDetections]) -> None:
        self._frames.setdefault(camera, {}).update(found)

    def lookup(self, camera: str, indices: list[int]) -> dict[int, FrameDetections]:
        frames = self._frames.get(camera, {})
        return {i: frames[i] for i in indices if i in frames}

    def drop(self, camera: str) -> None:
        """Forget a camera whose units are all tracked."""
        self._frames.pop(camera, None)


class UnitOverlaps:
    """One unit's view of the run's board (a :class:`pipeline.video.chain.SharedFrames`): its
    overlap frames are shared; ``reused`` counts the frames it took instead of computing. Built by
    the driver and sent with the unit's job (Ray is imported by the worker that uses it)."""

    def __init__(self, unit: WorkUnit, board):
        self.unit = unit
        self._board = board  # an OverlapBoard actor handle; None once its process died
        self.reused = 0

    def wanted(self, index: int) -> bool:
        return self._board is not None and self.unit.in_overlap(index)

    def lookup(self, indices: list[int]) -> dict[int, FrameDetections]:
        import ray

        try:
            found = ray.get(self._board.lookup.remote(self.unit.camera, indices))
        except ray.exceptions.RayError as exc:
            self._lost(exc)
            return {}
        self.reused += len(found)
        return found

    def publish(self, found: dict[int, FrameDetections]) -> None:
        import ray

        try:
            self._board.publish.remote(self.unit.camera, found)  # not waited for
        except ray.exceptions.RayError as exc:
            self._lost(exc)

    def _lost(self, exc: Exception) -> None:
        log.warning("%s: the overlap board's process died (%s); this unit computes its overlaps itself",
                    self.unit.key, type(exc).__name__)
        self._board = None
