"""A camera's ``tracks.txt`` as arrays: reading, writing and grouping its rows by frame.

``tracks.txt`` is MOTChallenge text, one line per box: ``frame,id,x,y,w,h,conf,-1,-1,-1`` with
frames 1-based; here frames are 0-based and boxes ``xyxy``. Which rows were interpolated is
recorded per track in ``tracks.json`` (``state.interpolated`` frame ranges), and
:func:`read_camera_tracks` joins the two.

>>> rows = TrackRows(np.array([0, 0, 1]), np.array([2, 1, 1]), np.zeros((3, 4), np.float32) + [0, 0, 10, 20],
...                  np.ones(3, np.float32), np.zeros(3, bool))
>>> mot_line(0, 2, rows.xyxy[0], 0.5)
'1,2,0.00,0.00,10.00,20.00,0.5000,-1,-1,-1\\n'
>>> sorted(rows.by_frame())
[0, 1]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.types import partial_path
from reid.errors import CrosscamError


@dataclass
class TrackRows:
    """Rows of a tracks file as parallel arrays (one entry per box)."""

    frame: np.ndarray  # (N,) int64, 0-based
    track_id: np.ndarray  # (N,) int64
    xyxy: np.ndarray  # (N, 4) float32 pixels
    confidence: np.ndarray  # (N,) float32
    interpolated: np.ndarray  # (N,) bool

    def __len__(self) -> int:
        return len(self.frame)

    @classmethod
    def empty(cls) -> "TrackRows":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                   np.zeros(0, np.float32), np.zeros(0, bool))

    def take(self, index: np.ndarray) -> "TrackRows":
        """The rows at ``index`` (integer positions or a boolean mask), in that order."""
        return TrackRows(self.frame[index], self.track_id[index], self.xyxy[index], self.confidence[index],
                         self.interpolated[index])

    def sorted(self) -> "TrackRows":
        """Ordered by frame, then id (the order ``tracks.txt`` is written in)."""
        return self.take(np.lexsort((self.track_id, self.frame)))

    def by_frame(self) -> dict[int, np.ndarray]:
        """Row positions per 0-based frame index."""
        order = np.argsort(self.frame, kind="stable")
        frames, starts = np.unique(self.frame[order], return_index=True)
        return {int(f): part for f, part in zip(frames, np.split(order, starts[1:]))}


def mot_line(frame: int, track_id: int, xyxy, confidence: float) -> str:
    """One MOTChallenge line for a box in 0-based ``frame``."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return f"{frame + 1},{track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{confidence:.4f},-1,-1,-1\n"


def read_tracks_file(path: str | Path) -> TrackRows:
    """``tracks.txt`` rows (``interpolated`` all False: that mark lives in ``tracks.json``); empty
    when there is no file; a one-line error for a file that is not MOTChallenge text."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return TrackRows.empty()
    try:
        table = np.loadtxt(path, delimiter=",", ndmin=2, usecols=range(7), dtype=np.float64)
    except ValueError as exc:
        raise CrosscamError(f"{path}: not a tracks file of frame,id,x,y,w,h,conf lines ({exc}); "
                            "run `crosscam track` again for this camera") from None
    xyxy = np.concatenate([table[:, 2:4], table[:, 2:4] + table[:, 4:6]], axis=1).astype(np.float32)
    return TrackRows(table[:, 0].astype(np.int64) - 1, table[:, 1].astype(np.int64), xyxy,
                     table[:, 6].astype(np.float32), np.zeros(len(table), bool))


def write_tracks_file(path: str | Path, rows: TrackRows) -> None:
    """Write ``rows`` (frame, then id order) to ``path`` atomically (a temporary file renamed)."""
    path = Path(path)
    rows = rows.sorted()
    tmp = partial_path(path)
    tmp.write_text("".join(mot_line(int(f), int(t), b, float(c))
                           for f, t, b, c in zip(rows.frame, rows.track_id, rows.xyxy, rows.confidence)))
    os.replace(tmp, path)


def interpolated_ranges(folder: str | Path) -> dict[int, list[list[int]]]:
    """Per track id, the ``[first, last]`` frame ranges its ``tracks.json`` state marks as interpolated."""
    path = Path(folder) / "tracks.json"
    if not path.is_file():
        return {}
    return {m["track_id"]: m.get("state", {}).get("interpolated", []) for m in json.loads(path.read_text())}


def read_camera_tracks(folder: str | Path) -> TrackRows:
    """A camera folder's ``tracks.txt`` with each row's ``interpolated`` mark from ``tracks.json``."""
    rows = read_tracks_file(Path(folder) / "tracks.txt")
    for track_id, ranges in interpolated_ranges(folder).items():
        mine = rows.track_id == track_id
        for first, last in ranges:
            rows.interpolated |= mine & (rows.frame >= first) & (rows.frame <= last)
    return rows
