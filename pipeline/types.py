"""The items that flow through a camera's generator chain, and the per-track summary.

Shapes and units are part of the contract between stages:

- images are ``(H, W, 3) uint8`` in **BGR** order (what OpenCV decodes); crops handed to
  ``reid.Embedder`` are converted to RGB by the embed stage;
- boxes are ``xyxy`` in pixels of the frame, ``float32``;
- features are ``float32`` and L2-normalised (unit length) once they leave the embed stage;
- times are seconds on the camera's clock (from the video's start unless a cameras file gives
  an offset), frame indices are 0-based in memory and 1-based only in MOTChallenge files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One decoded frame of one camera.

    >>> Frame("cam1", 0, 0.0, np.zeros((4, 6, 3), np.uint8)).image.shape
    (4, 6, 3)
    """

    camera: str
    index: int  # 0-based index in the source, counting skipped (strided or undecodable) frames
    time_s: float  # seconds on the camera's clock
    image: np.ndarray  # (H, W, 3) uint8 BGR


@dataclass
class Detections:
    """Person boxes in one frame, as parallel arrays (one row per box).

    >>> d = Detections(np.array([[0, 0, 10, 20]], np.float32), np.array([0.9], np.float32))
    >>> len(d), d.features is None
    (1, True)
    """

    xyxy: np.ndarray  # (N, 4) float32 pixels
    confidence: np.ndarray  # (N,) float32 in 0..1
    features: np.ndarray | None = None  # (N, D) float32 L2-normalised, set by the embed stage

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


@dataclass(frozen=True)
class TrackObservation:
    """A confirmed track updated in this frame: its id and the box it was matched to."""

    track_id: int  # per-camera track id, >= 1
    xyxy: np.ndarray  # (4,) float32 pixels
    confidence: float
    feature: np.ndarray | None  # (D,) float32 L2-normalised, the detection's embedding


@dataclass
class FrameResult:
    """A frame as it moves down the chain: each stage fills in one more field."""

    frame: Frame
    detections: Detections | None = None
    tracks: list[TrackObservation] = field(default_factory=list)


@dataclass
class TrackSummary:
    """Everything later stages need about one finished track of one camera.

    ``feature`` is the track's aggregate appearance (unit length), ``representatives`` a few
    individual crop features kept for robust matching. ``thumbnail`` is relative to the camera's
    output folder.
    """

    camera: str
    track_id: int
    first_frame: int  # 0-based
    last_frame: int  # 0-based, inclusive
    start_s: float
    end_s: float
    num_detections: int
    feature: np.ndarray  # (D,) float32, L2-normalised
    representatives: np.ndarray  # (R, D) float32, L2-normalised, R >= 1
    thumbnail: str | None = None

    def metadata(self) -> dict:
        """The JSON-serialisable fields (everything but the feature arrays)."""
        return {
            "camera": self.camera,
            "track_id": self.track_id,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "num_detections": self.num_detections,
            "thumbnail": self.thumbnail,
        }


def write_track_summaries(folder: str | Path, summaries: list[TrackSummary]) -> None:
    """Write ``tracks.json`` (metadata) and ``track_features.npz`` (arrays) into ``folder``.

    Both files are written to temporary names and renamed, so a crash leaves the old pair.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for s in summaries:
        arrays[f"feature_{s.track_id}"] = s.feature.astype(np.float32)
        arrays[f"representatives_{s.track_id}"] = s.representatives.astype(np.float32)
    tmp_npz = folder / "track_features.tmp.npz"
    np.savez(tmp_npz, **arrays)
    tmp_json = folder / "tracks.json.tmp"
    tmp_json.write_text(json.dumps([s.metadata() for s in summaries], indent=1))
    tmp_npz.replace(folder / "track_features.npz")
    tmp_json.replace(folder / "tracks.json")


def read_track_summaries(folder: str | Path) -> list[TrackSummary]:
    """Read what :func:`write_track_summaries` wrote, in the same order."""
    folder = Path(folder)
    meta = json.loads((folder / "tracks.json").read_text())
    with np.load(folder / "track_features.npz") as arrays:
        return [
            TrackSummary(
                **m,
                feature=arrays[f"feature_{m['track_id']}"],
                representatives=arrays[f"representatives_{m['track_id']}"],
            )
            for m in meta
        ]
