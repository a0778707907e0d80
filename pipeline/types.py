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
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# What a run directory holds beside its cameras' folders (the identity side writes them; their partial
# files are hidden, as '.'-names): a camera can take none of these names.
STORE_DIR = "store"
DB_NAME = "tracks.sqlite"  # the store's SQLite file, in STORE_DIR
REPORT_FILE = "report.html"
CAMERAS_FILE = "cameras.yaml"  # kept in the run directory so later runs and queries use the same clocks
RUN_LEVEL_NAMES = frozenset({STORE_DIR, REPORT_FILE, CAMERAS_FILE})


def partial_path(path: Path) -> Path:
    """Where a camera's output file is written before it is renamed to ``path``: its suffix kept
    (OpenCV and FFmpeg pick the format by it), ``.partial`` before it.

    >>> partial_path(Path("run/cam1/annotated.mp4")).name
    'annotated.partial.mp4'
    """
    return path.with_name(f"{path.stem}.partial{path.suffix}")


@dataclass(frozen=True)
class FrameRange:
    """Source frames ``[start, end)`` by 0-based index (``end`` None: to the end of the source).

    A camera's long video is cut into such ranges to be tracked in parallel
    (:mod:`pipeline.scale`); frame indices and times stay those of the whole source.

    >>> FrameRange(100, 250).length
    150
    """

    start: int = 0
    end: int | None = None

    def __post_init__(self):
        if self.start < 0 or (self.end is not None and self.end < self.start):
            raise ValueError(f"frame range [{self.start}, {self.end}) is negative or reversed")

    @property
    def length(self) -> int | None:
        return None if self.end is None else self.end - self.start


def kept_frames(start: int, end: int, stride: int) -> int:
    """How many source frames of ``[start, end)`` a ``stride`` keeps: the multiples of the stride
    (it counts from frame 0, whatever the range).

    >>> kept_frames(0, 10, 3), kept_frames(4, 10, 3), kept_frames(7, 5, 1)
    (4, 2, 0)
    """
    return max(0, -(-end // stride) - -(-start // stride))


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
    """A confirmed track in this frame: its id and the box it was matched to, or (``interpolated``)
    the box filled in between two of its detections."""

    track_id: int  # per-camera track id, >= 1
    xyxy: np.ndarray  # (4,) float32 pixels
    confidence: float  # the detection's; 0 for an interpolated box
    feature: np.ndarray | None  # (D,) float32 L2-normalised, the detection's embedding; None: not embedded
    interpolated: bool = False  # filled in for a frame where the track was not detected


@dataclass
class FrameResult:
    """A frame as it moves down the chain: each stage fills in one more field."""

    frame: Frame
    detections: Detections | None = None
    tracks: list[TrackObservation] = field(default_factory=list)
    # Boxes below the detector's ``confidence`` but above its ``low_confidence`` (no features):
    # they may extend confirmed tracks (``pipeline.video.refine.low_confidence``), never start one.
    low_detections: Detections | None = None
    # Observations of tracks confirmed in this frame from the frames before, as
    # ``(frame index, observation)`` (``pipeline.video.refine.lookback`` puts them into those frames).
    backfill: list[tuple[int, TrackObservation]] = field(default_factory=list)


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
    num_detections: int  # detected boxes (low-confidence ones included)
    feature: np.ndarray  # (D,) float32, L2-normalised
    representatives: np.ndarray  # (R, D) float32, L2-normalised, R >= 1
    thumbnail: str | None = None
    num_interpolated: int = 0  # boxes filled in between detections (in tracks.txt too)

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
            "num_interpolated": self.num_interpolated,
            "thumbnail": self.thumbnail,
        }


_SUMMARY_KEYS = frozenset(TrackSummary.__dataclass_fields__) - {"feature", "representatives"}


def write_track_summaries(folder: str | Path, summaries: list[TrackSummary], states: dict[int, dict] | None = None,
                          state_arrays: dict[str, np.ndarray] | None = None) -> None:
    """Write ``tracks.json`` (metadata) and ``track_features.npz`` (arrays) into ``folder``.

    ``states`` (by track id) go into each entry's ``"state"`` and ``state_arrays`` into the npz
    beside the features (``pipeline.video.track_state``'s mergeable state). Both files are written to
    temporary names and renamed, so a crash leaves the old pair.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = dict(state_arrays or {})
    for s in summaries:
        arrays[f"feature_{s.track_id}"] = s.feature.astype(np.float32)
        arrays[f"representatives_{s.track_id}"] = s.representatives.astype(np.float32)
    tmp_npz, tmp_json = folder / "track_features.tmp.npz", folder / "tracks.json.tmp"
    try:
        np.savez(tmp_npz, **arrays)
        entries = [{**s.metadata(), **({"state": states[s.track_id]} if states else {})} for s in summaries]
        tmp_json.write_text(json.dumps(entries, indent=1))
    except BaseException:  # a full disk, Ctrl-C: no half-written file left beside the pair
        tmp_npz.unlink(missing_ok=True)
        tmp_json.unlink(missing_ok=True)
        raise
    tmp_npz.replace(folder / "track_features.npz")
    tmp_json.replace(folder / "tracks.json")


def read_run_record(folder: str | Path) -> dict:
    """A camera folder's ``run.json``, or {} when it is missing, unreadable or not a JSON object
    (a run being written, a folder that is not a camera's)."""
    try:
        record = json.loads((Path(folder) / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


NPZ_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError)  # what np.load raises for a .npz not a zip, with a bad CRC, cut short


def read_track_summaries(folder: str | Path) -> list[TrackSummary]:
    """Read what :func:`write_track_summaries` wrote, in the same order. A damaged file (cut
    short, bytes changed) raises ``ValueError``."""
    folder = Path(folder)
    meta = json.loads((folder / "tracks.json").read_text())
    try:
        with np.load(folder / "track_features.npz") as arrays:
            return [
                TrackSummary(
                    **{k: v for k, v in m.items() if k in _SUMMARY_KEYS},
                    feature=arrays[f"feature_{m['track_id']}"],
                    representatives=arrays[f"representatives_{m['track_id']}"],
                )
                for m in meta
            ]
    except NPZ_DAMAGE as exc:
        raise ValueError(f"track_features.npz: {exc}") from None
