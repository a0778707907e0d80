"""``crosscam track`` as a function: every camera's chain run into one run directory.

For each camera ``RUN_DIR/<camera>/`` receives ``annotated.mp4``, ``tracks.txt``,
``tracks.json`` + ``track_features.npz`` + ``thumbs/`` and ``run.json``. ``run.json`` is written
when the camera starts (status ``running``) and rewritten when it ends: ``complete``,
``interrupted`` (Ctrl-C; the outputs written so far are finalised and valid) or ``failed``
(with the error). Cameras run one after another; the detector and embedder are loaded once.

>>> from pipeline.config import load_pipeline_config
>>> cfg = load_pipeline_config(None, ["detector.model=motion"])
>>> runs = track_videos(["cam1.mp4"], "runs/x", cfg)  # doctest: +SKIP
>>> runs[0].status, runs[0].num_tracks  # doctest: +SKIP
('complete', 3)
"""

from __future__ import annotations

import logging
import platform
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

from pipeline.colour import CameraColour
from pipeline.config import PipelineConfig
from pipeline.run_folders import (CAMERA_FOLDER_FIX, check_camera_free, check_camera_input, check_run_directory,
                                  claim_cameras, keep_earlier, make_folder, publish, publish_between_associations,
                                  release, wait_for_association, warn_if_another_source, working_folder,
                                  write_json_atomic)
from pipeline.text import first_line, plural
from pipeline.types import RUN_LEVEL_NAMES, FrameResult, read_track_summaries
from pipeline.video.chain import SharedFrames, StageTimes, build_chain
from pipeline.video.detectors import Detector, build_detector
from pipeline.video.finalise import finalise_camera, relinked_record
from pipeline.video.refine.lookback import LookBack
from pipeline.video.sinks import AnnotatedVideoWriter, MotTracksWriter, TrackSummaryWriter
from pipeline.video.sources import FrameSource, mot_sequence_dir, open_source
from pipeline.video.tracking import PersonTracker
from reid import Embedder
from reid.errors import CrosscamError
from reid.paths import output_folder
from reid.progress import progress_bar

log = logging.getLogger(__name__)

PACKAGES = ("crosscam", "numpy", "opencv-python", "torch", "ultralytics", "deep-sort-realtime", "onnxruntime")


@dataclass
class CameraRun:
    """What one camera's run produced (also what ``run.json`` holds, minus the config)."""

    camera: str
    folder: Path
    status: str = "running"
    frames_read: int = 0  # frames decoded and tracked into the outputs
    frames_failed: int = 0
    num_tracks: int = 0
    elapsed_s: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    staged: Path | None = None  # complete outputs beside ``folder``, not yet in its place (see publish)
    claim: IO | None = field(default=None, repr=False)  # this process's hold on the camera (see claim_camera)

    @property
    def frames_per_second(self) -> float:
        return self.frames_read / self.elapsed_s if self.elapsed_s > 0 else 0.0


def package_versions() -> dict[str, str]:
    """Installed versions of the packages whose behaviour shapes the outputs."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def resolved_config(cfg: PipelineConfig) -> dict:
    """The config as JSON, with model paths that exist on disk made absolute (reproducible)."""
    data = cfg.model_dump(mode="json")
    for section, key in (("detector", "model"), ("detector", "replay_file"), ("reid", "weights")):
        value = data[section][key]
        if value is not None and Path(value).is_file():
            data[section][key] = str(Path(value).resolve())
    return data


def utc_now() -> str:
    """Now, as ISO 8601 UTC to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_camera_count(specs: Sequence[str], cameras: Sequence[str] | None) -> None:
    """One ``--camera`` per input or none, none of them empty (a one-line error)."""
    if cameras and len(cameras) != len(specs):
        raise CrosscamError(f"--camera: {plural(len(cameras), 'name')} for {plural(len(specs), 'input')}; "
                            "give one --camera per input or none")
    if cameras and not all(name.strip() for name in cameras):
        raise CrosscamError("--camera '': an empty camera name; give each input a name, or leave --camera out "
                            "(the file names are used)")


MAX_CAMERA_NAME_BYTES = 200  # file names are at most 255 bytes; the run's hidden files add to a camera's name


