"""The pipeline's options: one pydantic model per stage, composed into :class:`PipelineConfig`.

``configs/base.yaml`` holds the defaults users read; this module is the single source of truth
for names, types and bounds. Load with :func:`load_pipeline_config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal

from pydantic import BaseModel, Field

from pipeline.colour import ColourMode
from reid.config import EmbedderConfig, PathText, load_config


class _Section(BaseModel):
    # a setting of inf or nan is a typo (segment_s inf); a value set in Python is checked as one loaded from YAML
    model_config = {"extra": "forbid", "allow_inf_nan": False, "validate_assignment": True}


class SourceConfig(_Section):
    """Which frames are read, and how a live stream is re-opened when it drops."""

    stride: int = Field(1, ge=1)  # keep every n-th frame
    max_frames: int | None = Field(None, ge=1)  # stop after this many source frames
    default_fps: float = Field(25.0, gt=0.0)  # when neither the container nor seqinfo.ini gives one (raw .264)
    max_decode_failures: int = Field(25, ge=1)  # consecutive undecodable frames before a file is given up
    reconnect_attempts: int = Field(5, ge=0)  # stream re-opens after a drop before giving up
    reconnect_delay_s: float = Field(1.0, ge=0.0)  # first back-off delay; doubles per attempt
    reconnect_max_delay_s: float = Field(30.0, ge=0.0)


class DetectorConfig(_Section):
    """Person detection: an ultralytics model file/name, ``motion`` or ``replay``."""

    model: PathText = "motion"
    confidence: float = Field(0.4, ge=0.0, le=1.0)
    iou: float = Field(0.5, ge=0.0, le=1.0)
    image_size: int = Field(640, ge=32)
    half: bool = False
    device: str = "auto"
    batch_size: int = Field(8, ge=1)  # frames per detector call
    prefetch: int = Field(2, ge=0)  # batches decoded + detected ahead in a background thread (0: none)
    min_box_size: int = Field(8, ge=1)  # boxes narrower or shorter than this (pixels, clipped) are dropped
    motion_width: int = Field(384, ge=64)  # frames are downscaled to this width for background subtraction
    motion_history: int = Field(500, ge=1)  # frames the background model remembers
    motion_var_threshold: float = Field(25.0, gt=0.0)  # MOG2 squared Mahalanobis distance for foreground
    motion_min_area: float = Field(0.004, gt=0.0, le=1.0)  # smallest blob, as a fraction of the frame area
    motion_min_aspect: float = Field(1.0, gt=0.0)  # height / width of a standing person, lower bound
    motion_max_aspect: float = Field(5.0, gt=0.0)  # ... and upper bound
    motion_prime_frames: int = Field(32, ge=1)  # the background is re-primed from the median of the first frames
    motion_person_ratio: float = Field(0.4, gt=0.0)  # width / height of one person; wider blobs are split
    replay_file: PathText | None = None  # det.txt for `replay`; default <sequence>/det/det.txt
    # Boxes from here up to ``confidence`` may extend confirmed tracks (ByteTrack's second
    # association, ``pipeline.video.refine.low_confidence``), never start one; None: not used. Off by
    # default: with YOLOv8n + OSNet it cost IDF1 on PETS09-S2L1 (0.854 -> 0.786 at 0.1, IoU 0.5)
    # and TUD-Campus (tests/benchmarks/bench_tracking.py; README). ByteTrack's value is 0.1.
    low_confidence: float | None = Field(None, ge=0.0, le=1.0)


class ReidConfig(EmbedderConfig):
    """``reid``: the embedder's options (:class:`reid.config.EmbedderConfig`) plus what each camera's
    frames go through before they are cropped for it.

    ``camera_colour: equalize`` equalises each colour channel over the camera's first frames
    (:mod:`pipeline.colour`), so cameras with different colour casts describe one person alike.
    """

    camera_colour: ColourMode = "none"


class TrackerConfig(_Section):
    """deep-sort-realtime's ``DeepSort`` parameters."""

    max_age: int = Field(30, ge=1)
    n_init: int = Field(2, ge=1)  # frames to confirm a track (DeepSORT's 3; back-fill and dropping weak tracks cover a short one)
    max_iou_distance: float = Field(0.7, ge=0.0, le=1.0)
    max_cosine_distance: float = Field(0.3, ge=0.0, le=2.0)
    nn_budget: int | None = Field(100, ge=1)
    # With a detector whose boxes can hold several people (motion), a box covering the predicted
    # boxes of two or more tracks is split into them (pipeline.video.blob_split.split_by_predictions).
    split_merged: bool = True
    split_min_cover: float = Field(0.6, gt=0.0, le=1.0)  # share of a predicted box inside the box to split
    # Refinements of recorded video (pipeline.video.refine), each a switch so its effect can be measured alone.
    backfill: bool = True  # a confirmed track's tentative boxes are output too (from its first frame)
    low_confidence_iou: float = Field(0.7, gt=0.0, le=1.0)  # IoU a low-confidence box needs with a track's prediction
    interpolate: Literal["none", "linear", "gsi"] = "gsi"  # fill missed frames inside a track
    interpolate_max_gap: int = Field(20, ge=1)  # longest gap filled, in processed frames (the chain's look-back)
    smooth_sigma: float = Field(3.0, ge=0.0)  # boxes smoothed by a Gaussian-weighted line through their track's nearby boxes (processed frames; 0: off)
    relink: bool = True  # after the video: join fragments of one person (pipeline.video.refine.relink)
    link_max_gap_s: float = Field(3.0, gt=0.0)  # longest time between a fragment's end and the next one's start
    link_max_speed: float = Field(1.5, gt=0.0)  # body heights per second a person may move between fragments
    link_max_cosine_distance: float = Field(0.3, ge=0.0, le=2.0)  # mean-feature distance of linked fragments
    camera_motion: Literal["none", "ecc", "flow"] = "none"  # compensate a moving camera before the Kalman prediction
    # After the video: a track none of whose boxes reached this detector confidence is dropped (a
    # static sign, a shadow); BoT-SORT starts tracks only from such boxes, crosscam keeps the
    # weaker boxes before and after them. None: every track is kept.
    min_peak_confidence: float | None = Field(0.7, ge=0.0, le=1.0)


