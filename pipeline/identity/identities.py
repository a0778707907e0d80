"""The run-level step after per-camera tracking: global identities across all cameras.

:func:`update_identities` reads each camera's track summaries from the run directory, puts
their times on the common clock (``pipeline.identity.cameras``), associates them with the identities
already in the store (``pipeline.identity.association``), writes the store (``pipeline.identity.store``) and the
outputs: ``<camera>/tracks_global.txt``, ``<camera>/annotated_global.mp4`` and ``report.html``.

It is incremental: a camera whose summaries and clock are unchanged since the last call is not
touched again; a new camera's tracks join the existing identities, which keep their ids.

>>> from pipeline.config import PipelineConfig
>>> result = update_identities(Path("runs/mall"), PipelineConfig())  # doctest: +SKIP
>>> result.identities, result.report  # doctest: +SKIP
(12, PosixPath('runs/mall/report.html'))
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from pydantic import BaseModel

from pipeline.config import PipelineConfig, SourceConfig
from pipeline.identity.association import associate_tracks
from pipeline.identity.cameras import CamerasFile, camera_offsets, load_cameras_file
from pipeline.identity.layout import STORE_DIR, camera_folders, is_camera_folder, run_folders
from pipeline.identity.report import write_report
from pipeline.identity.store import CameraRecord, CameraTracks, EmbedderInfo, TrackStore
from pipeline.identity.store_db import DB_NAME, StoreDamaged
from pipeline.run_folders import (check_camera_free, claim_camera, identities_held, publish, release, running_todo,
                                  waiting_retracks)
from pipeline.stops import stops_held
from pipeline.types import CAMERAS_FILE, TrackSummary, partial_path, read_run_record, read_track_summaries
from pipeline.video.annotate import render_tracks_video
from pipeline.video.sources import open_source, source_warnings_muted
from pipeline.video.tracks_file import TrackRows, read_camera_tracks
from reid.errors import CrosscamError

log = logging.getLogger(__name__)

GLOBAL_VIDEO_STAMP = ".annotated_global.stamp"  # what the finished annotated_global.mp4 shows
QUICK_CHECK_BYTES = 1 << 30  # stores read whole for damage before tracking (a few s at most); larger: said as read


class StoppedAfterStoreUpdate(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) once the store had taken the run's cameras and their folders were in
    place: only ``tracks_global.txt``, ``annotated_global.mp4`` and ``report.html`` may be older
    or missing, until the next update writes them."""


@dataclass
class IdentityResult:
    """What :func:`update_identities` did."""

    run_dir: Path
    cameras_updated: list[str]  # cameras whose tracks were (re)associated this time
    cameras: list[str]  # every camera in the store
    tracks: int  # tracks in the store
    identities: int  # identities in the store
    multi_camera_identities: int  # identities seen by more than one camera
    common_clock: bool  # False: times are seconds from each video's start
    report: Path


@dataclass
class _CameraInput:
    name: str
    folder: Path
    run: dict  # the camera's run.json
    record: CameraRecord
    shift_s: float  # added to the camera's own track times to put them on the common clock

    @cached_property
    def summaries(self) -> list[TrackSummary]:
        """Common-clock times, thumbnails relative to the run directory; read only when needed
        (an unchanged camera's are not)."""
        return [
            replace(
                t,
                camera=self.name,
                # to the microsecond: index / fps and the shift leave float noise (11.200000000000001)
                start_s=round(t.start_s + self.shift_s, 6),
                end_s=round(t.end_s + self.shift_s, 6),
                thumbnail=f"{self.name}/{t.thumbnail}" if t.thumbnail else None,
            )
            for t in _unreadable_is_one_line(self.folder, read_track_summaries)
        ]


def update_identities(
    run_dir: str | Path,
    config: PipelineConfig,
    cameras_file: str | Path | None = None,
    progress: bool = True,
    staged: Mapping[str, Path] | None = None,
    render_videos: VideoRenderer | None = None,
) -> IdentityResult:
    """Associate every camera of ``run_dir`` into global identities and write the outputs.

    ``cameras_file`` (YAML, see ``pipeline.identity.cameras``) is copied to ``RUN_DIR/cameras.yaml`` and
    used by later calls too; without one, times are seconds from each video's start.
    ``staged`` maps a camera tracked again to its new outputs beside its folder
    (:func:`pipeline.run_folders.working_folder`): they are read in its place and replace it right after
    the store takes them, so the folder and the store never disagree for longer than a rename.
    Cameras tracked again completely by a run whose association did not finish are staged so too
    (:func:`pipeline.run_folders.waiting_retracks`).
    ``render_videos`` draws the cameras' ``annotated_global.mp4`` that are out of date (default:
    :func:`render_global_videos_here`).
    """
    run_dir = Path(run_dir)
    with identities_held(run_dir), _with_waiting_retracks(run_dir, dict(staged or {})) as staged:
        return _update_identities(run_dir, config, cameras_file, progress, staged, render_videos)


