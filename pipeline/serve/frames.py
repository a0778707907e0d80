"""A camera's frames by 0-based index, decoded on demand and sent as JPEG.

Chosen over serving a browser codec with range requests by measurement (README, "crosscam
serve"): in headless Chromium a JPEG frame arrives in a median 9 ms (p95 13 ms) against 12 ms
(p95 28 ms) for a seek of the same clip transcoded to H.264, which first costs a transcode of
7.5 s per 139 s of 768x432 video on 2 cores; and a JPEG is the exact frame by construction,
from any video FFmpeg decodes (annotated.mp4 is mp4v, which Chromium cannot play).

Index ``i`` is the ``i``-th frame in presentation order, as ``pipeline.video.sources`` counts it (the
``frame`` of ``tracks.txt`` minus 1). A video is demuxed once (no decoding) to learn each frame's
timestamp and the keyframes; a frame is then decoded from the keyframe before it, or straight on
from the frame decoded last when it is a few frames ahead (playback).

>>> frames = open_frames(Path("runs/x/cam1"), "videos/cam1.mp4", fps=10.0)  # doctest: +SKIP
>>> frames.count, frames.jpeg(41, width=640)[:2]  # doctest: +SKIP
(250, b'\\xff\\xd8')
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from pipeline.video.sources import STREAM_SCHEMES, at_frame_size, image_folder_files, image_folder_frame_size
from reid.image_files import read_image_file
from reid.errors import CrosscamError

JPEG_QUALITY = 85
AHEAD_FRAMES = 48  # decode straight on (no seek) to a frame at most this far past the last one
CACHED_JPEGS = 128  # per camera: recently sent frames, for a page that asks twice


class FrameNotFound(CrosscamError):
    """A frame index outside the video."""


class VideoFrames:
    """Random access to the frames of one video file (PyAV), thread-safe.

    ``count`` frames; ``time_s(i)``: seconds of frame ``i`` from the video's first frame;
    ``image(i)``: ``(H, W, 3) uint8`` BGR.
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            self._container = av.open(str(path))
            self._stream = self._container.streams.video[0]
            pts = sorted(
                (p.pts, p.is_keyframe) for p in self._container.demux(self._stream) if p.pts is not None
            )
        except (av.FFmpegError, IndexError) as exc:
            raise CrosscamError(f"{path}: cannot read it as a video ({exc}); re-run `crosscam track`") from None
        self._pts = [p for p, _ in pts]
        self._keyframes = [p for p, key in pts if key] or self._pts[:1]
        self._base = Fraction(self._stream.time_base or Fraction(1, 1))
        self._decoder = None
        self._next = -1  # index of the frame the open decoder yields next
        self._lock = threading.Lock()
        self.count = len(self._pts)

    def time_s(self, index: int) -> float:
        return float((self._pts[index] - self._pts[0]) * self._base) if self.count else 0.0

    def image(self, index: int) -> np.ndarray:
        with self._lock:
            target = self._pts[index]
            if self._decoder is None or not 0 <= index - self._next < AHEAD_FRAMES:
                keyframe = self._keyframes[max(0, bisect.bisect_right(self._keyframes, target) - 1)]
                self._container.seek(keyframe, stream=self._stream, backward=True)
                self._decoder = self._container.decode(self._stream)
            for frame in self._decoder:
                if frame.pts is None or frame.pts < target:
                    continue
                self._next = bisect.bisect_right(self._pts, frame.pts)
                return upright(frame.to_ndarray(format="bgr24"), getattr(frame, "rotation", 0))
            self._decoder = None
            raise FrameNotFound(f"{self.path}: frame {index} could not be decoded")