class OutputConfig(_Section):
    """What each camera writes into the run directory."""

    video: bool = True
    codec: str = Field("mp4v", min_length=4, max_length=4)  # FourCC of annotated.mp4
    trails: bool = False
    trail_length: int = Field(30, ge=2)  # frames of box-bottom history drawn per track
    thumbnails: bool = True
    representatives: int = Field(5, ge=1, le=5)  # individual features kept per track summary


class AssociationConfig(_Section):
    """Cross-camera association of tracks into global identities (``pipeline.identity.association``).

    Two tracks join one identity only if their features' cosine similarity and the mean cosine
    over all track pairs of their two clusters both reach ``threshold`` (on centred features:
    ``centered_threshold``, or ``reciprocal_threshold`` for reciprocal links). The default is
    calibrated for OSNet-x0.25 (MSMT17) features with ``tests/benchmarks/calibrate_threshold.py``
    on CUHK03 tracks (mean crop feature per person and camera): the smallest threshold whose
    pairwise precision, over groups of 20 people, reaches 0.8 (0.825: precision 0.81, recall
    0.12; the F1-best 0.725 has precision 0.53). Precision first: a false merge puts another
    person's appearances into query answers. On the real hall clip, the same person seen by
    two virtual cameras scores 0.85-0.92. Re-calibrate for another embedder.
    """

    threshold: float = Field(0.825, ge=-1.0, le=1.0)  # cosine similarity to link two tracks
    neighbors: int = Field(20, ge=1)  # k of the k-nearest-neighbour graph of track features
    exact_search_max: int = Field(10_000, ge=1)  # above this many tracks the kNN graph uses IVF
    overlap_tolerance_s: float = Field(0.0, ge=0.0)  # same-camera tracks may overlap this long
    # Subtract each camera's mean track feature before comparing (``association.center_per_camera``):
    # removes what a camera adds to every feature (colour cast, light, background). Centred cosines
    # centre on 0, so they have their own threshold. It needs every camera to have at least
    # ``association.MIN_TRACKS_TO_CENTER`` (6) tracks (a stable mean); otherwise raw features and
    # ``threshold`` are used (on the real two-camera test, 4-5 tracks per camera, centring merged strangers).
    center_cameras: bool = True
    centered_threshold: float = Field(0.5, ge=-1.0, le=1.0)  # cosine of centred features to link two tracks
    # Centred features only: also link two tracks of two cameras that are each other's most similar
    # track in the other camera, from this cosine up (``association.reciprocal_links``); None: off.
    # OSNet on CUHK03 tracks, groups of 20 people of whom 7 are seen by one camera only
    # (calibrate_threshold.py --center-cameras --reciprocal 0.25 --one-camera 7): centred 0.5 alone gives
    # pairwise precision 0.87 / recall 0.48; with reciprocal links from 0.25, 0.85 / 0.83 (0.425 alone:
    # 0.80 / 0.65). Without one-camera people 0.91 / 0.80, with 12 of 20: 0.83 / 0.86.
    reciprocal_threshold: float | None = Field(0.25, ge=-1.0, le=1.0)
    # False (default): two tracks of one camera never share an identity, even at different times (a
    # person who leaves a view and comes back gets a second identity). One camera's crops share its
    # background and light, so appearance alone joins its different people: PETS09-S2L1 (one camera,
    # 19 people, OSNet-x0.25) went from 20 tracks to 10 identities, IDF1 of the global ids 0.540 against
    # 0.827 for the tracks; with the ImageNet MobileNetV2 on demo seeds 0-11, 70 of the 74 same-camera
    # pairs joined were two people. True: for an embedder that tells one camera's people apart.
    join_same_camera: bool = False