@contextmanager
def _with_waiting_retracks(run_dir: Path, staged: dict[str, Path]) -> Iterator[dict[str, Path]]:
    """``staged`` and the cameras tracked again completely whose outputs wait beside them, each
    claimed as a tracking command claims it (one being tracked right now is that command's to put
    in place); the claims are released at the end."""
    claims, adopted = [], []
    try:
        for name, work in waiting_retracks(run_dir).items():
            if name in staged:
                continue
            try:
                claims.append(claim_camera(run_dir, name))
            except CrosscamError:
                continue
            if work.is_dir():  # not put in place by another command before the claim
                staged[name] = work
                adopted.append(name)
        yield staged
        for name in adopted:  # said once they are in place (not when the update failed)
            log.warning("%s: its new outputs that waited for an association are in place now, with the identities",
                        name)
    finally:
        release(claims)


def _update_identities(run_dir: Path, config: PipelineConfig, cameras_file: str | Path | None, progress: bool,
                       staged: dict[str, Path], render_videos: VideoRenderer | None) -> IdentityResult:
    spec = _cameras_spec(run_dir, cameras_file)
    for folder in (f for f in _folders_without_summaries(run_dir) if f.name not in staged):  # staged: read anew
        status = read_run_record(folder).get("status")
        if status == "running":  # being tracked, or its command was killed
            log.warning("%s: run.json says running and no tracks are written yet: left out of the identities (%s)",
                        folder.name, running_todo(run_dir, folder.name))
        elif status in ("interrupted", "failed"):  # a Ray camera stopped before its first segment finished
            log.warning("%s: %s before any tracks were written: left out of the identities; track it again",
                        folder.name, status)
        else:
            log.warning("%s: run.json but no tracks.json (deleted?): its tracks are not read again (the store keeps "
                        "what it had for it); re-run `crosscam track` for this camera", folder.name)
    present = camera_folders(run_dir, allow_none=bool(staged))
    # a staged camera is read from its new outputs, its folder deleted or emptied meanwhile too
    folders = [staged.get(f.name, f) for f in present] + [w for n, w in staged.items() if n not in {f.name for f in present}]
    name_of = {folder: _camera_name(folder, staged) for folder in folders}
    runs = {name_of[folder]: _read_run_json(folder) for folder in folders}
    folders = [f for f in folders if _finished(run_dir, name_of[f], runs[name_of[f]])]
    if not folders:
        raise CrosscamError(f"{run_dir}: no camera run has finished (status complete or interrupted); "
                            "run `crosscam track` again")
    runs = {name_of[f]: runs[name_of[f]] for f in folders}
    embedder = _embedder_info(runs)
    offsets, common = camera_offsets(
        list(runs), spec, str(cameras_file or run_dir / CAMERAS_FILE)
    )
    store = TrackStore.create(run_dir / STORE_DIR, embedder, config.store)
    stored_now = False
    try:
        stored = {c.name: c for c in store.cameras()}
        for name in sorted(n for n in stored if not (run_dir / n).is_dir() and n not in staged):
            log.warning("%s: in the store but its folder %s is gone; its tracks stay in the store and answers "
                        "(to drop the camera: delete %s and run `crosscam associate %s`)",
                        name, run_dir / name, run_dir / STORE_DIR, run_dir)
        inputs = [_camera_input(name_of[f], f, runs[name_of[f]], offsets[name_of[f]], common) for f in folders]
        settings = {"association": association_settings(config, spec), "clock_origin": clock_origin_text(spec)}
        kept = {key: store.setting(key) for key in settings}
        if stored and kept["association"] != settings["association"]:
            log.warning("association settings or transit rules %s since the store was written: every camera is "
                        "associated again (identity ids are kept where the same people group again)",
                        _changes(kept["association"], settings["association"]))
            stored = {}
        changed = [c for c in inputs if stored.get(c.name) != c.record]
        updates = _associated(store, changed, config, spec, progress) if changed else []
        with stops_held():  # the store takes them and their folders follow at once, or neither
            # (a write builds a damaged index file again, and keeps a clock origin moved with every start)
            if updates or not store.index_is_intact() or kept != settings:
                store.write(updates, settings)
            for name, work in staged.items():
                publish(run_dir / name, work)
            stored_now = True
        inputs = [replace(c, folder=run_dir / c.name) for c in inputs]

        _keep_cameras_file(run_dir, cameras_file)
        identities = {cam.name: {t.track_id: t.identity for t in store.tracks(camera=cam.name)} for cam in inputs}
        for cam in inputs:
            write_global_tracks(cam.folder, identities[cam.name])  # cheap: always, so it can never be stale
        _drop_global_outputs_outside(run_dir, {c.name for c in store.cameras()})
        if config.output.video:
            _refresh_global_videos(inputs, identities, progress, render_videos or render_global_videos_here)

        report = write_report(run_dir, store, common)
    except KeyboardInterrupt as exc:
        if stored_now:
            raise StoppedAfterStoreUpdate() from exc
        raise
    tracks = store.tracks()
    cameras_per_identity: dict[int, set[str]] = {}
    for t in tracks:
        cameras_per_identity.setdefault(t.identity, set()).add(t.camera)
    return IdentityResult(
        run_dir=run_dir,
        cameras_updated=[c.name for c in changed],
        cameras=[c.name for c in store.cameras()],  # in counting_order
        tracks=len(tracks),
        identities=len(cameras_per_identity),
        multi_camera_identities=sum(len(c) > 1 for c in cameras_per_identity.values()),
        common_clock=common,
        report=report,
    )


