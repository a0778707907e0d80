"""The pipeline's options: one pydantic model per stage, composed into :class:`PipelineConfig`.

``configs/base.yaml`` holds the defaults users read; this module is the single source of truth
for names, types and bounds. Load with :func:`load_pipeline_config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal

from pydantic import BaseModel, Field

from reid.config import EmbedderConfig, load_config


class _Section(BaseModel):
    model_config = {"extra": "forbid"}


class SourceConfig(_Section):
    """Which frames are read."""

    stride: int = Field(1, ge=1)  # keep every n-th frame
    max_frames: int | None = Field(None, ge=1)  # stop after this many source frames


class DetectorConfig(_Section):
    """Person detection: an ultralytics model file/name, ``motion`` or ``replay``."""

    model: str = "motion"
    confidence: float = Field(0.4, ge=0.0, le=1.0)
    iou: float = Field(0.5, ge=0.0, le=1.0)
    image_size: int = Field(640, ge=32)
    half: bool = False
    device: str = "auto"
    batch_size: int = Field(8, ge=1)  # frames per detector call


class TrackerConfig(_Section):
    """deep-sort-realtime's ``DeepSort`` parameters."""

    max_age: int = Field(30, ge=1)
    n_init: int = Field(3, ge=1)
    max_iou_distance: float = Field(0.7, ge=0.0, le=1.0)
    max_cosine_distance: float = Field(0.3, ge=0.0, le=2.0)
    nn_budget: int | None = Field(100, ge=1)


class OutputConfig(_Section):
    """What each camera writes into the run directory."""

    video: bool = True
    trails: bool = False


class AssociationConfig(_Section):
    """Cross-camera association of tracks into global identities."""

    threshold: float = Field(0.6, ge=-1.0, le=1.0)  # cosine similarity to link two tracks


class StoreConfig(_Section):
    """The FAISS + SQLite track store inside the run directory."""

    index: Literal["flat", "ivf", "hnsw"] = "flat"


class PipelineConfig(_Section):
    """Every option of ``crosscam track`` and the stages after it."""

    source: SourceConfig = SourceConfig()
    detector: DetectorConfig = DetectorConfig()
    reid: EmbedderConfig = EmbedderConfig()
    tracker: TrackerConfig = TrackerConfig()
    output: OutputConfig = OutputConfig()
    association: AssociationConfig = AssociationConfig()
    store: StoreConfig = StoreConfig()


DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"


def load_pipeline_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> PipelineConfig:
    """Load ``path`` (default ``configs/base.yaml`` when present) plus ``KEY=VALUE`` overrides."""
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    return load_config(PipelineConfig, path, overrides)
