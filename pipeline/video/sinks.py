"""Where a camera's results go: the annotated video, MOTChallenge ``tracks.txt`` and per-track
summaries (``tracks.json`` + ``track_features.npz`` + ``thumbs/``).

Each sink is a context manager with ``write(result)`` and ``close()``. Files are written under a
temporary name and renamed by ``close()``, which ``__exit__`` always runs, so an interrupted run
still leaves a finalised video, a flushed ``tracks.txt`` and the summaries of what was seen.

>>> with MotTracksWriter("cam1/tracks.txt") as sink:  # doctest: +SKIP
...     for result in results:
...         sink.write(result)
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from pipeline.text import clock_text
from pipeline.types import FrameResult, TrackObservation, TrackSummary, partial_path
from pipeline.video.render import draw_tracks
from pipeline.video.track_state import TrackAccumulator, write_track_states
from pipeline.video.tracks_file import mot_line
from reid.errors import CrosscamError
from reid.paths import check_video_written, check_writable_here

MIN_VIDEO_FPS = 0.002  # frames/s: the slowest MP4 FFmpeg wrote here (10 fps over --stride 5000; 10000 failed)


class _Sink:
    """Open/close bookkeeping shared by the sinks; subclasses implement ``write`` and ``_finish``."""

    closed = False

    def write(self, result: FrameResult) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finalise the output (idempotent)."""
        if not self.closed:
            self.closed = True
            self._finish()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _video_writer(path: Path, codec: str, fps: float, frame_size: tuple[int, int]) -> cv2.VideoWriter:
    """An OpenCV writer, its own error lines held back (a writer that did not open is said in one line)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, frame_size)
    finally:
        cv2.utils.logging.setLogLevel(level)


IdKind = Literal["tracks", "identities"]
ID_CAPTIONS: dict[str, str] = {"tracks": "ids: this camera's tracks", "identities": "ids: identities across cameras"}


class AnnotatedVideoWriter(_Sink):
    """Frames with each track's box and id drawn in its colour, as ``path`` (e.g. annotated.mp4).

    Every frame that reaches the sink is written, with or without tracks, so the video has as
    many frames as were processed. A caption at the bottom left, under the boxes, says the camera, the
    frame index (0-based, as queries give it), its time in the video and which ids the boxes carry (``ids``: per-camera track ids, or
    identities across cameras as in ``annotated_global.mp4``). Interpolated boxes are drawn dashed. ``trail_length`` > 0
    draws each track's recent box bottoms.

    >>> with AnnotatedVideoWriter("annotated.mp4", fps=10.0, frame_size=(768, 432)) as video:  # doctest: +SKIP
    ...     video.write(result)
    """

    def __init__(self, path: str | Path, fps: float, frame_size: tuple[int, int], codec: str = "mp4v",
                 trail_length: int = 0, ids: IdKind = "tracks"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = partial_path(self.path)
        if fps < MIN_VIDEO_FPS:  # FFmpeg's MPEG-4 encoder has no time base for it
            raise CrosscamError(f"{self.path.name} at {fps:g} frames/s (the source's rate over --stride) cannot be "
                                "written; give a smaller --stride, or --set output.video=false")
        self._writer = _video_writer(self._tmp, codec, fps, frame_size)
        if not self._writer.isOpened():
            check_writable_here(self._tmp)  # a full disk or a read-only folder, not the codec
            hint = "use mp4v" if codec != "mp4v" else "this OpenCV writes no MP4 (is it built with FFmpeg?)"
            raise CrosscamError(f"output.codec={codec!r}: OpenCV cannot write {self.path.suffix} with it; {hint}")
        self.frame_size = frame_size
        self.frames_written = 0
        self._trail_length = trail_length
        self._trails: dict[int, deque] = {}
        self._ids_are = ID_CAPTIONS[ids]

    def write(self, result: FrameResult) -> None:
        tracks = result.tracks
        xyxy = np.array([t.xyxy for t in tracks], np.float32).reshape(-1, 4)
        ids = np.array([t.track_id for t in tracks], np.int64)
        dashed = np.array([t.interpolated for t in tracks], bool)
        frame = result.frame
        where = f"frame {frame.index} | video {clock_text(frame.time_s)}"
        caption = (f"{frame.camera} | {where} | {self._ids_are}", f"{frame.camera} | frame {frame.index} | {self._ids_are}",
                   f"frame {frame.index} | {self._ids_are}")  # the first that fits the frame
        image = draw_tracks(frame.image, xyxy, ids, trails=self._update_trails(tracks), dashed=dashed, caption=caption)
        if (image.shape[1], image.shape[0]) != self.frame_size:  # streams may change resolution
            image = cv2.resize(image, self.frame_size)
        self._writer.write(image)
        self.frames_written += 1

    def _update_trails(self, tracks: list[TrackObservation]) -> dict[int, deque] | None:
        if self._trail_length <= 0:
            return None
        seen = set()
        for t in tracks:
            bottom = (float(t.xyxy[0] + t.xyxy[2]) / 2.0, float(t.xyxy[3]))
            self._trails.setdefault(t.track_id, deque(maxlen=self._trail_length)).append(bottom)
            seen.add(t.track_id)
        for track_id in [k for k in self._trails if k not in seen]:  # only live tracks keep trails
            del self._trails[track_id]
        return self._trails

    def _finish(self) -> None:
        self._writer.release()
        try:
            check_video_written(self._tmp, self.frames_written, self.path)  # OpenCV's writer says nothing of a full disk
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        self._tmp.replace(self.path)

    def discard(self) -> None:
        """Drop what was written (a redraw that stopped): ``path`` keeps what it held."""
        if not self.closed:
            self.closed = True
            self._writer.release()
            self._tmp.unlink(missing_ok=True)


class MotTracksWriter(_Sink):
    """MOTChallenge lines ``frame,id,x,y,w,h,conf,-1,-1,-1`` (frame 1-based), flushed per frame.

    >>> with MotTracksWriter("tracks.txt") as mot:  # doctest: +SKIP
    ...     mot.write(result)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = partial_path(self.path)
        self._file = open(self._tmp, "w")

    def write(self, result: FrameResult) -> None:
        if not result.tracks:
            return
        lines = [mot_line(result.frame.index, t.track_id, t.xyxy, t.confidence) for t in result.tracks]
        self._file.writelines(lines)
        self._file.flush()

    def _finish(self) -> None:
        self._file.close()
        self._tmp.replace(self.path)