class StoreConfig(_Section):
    """The FAISS + SQLite track store inside the run directory (``pipeline.identity.store``).

    ``auto`` is an exact inner-product index up to ``large_store_size`` vectors and IVF above.
    """

    index: Literal["auto", "flat", "ivf", "hnsw"] = "auto"
    large_store_size: int = Field(200_000, ge=1)  # auto switches from flat to IVF above this
    ivf_nlist: int | None = Field(None, ge=1)  # IVF cells; None = 4 * sqrt(number of vectors)
    ivf_nprobe: int = Field(64, ge=1)  # IVF cells visited per query (see tests/benchmarks/bench_store.py)
    hnsw_m: int = Field(32, ge=4)  # HNSW graph degree
    hnsw_ef_search: int = Field(128, ge=1)  # HNSW search breadth
    gpu: bool = True  # search on the GPU when faiss-gpu is installed and a GPU is visible
    bf16_scan: bool = True  # flat index, bf16 CPU: a bf16 pass picks candidates, fp32 scores them (same answers)


class ScaleConfig(_Section):
    """``crosscam track --workers N``: cameras and segments of long videos on Ray workers (``pipeline.scale``)."""

    segment_s: float = Field(300.0, ge=0.0)  # videos are cut into segments this long (0: whole videos)
    overlap_s: float = Field(4.0, ge=0.0)  # consecutive segments share this much video, to stitch their tracks
    threads_per_worker: int | None = Field(None, ge=1)  # intra-op threads per worker; None: cluster CPUs / workers
    max_retries: int = Field(3, ge=0)  # times a unit runs again after its worker process died


class PipelineConfig(_Section):
    """Every option of ``crosscam track`` and the stages after it."""

    source: SourceConfig = SourceConfig()
    detector: DetectorConfig = DetectorConfig()
    reid: ReidConfig = ReidConfig()
    tracker: TrackerConfig = TrackerConfig()
    output: OutputConfig = OutputConfig()
    association: AssociationConfig = AssociationConfig()
    store: StoreConfig = StoreConfig()
    scale: ScaleConfig = ScaleConfig()


DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"


def load_pipeline_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> PipelineConfig:
    """Load ``path`` (default ``configs/base.yaml`` when present) plus ``KEY=VALUE`` overrides."""
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    return load_config(PipelineConfig, path, overrides)