# Values a store kept without the key imply: it was written before the key existed, when crosscam
# behaved so (same-camera joins were allowed until join_same_camera came, and on by default until 2026-12-07).
KEPT_BEFORE_THE_KEY: dict[str, object] = {"join_same_camera": True}


def with_kept_association(run_dir: str | Path, config: PipelineConfig, overridden: Iterable[str] = ()) -> tuple[PipelineConfig, bool]:
    """``config`` with the association settings ``run_dir``'s store was last associated with, but for
    the ``association.*`` keys in ``overridden`` (given on the command line): for a command that names
    no config, so a run tracked with ``--config configs/demo.yaml`` or ``--set association.*`` keeps its
    identities' settings when a camera is added or ``associate`` runs. True when a kept value differs
    from ``config``'s. A key the store lacks takes the value crosscam had before it
    (:data:`KEPT_BEFORE_THE_KEY`), else ``config``'s; a key this crosscam no longer has is left out.
    No store, none kept (an older crosscam) or unreadable: ``config`` as it is (the association then
    says what is wrong)."""
    folder = Path(run_dir) / STORE_DIR
    if not (folder / DB_NAME).is_file():
        return config, False
    try:  # a busy store is said (one line), not taken for one without settings
        with TrackStore.open(folder) as store:
            kept = json.loads(store.setting("association") or "null")["association"]
    except (StoreDamaged, TypeError, KeyError, ValueError):  # ValueError: json's
        return config, False
    given = config.association.model_dump()
    if not isinstance(kept, dict):
        return config, False
    overridden = set(overridden)
    merged = {key: value if key in overridden else kept.get(key, KEPT_BEFORE_THE_KEY.get(key, value))
              for key, value in given.items()}
    try:
        association = type(config.association).model_validate(merged)
    except ValueError:  # a kept value this crosscam refuses
        return config, False
    return config.model_copy(update={"association": association}), association.model_dump() != given


def _changes(kept: str | None, now: str) -> str:
    """What differs between two :func:`association_settings`: ``"changed (association.threshold 0.825 ->
    0.9, transit rules)"``; ``kept`` None: written by an older crosscam."""
    if kept is None:
        return "unknown (an older crosscam wrote it)"
    after = json.loads(now)
    try:
        before = json.loads(kept)
    except ValueError:
        before = None
    old = before.get("association") if isinstance(before, dict) else None
    if not isinstance(old, dict):  # unreadable: said as changed, without the keys
        return "changed"
    new = after["association"]
    keys = [f"association.{key} {old.get(key, '(none)')} -> {new[key]}" for key in new if old.get(key) != new[key]]
    keys += ["transit rules"] if before.get("transitions") != after["transitions"] else []
    return f"changed ({', '.join(keys)})" if keys else "changed"


