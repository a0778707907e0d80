"""``crosscam track --workers N``: every camera's units on Ray workers, the run directory written here.

The driver plans and stitches; the workers (:mod:`pipeline.scale.worker`) decode, detect, embed,
track and draw. Per camera:

1. a worker *probes* the input (length, rate, size; its colour table from its first frames);
2. the input is cut into units (:func:`pipeline.scale.units.plan_camera`) that run on any worker;
3. when every unit of the camera has come back, the driver stitches them
   (:func:`pipeline.scale.stitch.stitch_segments`) and writes ``tracks.txt``, ``tracks.json`` +
   ``track_features.npz`` and ``thumbs/`` (the single-process files);
4. workers draw each unit's owned frames with the final ids, and the driver joins the pieces into
   ``annotated.mp4`` (:func:`pipeline.scale.concat.concat_mp4`) and writes ``run.json``, which
   lists the segments (frames, worker, seconds, retries);
5. with the session still open (:class:`RaySession`), association can have the same workers draw the
   camera's ``annotated_global.mp4`` (:mod:`pipeline.scale.global_videos`).

Consecutive segments compute their shared frames once (:mod:`pipeline.scale.overlaps`).

Cameras move through these steps independently, so one camera's failure (an undecodable file)
fails that camera only. A unit whose worker died runs again (:class:`pipeline.scale.cluster.WorkerPool`).
Ctrl-C stops the workers; finished cameras keep their outputs, a camera whose first segments
had finished gets those (status ``interrupted``), as the single-process path leaves a camera it
was tracking.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from pipeline.config import PipelineConfig
from pipeline.identity.identities import GlobalVideo, render_global_videos_here
from pipeline.scale.cluster import Job, Outcome, WorkerPool, cluster_address, import_ray
from pipeline.scale.concat import PieceSpool
from pipeline.scale.global_videos import render_on_workers
from pipeline.scale.overlaps import OverlapBoard, UnitOverlaps
from pipeline.scale.stitch import stitch_segments
from pipeline.scale.units import WorkUnit, lookahead_frames, plan_camera
from pipeline.scale.worker import CameraProbe, SegmentResult, SegmentWorker
from pipeline.run_folders import (CAMERA_FOLDER_FIX, check_camera_free, check_camera_input, claim_cameras,
                                  keep_earlier, make_folder, publish_between_associations, warn_if_another_source,
                                  working_folder, write_json_atomic)
from pipeline.stops import stops_held
from pipeline.text import first_line, plural
from pipeline.types import kept_frames
from pipeline.video.finalise import final_ids, relinked_record
from pipeline.video.relabel import apply_id_map
from pipeline.video.run import (CameraRun, check_camera_names, check_out_dir, drop_staged, keep_complete_staged,
                                package_versions, publish_staged, resolved_config, utc_now, warn_blind_frames)
from pipeline.video.sources import default_camera_name, open_source, source_warnings_muted
from pipeline.video.track_state import write_track_states
from pipeline.video.tracks_file import TrackRows, read_camera_tracks, write_tracks_file
from reid.errors import CrosscamError
from reid.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass
class _Camera:
    """One camera's way through the run."""

    name: str
    spec: str
    folder: Path
    run: CameraRun
    index: int  # position among the run's inputs
    probe: CameraProbe | None = None
    units: list[WorkUnit] = field(default_factory=list)
    results: dict[int, SegmentResult] = field(default_factory=dict)
    video: PieceSpool | None = None  # annotated.mp4's pieces, once the workers draw them
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    record: dict = field(default_factory=dict)
    started: float = 0.0
    segments_written: int = 0  # the first segments whose tracks are in the camera's files
    joins: int = 0
    driver_s: float = 0.0  # seconds the driver spent on this camera (stitching, writing, joining videos)

    @property
    def done(self) -> bool:
        return self.run.status in ("complete", "failed", "interrupted")