def check_camera_names(specs: Sequence[str], cameras: Sequence[str] | None, names: Sequence[str]) -> None:
    """One ``--camera`` per input or none, each name a plain folder name of the run directory
    (not ``..``, no ``/``, not the store's or another run-level file's), and no name twice (one-line errors)."""
    check_camera_count(specs, cameras)
    for spec, name in zip(specs, names):
        # (case-blind: Store and report.HTML are those names on a case-insensitive file system)
        if not name or name.startswith(".") or "/" in name or "\\" in name or name.lower() in RUN_LEVEL_NAMES:
            given = f"--camera {name!r}" if cameras else f"camera name {name!r} (from {spec})"
            raise CrosscamError(f"{given}: a camera name must be a plain folder name (no '/', not starting "
                                f"with '.', not {', '.join(sorted(RUN_LEVEL_NAMES))}); give another --camera")
        try:
            size = len(name.encode())
        except UnicodeEncodeError:  # a file name in another encoding: the store keeps names as UTF-8
            raise CrosscamError(f"camera name {name!r} (from {spec}): not UTF-8 text; give it a --camera") from None
        if size > MAX_CAMERA_NAME_BYTES:  # its hidden .NAME.retrack and .NAME.lock must fit in 255
            given = f"--camera {name[:40]!r}..." if cameras else f"camera name {name[:40]!r}... (from {spec})"
            raise CrosscamError(f"{given}: a camera name is at most {MAX_CAMERA_NAME_BYTES} bytes "
                                f"({size} given); give a shorter --camera")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CrosscamError(f"--camera: camera name {duplicates[0]!r} is used twice; give each input its own --camera")


def check_out_dir(out_dir: str | Path) -> Path:
    """``--out`` as a folder that exists or can be made there (a one-line error otherwise);
    nothing is created yet, so a bad input later leaves no trace. Not inside another run's camera
    folder or store. Absolute, symbolic links and ".." resolved: the camera folders it holds are
    renamed while a command runs ("RUN/cam1/.." would stop naming the run)."""
    out_dir = output_folder(out_dir, "--out").resolve()
    check_run_directory(out_dir)
    return out_dir


def track_videos(specs: Sequence[str], out_dir: str | Path, cfg: PipelineConfig,
                 cameras: Sequence[str] | None = None, progress: bool = True,
                 before: Callable[[list[str], Embedder], None] | None = None,
                 publish_now: bool = True) -> list[CameraRun]:
    """Track every input (video file, image folder or stream URL) into ``out_dir``.

    All inputs are opened and the models loaded before any processing starts, so a bad input
    fails fast with one line; so does ``before(camera names, embedder)``, called then (the CLI
    checks the run accepts this embedder). ``KeyboardInterrupt`` propagates after the current
    camera's outputs are finalised and its ``run.json`` says ``interrupted``. With ``publish_now``
    false, a camera tracked again is left ``staged`` beside its earlier outputs, for the caller to
    put in place when the store takes it (``update_identities(..., staged=...)``).
    """
    if isinstance(specs, (str, Path)):  # one path is a sequence of its characters
        raise CrosscamError(f"specs {str(specs)!r}: give a list of inputs, e.g. [{str(specs)!r}]")
    if not specs:
        raise CrosscamError("track: no input given; pass at least one video file, image folder or URL")
    check_camera_count(specs, cameras)
    out_dir = check_out_dir(out_dir)
    with ExitStack() as stack:
        sources, unreadable = [], []
        for i, spec in enumerate(specs):  # every input that cannot be read is said, not only the first
            try:
                sources.append(stack.enter_context(open_source(spec, cameras[i] if cameras else None, cfg.source)))
            except CrosscamError as exc:
                unreadable.append(str(exc))
        if unreadable:
            raise CrosscamError(unreadable[0] if len(unreadable) == 1 else
                                f"{len(unreadable)} of the {len(specs)} inputs cannot be read: {' | '.join(unreadable)}")
        check_camera_names(specs, cameras, [s.camera for s in sources])
        for i, source in enumerate(sources):
            check_camera_free(out_dir, source.camera)
            check_camera_input(out_dir / source.camera, source.uri, named=bool(cameras and cameras[i]))
        detectors = [build_detector(cfg.detector, mot_sequence_dir(s)) for s in sources]
        embedder = Embedder.from_config(cfg.reid)
        if before is not None:
            before([s.camera for s in sources], embedder)
        claims = claim_cameras(out_dir, [s.camera for s in sources])
        runs: list[CameraRun] = []
        try:
            for source in sources:
                warn_if_another_source(out_dir / source.camera, source.uri)
            for source, detector, claim in zip(sources, detectors, claims):
                runs.append(track_camera(source, detector, embedder, out_dir / source.camera, cfg, progress,
                                         publish_now))
                runs[-1].claim = claim  # held until its outputs are in place (publish_staged / drop_staged)
        except BaseException as exc:
            # Ctrl-C: a camera tracked again completely before the stop keeps its new outputs beside
            # it for the next association; after an error the earlier outputs stay
            (keep_complete_staged if isinstance(exc, KeyboardInterrupt) else drop_staged)(runs)
            release(claims[len(runs):])  # the cameras not tracked
            raise
        if publish_now:
            publish_staged(runs)  # each is in place already: this releases the cameras
        return runs