def clock_origin_text(spec: CamerasFile | None) -> str:
    """When the common clock's 0 s is (ISO 8601), where the cameras file gives start times; else ''."""
    origin = spec.clock_origin() if spec is not None else None
    return origin.isoformat(sep=" ") if origin is not None else ""


def association_settings(config: PipelineConfig, spec: CamerasFile | None) -> str:
    """The settings a run's identities depend on beyond its tracks: ``association.*`` and the cameras
    file's transit rules (JSON). A store associated with others is associated again as a whole."""
    transitions = None
    if spec is not None and (spec.transitions.rules or spec.transitions.only_listed):  # else: clocks only, no rule
        rules = sorted([*sorted(r.cameras), r.min_s, r.max_s] for r in spec.transitions.rules)  # either way, any order
        transitions = {"only_listed": spec.transitions.only_listed, "rules": rules}
    return json.dumps({"association": config.association.model_dump(), "transitions": transitions}, sort_keys=True)


def _associated(store: TrackStore, changed: list["_CameraInput"], config: PipelineConfig,
                spec: CamerasFile | None, progress: bool) -> list[CameraTracks]:
    """The changed cameras' tracks associated with the stored tracks of the others: the store's update."""
    changed_names = {c.name for c in changed}
    known, known_ids = store.summaries()
    keep = [i for i, t in enumerate(known) if t.camera not in changed_names]
    replaced = [i for i, t in enumerate(known) if t.camera in changed_names]
    tracks = [t for c in changed for t in c.summaries]
    first_new = store.max_identity() + 1  # ids of replaced tracks are not handed out again
    result = associate_tracks(
        tracks,
        config.association,
        spec.transit() if spec is not None else None,
        [known[i] for i in keep],
        [known_ids[i] for i in keep],
        progress=progress,
        first_new_identity=first_new,
    )
    ids = iter(keep_earlier_ids(
        tracks, result.identity_ids.tolist(), [known[i] for i in replaced], [known_ids[i] for i in replaced],
        used={known_ids[i] for i in keep}, first_new=first_new,
    ))
    log.info("identities: %d links, %d merges, %d blocked by constraints (features %s)",
             result.links_considered, result.merges, result.blocked_by_constraints,
             "centred per camera" if result.centered else "raw")
    return [CameraTracks(c.record, c.summaries, [next(ids) for _ in c.summaries]) for c in changed]


def keep_earlier_ids(tracks: Sequence[TrackSummary], ids: Sequence[int], earlier: Sequence[TrackSummary],
                     earlier_ids: Sequence[int], used: set[int], first_new: int) -> list[int]:
    """Identity ids for re-associated ``tracks`` (given ``ids`` by association), keeping the id an
    identity had before where it is the same track of the same camera (same track id and frames):
    a camera given a clock, or tracked again with most tracks unchanged, keeps its people's ids.

    A fresh id (``>= first_new``) becomes the earlier id most of its unchanged tracks had, unless
    that id is ``used`` by tracks association kept or another identity claimed it first (larger
    identities first). Ids association linked to kept tracks stay as they are.

    >>> from pipeline.types import TrackSummary
    >>> t = lambda i: TrackSummary("hall", i, 0, 9, 0.0, 0.9, 10, None, None)
    >>> keep_earlier_ids([t(1), t(2), t(3)], [20, 20, 21], [t(1), t(2)], [7, 7], used={5}, first_new=20)
    [7, 7, 21]
    """
    def same(t: TrackSummary) -> tuple:
        return t.camera, t.track_id, t.first_frame, t.last_frame

    before = {same(t): i for t, i in zip(earlier, earlier_ids)}
    votes: dict[int, Counter[int]] = defaultdict(Counter)  # fresh id -> earlier id -> unchanged tracks
    for t, i in zip(tracks, ids):
        if i >= first_new and same(t) in before:
            votes[i][before[same(t)]] += 1
    taken, mapping = set(used), {}
    for fresh in sorted(votes, key=lambda i: (-votes[i].total(), i)):
        best = max(votes[fresh].items(), key=lambda kv: (kv[1], -kv[0]))[0]
        if best not in taken:
            mapping[fresh], taken = best, taken | {best}
    return [mapping.get(i, i) for i in ids]