class TrackSummaryWriter(_Sink):
    """Collect each track's appearance and extent; on close write the summaries and thumbnails.

    Each track is a :class:`pipeline.video.track_state.TrackAccumulator`: the aggregate ``feature`` is
    the quality-weighted mean of the track's unit features, renormalised (a crop with low
    confidence, a small or cut-off box counts less); up to ``representatives`` individual
    features are picked from a bounded, evenly thinned sample of the track (farthest-point order,
    starting from the best-quality crop); the thumbnail is the best-quality crop, as JPEG.
    Observations without a feature (low-confidence, interpolated) extend the track only.

    >>> with TrackSummaryWriter("out/cam1", "cam1", frame_size=(768, 432)) as summaries:  # doctest: +SKIP
    ...     summaries.write(result)
    """

    def __init__(self, folder: str | Path, camera: str, frame_size: tuple[int, int], representatives: int = 5,
                 thumbnails: bool = True):
        self.folder = Path(folder)
        self.camera = camera
        self.frame_size = frame_size
        self.representatives = representatives
        self.thumbnails = thumbnails
        self.tracks: dict[int, TrackAccumulator] = {}
        self.summaries: list[TrackSummary] = []
        self.frames_written = 0  # frames the outputs cover (fewer than decoded after a Ctrl-C)

    def write(self, result: FrameResult) -> None:
        frame = result.frame
        self.frames_written += 1
        for obs in result.tracks:
            acc = self.tracks.get(obs.track_id)
            if acc is None:
                acc = self.tracks[obs.track_id] = TrackAccumulator.start(frame.index, frame.time_s, self.representatives)
            acc.add(obs, frame, self.thumbnails)

    def _finish(self) -> None:
        self.summaries = write_track_states(self.folder, self.camera, self.tracks, self.representatives,
                                            self.thumbnails)
