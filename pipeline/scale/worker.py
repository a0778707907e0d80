"""The worker side: a Ray actor that runs the camera chain on work units and draws their videos.

:class:`SegmentWorker` is a plain class (Ray makes it an actor in :mod:`pipeline.scale.cluster`,
so this module never imports Ray). It loads the embedder once, with its share of the machine's
cores, and then takes jobs:

- :meth:`~SegmentWorker.probe`: open a camera's input (metadata: frames, fps, size) and learn its
  colour table from its first frames, as the single-process chain would;
- :meth:`~SegmentWorker.track`: the same chain as ``crosscam track`` (:func:`pipeline.video.chain.build_chain`)
  over one :class:`~pipeline.scale.units.WorkUnit`, returning plain results, a :class:`SegmentResult`
  (the owned frames' rows and per-track accumulators, and every observation of the overlaps for
  stitching), through Ray's object store: workers need no shared disk for outputs;
- :meth:`~SegmentWorker.render`: draw final rows onto a unit's owned frames, returning the MP4 bytes.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipeline.colour import CameraColour
from pipeline.config import PipelineConfig
from pipeline.scale.units import WorkUnit
from pipeline.types import FrameResult, kept_frames
from pipeline.video.annotate import render_tracks_video
from pipeline.video.chain import SharedFrames, StageTimes
from pipeline.video.detectors import build_detector
from pipeline.video.run import camera_chain, models_record
from pipeline.video.sources import STREAM_SCHEMES, VideoFileSource, mot_sequence_dir, open_source, source_warnings_muted
from pipeline.video.track_state import TrackAccumulator
from pipeline.video.tracks_file import TrackRows
from reid import Embedder
from reid.onnx_backend import set_intra_op_threads


@dataclass
class CameraProbe:
    """What the driver needs to plan a camera's units (from :meth:`SegmentWorker.probe`)."""

    camera: str
    spec: str
    uri: str
    fps: float
    frame_size: tuple[int, int]
    frames_total: int | None  # source frames to process (max_frames applied); None: unknown (streams)
    stream: bool
    colour: CameraColour


@dataclass
class BoundaryObservations:
    """Every observation of a unit inside its overlaps with the neighbouring units (for stitching)."""

    frame: np.ndarray  # (N,) int64, 0-based source frames
    track_id: np.ndarray  # (N,) int64, the unit's own ids
    xyxy: np.ndarray  # (N, 4) float32 pixels
    feature: np.ndarray  # (N, D) float32 unit features; NaN rows for boxes without one


@dataclass
class SegmentResult:
    """A tracked unit: rows and accumulators of its owned frames (the unit's own track ids),
    its overlap observations, and how it ran."""

    unit: WorkUnit
    rows: TrackRows
    states: dict[int, TrackAccumulator]
    boundary: BoundaryObservations
    owned_frames_read: int  # owned frames decoded (each source frame is owned by one unit)
    owned_frames_failed: int  # owned frames that could not be decoded
    seconds: float
    stage_seconds: dict[str, float]
    worker: str  # host:pid of the worker process that produced it
    models: dict
    seek: str = "none"  # how the unit's first frame was reached (pipeline.video.sources.VideoFileSource.seek)
    reused_frames: int = 0  # overlap frames whose detections a neighbouring unit computed
    lost_workers: list[str] = field(default_factory=list)  # filled in by the driver
    blind_frames: list[int] = field(default_factory=list)  # owned frames the motion detector could not judge
    blind_unlisted: int = 0  # more of them past the detector's list (pipeline.video.detectors.BLIND_LISTED)


def limit_threads(threads: int) -> None:
    """Run this process's models and OpenCV on ``threads`` threads (its share of the cores)."""
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    set_intra_op_threads(threads)


