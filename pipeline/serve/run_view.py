"""The run directory as ``crosscam serve`` reads it: cameras, frames, boxes, the store.

Reads only; nothing is written into the run. Everything read from the store goes through
:meth:`RunView.consistent`, which reads the store's generation before and after and reads again
when a concurrent ``crosscam track`` committed in between, so an answer never mixes two states
of the store. Cameras are listed afresh on each call (a camera whose ``run.json`` appears is
shown without a restart); frames readers, box tables and the identity overview are kept and
re-read when their file or the store's generation changes.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.identity.layout import STORE_DIR, run_folders, run_inside
from pipeline.identity.query import colour_normalised
from pipeline.identity.report import IdentityOverview, identity_overviews, last_tracked_frame, recorded_stride, run_title
from pipeline.identity.store import TrackStore
from pipeline.identity.store_db import DB_NAME, StoreDamaged
from pipeline.serve.frames import CameraFrames, FrameNotFound, open_frames, readable_source
from pipeline.video.render import color_for_id
from pipeline.video.tracks_file import read_tracks_file
from reid.errors import CrosscamError

T = TypeVar("T")
READ_ATTEMPTS = 8  # consistent reads tried before giving up on a store rewritten that often
RETRY_WAIT_S = 0.02  # seconds; the n-th retry waits n times this
MAX_BOX_FRAMES = 2000  # frames of boxes one request may ask for


class ApiError(CrosscamError):
    """A one-line error with the HTTP status it answers with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def hex_colour(identity: int) -> str:
    """``color_for_id``'s colour (the one ``annotated_global.mp4`` draws) as ``#rrggbb``."""
    b, g, r = color_for_id(identity)
    return f"#{r:02x}{g:02x}{b:02x}"


@dataclass
class _BoxTable:
    """One camera's ``tracks.txt``, sorted by frame: ``frames`` (N,) 0-based, ``ids`` (N,),
    ``xyxy`` (N, 4) pixels, ``conf`` (N,)."""

    stamp: tuple[int, int]
    frames: np.ndarray
    ids: np.ndarray
    xyxy: np.ndarray
    conf: np.ndarray


