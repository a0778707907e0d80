"""Where frames come from: video files, image folders and live streams, behind one iterator.

Every source yields :class:`pipeline.types.Frame` objects (``(H, W, 3) uint8`` BGR images) with
the camera name, the 0-based index in the source and a time in seconds, and counts what it read
and what it could not decode. Strided frames are skipped without being decoded.

>>> from pipeline.config import SourceConfig
>>> with open_source("../shared/videos/one-by-one-person-detection.mp4", None,
...                  SourceConfig(max_frames=2)) as src:  # doctest: +SKIP
...     [f.index for f in src]
[0, 1]
"""

from __future__ import annotations

import configparser
import logging
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from pipeline.config import SourceConfig
from pipeline.text import counting_order
from pipeline.types import Frame, FrameRange, kept_frames
from reid.errors import CrosscamError
from reid.image_files import read_image_file

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
SKIPS_SAID = 10  # undecodable frames said one by one per source; the rest are counted


class FrameSource(ABC):
    """A camera's frames; iterate once, close when done (a context manager).

    Attributes after opening: ``uri`` (absolute path or URL), ``fps``, ``frame_size`` ``(w, h)``,
    ``frames_total`` (source frames, ``None`` for streams), ``frames`` (the :class:`FrameRange`
    iterated; files and folders only); while iterating: ``frames_read`` (frames yielded) and
    ``frames_failed`` (frames that could not be decoded and were skipped).
    """

    def __init__(self, uri: str, camera: str, cfg: SourceConfig, frames: FrameRange | None = None):
        self.uri = uri
        self.camera = camera
        self.cfg = cfg
        self.frames = frames or FrameRange()
        self.fps: float = cfg.default_fps
        self.frame_size: tuple[int, int] = (0, 0)
        self.frames_total: int | None = None
        self.frames_read = 0
        self.frames_failed = 0

    @property
    def frames_end(self) -> int | None:
        """One past the last source index iteration can reach (range end, ``max_frames``, length)."""
        ends = [e for e in (self.frames_total, self.cfg.max_frames, self.frames.end) if e is not None]
        return min(ends) if ends else None

    @property
    def frames_expected(self) -> int | None:
        """How many frames iteration will yield at most (for progress bars), ``None`` if unknown."""
        end = self.frames_end
        return None if end is None else kept_frames(self.frames.start, end, self.cfg.stride)

    def _keep(self, index: int) -> bool:
        return index % self.cfg.stride == 0

    def _past_limit(self, index: int) -> bool:
        limits = [e for e in (self.cfg.max_frames, self.frames.end) if e is not None]
        return bool(limits) and index >= min(limits)

    def _skip_failed(self, index: int, why: str) -> None:
        self.frames_failed += 1
        if self.frames_failed <= SKIPS_SAID:
            log.warning("%s: frame %d skipped (%s)%s", self.uri, index, why,
                        "; further skipped frames are only counted (run.json: frames_failed)"
                        if self.frames_failed == SKIPS_SAID else "")

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None:
        """Release the underlying reader; safe to call twice."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _estimates_its_count(container) -> bool:
    """Whether OpenCV's frame count of this PyAV ``container`` is an estimate (duration x a rate): its
    video stream records no count (Matroska, WebM, MPEG-TS, FLV, raw streams; MP4 and AVI record one)."""
    return not container.streams.video[0].frames


def stream_header_rate(path: Path) -> float | None:
    """The frame rate a raw H.264 / H.265 stream's sequence header gives (its VUI timing, which cameras
    and encoders usually write), or None where it gives none."""
    import av

    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].codec_context.framerate
    except (av.FFmpegError, OSError, IndexError):
        return None
    return float(rate) if rate and 0 < float(rate) < 1000 else None


def _length_s(container) -> float:
    """Seconds from a PyAV ``container``'s first frame to its end (Matroska counts its duration from 0,
    whatever its clock's start; others give the length itself)."""
    start = (container.start_time or 0) if "matroska" in container.format.name else 0
    return (container.duration - start) / 1_000_000  # av.time_base: microseconds


# elementary streams, no container: no timestamps, a rate only where their headers carry timing
RAW_STREAMS = {".264": "H.264", ".h264": "H.264", ".avc": "H.264", ".265": "H.265", ".h265": "H.265", ".hevc": "H.265"}