class _Driver:
    def __init__(self, pool: WorkerPool, cameras: list[_Camera], cfg: PipelineConfig, progress: bool,
                 startup_s: float, publish_now: bool = True):
        self.pool = pool
        self.publish_now = publish_now
        self.board = None  # the OverlapBoard actor, once a camera is cut into segments
        self.cameras = {c.name: c for c in cameras}
        self.cfg = cfg
        self.progress = progress
        # source frames tracked: each counted once, by the segment that owns it
        self.bar = progress_bar(total=0, desc="tracking", unit="frame", disable=not progress)
        self.scale = {"workers": pool.workers, "threads_per_worker": pool.threads_per_worker,
                      "gpus_per_worker": pool.gpus_per_worker, "segment_s": cfg.scale.segment_s,
                      "overlap_s": cfg.scale.overlap_s,
                      "startup_s": round(startup_s, 3)}  # joining or starting Ray, workers loading the models

    def run(self) -> None:
        # Jobs go by camera order (a camera finishes before the next one's work starts, so an
        # interrupted run keeps whole cameras), probes before everything, drawing before tracking.
        for cam in self.cameras.values():
            self.pool.submit(Job(f"{cam.name}:probe", "probe", (cam.spec, cam.name), (0, cam.index),
                                 f"{cam.name}: reading the input"))
        try:
            for outcome in self.pool.outcomes(on_poll=self._poll):
                camera, _, step = outcome.job.key.partition(":")
                cam = self.cameras[camera]
                if cam.done:
                    continue  # a job of a camera that failed meanwhile
                if not outcome.ok:
                    self._fail(cam, outcome.error)
                elif step == "probe":
                    self._plan(cam, outcome.result)
                elif step.startswith("track"):
                    self._tracked(cam, outcome)
                else:
                    self._rendered(cam, outcome)
        finally:
            self.bar.close()

    def _poll(self) -> None:
        self.bar.update(self.pool.frames_done() - self.bar.n)  # redrawn at the bar's own pace

    def _plan(self, cam: _Camera, probe: CameraProbe) -> None:
        cam.probe, cam.started = probe, time.perf_counter()
        scale = self.cfg.scale
        cam.units = plan_camera(cam.name, cam.spec, probe.frames_total, probe.fps, scale.segment_s, scale.overlap_s,
                                self.pool.workers, lookahead_frames(self.cfg))
        cam.record = {
            "camera": cam.name, "source": probe.uri, "fps": probe.fps, "frame_size": list(probe.frame_size),
            "time_offset_s": 0.0, "config": resolved_config(self.cfg), "versions": package_versions(),
            "models": None, "colour": probe.colour.describe(), "scale": self.scale, "started_at": utc_now(),
        }
        make_folder(cam.folder, CAMERA_FOLDER_FIX)
        self._write_run_json(cam)
        for unit in cam.units:
            if unit.owned.end is not None:
                self.bar.total += kept_frames(unit.owned.start, unit.owned.end, self.cfg.source.stride)
            # Each worker takes a run of consecutive segments, so a segment's first frames were just
            # computed by the worker before it, or long before by the neighbour running alongside.
            self.pool.submit(Job(f"{cam.name}:track{unit.segment}", "track", (unit, probe.colour, self._overlaps(cam, unit)),
                                 (2, cam.index, unit.queue_position(self.pool.workers)),
                                 f"{cam.name}: {unit.label}",
                                 follows=f"{cam.name}:track{unit.segment - 1}" if unit.segment else None))
        self.bar.refresh()

    def _overlaps(self, cam: _Camera, unit: WorkUnit) -> UnitOverlaps | None:
        """The unit's view of the run's overlap board (started for the first camera cut into
        segments), or None for a whole input."""
        if unit.segments == 1:
            return None
        if self.board is None:
            self.board = self.pool.side_actor(OverlapBoard)
        return UnitOverlaps(unit, self.board)

    def _tracked(self, cam: _Camera, outcome: Outcome) -> None:
        result: SegmentResult = outcome.result
        cam.results[result.unit.segment] = result
        cam.outcomes[result.unit.segment] = outcome
        if len(cam.results) < len(cam.units):
            self._write_run_json(cam)  # run.json lists the segments done so far
            return
        if self.board is not None:
            self.board.drop.remote(cam.name)  # its overlaps are no longer wanted
        rows = self._write_tracks(cam, [cam.results[k] for k in range(len(cam.units))])
        if not self.cfg.output.video:
            self._complete(cam)
            return
        cam.video = PieceSpool(cam.folder / "annotated.mp4", len(cam.units))
        for unit in cam.units:
            self.pool.submit(Job(f"{cam.name}:render{unit.segment}", "render", (unit, unit.owned_rows(rows)),
                                 (1, cam.index, unit.segment), f"{cam.name}: drawing {unit.label}"))

    def _write_tracks(self, cam: _Camera, results: list[SegmentResult]) -> TrackRows:
        """Stitch ``results`` (the camera's first segments, in order), write the camera's track files
        and return their rows."""
        start = time.perf_counter()
        rows, states, cam.joins = stitch_segments(results)
        cam.segments_written = len(results)
        out = self.cfg.output
        summaries = write_track_states(cam.folder, cam.name, states, out.representatives, out.thumbnails)
        write_tracks_file(cam.folder / "tracks.txt", rows)
        if cam.run.status != "interrupted":  # re-linked as the single-process path does a complete camera
            links, id_map = final_ids(states, self.cfg)
            if any(old != new for old, new in id_map.items()):
                summaries = apply_id_map(cam.folder, id_map, out.representatives, out.thumbnails)
            cam.record["relinked"] = relinked_record(links, id_map, redrawn=False)
        rows = read_camera_tracks(cam.folder)
        cam.run.num_tracks = len(summaries)
        cam.record["models"] = results[0].models
        blind = [i for result in results for i in result.blind_frames]
        count = len(blind) + sum(result.blind_unlisted for result in results)  # past a unit's list: counted, not placed
        if count:
            cam.record["detector_blind_frames"] = count
            warn_blind_frames(cam.name, count, min(blind, default=results[0].unit.frames.start))
        cam.driver_s += time.perf_counter() - start
        return rows

    def _rendered(self, cam: _Camera, outcome: Outcome) -> None:
        segment = int(outcome.job.key.rpartition("render")[2])
        start = time.perf_counter()
        complete = cam.video.add(segment, outcome.result)
        if complete:
            cam.video.join()
        cam.driver_s += time.perf_counter() - start
        if complete:
            self._complete(cam)

    def _complete(self, cam: _Camera) -> None:
        cam.run.status = "complete"
        self._write_run_json(cam)
        if self.publish_now:
            publish_between_associations(cam.run.folder, cam.folder)
        elif cam.folder != cam.run.folder:
            cam.run.staged = cam.folder
        if self.progress:
            retries = sum(o.retries for o in cam.outcomes.values())
            self.bar.write(f"{cam.name}: {plural(cam.run.frames_read, 'frame')}, {plural(cam.run.num_tracks, 'track')}, "
                           f"{plural(len(cam.units), 'segment')}, {plural(retries, 'retry', 'retries')}", file=sys.stderr)

    def _fail(self, cam: _Camera, error: str) -> None:
        cam.run.status, cam.run.error = "failed", f"{cam.name}: {error}"
        self.pool.cancel(lambda job: job.key.partition(":")[0] == cam.name)
        if cam.video is not None:
            cam.video.discard()
        if not cam.record:
            cam.record = {"camera": cam.name, "source": cam.spec, "config": resolved_config(self.cfg),
                          "versions": package_versions(), "models": None, "scale": self.scale,
                          "started_at": utc_now()}
        make_folder(cam.folder, CAMERA_FOLDER_FIX)
        self._write_run_json(cam)
        keep_earlier(cam.run.folder, cam.folder)
        self.bar.write(f"error: {cam.run.error}", file=sys.stderr)

    def stop(self, error: str | None = None) -> None:
        """After Ctrl-C (``error`` None) each unfinished camera keeps its first finished segments
        (``interrupted``); after the driver itself failed (``error``, its first line) it is ``failed``
        with it. Either way a camera tracked before keeps its earlier outputs."""
        for cam in self.cameras.values():
            if cam.done or not cam.record:
                continue
            if cam.video is not None:
                cam.video.discard()  # the pieces drawn so far are dropped
            if error is None:
                cam.run.status = "interrupted"
                finished = 0
                while finished in cam.results:
                    finished += 1
                if not cam.segments_written and finished:
                    self._write_tracks(cam, [cam.results[k] for k in range(finished)])
            else:
                cam.run.status, cam.run.error = "failed", f"{cam.name}: {error}"
            self._write_run_json(cam)
            keep_earlier(cam.run.folder, cam.folder)

    def _write_run_json(self, cam: _Camera) -> None:
        run = cam.run
        done = [(k, cam.results[k], cam.outcomes[k]) for k in sorted(cam.results)]
        if run.status == "interrupted":  # only the segments whose tracks were written count
            done = done[:cam.segments_written]
        run.frames_read = sum(r.owned_frames_read for _, r, _ in done)
        run.frames_failed = sum(r.owned_frames_failed for _, r, _ in done)
        run.elapsed_s = time.perf_counter() - cam.started if cam.started else 0.0
        stages: dict[str, float] = {}
        for _, result, _ in done:
            for stage, seconds in result.stage_seconds.items():
                stages[stage] = round(stages.get(stage, 0.0) + seconds, 4)
        run.stage_seconds = stages
        segments = [
            {"segment": k, "start_frame": r.unit.frames.start, "end_frame": r.unit.frames.end,
             "owned_start_frame": r.unit.owned.start, "owned_end_frame": r.unit.owned.end, "worker": r.worker,
             "seconds": round(r.seconds, 3), "retries": o.retries, "lost_workers": o.lost_workers, "seek": r.seek,
             "reused_frames": r.reused_frames}
            for k, r, o in done
        ]
        write_json_atomic(cam.folder / "run.json", {
            **cam.record,
            "status": run.status, "error": run.error,
            "frames_read": run.frames_read, "frames_failed": run.frames_failed, "num_tracks": run.num_tracks,
            "elapsed_s": round(run.elapsed_s, 3), "stage_seconds": run.stage_seconds,
            "segments": segments, "stitched_tracks": cam.joins, "driver_seconds": round(cam.driver_s, 3),
            "finished_at": None if run.status == "running" else utc_now(),
        })