class RunView:
    """Read access to one run directory for the web app (thread-safe)."""

    def __init__(self, run_dir: Path, config: PipelineConfig | None = None):
        self.run_dir = Path(run_dir).resolve()
        if not self.run_dir.is_dir():
            raise CrosscamError(f"{run_dir}: no such run directory; run `crosscam track ... --out {run_dir}` first")
        inner = run_inside(self.run_dir)
        if inner is not None:
            raise CrosscamError(f"{run_dir}: not a run directory, but {inner} is one: crosscam serve {inner}")
        self.config = config or PipelineConfig()
        self._lock = threading.Lock()
        self._store: TrackStore | None = None
        self._store_file: tuple[int, int] | None = None  # (device, inode) of the database self._store opened
        self._frames: dict[str, tuple[tuple[str, bool, int], CameraFrames]] = {}
        self._boxes: dict[str, _BoxTable] = {}
        self._overviews: tuple[int, list[IdentityOverview]] | None = None

    # -- the store, one generation at a time ---------------------------------------------------
    def store(self) -> TrackStore:
        """The run's store; 409 while the run has none (yet, or again: deleted while serving)."""
        with self._lock:
            try:
                stat = (self.run_dir / STORE_DIR / DB_NAME).stat()
            except FileNotFoundError:
                self._store = self._store_file = None
                raise ApiError(409, f"{self.run_dir / STORE_DIR}: no track store yet; run `crosscam track ... "
                                    f"--out {self.run_dir}` or `crosscam associate {self.run_dir}` (the page "
                                    "picks it up when it appears)") from None
            if self._store is None or self._store_file != (stat.st_dev, stat.st_ino):
                self._store = TrackStore.open(self.run_dir / STORE_DIR, config=self.config.store)
                self._store_file = (stat.st_dev, stat.st_ino)
            return self._store

    def store_id(self) -> str | None:
        """Which store this is (its uid; ``device-inode`` of its database for an older one), None
        without one: a store deleted and made again starts its generations again, so the page
        watches both."""
        try:
            store = self.store()
            file = self._store_file
            return store.uid() or "-".join(map(str, file or ()))
        except ApiError:
            return None

    def generation(self) -> int | None:
        """The store's generation, None without a store."""
        try:
            return self.store().generation()
        except ApiError:
            return None

    def clock_origin(self) -> str | None:
        """When the run's clock reads 0 s (ISO 8601), where the cameras file gave start times; else None."""
        try:
            return self.store().setting("clock_origin") or None
        except ApiError:
            return None

    def consistent(self, read: Callable[[TrackStore], T]) -> T:
        """``read(store)`` run until no write committed while it ran (at most READ_ATTEMPTS times)."""
        store = self.store()
        for attempt in range(READ_ATTEMPTS):
            time.sleep(RETRY_WAIT_S * attempt)  # let a writer that keeps committing finish its run of writes
            before = store.generation()
            try:
                result = read(store)
            except (KeyError, CrosscamError):
                if store.generation() != before:
                    continue  # a write landed mid-read: a key or file it named is gone
                raise
            if store.generation() == before:
                return result
        raise ApiError(503, f"{store.folder}: rewritten during each of {READ_ATTEMPTS} reads in a row; try again")

    # -- cameras ---------------------------------------------------------------------------------
    def camera_names(self) -> list[str]:
        """Cameras with a folder and ``run.json`` (running ones included), in counting order (cam2 before cam10)."""
        return [p.name for p in run_folders(self.run_dir)]

    def camera_folder(self, camera: str) -> Path:
        """``camera``'s folder: one of :meth:`camera_names`, checked without listing the run (a
        request per camera would list it once per camera)."""
        plain = camera and not camera.startswith(".") and "/" not in camera and "\\" not in camera
        if not plain or not (self.run_dir / camera / "run.json").is_file():
            known = ", ".join(self.camera_names()) or "none yet"
            raise ApiError(404, f"camera {camera!r}: not a camera of this run; its cameras: {known}")
        return self.run_dir / camera

    def run_json(self, camera: str) -> dict:
        path = self.camera_folder(camera) / "run.json"
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raise ApiError(409, f"{path}: unreadable (being rewritten?); try again") from None

    def frames(self, camera: str) -> CameraFrames:
        """The camera's frames reader, opened again when its ``run.json`` names another source."""
        run = self.run_json(camera)
        source = str(run.get("source") or "")
        # whether the source is still there is part of the key: a process that opened it before it
        # was deleted would go on showing it while the others show annotated.mp4
        key = (source, readable_source(source) is not None, recorded_stride(run))
        with self._lock:
            cached = self._frames.get(camera)
            if cached is None or cached[0] != key:
                fps = float(run.get("fps") or self.config.source.default_fps)
                self._frames[camera] = (key, open_frames(self.run_dir / camera, source, fps, recorded_stride(run)))
            return self._frames[camera][1]

    def cameras(self) -> list[dict]:
        """Per camera: name, status, fps, frame size, frame count, clock offset, tracks in the store,
        the last source frame tracking reached (``--max-frames``, Ctrl-C stop it before the video's
        end), where its frames come from (or why they cannot be shown), whether its crops went
        through a colour table (``reid.camera_colour``: a photo from it should too)."""
        records, counts = {}, {}
        try:
            if self.generation() is not None:
                records, counts = self.consistent(
                    lambda store: ({c.name: c for c in store.cameras()}, Counter(t.camera for t in store.tracks()))
                )
        except StoreDamaged:  # the cameras and their frames still show; queries say what is wrong
            pass
        out = []
        for name in self.camera_names():
            run = self.run_json(name)
            record = records.get(name)
            entry = {
                "name": name,
                "status": run.get("status"),
                "fps": run.get("fps"),
                "frame_size": run.get("frame_size"),
                "time_offset_s": record.time_offset_s if record else float(run.get("time_offset_s", 0.0)),
                "common_clock": bool(record and record.common_clock),
                "in_store": record is not None,
                "colour_normalised": colour_normalised(run),
                "stride": recorded_stride(run),  # annotated.mp4 holds every stride-th source frame
                "tracks": counts.get(name, 0),
                "first_tracked_frame": self._first_tracked_frame(name),
                "last_tracked_frame": last_tracked_frame(run),
                "frames": None,
                "frames_from": None,
                "frames_error": None,
            }
            try:
                frames = self.frames(name)
                entry["frames"], entry["frames_from"] = frames.count, frames.origin
            except CrosscamError as exc:
                entry["frames_error"] = str(exc)
            out.append(entry)
        return out

    # -- boxes -----------------------------------------------------------------------------------
    def boxes(self, camera: str, start: int, count: int) -> dict[int, list[dict]]:
        """Boxes of frames ``start .. start + count - 1`` of ``camera`` (0-based), by frame: track id,
        identity (None before the camera is in the store), xyxy pixels, confidence, identity colour."""
        if count < 1 or count > MAX_BOX_FRAMES or start < 0:
            raise ApiError(400, f"frames {start}+{count}: ask for 1..{MAX_BOX_FRAMES} frames from frame 0 on")
        table = self._box_table(camera)
        identity_of = {}
        if self.generation() is not None:
            identity_of = self.consistent(lambda store: {t.track_id: t.identity for t in store.tracks(camera=camera)})
        lo, hi = np.searchsorted(table.frames, [start, start + count])
        out: dict[int, list[dict]] = {}
        for i in range(lo, hi):
            track_id = int(table.ids[i])
            identity = identity_of.get(track_id)
            out.setdefault(int(table.frames[i]), []).append({
                "track_id": track_id,
                "identity": identity,
                "box": [round(float(v), 2) for v in table.xyxy[i]],
                "confidence": round(float(table.conf[i]), 4),
                "color": hex_colour(identity) if identity is not None else "#9e9e9e",
            })
        return out

    def _first_tracked_frame(self, camera: str) -> int | None:
        frames = self._box_table(camera).frames
        return int(frames[0]) if len(frames) else None

    def _box_table(self, camera: str) -> _BoxTable:
        path = self.camera_folder(camera) / "tracks.txt"
        if not path.is_file():
            return _BoxTable((0, 0), *(np.zeros((0,) + s) for s in ((), (), (4,), ())))
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._boxes.get(camera)
        if cached is not None and cached.stamp == stamp:
            return cached
        rows = read_tracks_file(path).sorted()
        table = _BoxTable(stamp, rows.frame, rows.track_id, rows.xyxy, rows.confidence)
        with self._lock:
            self._boxes[camera] = table
        return table

    # -- identities ------------------------------------------------------------------------------
    def overviews(self) -> list[IdentityOverview]:
        """:func:`pipeline.identity.report.identity_overviews` of the current generation (kept until it changes)."""
        generation = (self.store_id(), self.store().generation())
        with self._lock:
            if self._overviews is not None and self._overviews[0] == generation:
                return self._overviews[1]

        def read(store: TrackStore) -> tuple[tuple[str | None, int], list[IdentityOverview]]:
            return (generation[0], store.generation()), identity_overviews(self.run_dir, store)

        generation, overviews = self.consistent(read)
        with self._lock:
            self._overviews = (generation, overviews)
        return overviews

    def title(self) -> str:
        return run_title(self.run_dir, self.camera_names())

    def frame_jpeg(self, camera: str, index: int, width: int | None) -> tuple[bytes, float]:
        """Frame ``index`` of ``camera`` as JPEG and its time in seconds from the video's first frame."""
        frames = self.frames(camera)
        try:
            return frames.jpeg(index, width), frames.time_s(index)
        except FrameNotFound as exc:
            raise ApiError(404, f"camera {camera}: {exc}") from None

    def frame_image(self, camera: str, index: int) -> np.ndarray:
        """Frame ``index`` of ``camera``, ``(H, W, 3) uint8`` BGR as decoded."""
        try:
            return self.frames(camera).image(index)
        except FrameNotFound as exc:
            raise ApiError(404, f"camera {camera}: {exc}") from None