def _folders_without_summaries(run_dir: Path) -> list[Path]:
    """Camera folders of ``run_dir`` that hold no ``tracks.json`` although their ``run.json`` says
    they finished (complete, interrupted) or run, in counting order (a failed one is said with the failure)."""
    return [p for p in run_folders(run_dir) if not (p / "tracks.json").is_file()
            and read_run_record(p).get("status") in ("complete", "interrupted", "running")]


def _drop_global_outputs_outside(run_dir: Path, stored: set[str]) -> None:
    """A camera folder the store does not hold (its summaries were deleted, its run failed after
    store/ was): its ``tracks_global.txt`` and ``annotated_global.mp4`` name identities that no
    longer hold, so they go."""
    for folder in run_folders(run_dir):
        stale = [f for f in (folder / "tracks_global.txt", folder / "annotated_global.mp4") if f.is_file()]
        if folder.name not in stored and stale:
            for file in stale:
                file.unlink()
            (folder / GLOBAL_VIDEO_STAMP).unlink(missing_ok=True)
            log.warning("%s: not in the identities; its %s, whose ids no longer hold, removed", folder.name,
                        " and ".join(f.name for f in stale))


def _finished(run_dir: Path, camera: str, run: dict) -> bool:
    """Whether a camera's run ended with tracks worth associating (complete or interrupted)."""
    status = run.get("status")
    if status == "interrupted":
        log.warning("%s: run.json says interrupted; its tracks up to where it stopped are in the identities "
                    "(run `crosscam track` again for the whole video)", camera)
    if status in ("complete", "interrupted"):
        return True
    todo = running_todo(run_dir, camera) if status == "running" else "re-run `crosscam track` for this camera"
    log.warning("%s: run.json status %r; left out of the identities (the store keeps what it had for it); %s",
                camera, status, todo)
    return False


FEATURE_SETTINGS = ("flip", "preprocess", "precision", "camera_colour")  # reid.* keys that change a crop's feature


def feature_settings_apart(run_dir: str | Path, cameras: Sequence[str], reid: BaseModel) -> list[str]:
    """The ``reid.*`` settings that change features (:data:`FEATURE_SETTINGS`) in which ``reid`` differs
    from what ``run_dir``'s other cameras were tracked with, as ``"reid.flip True (the run's: False)"``:
    their features compare less well across cameras, though the embedder is the same."""
    configs = [read_run_record(f).get("config") for f in run_folders(Path(run_dir)) if is_camera_folder(f) and f.name not in cameras]
    runs = [c["reid"] for c in configs if isinstance(c, dict) and isinstance(c.get("reid"), dict)]  # a damaged one: not compared
    apart = []
    for key in FEATURE_SETTINGS:
        used = sorted({str(run[key]) for run in runs if key in run})
        if used and str(getattr(reid, key)) not in used:
            apart.append(f"reid.{key} {getattr(reid, key)} (the run's: {', '.join(used)})")
    return apart


def check_before_tracking(run_dir: Path, cameras_file: str | Path | None, cameras: Sequence[str],
                          embedder: Callable[[], EmbedderInfo] | None = None, intact: bool = True) -> None:
    """Refuse, before ``cameras`` are tracked into ``run_dir``, what :func:`update_identities` would
    refuse after it (when a camera's earlier outputs are already replaced): a cameras file (given,
    or the run's kept one) that does not load or lacks one of the run's cameras, a store that
    cannot be read, and, with ``embedder`` (called only when the run has other cameras or a store:
    it may load the model), an embedder other than the one the run's other cameras were tracked
    with or its store was built for. ``intact``: also read the whole store (up to
    :data:`QUICK_CHECK_BYTES`) for damage; once per command is enough."""
    run_dir = Path(run_dir)
    for name in cameras:  # held by another command, or with outputs waiting: before any model loads
        check_camera_free(run_dir, name)
    spec = _cameras_spec(run_dir, cameras_file)
    others = [f for f in run_folders(run_dir) if is_camera_folder(f) and f.name not in cameras]
    camera_offsets(sorted({*cameras, *(f.name for f in others)}), spec, str(cameras_file or run_dir / CAMERAS_FILE))
    has_store = (run_dir / STORE_DIR / DB_NAME).is_file()
    store = TrackStore.open(run_dir / STORE_DIR) if has_store else None
    if store is not None and intact and (run_dir / STORE_DIR / DB_NAME).stat().st_size <= QUICK_CHECK_BYTES:
        store.check_intact()  # a damaged store is said now, not after the cameras were tracked (a larger one: as read)
    if store is not None:
        store.check_writable()  # a read-only one too
    if embedder is None or (not others and store is None):
        return
    embedder = embedder()
    if store is not None:
        TrackStore.open(run_dir / STORE_DIR, embedder)  # another embedder's store is refused in one line
    if not others:
        return
    used = _embedder_info({f.name: _read_run_json(f) for f in others})
    if (used.fingerprint, used.dim) != (embedder.fingerprint, embedder.dim):
        raise CrosscamError(
            f"--reid: {embedder.name} ({embedder.fingerprint[:12]}, dim {embedder.dim}) is not the embedder this "
            f"run's cameras {', '.join(f.name for f in others)} were tracked with ({used.name}, "
            f"{used.fingerprint[:12]}, dim {used.dim}); give that --reid, or another --out"
        )


