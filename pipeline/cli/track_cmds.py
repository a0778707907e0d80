"""``crosscam track``: videos, image folders or streams in; annotated videos, MOT tracks and
per-track summaries out (see :mod:`pipeline.video.run`), then every camera of the run directory
associated into global identities (see :mod:`pipeline.identity.identities`)."""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from pipeline.cli import REID_HELP
from pipeline.config import load_pipeline_config
from pipeline.text import plural
from pipeline.types import read_run_record
from reid.errors import CrosscamError

if TYPE_CHECKING:
    from pipeline.identity.store import EmbedderInfo
    from reid.embedder import Embedder


def _overrides(sets: list[str], detector: str | None, reid: str | None, max_frames: int | None,
               stride: int | None, device: str | None, segment_s: float | None = None) -> list[str]:
    """The shortcut options as ``--set`` items, applied after the user's own ``--set`` items."""
    items = list(sets)
    shortcuts = {
        "detector.model": detector,
        "reid.weights": reid,
        "source.max_frames": max_frames,
        "source.stride": stride,
        "detector.device": device,
        "reid.device": device,
        "scale.segment_s": segment_s,
    }
    # json.dumps quotes strings so that YAML reads a path such as "1.onnx" or "on" as text.
    items += [f"{key}={json.dumps(value)}" for key, value in shortcuts.items() if value is not None]
    return items