class VideoFileSource(FrameSource):
    """Any file OpenCV's FFmpeg backend decodes (``.mp4``, ``.avi``, raw ``.264`` ...).

    Times come from the container's timestamps when it has them, else from ``index / fps``.
    A frame that fails to decode is skipped, counted and logged; after
    ``cfg.max_decode_failures`` consecutive failures the rest of the file is given up.
    """

    def __init__(self, path: Path, camera: str, cfg: SourceConfig, frames: FrameRange | None = None):
        super().__init__(str(path.resolve()), camera, cfg, frames)
        if not path.is_file():
            raise CrosscamError(f"{path}: video file not found; check the path")
        if path.stat().st_size == 0:
            raise CrosscamError(f"{path}: file is empty; pass a video file")
        self._cap, first = self._open_at_start(path)
        self._first: np.ndarray | None = first
        self.frame_size = (self._first.shape[1], self._first.shape[0])
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        raw = path.suffix.lower() in RAW_STREAMS  # OpenCV says 25 fps for any of them
        header_rate = stream_header_rate(path) if raw else None
        self.fps = fps if 0.0 < fps < 1000.0 and not raw else header_rate or cfg.default_fps
        if raw and not header_rate and frames is None:  # said once per camera, not per segment
            log.warning("%s: a raw %s stream without timing in its headers carries no frame rate; timed at %g fps "
                        "(set source.default_fps)", path, RAW_STREAMS[path.suffix.lower()], self.fps)
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frames_total = count if count > 0 else None
        self._first_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        self._last_ms: tuple[float, float] | None = None  # the last two frames read: their timestamps (ms)
        self._first_index = 0
        self._iterated = False
        self.seek = "none"  # how the range start was reached: none | seek | decode
        if self.frames.start > 0:
            self._go_to(path, self.frames.start)

    @staticmethod
    def _open_at_start(path: Path) -> tuple[cv2.VideoCapture, np.ndarray]:
        """The capture, and frame 0 read from it."""
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        ok, first = cap.read() if cap.isOpened() else (False, None)
        if not ok or first is None:
            cap.release()
            raise CrosscamError(f"{path}: not a readable video (OpenCV/FFmpeg cannot decode it); pass a video file")
        return cap, first

    def _go_to(self, path: Path, start: int) -> None:
        """Make ``start`` the first frame read: a seek where the container reports landing exactly
        there (frame number, and timestamp where it has them), else decode from the first frame and
        drop the frames before ``start`` (raw ``.264`` streams have no index to seek with)."""
        self._first_index = start
        if self._cap.set(cv2.CAP_PROP_POS_FRAMES, start) and round(self._cap.get(cv2.CAP_PROP_POS_FRAMES)) == start:
            ok, image = self._cap.read()
            if ok and image is not None and self._on_time(start):
                self._first, self.seek = image, "seek"
                return
        self._cap.release()
        self._cap, _ = self._open_at_start(path)
        self.seek = "decode"
        for _ in range(start - 1):
            if not self._cap.grab():
                self._first = None  # the file ends before the range starts: nothing to read
                return
        ok, image = self._cap.read()
        self._first = image if ok else None

    def _on_time(self, index: int) -> bool:
        """Whether the frame just read has the timestamp frame ``index`` must have (within half a
        frame); files without timestamps (every frame at 0 ms) cannot tell and count as off."""
        ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        return ms > self._first_ms and abs(ms - self._first_ms - 1000.0 * index / self.fps) < 500.0 / self.fps

    def _time(self, index: int) -> float:
        # Raw elementary streams (.264) carry no timestamps: FFmpeg reports 0 ms for every frame.
        ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        if index > 0 and ms > self._first_ms:
            return (ms - self._first_ms) / 1000.0  # containers may start their clock above zero
        return index / self.fps

    def __iter__(self) -> Iterator[Frame]:
        if self._iterated:
            raise RuntimeError("a VideoFileSource can be iterated once")
        self._iterated = True
        image, self._first = self._first, None
        if image is None:  # the file ends before the range starts
            return
        index, pending = self._first_index, []  # pending: failed reads not yet known to be mid-stream (not the end)
        if not self._keep(index):  # a range may start between strided frames: the next kept one comes first
            image = None
        while not self._past_limit(index):
            if image is not None:
                for failed in pending:
                    self._skip_failed(failed, "decode error")
                pending = []
                self.frames_read += 1
                ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
                self._last_ms = (self._last_ms[1] if self._last_ms else ms, ms)
                yield Frame(self.camera, index, self._time(index), image)
            index += 1
            while not self._past_limit(index) and not self._keep(index) and self._cap.grab():
                index += 1
            if self._past_limit(index):
                break
            ok, image = self._cap.read()
            if not ok or image is None:
                image = None
                pending.append(index)
                if len(pending) >= self.cfg.max_decode_failures:
                    break
        self._warn_if_cut_short(index, pending)

    def _warn_if_cut_short(self, index: int, pending: list[int]) -> None:
        # Failed reads at the very end are how a file ends; only say so when the container
        # promised more frames than could be decoded.
        expected, end = self.frames_total, self.frames_end
        if pending and expected is not None and pending[0] < expected - 1 and not self._ran_to_its_end():
            self.frames_failed += kept_frames(pending[0], end, self.cfg.stride)  # as frames_read counts
            if self._past_limit(index):  # the range or --max-frames ended among the failures
                log.warning("%s: frames %d..%d could not be decoded", self.uri, pending[0], end - 1)
            else:
                log.warning("%s: frames %d.. of %d could not be decoded; the rest of the file was skipped",
                            self.uri, pending[0], expected)

    def _ran_to_its_end(self) -> bool:
        """Whether the last frame read ends the file by time, as its container's duration says. A
        Matroska file's frame count is an estimate (its duration x a mean rate): a variable rate or a
        clock starting late made complete files look cut short, their missing frames "not decoded"."""
        if self._last_ms is None or self._last_ms[1] <= self._first_ms:  # no timestamps (raw .264): cannot tell
            return False
        import av  # PyAV reads the container's duration; OpenCV gives only the estimated count

        try:
            with av.open(self.uri) as container:
                if not _estimates_its_count(container):  # its count is the file's: frames short of it failed
                    return False
                length_s = _length_s(container)
        except (av.FFmpegError, OSError, TypeError, IndexError):  # TypeError: no duration
            return False
        previous, last = self._last_ms
        gap_s = max(last - previous, 1000.0 / self.fps) / 1000.0  # the last frame lasts as long as the one before
        return (last - self._first_ms) / 1000.0 + gap_s >= length_s - 0.5 / self.fps

    def counted_frames_end(self) -> int | None:
        """:attr:`frames_end`, with the file's frames counted where its container only estimates them
        (Matroska / WebM: duration x a mean rate): its video packets, read without decoding (one pass
        over the file's bytes: for planning segments, once per camera)."""
        import av

        try:
            with av.open(self.uri) as container:
                if not _estimates_its_count(container):
                    return self.frames_end
                stream = container.streams.video[0]
                counted, last_s = 0, None
                for packet in container.demux(stream):
                    if packet.size:
                        counted += 1
                        if packet.pts is not None:
                            last_s = max(last_s or 0.0, float((packet.pts - (stream.start_time or 0)) * stream.time_base))
                length_s = _length_s(container)
        except (av.FFmpegError, OSError, IndexError, TypeError):
            return self.frames_end
        if last_s is not None and last_s + 1.0 < length_s:  # its packets stop a second or more before its end
            log.warning("%s: its frames end at %.1f s of its %.1f s: the file is cut short (%d frames read)",
                        self.uri, last_s, length_s, counted)
        return min(e for e in (counted, self.cfg.max_frames, self.frames.end) if e is not None)

    def close(self) -> None:
        self._cap.release()