def _cameras_spec(run_dir: Path, cameras_file: str | Path | None) -> CamerasFile | None:
    kept = run_dir / CAMERAS_FILE
    if cameras_file is None:
        return load_cameras_file(kept) if kept.is_file() else None
    return load_cameras_file(cameras_file)


def _keep_cameras_file(run_dir: Path, cameras_file: str | Path | None) -> None:
    """Copy the cameras file into the run (atomically) once the store has been written with it."""
    kept = run_dir / CAMERAS_FILE
    if cameras_file is not None and Path(cameras_file).resolve() != kept.resolve():
        tmp = kept.with_name(f".{CAMERAS_FILE}.partial")
        shutil.copyfile(cameras_file, tmp)
        os.replace(tmp, kept)


def _read_run_json(folder: Path) -> dict:
    path = folder / "run.json"
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CrosscamError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); re-run "
                            "`crosscam track` for this camera") from None


def _embedder_info(runs: dict[str, dict]) -> EmbedderInfo:
    infos = {}
    for camera, run in runs.items():
        reid = run.get("models", {}).get("reid")
        if not reid:
            raise CrosscamError(f"{camera}/run.json: no models.reid entry; re-run `crosscam track` for this camera")
        infos[camera] = EmbedderInfo(reid["fingerprint"], reid["name"], int(reid["dim"]))
    first_camera, first = next(iter(infos.items()))
    for camera, info in infos.items():
        if (info.fingerprint, info.dim) != (first.fingerprint, first.dim):
            raise CrosscamError(
                f"{camera}/run.json: tracked with embedder {info.name} ({info.fingerprint[:12]}, dim "
                f"{info.dim}) but {first_camera} with {first.name} ({first.fingerprint[:12]}, dim {first.dim}); "
                f"features are not comparable, re-run one of them with the other's --reid"
            )
    return first


def _camera_name(folder: Path, staged: dict[str, Path]) -> str:
    """The camera whose outputs ``folder`` holds: its own name, or the one it is staged for."""
    return next((name for name, work in staged.items() if work == folder), folder.name)


def _camera_input(name: str, folder: Path, run: dict, offset: float, common: bool) -> _CameraInput:
    size = run.get("frame_size")
    record = CameraRecord(
        name=name,
        time_offset_s=offset,
        common_clock=common,
        source=str(run.get("source", "")),
        fps=run.get("fps"),
        frame_size=tuple(size) if size else None,
        frames_read=run.get("frames_read"),
        summaries_digest=_unreadable_is_one_line(folder, _summaries_digest),
    )
    return _CameraInput(name, folder, run, record, offset - float(run.get("time_offset_s", 0.0)))


def _unreadable_is_one_line(folder: Path, read):
    """``read(folder)``, with a broken or missing summaries file as a one-line error."""
    try:
        return read(folder)
    except (ValueError, KeyError, OSError) as exc:
        raise CrosscamError(
            f"{folder}: tracks.json / track_features.npz unreadable ({str(exc).splitlines()[0][:80]}); "
            "re-run `crosscam track` for this camera"
        ) from None