class SegmentWorker:
    """One worker process: models loaded once, then any number of jobs (see the module docstring).

    ``config`` is the run's :class:`PipelineConfig` as a dict; ``progress`` a
    :class:`pipeline.scale.cluster.ProgressCounter` actor handle (or None) told of every frame processed.
    """

    def __init__(self, config: dict, threads: int, progress=None):
        self.cfg = PipelineConfig.model_validate(config)
        self.threads = threads
        self.progress = progress
        self._embedder = None
        limit_threads(threads)

    @property
    def name(self) -> str:
        """``host:pid``, with the Ray node's id when run by Ray (several nodes may share a host)."""
        node = ""
        try:
            import ray  # only to name the node: a worker of a Ray actor has it

            if ray.is_initialized():
                node = f"/{ray.get_runtime_context().get_node_id()[:8]}"
        except ImportError:
            pass
        return f"{socket.gethostname()}{node}:{os.getpid()}"

    def ready(self) -> dict:
        """Load the embedder now (a bad model fails here, once); returns the worker's name and pid."""
        self.embedder  # noqa: B018 - loading is the point
        return {"worker": self.name, "pid": os.getpid()}

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder.from_config(self.cfg.reid)
        return self._embedder

    def probe(self, spec: str, camera: str) -> CameraProbe:
        """Open ``spec`` as camera ``camera``: its metadata, and its colour table learned from the
        first batches of frames exactly as the chain's embed stage learns it."""
        with open_source(spec, camera, self.cfg.source) as source:
            colour = CameraColour(self.cfg.reid.camera_colour)
            # A stream's frames go by: its table is learned by the track job's own first frames.
            stream = spec.lower().startswith(STREAM_SCHEMES)
            if colour.needs_fit and not stream:
                batch = []
                for frame in source:
                    batch.append(frame.image)
                    if len(batch) == self.cfg.detector.batch_size:
                        colour.fit(batch)
                        batch = []
                        if not colour.needs_fit:
                            break
                if batch:
                    colour.fit(batch)
            frames = source.counted_frames_end() if isinstance(source, VideoFileSource) else source.frames_end
            return CameraProbe(camera, spec, source.uri, source.fps, source.frame_size, frames, stream, colour)

    def track(self, unit: WorkUnit, colour: CameraColour, overlaps: SharedFrames | None = None) -> SegmentResult:
        """Run the chain on ``unit`` (a fresh detector and tracker; ``colour`` as probed).
        ``overlaps``: the unit's overlap frames shared with its neighbours, which compute them once
        (:class:`pipeline.scale.overlaps.UnitOverlaps`; None: each unit computes its own)."""
        start = time.perf_counter()
        times = StageTimes()
        with open_source(unit.spec, unit.camera, self.cfg.source, unit.frames) as source:
            detector = build_detector(self.cfg.detector, mot_sequence_dir(source))
            collector = _UnitCollector(unit, source.frame_size, self.cfg.output.representatives,
                                       self.cfg.output.thumbnails, self._report(unit.key))
            chain = camera_chain(source, detector, self.embedder, [collector], self.cfg, times, colour, overlaps)
            with closing(chain):
                for _ in chain:
                    pass
            collector.flush_progress()
            return SegmentResult(
                unit=unit, rows=collector.rows(), states=collector.states, boundary=collector.boundary(),
                owned_frames_read=collector.owned_frames,
                owned_frames_failed=_owned_failures(unit, source, collector.owned_frames),
                seconds=time.perf_counter() - start, stage_seconds={k: round(v, 4) for k, v in times.items()},
                worker=self.name, models=models_record(detector, self.embedder), seek=getattr(source, "seek", "none"),
                reused_frames=overlaps.reused if overlaps is not None else 0,
                blind_frames=[i for i in getattr(detector, "blind_frames", []) if collector.owns(i)],
                blind_unlisted=getattr(detector, "blind_count", 0) - len(getattr(detector, "blind_frames", [])),
            )

    def render(self, unit: WorkUnit, rows: TrackRows, identity_of: dict[int, int] | None = None) -> bytes:
        """``unit``'s owned frames with ``rows`` drawn, as MP4 bytes: with their track ids as
        ``annotated.mp4`` draws them (``output.codec``, trails), or with ``identity_of`` (track id ->
        identity) as ``annotated_global.mp4`` does (pipeline.identity.identities.render_global_video)."""
        out = self.cfg.output
        with tempfile.TemporaryDirectory(prefix="crosscam-render-") as tmp:
            path = Path(tmp) / f"{unit.camera}.mp4"
            # read again to draw: its warnings were said when the unit was tracked
            with source_warnings_muted(), open_source(unit.spec, unit.camera, self.cfg.source, unit.owned) as source:
                if identity_of is None:
                    render_tracks_video(source, rows, path, codec=out.codec,
                                        trail_length=out.trail_length if out.trails else 0)
                else:
                    render_tracks_video(source, rows, path, identity_of, ids="identities")
            return path.read_bytes()

    def _report(self, key: str):
        progress = self.progress

        def report(frames: int) -> None:
            if progress is not None and frames:
                progress.add.remote(key, frames)

        return report