def drop_staged(runs: Sequence[CameraRun]) -> None:
    """Discard the staged outputs of ``runs`` (their cameras keep their earlier ones); release the cameras."""
    _settle(runs, keep_earlier)


def publish_staged(runs: Sequence[CameraRun]) -> None:
    """Put the staged outputs of ``runs`` in their cameras' places; release the cameras."""
    _settle(runs, publish)


def keep_complete_staged(runs: Sequence[CameraRun]) -> None:
    """After Ctrl-C: the complete staged outputs of ``runs`` wait beside their cameras' folders
    (:func:`pipeline.run_folders.waiting_retracks`) until an association puts them in place with
    the store, so the folder and the store stay one run's; the others are discarded (those
    cameras keep their earlier outputs); release the cameras."""
    _settle([r for r in runs if r.status == "complete"], wait_for_association)
    _settle([r for r in runs if r.status != "complete"], keep_earlier)


def _settle(runs: Sequence[CameraRun], put: Callable[[Path, Path], None]) -> None:
    """``put(folder, staged)`` for each run with staged outputs, then release every run's camera."""
    for run in runs:
        if run.staged is not None:
            put(run.folder, run.staged)
            run.staged = None
    release([run.claim for run in runs])
    for run in runs:
        run.claim = None


def track_camera(source: FrameSource, detector: Detector, embedder, folder: Path, cfg: PipelineConfig,
                 progress: bool = True, publish_now: bool = True) -> CameraRun:
    """Run one camera's chain into ``folder`` and write its ``run.json``; returns the summary.

    A camera with earlier outputs is tracked again beside them (``.<camera>.retrack``) and
    replaces them only once complete (``publish_now``; else ``run.staged`` names it): Ctrl-C or an
    error keeps the earlier outputs."""
    work = working_folder(folder)
    try:
        run = _track_into(source, detector, embedder, work, cfg, progress)
    except BaseException:
        keep_earlier(folder, work)
        raise
    run.folder = folder
    if publish_now:
        publish_between_associations(folder, work)
    elif work != folder:
        run.staged = work
    return run


def _track_into(source: FrameSource, detector: Detector, embedder, folder: Path, cfg: PipelineConfig,
                progress: bool) -> CameraRun:
    make_folder(folder, CAMERA_FOLDER_FIX)
    run = CameraRun(source.camera, folder)
    record = {
        "camera": source.camera,
        "source": source.uri,
        "fps": source.fps,
        "frame_size": list(source.frame_size),
        "time_offset_s": 0.0,
        "config": resolved_config(cfg),
        "versions": package_versions(),
        "models": models_record(detector, embedder),
        "started_at": utc_now(),
    }
    write_json_atomic(folder / "run.json", _run_record(record, run, source))
    times = StageTimes()
    colour = CameraColour(cfg.reid.camera_colour)
    start = time.perf_counter()
    summaries: TrackSummaryWriter | None = None
    try:
        with ExitStack() as sinks_stack:
            sinks = _open_sinks(sinks_stack, source, folder, cfg)
            summaries = sinks[-1]
            # Closed before the sinks (last in, first out): frames still held are written on Ctrl-C.
            chain = sinks_stack.enter_context(closing(camera_chain(source, detector, embedder, sinks, cfg, times,
                                                                   colour)))
            bar = sinks_stack.enter_context(
                progress_bar(total=source.frames_expected, desc=source.camera, unit="frame", disable=not progress)
            )
            for _ in chain:
                bar.update()
        with times.measure("finalise"):
            finalised = finalise_camera(folder, summaries.tracks, source, cfg)
        record["relinked"] = relinked_record(finalised.links, finalised.id_map, finalised.redrawn)
        run.status = "complete"
    except KeyboardInterrupt:
        run.status = "interrupted"
        raise
    except Exception as exc:
        run.status, run.error = "failed", first_line(exc)
        raise
    finally:
        # The sinks are closed by now (the with block has exited), so the summaries are final.
        run.elapsed_s = time.perf_counter() - start
        run.stage_seconds = {k: round(v, 4) for k, v in times.items()}
        run.num_tracks = _count_tracks(folder) if summaries is not None else 0
        # Frames the outputs cover: after a Ctrl-C the frames decoded ahead of tracking are not among them.
        run.frames_read = summaries.frames_written if summaries is not None else 0
        run.frames_failed = source.frames_failed
        record["colour"] = colour.describe()  # what query_image needs to treat a photo as this camera's
        blind = getattr(detector, "blind_count", 0)
        if blind:
            record["detector_blind_frames"] = blind
            warn_blind_frames(source.camera, blind, detector.blind_frames[0])
        write_json_atomic(folder / "run.json", _run_record(record, run, source))
    return run