def _summaries_digest(folder: Path) -> str:
    """Changes whenever the camera's track summaries do."""
    digest = hashlib.sha256()
    for name in ("tracks.json", "track_features.npz"):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def write_global_tracks(folder: Path, identity_of: dict[int, int]) -> Path:
    """``tracks_global.txt``: the camera's ``tracks.txt`` with each track id replaced by its identity."""
    source = folder / "tracks.txt"
    out = folder / "tracks_global.txt"
    lines = []
    if source.is_file():
        for line in source.read_text().splitlines():
            fields = line.split(",")
            if len(fields) < 6:
                continue
            identity = identity_of.get(int(float(fields[1])))
            if identity is not None:  # tracks without a summary (none in practice) are left out
                lines.append(",".join([fields[0], str(identity), *fields[2:]]) + "\n")
    tmp = partial_path(out)
    tmp.write_text("".join(lines))
    os.replace(tmp, out)
    return out


@dataclass
class GlobalVideo:
    """One camera's ``annotated_global.mp4`` to draw: each of its tracks' rows in its identity's
    colour (``identity_of``: track id -> identity), over every frame of its source (an interrupted
    run's: up to its last tracked frame). The rows are read when drawn (:meth:`rows`), so a run of
    many long cameras holds one camera's rows at a time."""

    camera: str
    folder: Path
    source: str  # the camera's input, as its run.json records it
    source_cfg: SourceConfig  # the source settings it was tracked with (stride, frame range)
    identity_of: dict[int, int]
    interrupted: bool  # the camera's run stopped early

    @property
    def out(self) -> Path:
        return self.folder / "annotated_global.mp4"

    def rows(self) -> TrackRows:
        return read_camera_tracks(self.folder)


# Draws the given videos, returning the cameras whose video was written: render_global_videos_here
# (this process, one after another), or a Ray run's workers (pipeline.scale.driver.RaySession).
VideoRenderer = Callable[[list[GlobalVideo], bool], set[str]]


def _refresh_global_videos(cams: list[_CameraInput], identities: dict[str, dict[int, int]], progress: bool,
                           render: VideoRenderer) -> None:
    """Render each camera's ``annotated_global.mp4`` unless the one there was finished for its tracks
    and ids (``identities``: camera -> track id -> identity).

    A stamp beside it, written only once a render completes, records what it shows; an
    interrupted render (or a later change of identities) leaves no matching stamp.
    """
    stamps, jobs = {}, []
    for cam in cams:
        identity_of = identities[cam.name]
        stamp_path = cam.folder / GLOBAL_VIDEO_STAMP
        stamp = json.dumps({"tracks": cam.record.summaries_digest, "identities": sorted(identity_of.items())})
        source_cfg = SourceConfig.model_validate(cam.run.get("config", {}).get("source", {}))
        job = GlobalVideo(cam.name, cam.folder, cam.record.source, source_cfg, identity_of,
                          cam.run.get("status") == "interrupted")
        if job.out.is_file() and stamp_path.is_file() and stamp_path.read_text() == stamp:
            continue
        stamp_path.unlink(missing_ok=True)
        stamps[cam.name] = (stamp_path, stamp)
        jobs.append(job)
    for name in render(jobs, progress) if jobs else ():
        stamp_path, stamp = stamps[name]
        stamp_path.write_text(stamp)


def render_global_videos_here(jobs: list[GlobalVideo], progress: bool) -> set[str]:
    """Draw each video in this process (:func:`render_global_video`); the cameras written."""
    return {job.camera for job in jobs if render_global_video(job, progress)}


def render_global_video(job: GlobalVideo, progress: bool) -> bool:
    """Re-read the camera's source and draw each box in its identity's colour with its id.

    Returns False (with a warning) when the source cannot be read again, e.g. a live stream or
    a video that was moved.
    """
    with source_warnings_muted():  # the source's warnings were said when the camera was tracked
        try:
            source = open_source(job.source, job.camera, job.source_cfg)
        except CrosscamError as exc:
            log.warning("%s: annotated_global.mp4 not written (%s)", job.camera, exc)
            return False
        rows = job.rows()
        # An interrupted run stopped early: its annotated video ends at its last tracked frame too.
        stop = int(rows.frame.max(initial=-1)) + 1 if job.interrupted else None
        with source:
            render_tracks_video(source, rows, job.out, job.identity_of, (0, stop), progress=progress,
                                desc=f"global ids: {job.camera}", ids="identities")
    return True
