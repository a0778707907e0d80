"""Where a run directory keeps things: the store's folder and the cameras' folders.

Light on purpose (no video or model imports): ``crosscam query`` and ``crosscam serve`` find a
run's store and cameras through it.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.identity.store_db import DB_NAME
from pipeline.text import counting_order
from pipeline.types import STORE_DIR
from reid.errors import CrosscamError

__all__ = ["STORE_DIR", "camera_folders", "is_camera_folder", "run_folders", "run_inside"]


def run_inside(folder: Path) -> Path | None:
    """A run directory directly inside ``folder`` (one holding a track store), when ``folder``
    itself is not one: what a user meant who named a demo's folder instead of its ``run/``."""
    folder = Path(folder)
    if (folder / STORE_DIR).exists() or not folder.is_dir():
        return None
    return next((d for d in sorted(folder.iterdir()) if (d / STORE_DIR / DB_NAME).is_file()), None)


def is_camera_folder(path: Path) -> bool:
    """A camera's outputs (not a hidden folder: a camera being tracked again beside its outputs)."""
    return not path.name.startswith(".") and (path / "run.json").is_file() and (path / "tracks.json").is_file()


def run_folders(run_dir: Path) -> list[Path]:
    """Every camera folder of ``run_dir`` with a ``run.json`` (running, failed, without summaries
    too; not the hidden ones beside them), in counting order (cam2 before cam10); none when there
    is no such directory."""
    if not run_dir.is_dir():
        return []
    return sorted((p for p in run_dir.iterdir() if not p.name.startswith(".") and (p / "run.json").is_file()),
                  key=lambda p: counting_order(p.name))  # cam2 before cam10


def camera_folders(run_dir: Path, allow_none: bool = False) -> list[Path]:
    """The run's camera folders (those with ``run.json`` and track summaries), in counting order; a
    one-line error when there is none (unless ``allow_none``)."""
    if not run_dir.is_dir():
        raise CrosscamError(f"{run_dir}: no such run directory; run `crosscam track ... --out {run_dir}` first")
    folders = [p for p in run_folders(run_dir) if is_camera_folder(p)]
    if not folders and not allow_none:
        raise CrosscamError(
            f"{run_dir}: no camera outputs (RUN_DIR/<camera>/run.json + tracks.json); "
            f"run `crosscam track ... --out {run_dir}` first"
        )
    return folders