def _check_local_inputs(specs: Sequence[str], names: Sequence[str], cfg: PipelineConfig) -> None:
    """Open each file or folder input once before Ray starts, so a missing or unreadable one fails
    the run in one line at once, as on the single-process path (streams are left to the workers)."""
    for spec, name in zip(specs, names):
        if "://" not in spec:
            with source_warnings_muted(), open_source(spec, name, cfg.source):
                pass


class RaySession:
    """A Ray run's workers, kept from tracking to association: :meth:`track` the inputs, then
    :meth:`render_global_videos` (a :data:`pipeline.identity.identities.VideoRenderer` for
    ``update_identities``) draws the cameras' ``annotated_global.mp4`` on the same workers.

    ``workers`` actors (default: one per CPU of the cluster) with ``cfg.scale.threads_per_worker``
    threads each; ``address`` joins a running cluster (default: ``$RAY_ADDRESS``, else a Ray
    started on this machine for the run). The workers start in :meth:`track`, once the inputs are
    checked, and stop when the session closes (a Ray started for it is shut down).

    >>> with RaySession(cfg, workers=2) as session:  # doctest: +SKIP
    ...     runs = session.track(["cam1.mp4", "cam2.mp4"], "runs/mall")
    ...     update_identities("runs/mall", cfg, render_videos=session.render_global_videos)
    """

    def __init__(self, cfg: PipelineConfig, workers: int | None = None, address: str | None = None,
                 gpus_per_worker: float | None = None):
        self.cfg = cfg
        self.workers = workers
        self.address = address
        self.gpus_per_worker = gpus_per_worker
        self.pool: WorkerPool | None = None
        self._units: dict[str, list[WorkUnit]] = {}  # camera -> its units, for the cameras tracked completely
        self.drawn_on_workers: dict[str, int] = {}  # camera -> pieces of its annotated_global.mp4 the workers drew
        self.interrupted_at_close = False  # Ctrl-C while the workers stopped (see close)

    def __enter__(self) -> "RaySession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (idempotent). Ctrl-C meanwhile waits for the stop to end (no Ray process
        is left behind) and is then noted in ``interrupted_at_close``, not raised: what ran before
        the stop is whole."""
        if self.pool is not None:
            try:
                with stops_held():
                    self.pool.close()
            except KeyboardInterrupt:
                self.interrupted_at_close = True
            self.pool = None

    def track(self, specs: Sequence[str], out_dir: str | Path, cameras: Sequence[str] | None = None,
              progress: bool = True, publish_now: bool = True) -> list[CameraRun]:
        """Track ``specs`` into ``out_dir`` (see the module docstring). Returns one :class:`CameraRun`
        per input, in input order; a failed camera has ``status`` ``failed`` and its one-line
        ``error`` (the others still finish). ``KeyboardInterrupt`` propagates once the workers are
        stopped and the outputs are final. ``publish_now``: as in :func:`pipeline.video.run.track_videos`.
        """
        if not specs:
            raise CrosscamError("track: no input given; pass at least one video file, image folder or URL")
        cfg = self.cfg
        names = list(cameras) if cameras else [default_camera_name(s) for s in specs]
        check_camera_names(specs, cameras, names)
        out_dir = check_out_dir(out_dir)
        import_ray()  # without Ray installed, that is the one thing to say
        if cluster_address(self.address) is None:  # Ray on this machine: its files are the workers' files
            _check_local_inputs(specs, names, cfg)
        for i, (name, spec) in enumerate(zip(names, specs)):
            check_camera_free(out_dir, name)
            check_camera_input(out_dir / name, spec, named=bool(cameras and cameras[i]))
        made = not out_dir.exists()
        runs = [CameraRun(name, out_dir / name, claim=claim) for name, claim in zip(names, claim_cameras(out_dir, names))]
        try:
            for name, spec in zip(names, specs):
                warn_if_another_source(out_dir / name, spec)
            # a camera with earlier outputs is written beside them until complete (pipeline.run_folders.working_folder)
            cams = [_Camera(name, spec, working_folder(out_dir / name), run, i)
                    for i, (name, spec, run) in enumerate(zip(names, specs, runs))]
            start = time.perf_counter()
            pool = self._open_pool()
            driver = _Driver(pool, cams, cfg, progress, time.perf_counter() - start, publish_now)
            try:
                driver.run()
            except (KeyboardInterrupt, Exception) as exc:  # Ctrl-C, a bug, a lost cluster: none left "running"
                self.close()
                driver.stop(None if isinstance(exc, KeyboardInterrupt) else first_line(exc))
                raise
        except BaseException as exc:  # (either releases the cameras too)
            (keep_complete_staged if isinstance(exc, KeyboardInterrupt) else drop_staged)(runs)
            if made and not any(out_dir.iterdir()):  # refused before any output (a cluster too small, unreachable)
                out_dir.rmdir()
            raise
        self._units.update({cam.name: cam.units for cam in cams if cam.run.status == "complete"})
        if publish_now:
            publish_staged(runs)  # the driver put each in place already: this releases the cameras
        return runs

    def _open_pool(self) -> WorkerPool:
        if self.pool is None:
            scale = self.cfg.scale
            self.pool = WorkerPool(SegmentWorker, (self.cfg.model_dump(mode="json"),), self.workers, self.address,
                                   scale.threads_per_worker, self.gpus_per_worker, scale.max_retries).__enter__()
        return self.pool

    def render_global_videos(self, jobs: list[GlobalVideo], progress: bool) -> set[str]:
        """Draw the cameras tracked completely by this session on its workers, in their units
        (:func:`pipeline.scale.global_videos.render_on_workers`); any other camera (tracked by an
        earlier command, or stopped early) here. Returns the cameras written."""
        def on_workers(job: GlobalVideo) -> bool:
            return (self.pool is not None and not job.interrupted and job.camera in self._units
                    and job.source_cfg == self.cfg.source)

        here = [job for job in jobs if not on_workers(job)]
        there = [job for job in jobs if on_workers(job)]
        written = render_global_videos_here(here, progress)
        if there:
            units = {job.camera: self._units[job.camera] for job in there}
            done = render_on_workers(self.pool, there, units, progress)
            self.drawn_on_workers.update({camera: len(units[camera]) for camera in done})
            written |= done
        return written