def warn_blind_frames(camera: str, count: int, first: int) -> None:
    """Say that the motion detector found no one in ``count`` frames from frame ``first`` (0-based)
    because most of the picture moved (a crowd, a moving camera, a light change)."""
    log.warning("%s: in %s (from frame %d) most of the picture moved, so the motion detector relearned its "
                "background and found no one there; for crowds or a moving camera use a YOLO detector (--detector)",
                camera, plural(count, "frame"), first)


def models_record(detector: Detector, embedder) -> dict:
    """What ``run.json`` says of the models: the detector's and the embedder's names and
    fingerprints, the embedder's feature size, runtime and the pixels it feeds the network."""
    return {
        "detector": {"name": detector.name, "fingerprint": detector.fingerprint},
        "reid": {"name": embedder.name, "fingerprint": embedder.fingerprint, "dim": embedder.dim,
                 "runtime": embedder.runtime, "pixels": getattr(embedder, "pixels", None)},
    }


def camera_chain(source: FrameSource, detector: Detector, embedder, sinks: list, cfg: PipelineConfig,
                 times: StageTimes, colour: CameraColour, shared: SharedFrames | None = None) -> Iterator[FrameResult]:
    """One camera's chain (:func:`pipeline.video.chain.build_chain`) as ``cfg`` sets it up: the one way
    every path (this one, a Ray worker's unit) builds it. ``shared``: frames other chains process too."""
    low = cfg.detector.low_confidence
    return build_chain(
        source, detector, embedder, PersonTracker(cfg.tracker), sinks,
        cfg.detector.batch_size, cfg.detector.min_box_size, times,
        prefetch_frames=cfg.detector.prefetch * cfg.detector.batch_size, colour=colour,
        low_below=None if low is None else cfg.detector.confidence,
        lookback=LookBack.for_tracker(cfg.tracker), stride=cfg.source.stride, shared=shared,
    )


def _count_tracks(folder: Path) -> int:
    """Tracks in the camera's summaries as written (after re-linking, when it ran)."""
    return len(read_track_summaries(folder)) if (folder / "tracks.json").is_file() else 0


def _open_sinks(stack: ExitStack, source: FrameSource, folder: Path, cfg: PipelineConfig) -> list:
    out = cfg.output
    sinks = []
    if out.video:
        fps = source.fps / cfg.source.stride
        trail = out.trail_length if out.trails else 0
        sinks.append(stack.enter_context(
            AnnotatedVideoWriter(folder / "annotated.mp4", fps, source.frame_size, out.codec, trail)
        ))
    sinks.append(stack.enter_context(MotTracksWriter(folder / "tracks.txt")))
    sinks.append(stack.enter_context(
        TrackSummaryWriter(folder, source.camera, source.frame_size, out.representatives, out.thumbnails)
    ))
    return sinks


def _run_record(record: dict, run: CameraRun, source: FrameSource) -> dict:
    return {
        **record,
        "status": run.status,
        "error": run.error,
        "frames_read": run.frames_read,
        "frames_failed": source.frames_failed,
        "num_tracks": run.num_tracks,
        "elapsed_s": round(run.elapsed_s, 3),
        "stage_seconds": run.stage_seconds,
        "finished_at": None if run.status == "running" else utc_now(),
    }