def upright(image: np.ndarray, rotation: float | None) -> np.ndarray:
    """``image`` turned as the video's display matrix says (``rotation``: degrees counter-clockwise, as
    PyAV gives it; a phone's portrait video is stored sideways with -90), as OpenCV shows it when tracking."""
    turns = round((rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


class FolderFrames:
    """The frames of an image folder (a MOTChallenge ``SEQ/img1/``), in the order ``pipeline.video.sources`` reads them."""

    def __init__(self, folder: Path, fps: float):
        _, self._files = image_folder_files(folder)
        self.count = len(self._files)
        self._fps = fps
        self._size = image_folder_frame_size(self._files)  # every frame at the first one's size, as tracked

    def time_s(self, index: int) -> float:
        return index / self._fps  # as pipeline.video.sources.ImageFolderSource times them

    def image(self, index: int) -> np.ndarray:
        image, _ = read_image_file(self._files[index])
        if image is None:
            raise FrameNotFound(f"{self._files[index]}: not a readable image")
        return at_frame_size(image, self._size)


class KeptFrames:
    """Source frame indices over a video of every ``stride``-th source frame (the ``annotated.mp4``
    of a run tracked with ``source.stride`` > 1): frame ``i`` shows kept frame ``i // stride``, the
    one at or before it; ``count`` runs to the last kept frame."""

    def __init__(self, kept: VideoFrames, stride: int, fps: float):
        self._kept, self._stride, self._fps = kept, stride, fps
        self.count = (kept.count - 1) * stride + 1 if kept.count else 0

    def time_s(self, index: int) -> float:
        return self._kept.time_s(index // self._stride) + (index % self._stride) / self._fps

    def image(self, index: int) -> np.ndarray:
        return self._kept.image(index // self._stride)


class CameraFrames:
    """One camera's frames as JPEG, with a small cache of the frames sent last."""

    def __init__(self, reader: VideoFrames | FolderFrames | KeptFrames, origin: str):
        self.reader = reader
        self.origin = origin  # "source" (the video the run tracked) or "annotated.mp4"
        self.count = reader.count
        self._cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def image(self, index: int) -> np.ndarray:
        """Frame ``index``, ``(H, W, 3) uint8`` BGR; FrameNotFound outside the video."""
        if not 0 <= index < self.count:
            raise FrameNotFound(f"frame {index}: outside the video, whose frames are 0..{self.count - 1}")
        return self.reader.image(index)

    def jpeg(self, index: int, width: int | None = None) -> bytes:
        """Frame ``index`` as JPEG bytes, shrunk to ``width`` pixels when narrower than the frame."""
        key = (index, width or 0)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        image = self.image(index)
        if width and width < image.shape[1]:
            height = max(1, round(image.shape[0] * width / image.shape[1]))
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise FrameNotFound(f"frame {index}: could not be encoded as JPEG")
        with self._lock:
            self._cache[key] = data.tobytes()
            while len(self._cache) > CACHED_JPEGS:
                self._cache.popitem(last=False)
            return self._cache[key]

    def time_s(self, index: int) -> float:
        return self.reader.time_s(index)


def readable_source(source: str | None) -> Path | None:
    """The path of a camera's source when it can be read again (a file or folder that is there),
    else None (none recorded, a live stream, a moved or deleted video)."""
    if not source or source.lower().startswith(STREAM_SCHEMES):
        return None
    path = Path(source)
    return path if path.is_dir() or path.is_file() else None


def open_frames(camera_folder: Path, source: str | None, fps: float, stride: int = 1) -> CameraFrames:
    """The camera's frames by source frame index: from the source video its ``run.json`` names
    (the frames the run tracked, boxes drawn by the page), else (gone, or a raw stream without
    timestamps) from its ``annotated.mp4`` (boxes burned in; every ``stride``-th source frame,
    ``fps`` the source's); a one-line error when neither can be read (a live stream, a moved video
    and no annotated.mp4)."""
    path = readable_source(source)
    if path is not None:
        frames = FolderFrames(path, fps) if path.is_dir() else VideoFrames(path)
        if frames.count:  # a raw .264 stream has no timestamps to find its frames by: its annotated.mp4 has
            return CameraFrames(frames, "source")
    annotated = camera_folder / "annotated.mp4"
    if annotated.is_file():
        kept = VideoFrames(annotated)
        return CameraFrames(kept if stride == 1 else KeptFrames(kept, stride, fps), "annotated.mp4")
    raise CrosscamError(
        f"camera {camera_folder.name}: its source {source!r} cannot be re-read and it has no annotated.mp4; "
        "put the video back at that path"
    )