class ImageFolderSource(FrameSource):
    """A folder of images in name order, e.g. a MOTChallenge sequence (``SEQ/`` or ``SEQ/img1/``).

    The frame rate comes from ``seqinfo.ini`` (``frameRate``) next to ``img1/`` when present.
    """

    def __init__(self, folder: Path, camera: str, cfg: SourceConfig, frames: FrameRange | None = None):
        folder, self._files = image_folder_files(folder)
        super().__init__(str(folder.resolve()), camera, cfg, frames)
        self.sequence_dir = folder.parent if folder.name == "img1" else folder
        self.frames_total = len(self._files)
        if frames is None:  # said once per camera, not per segment
            _warn_if_numbered_otherwise(folder, self._files)
        given = read_seqinfo_fps(self.sequence_dir / "seqinfo.ini")
        self.fps = given or cfg.default_fps
        if given is None and frames is None:  # said once per camera, not per segment
            log.warning("%s: %s; timed at %g fps (set source.default_fps)", folder,
                        "no frameRate in seqinfo.ini" if (self.sequence_dir / "seqinfo.ini").is_file() else "no seqinfo.ini",
                        self.fps)
        self.frame_size = image_folder_frame_size(self._files)
        self._resized = False

    def __iter__(self) -> Iterator[Frame]:
        start = self.frames.start  # a range splits the folder by file
        for index, path in enumerate(self._files[start:], start=start):
            if self._past_limit(index):
                break
            if not self._keep(index):
                continue
            image, cut = read_image_file(path)
            if image is None:
                self._skip_failed(index, f"{path.name} is not a readable image")
                continue
            if cut:
                log.warning("camera %s, frame %d: %s is cut off (no JPEG end marker); tracked as decoded, the "
                            "missing part filled in", self.camera, index, path.name)
            if (image.shape[1], image.shape[0]) != self.frame_size and not self._resized:
                log.warning("camera %s: %s is %dx%d, not %dx%d as the folder's first image: resized to it (said once)",
                            self.camera, path.name, image.shape[1], image.shape[0], *self.frame_size)
                self._resized = True
            self.frames_read += 1
            yield Frame(self.camera, index, index / self.fps, at_frame_size(image, self.frame_size))


