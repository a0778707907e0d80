"""Builders of small run directories for the identity, store and query tests.

A camera folder gets what ``crosscam track`` writes (``run.json``, ``tracks.txt``,
``tracks.json`` + ``track_features.npz``, ``thumbs/``), built from given TrackSummary objects,
plus optionally a real little video so the global annotated video can be rendered.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from pipeline.types import TrackSummary, write_track_summaries


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def summary(camera: str, track_id: int, start_s: float, end_s: float, feature: np.ndarray,
            fps: float = 10.0) -> TrackSummary:
    """A track seen from ``start_s`` to ``end_s`` (frames at ``fps``) with a unit ``feature``."""
    feature = unit(np.asarray(feature, np.float32))
    first, last = int(round(start_s * fps)), int(round(end_s * fps))
    return TrackSummary(camera, track_id, first, last, start_s, end_s, last - first + 1,
                        feature, feature[None], f"thumbs/{track_id}.jpg")


def write_camera(run_dir: Path, camera: str, tracks: list[TrackSummary], *, fingerprint: str = "f" * 64,
                 dim: int | None = None, video: bool = True, fps: float = 10.0,
                 reid_config: dict | None = None, detector_config: dict | None = None,
                 frame_size: tuple[int, int] = (160, 120)) -> Path:
    """Write one camera's folder as ``crosscam track`` would; returns the folder."""
    folder = run_dir / camera
    (folder / "thumbs").mkdir(parents=True, exist_ok=True)
    write_track_summaries(folder, tracks)
    rng = np.random.default_rng(len(camera))
    for t in tracks:
        cv2.imwrite(str(folder / "thumbs" / f"{t.track_id}.jpg"), rng.integers(0, 255, (64, 32, 3), np.uint8))
    rows = []
    for t in tracks:
        for frame in range(t.first_frame, t.last_frame + 1):
            rows.append(f"{frame + 1},{t.track_id},10.00,20.00,30.00,60.00,0.90,-1,-1,-1\n")
    (folder / "tracks.txt").write_text("".join(sorted(rows, key=lambda r: int(r.split(",")[0]))))
    source = folder / "source.mp4"
    n_frames = max((t.last_frame for t in tracks), default=0) + 1
    if video:
        writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"mp4v"), fps, frame_size)
        for i in range(n_frames):
            writer.write(np.full((frame_size[1], frame_size[0], 3), (i * 7) % 255, np.uint8))
        writer.release()
    d = dim if dim is not None else (len(tracks[0].feature) if tracks else 8)
    run = {
        "camera": camera,
        "source": str(source.resolve()),
        "fps": fps,
        "frame_size": list(frame_size),
        "time_offset_s": 0.0,
        "status": "complete",
        "frames_read": n_frames,
        "config": {
            "source": {"stride": 1, "max_frames": None},
            "reid": reid_config or {"weights": "synthetic"},
            "detector": detector_config or {"model": "motion"},
        },
        "models": {"reid": {"name": "synthetic", "fingerprint": fingerprint, "dim": d}},
    }
    (folder / "run.json").write_text(json.dumps(run))
    return folder