def _owned_failures(unit: WorkUnit, source, owned_read: int) -> int:
    """Owned frames that were not decoded: the kept frames of the owned range the source could
    reach, less those read (a whole-input unit: the source's own count)."""
    end = source.frames_end
    if unit.segments == 1 or end is None:
        return source.frames_failed
    stop = end if unit.owned.end is None else min(end, unit.owned.end)
    return max(0, kept_frames(unit.owned.start, stop, source.cfg.stride) - owned_read)


class _UnitCollector:
    """The worker's sink: owned frames go to rows and per-track accumulators, overlap frames'
    observations are kept for stitching, and owned frames are reported for progress (each source
    frame counts once, whichever segments read it)."""

    def __init__(self, unit: WorkUnit, frame_size: tuple[int, int], representatives: int, thumbnails: bool,
                 report):
        self.unit = unit
        self.owned = unit.owned
        self.representatives = representatives
        self.thumbnails = thumbnails
        self.states: dict[int, TrackAccumulator] = {}
        self._rows: list[tuple[int, int, np.ndarray, float, bool]] = []
        self._boundary: list[tuple[int, int, np.ndarray, np.ndarray | None]] = []
        self._report = report
        self._unreported = 0
        self.owned_frames = 0

    def owns(self, index: int) -> bool:
        return index >= self.owned.start and (self.owned.end is None or index < self.owned.end)

    def write(self, result: FrameResult) -> None:
        frame = result.frame
        if self.owns(frame.index):
            self.owned_frames += 1
            self._unreported += 1
            for obs in result.tracks:
                state = self.states.get(obs.track_id)
                if state is None:
                    state = self.states[obs.track_id] = TrackAccumulator.start(frame.index, frame.time_s,
                                                                                self.representatives)
                state.add(obs, frame, self.thumbnails)
                self._rows.append((frame.index, obs.track_id, obs.xyxy, obs.confidence, obs.interpolated))
        if self.unit.in_overlap(frame.index):
            self._boundary += [(frame.index, o.track_id, o.xyxy, o.feature) for o in result.tracks]
        if self._unreported >= 16:
            self.flush_progress()

    def flush_progress(self) -> None:
        self._report(self._unreported)
        self._unreported = 0

    def rows(self) -> TrackRows:
        if not self._rows:
            return TrackRows.empty()
        frame, track_id, xyxy, conf, interp = zip(*self._rows)
        return TrackRows(np.array(frame, np.int64), np.array(track_id, np.int64), np.stack(xyxy).astype(np.float32),
                         np.array(conf, np.float32), np.array(interp, bool))

    def boundary(self) -> BoundaryObservations:
        dims = [len(f) for *_, f in self._boundary if f is not None]
        dim = dims[0] if dims else 0
        if not self._boundary:
            return BoundaryObservations(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                                        np.zeros((0, dim), np.float32))
        frame, track_id, xyxy, feature = zip(*self._boundary)
        nan = np.full(dim, np.nan, np.float32)
        return BoundaryObservations(np.array(frame, np.int64), np.array(track_id, np.int64),
                                    np.stack(xyxy).astype(np.float32),
                                    np.stack([nan if f is None else np.asarray(f, np.float32) for f in feature]))