def register(app: typer.Typer) -> None:
    """Add ``track`` and ``associate`` to ``app``."""
    app.command("associate")(associate)

    @app.command("track")
    def track(
        inputs: List[str] = typer.Argument(..., metavar="VIDEO",
                                           help="Video files (.mp4, .avi, raw .264 ...), image folders "
                                                "(MOTChallenge SEQ/ or SEQ/img1/) or rtsp:// / http:// URLs."),
        out_text: str = typer.Option(..., "--out", metavar="RUN_DIR", help="Run directory; each camera writes into RUN_DIR/CAMERA/."),
        camera: Optional[List[str]] = typer.Option(None, "--camera", metavar="NAME",
                                                   help="Camera name per input, in order (default: the file stem)."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML config (default configs/base.yaml; association.* of a run with identities: the run's own)."),
        set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help="Override one key, e.g. tracker.max_age=60."),
        detector: Optional[str] = typer.Option(None, "--detector",
                                               help="Ultralytics model (.pt/.onnx path or name), motion or replay."),
        reid: Optional[str] = typer.Option(None, "--reid", help=REID_HELP),
        max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, metavar="N",
                                                 help="Stop after this many source frames per camera."),
        stride: Optional[int] = typer.Option(None, "--stride", min=1, metavar="N", help="Process every n-th frame."),
        device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (detector and ReID)."),
        cameras_file: Optional[Path] = typer.Option(
            None, "--cameras", help="Cameras YAML putting every camera on one clock (start time or offset, "
                                    "optional transit rules); kept in the run directory for later runs."),
        no_identities: bool = typer.Option(False, "--no-identities", help="Track only: the run's identities, store "
                                           "and report stay as they are (default: every camera associated afterwards). "
                                           "A camera already in the store keeps its earlier outputs; the new ones wait in "
                                           "RUN_DIR/.CAMERA.retrack until `crosscam associate RUN_DIR`, and tracking it "
                                           "again is refused until then."),
        workers: Optional[int] = typer.Option(
            None, "--workers", min=1, metavar="N", help="Run the cameras, cut into segments, on N Ray workers (Ray started on "
                                           "this machine unless --ray-address / RAY_ADDRESS names a cluster)."),
        ray_address: Optional[str] = typer.Option(
            None, "--ray-address", help="Join this Ray cluster (e.g. 10.0.0.5:6379); workers default to one per CPU."),
        segment_s: Optional[float] = typer.Option(
            None, "--segment-s", min=0.0, metavar="SECONDS", help="With --workers: cut videos into segments this long (default "
                                               "scale.segment_s, 300; 0: whole videos)."),
        gpus_per_worker: Optional[float] = typer.Option(
            None, "--gpus-per-worker", min=0.0, metavar="SHARE", help="With --workers: GPU share each worker asks for (default: "
                                                     "the cluster's GPUs / workers, 0 without GPUs)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object: run_dir, status (complete, failed, "
                                     "interrupted), identities (identities, multi_camera_identities, tracks, cameras, "
                                     "cameras_updated, common_clock, report; null unless an association finished), "
                                     "cameras (camera, folder, status, error, frames_read, frames_failed, tracks, "
                                     "elapsed_s, frames_per_second, stage_seconds, waiting_in: where new outputs wait "
                                     "for an association). Stopped (exit 130): every camera folder of RUN_DIR as its "
                                     "run.json says now, without the timings."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    ) -> None:
        """Track people in each input: detect, embed, DeepSORT, and write annotated.mp4, tracks.txt
        (MOTChallenge), tracks.json + track_features.npz + thumbs/, and run.json per camera. Then
        associate every camera of RUN_DIR (earlier ones too) into global identities: store/,
        tracks_global.txt, annotated_global.mp4 and report.html.
        Ctrl-C stops cleanly: what was written stays valid and run.json says "interrupted"."""
        from pipeline.identity.identities import check_before_tracking
        from pipeline.run_folders import identities_held
        from pipeline.video.run import check_out_dir, keep_complete_staged, publish_staged, track_videos
        from pipeline.video.sources import default_camera_name
        from reid.embedder import Embedder

        out = check_out_dir(out_text)  # "" is not "."
        identities = not no_identities
        distributed = workers is not None or ray_address is not None
        if ray_address is not None and not ray_address.strip():  # it started a Ray of its own
            raise CrosscamError("--ray-address '': give the cluster's HOST:PORT, or leave the option out")
        if segment_s is not None and not math.isfinite(segment_s):
            raise CrosscamError(f"--segment-s {segment_s}: give a finite number of seconds (0: whole videos)")
        if not distributed and (segment_s is not None or gpus_per_worker is not None):
            raise CrosscamError("--segment-s / --gpus-per-worker apply to Ray runs; add --workers N or --ray-address ADDR")
        cfg = load_pipeline_config(config, _overrides(set_ or [], detector, reid, max_frames, stride, device, segment_s))
        cfg = _kept_association(out, cfg, config, set_ or []) if identities else cfg
        _say_feature_settings_apart(out, camera or [default_camera_name(s) for s in inputs], cfg)
        if distributed and 0 < cfg.scale.segment_s <= cfg.scale.overlap_s:  # no cut would be longer than its overlap
            raise CrosscamError(f"--segment-s {cfg.scale.segment_s:g}: not longer than the segments' overlap "
                                f"(scale.overlap_s {cfg.scale.overlap_s:g}), so nothing would be cut; give a longer one, "
                                "or --set scale.overlap_s lower")
        # What association would refuse afterwards is refused before anything is replaced (with
        # --no-identities too: a later `crosscam associate` of the run would refuse it). A Ray run loads the
        # embedder here only to compare it (workers load their own); a local run compares the one it
        # loaded, once the inputs are open
        check_before_tracking(out, cameras_file, camera or [default_camera_name(s) for s in inputs],
                              (lambda: embedder_info(Embedder.from_config(cfg.reid))) if distributed else None)
        session = None
        if distributed:
            from pipeline.scale.driver import RaySession  # imports Ray only when asked for

            session = RaySession(cfg, workers, ray_address, gpus_per_worker)
        with session or nullcontext():  # the workers stay up for association, then stop
            try:
                if session is not None:
                    runs = session.track(inputs, out, camera, progress=not quiet, publish_now=False)
                else:
                    same_embedder = (lambda names, emb: check_before_tracking(  # the store was read whole above
                        out, cameras_file, names, lambda: embedder_info(emb), intact=False))
                    runs = track_videos(inputs, out, cfg, cameras=camera, progress=not quiet, before=same_embedder,
                                        publish_now=False)
            except KeyboardInterrupt:
                if not out.is_dir() or not any(out.iterdir()):
                    typer.echo(f"interrupted before anything was written to {out}", err=True)
                else:
                    typer.echo(f"interrupted: {out} keeps what was written; the stopped camera's run.json says \"interrupted\" "
                               "(a camera tracked before keeps its earlier outputs); identities are not "
                               f"updated: `crosscam associate {out}` associates the cameras tracked (a stopped one with "
                               "what it tracked)", err=True)
                _echo_interrupted_json(out, as_json)
                raise typer.Exit(130) from None
            linked, waiting = None, {}
            try:  # (a stop here fell through to click: exit 130 without a word, the new outputs left staged)
                complete = all(r.status == "complete" for r in runs)
                # a Ray run's workers draw its cameras' annotated_global.mp4 (pipeline.scale.global_videos)
                render = session.render_global_videos if session is not None else None
                linked = _identities(out, cfg, cameras_file, runs, quiet, render, as_json) if identities and complete else None
                with identities_held(out):  # not while another command associates the run
                    if linked is None:  # not associated: a camera the store holds keeps the outputs it describes
                        stored = _stored_cameras(out)
                        kept = [r for r in runs if r.staged is not None and r.camera in stored]
                        waiting = {r.camera: r.staged for r in kept if r.status == "complete"}
                        keep_complete_staged(kept)
                    publish_staged(runs)  # the others' new outputs replace their earlier ones as they are
            except KeyboardInterrupt:
                keep_complete_staged(runs)
                typer.echo(f"interrupted after tracking: {out}'s identities are up to date" if linked is not None else
                           f"interrupted after tracking, before association: `crosscam associate {out}` associates "
                           "the cameras tracked", err=True)
                _echo_interrupted_json(out, as_json, None if linked is None else _identities_json(linked))
                raise typer.Exit(130) from None
        interrupted = session is not None and session.interrupted_at_close
        result = {
            "run_dir": str(out.resolve()),
            "status": "interrupted" if interrupted else "complete" if complete else "failed",
            "identities": None if linked is None else _identities_json(linked),
            "cameras": [
                {"camera": r.camera, "folder": str(r.folder.resolve()), "status": r.status, "error": r.error,
                 "frames_read": r.frames_read, "frames_failed": r.frames_failed, "tracks": r.num_tracks,
                 "elapsed_s": round(r.elapsed_s, 3), "frames_per_second": round(r.frames_per_second, 2),  # processing speed; run.json's fps is the source's
                 "stage_seconds": r.stage_seconds,
                 "waiting_in": str(waiting[r.camera].resolve()) if r.camera in waiting else None}  # folder keeps the store's run
                for r in runs
            ],
        }
        if as_json:
            typer.echo(json.dumps(result))
        else:
            for cam in result["cameras"]:
                typer.echo(f"{cam['camera']}: {plural(cam['frames_read'], 'frame')}, {plural(cam['tracks'], 'track')}, "
                           f"{cam['frames_per_second']} frames/s -> {cam['folder']}"
                           + (f" ({plural(cam['frames_failed'], 'frame')} could not be decoded)" if cam["frames_failed"] else "")
                           + (f" ({cam['status']}: {cam['error']})" if cam["status"] != "complete" else "")
                           + (f" (waiting in {cam['waiting_in']} for `crosscam associate`)" if cam["waiting_in"] else ""))
        _report_identities(linked, identities, as_json)
        if interrupted:
            typer.echo(f"interrupted while the Ray workers stopped: {out} was written whole (above)", err=True)
            raise typer.Exit(130)
        if not complete:  # a Ray run finishes the other cameras when one fails: say it by the exit status
            raise typer.Exit(2)


def _say_feature_settings_apart(out: Path, cameras: list[str], cfg) -> None:
    """Warn when the cameras are embedded with other feature settings than the run's other cameras."""
    from pipeline.identity.identities import feature_settings_apart

    apart = feature_settings_apart(out, cameras, cfg.reid)
    if apart:
        typer.echo(f"warning: {', '.join(apart)}: this run's other cameras were embedded otherwise, so features compare "
                   "less well across them; give the --config (or --set) they were tracked with", err=True)


def _kept_association(run_dir: Path, cfg, config: Optional[Path], set_: List[str]):
    """``cfg`` with ``run_dir``'s own association settings (those its identities were made with) where
    the command names no ``--config``; ``--set association.KEY=VALUE`` still changes that key."""
    from pipeline.identity.identities import with_kept_association
    from reid.config import overridden

    if config is not None:
        return cfg
    given = {key for key in type(cfg.association).model_fields if overridden(f"association.{key}", set_)}
    cfg, differs = with_kept_association(run_dir, cfg, given)
    if differs:
        typer.echo(f"note: association: {run_dir}'s own settings, which its identities were made with (--config FILE or "
                   "--set association.KEY=VALUE change them)", err=True)
    return cfg


def _echo_interrupted_json(out: Path, as_json: bool, identities: dict | None = None) -> None:
    """With ``--json``, what a stopped run's directory holds now (a script got an empty stdout);
    ``identities``: the association's summary when it finished before the stop."""
    if as_json:
        typer.echo(json.dumps({"run_dir": str(out.resolve()), "status": "interrupted", "identities": identities,
                               "cameras": _camera_states(out)}))


def _camera_states(out: Path) -> list[dict]:
    """Each camera folder of ``out`` as its ``run.json`` says now: status (complete, interrupted,
    failed), error, frames read and failed, tracks (the keys of a finished run's cameras)."""
    from pipeline.run_folders import waiting_retracks

    folders = sorted(f for f in out.iterdir() if not f.name.startswith(".") and (f / "run.json").is_file()) if out.is_dir() else []
    waiting = waiting_retracks(out)
    states = []
    for folder in folders:
        record = read_run_record(folder)
        states.append({"camera": folder.name, "folder": str(folder.resolve()), "status": record.get("status"),
                       "error": record.get("error"), "frames_read": record.get("frames_read"),
                       "frames_failed": record.get("frames_failed"), "tracks": record.get("num_tracks"),
                       "waiting_in": str(waiting[folder.name].resolve()) if folder.name in waiting else None})
    return states


def _stored_cameras(out: Path) -> set[str]:
    """The cameras ``out``'s track store holds (none without a store)."""
    from pipeline.identity.store import TrackStore
    from pipeline.identity.store_db import DB_NAME
    from pipeline.types import STORE_DIR

    if not (out / STORE_DIR / DB_NAME).is_file():
        return set()
    with TrackStore.open(out / STORE_DIR) as store:
        return {camera.name for camera in store.cameras()}


def _identities_json(linked) -> dict:
    """What ``--json`` says of an identities update (an ``IdentityResult``)."""
    return {"identities": linked.identities, "multi_camera_identities": linked.multi_camera_identities,
            "tracks": linked.tracks, "cameras": linked.cameras, "cameras_updated": linked.cameras_updated,
            "common_clock": linked.common_clock, "report": str(linked.report.resolve())}


def _report_identities(linked, identities: bool, as_json: bool) -> None:
    if as_json:
        return
    if linked is not None:
        typer.echo(f"{plural(linked.tracks, 'track')} of {plural(len(linked.cameras), 'camera')} -> "
                   f"{plural(linked.identities, 'identity', 'identities')} ({linked.multi_camera_identities} seen by "
                   f"more than one camera); report: {linked.report}")
    elif identities:
        typer.echo("identities not updated: not every camera completed (see each camera's run.json)", err=True)


def embedder_info(embedder: Embedder) -> EmbedderInfo:
    """What the store and ``run.json`` record of ``embedder``."""
    from pipeline.identity.store import EmbedderInfo

    return EmbedderInfo(embedder.fingerprint, embedder.name, embedder.dim)


def _identities(out: Path, cfg, cameras_file: Optional[Path], runs: list, quiet: bool, render=None,
                as_json: bool = False):
    """``update_identities`` with the cameras tracked again (staged beside their folders), which
    replace their folders as the store takes them (Ctrl-C before that: they wait for the next association).
    ``render``: what draws the global videos (default: this process); ``as_json``: a stop prints the
    run's state on stdout."""
    from pipeline.identity.identities import StoppedAfterStoreUpdate, update_identities
    from pipeline.video.run import keep_complete_staged, publish_staged

    try:
        linked = update_identities(out, cfg, cameras_file, progress=not quiet,
                                   staged={r.camera: r.staged for r in runs if r.staged is not None},
                                   render_videos=render)
        for run in runs:
            run.staged = None  # in place now
        return linked
    except StoppedAfterStoreUpdate:
        publish_staged(runs)  # in place already: this releases the cameras
        typer.echo(f"interrupted: the store and identities include this run's cameras, and their folders hold the "
                   f"new outputs; report.html, tracks_global.txt and annotated_global.mp4 of {out} may be older or "
                   f"missing (`crosscam associate {out}` writes them now)", err=True)
        _echo_interrupted_json(out, as_json)
        raise typer.Exit(130) from None
    except KeyboardInterrupt:
        keep_complete_staged(runs)  # tracked completely: their outputs wait for the next association
        typer.echo(f"interrupted: identities not updated; `crosscam associate {out}` associates this run's cameras",
                   err=True)
        _echo_interrupted_json(out, as_json)
        raise typer.Exit(130) from None
    except BaseException:
        keep_complete_staged(runs)  # the store did not take them: the folders keep the earlier outputs, and the
        raise                       # new ones wait for an association that works (a damaged store moved aside)


def associate(
    run_dir_text: str = typer.Argument(..., metavar="RUN_DIR", help="The --out folder of `crosscam track`."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config (default configs/base.yaml; association.*: the run's own)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                             help="Override one key, e.g. association.threshold=0.6."),
    cameras_file: Optional[Path] = typer.Option(None, "--cameras", help="Cameras YAML putting every camera on one clock."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: run_dir, identities (identities, "
                                 "multi_camera_identities, tracks, cameras, cameras_updated, common_clock, report)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Bring RUN_DIR's identities up to date from its cameras' outputs, without tracking anything:
    the store takes the finished cameras it lacks or holds from other outputs (all of them after
    store/ was deleted), then tracks_global.txt, annotated_global.mp4 and report.html are written.
    What `crosscam track` does after tracking; also finishes a run stopped after its store update."""
    from pipeline.identity.identities import update_identities

    run_dir = Path(run_dir_text)
    if not run_dir_text.strip() or not run_dir.is_dir():
        what = "a file, not a run directory" if run_dir.is_file() else "no such run directory"
        raise CrosscamError(f"{run_dir_text!r}: {what}; give the --out folder of `crosscam track`")
    if (run_dir / "run.json").is_file():
        raise CrosscamError(f"{run_dir}: a camera's folder, not a run directory; give its run, {run_dir.resolve().parent}")
    run_dir = run_dir.resolve()  # its camera folders are renamed as it runs: "RUN/cam1/.." would stop naming it
    cfg = _kept_association(run_dir, load_pipeline_config(config, set_ or []), config, set_ or [])
    try:
        linked = update_identities(run_dir, cfg, cameras_file, progress=not quiet)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {run_dir}'s store keeps its last complete update; run `crosscam associate "
                   f"{run_dir}` again to finish", err=True)
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps({"run_dir": str(run_dir.resolve()), "identities": _identities_json(linked)}))
    else:
        _report_identities(linked, True, False)
