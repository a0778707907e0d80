"""Shared fixtures. Real assets live in ../shared beside the checkout; tests that need them skip
with a reason when it is absent (a fresh clone elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def read_video_frames(path: Path) -> list:
    """Every frame of the video ``path`` as decoded by OpenCV ((H, W, 3) uint8 BGR arrays)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def shared_path(relative: str) -> Path:
    """Return ``../shared/<relative>``, skipping the calling test when it is missing."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"{path} not present (real assets live in ../shared beside the checkout)")
    return path


@pytest.fixture
def osnet_onnx() -> Path:
    return shared_path("weights/osnet_x0_25_msmt17.onnx")


@pytest.fixture
def yolo_onnx() -> Path:
    return shared_path("weights/yolov8n_int8.onnx")


@pytest.fixture
def hall_clip() -> Path:
    return shared_path("videos/one-by-one-person-detection.mp4")


@pytest.fixture
def cuhk03_market() -> Path:
    return shared_path("data/cuhk03-market")


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory):
    """Exported ONNX graphs go to the session's own cache folder (inherited by the CLI subprocesses
    the tests start), not to ~/.cache/crosscam: every session starts cold, and leaves nothing."""
    import os

    from reid.export_cache import CACHE_ENV

    folder = tmp_path_factory.mktemp("crosscam-cache")
    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = previous