def image_folder_files(folder: Path) -> tuple[Path, list[Path]]:
    """An image folder's frames in counting order of their names (``2.jpg`` before ``10.jpg``; ``SEQ/``
    reads ``SEQ/img1/``): the folder read and its files."""
    if (folder / "img1").is_dir():
        folder = folder / "img1"
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: counting_order(p.name))
    if not files:
        raise CrosscamError(f"{folder}: no images (.jpg/.png/...) in this folder; pass a folder of frames or a video")
    return folder, files


def image_folder_frame_size(files: list[Path]) -> tuple[int, int]:
    """(width, height) of an image folder's frames: its first image's, to which the others are resized."""
    first, _ = read_image_file(files[0])
    if first is None:
        raise CrosscamError(f"{files[0]}: not a readable image; check the folder's first frame")
    return first.shape[1], first.shape[0]


def at_frame_size(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` at ``size`` (width, height): an image folder's frames all take its first one's size,
    so boxes and the annotated video have one frame size."""
    if (image.shape[1], image.shape[0]) == size:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _warn_if_numbered_otherwise(folder: Path, files: list[Path]) -> None:
    """Frames are numbered by their place in the folder (tracks.txt: 1..N); where the files are
    numbered otherwise (MOTChallenge names them by frame: 000001.jpg), a gap or another first
    number would shift every frame against a ground truth, so say so once."""
    if not all(p.stem.isdigit() for p in files):
        return
    numbers = [int(p.stem) for p in files]
    if numbers == list(range(1, len(files) + 1)):
        return
    gaps = sum(b - a - 1 for a, b in zip(numbers, numbers[1:]) if b - a > 1)
    log.warning("%s: its %d images are numbered %d-%d%s, but crosscam numbers frames by their order in the folder "
                "(1-%d in tracks.txt, and in a replayed det.txt): they will not match a ground truth numbered by "
                "file name; give the whole sequence, or renumber the ground truth", folder, len(files), numbers[0],
                numbers[-1], f" with {gaps} missing" if gaps else "", len(files))


def mot_sequence_dir(source: FrameSource) -> Path | None:
    """The MOTChallenge sequence folder whose ``det/det.txt`` a replay reads: an image folder's
    sequence (``SEQ/`` of ``SEQ/img1/``), or the folder of a video file with ``det/det.txt``
    beside it (``SEQ/SEQ.mp4``); None otherwise."""
    if isinstance(source, ImageFolderSource):
        return source.sequence_dir
    if isinstance(source, VideoFileSource):
        folder = Path(source.uri).parent
        return folder if (folder / "det" / "det.txt").is_file() else None
    return None


def read_seqinfo_fps(path: Path) -> float | None:
    """``frameRate`` from a MOTChallenge ``seqinfo.ini``, or ``None`` if absent/unreadable."""
    if not path.is_file():
        return None
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
        fps = parser.getfloat("Sequence", "frameRate")
    except (configparser.Error, ValueError):
        return None
    return fps if fps > 0 else None


class StreamSource(FrameSource):
    """A live RTSP/HTTP/... stream. When it drops, it is re-opened up to
    ``cfg.reconnect_attempts`` times, waiting ``reconnect_delay_s`` first and doubling the
    wait each time (capped at ``reconnect_max_delay_s``); a frame resets the count.
    Times are seconds since the first frame arrived (the stream's own clock is not trusted).
    """

    def __init__(self, url: str, camera: str, cfg: SourceConfig, sleep=time.sleep):
        super().__init__(url, camera, cfg)
        self._sleep = sleep
        self.reconnects = 0
        self._cap = self._open()
        if self._cap is None:
            raise CrosscamError(f"{url}: cannot open the stream; check the URL and that the camera is reachable")
        ok, first = self._cap.read()
        if not ok or first is None:
            self.close()
            raise CrosscamError(f"{url}: the stream opened but sent no frame; check the URL and the camera")
        self._first: np.ndarray | None = first
        self.frame_size = (first.shape[1], first.shape[0])
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0.0 < fps < 1000.0 else cfg.default_fps

    def _open(self) -> cv2.VideoCapture | None:
        cap = cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG)
        if cap.isOpened():
            return cap
        cap.release()
        return None

    def _reconnect(self) -> bool:
        delay = self.cfg.reconnect_delay_s
        for attempt in range(1, self.cfg.reconnect_attempts + 1):
            log.warning("%s: stream dropped; reconnect %d/%d in %.1f s",
                        self.uri, attempt, self.cfg.reconnect_attempts, delay)
            self._sleep(delay)
            self.reconnects += 1
            self._cap = self._open()
            if self._cap is not None:
                return True
            delay = min(delay * 2.0, self.cfg.reconnect_max_delay_s)
        log.warning("%s: stream lost after %d reconnect attempts", self.uri, self.cfg.reconnect_attempts)
        return False

    def __iter__(self) -> Iterator[Frame]:
        index, start = 0, None
        while not self._past_limit(index):
            if self._first is not None:
                ok, image, self._first = True, self._first, None
            else:
                ok, image = self._cap.read() if self._cap is not None else (False, None)
            if not ok or image is None:
                self.close()
                if not self._reconnect():
                    return
                continue
            now = time.monotonic()
            start = now if start is None else start
            if self._keep(index):
                self.frames_read += 1
                yield Frame(self.camera, index, now - start, image)
            index += 1

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


@contextmanager
def source_warnings_muted() -> Iterator[None]:
    """Within it, sources log no warnings (a missing frame rate, frames they skip): for a file read
    again (to draw a video) whose warnings were said the first time."""
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def open_source(spec: str, camera: str | None, cfg: SourceConfig, frames: FrameRange | None = None) -> FrameSource:
    """Open a video file, an image folder or a stream URL as a camera's frame source.

    ``camera`` defaults to the file or folder stem (the URL's last path part for streams).
    ``frames`` limits a file or folder to a range of its frames (streams cannot be cut).
    Raises :class:`CrosscamError` (one line) for a missing path or an unreadable file.
    """
    if spec.lower().startswith(STREAM_SCHEMES):
        if frames is not None and frames != FrameRange():
            raise CrosscamError(f"{spec}: a live stream cannot be cut into frame ranges; track it whole")
        return StreamSource(spec, camera or default_camera_name(spec), cfg)
    path = Path(spec)
    if not path.exists():
        kind = "folder" if spec.endswith(("/", "\\")) else "file or folder"
        raise CrosscamError(f"{spec}: no such {kind}; pass a video file, an image folder or a stream URL")
    name = camera or default_camera_name(spec)
    if path.is_dir():
        return ImageFolderSource(path, name, cfg, frames)
    if path.suffix.lower() in IMAGE_SUFFIXES and frames is None:
        log.warning("%s: one image, tracked as a camera of one frame (an image sequence is a folder of frames)", spec)
    return VideoFileSource(path, name, cfg, frames)


def default_camera_name(spec: str) -> str:
    """The camera name used when ``--camera`` is not given: the file/folder stem or URL tail."""
    if spec.lower().startswith(STREAM_SCHEMES):
        tail = spec.rstrip("/").rsplit("/", 1)[-1]
        return Path(tail.split("?", 1)[0]).stem or "stream"
    path = Path(spec).resolve()
    if path.name == "img1":
        path = path.parent
    return path.stem or "camera"
