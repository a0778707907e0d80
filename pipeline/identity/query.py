"""Queries on a run's track store: which identity is this, and where and when was it seen?

Three ways in, one answer shape (:class:`QueryResult`): identities ranked by similarity, each
with its appearances per camera (visits: the camera's tracks of that identity, joined when at
most ``VISIT_GAP_S`` apart), each with start/end time, start/end frame (0-based frame indices of
the source video, not the 1-based frame numbers of ``tracks.txt``), track ids, score, thumbnail.

- :func:`query_image`: a person crop, or a frame plus a box, embedded with the store's own
  embedder (the one named in the run's ``run.json``; a different fingerprint is refused);
- :func:`query_track`: a stored track, ``CAMERA:TRACK_ID``;
- :func:`query_identity`: an identity id, its appearances scored against its mean feature.

Scores are cosine similarities; a track's score is the best of its aggregate feature and its
representative features.

>>> result = query_track(Path("runs/mall"), "hall", 3)  # doctest: +SKIP
>>> result.best.identity, [a.camera for a in result.best.appearances]  # doctest: +SKIP
(7, ['hall', 'door'])
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from pipeline.colour import CameraColour
from pipeline.config import DetectorConfig, PipelineConfig, ReidConfig
from pipeline.identity.layout import STORE_DIR, camera_folders, is_camera_folder, run_inside
from pipeline.identity.store import StoredTrack, TrackStore
from pipeline.identity.store_db import DB_NAME
from pipeline.run_folders import running_todo
from pipeline.text import counting_order, plural
from pipeline.types import Frame, read_run_record
from reid.errors import CrosscamError
from reid.vectors import l2_normalize

if TYPE_CHECKING:
    from reid import Embedder

log = logging.getLogger(__name__)

VISIT_GAP_S = 10.0  # seconds; tracks of one camera at most this far apart are one visit (a track broken by occlusion)
CANDIDATES_PER_RESULT = 10  # nearest tracks fetched per identity asked for, before grouping


@dataclass
class Appearance:
    """One visit of an identity to one camera.

    Times are seconds (on the common clock when the run has a cameras file, else from the video's
    start). Frames are 0-based frame indices of the camera's source video, ``end_frame`` inclusive;
    MOTChallenge ``tracks.txt`` numbers the same frames from 1.
    """

    camera: str
    start_s: float
    end_s: float
    start_frame: int  # 0-based index in the source video (tracks.txt frame number - 1)
    end_frame: int  # 0-based, inclusive
    track_ids: list[int]
    score: float
    thumbnail: str | None  # absolute path of the best-scoring track's thumbnail


@dataclass
class IdentityMatch:
    identity: int
    score: float
    appearances: list[Appearance]  # in time order (start, then camera): where the person went


@dataclass
class QueryResult:
    """Identities ranked by score; ``best`` is the answer, or None when nothing passed ``min_score``."""

    query: str
    matches: list[IdentityMatch]
    common_clock: bool
    clock_origin: str | None = None  # when the common clock's 0 s is (ISO 8601), where start times were given

    @property
    def best(self) -> IdentityMatch | None:
        return self.matches[0] if self.matches else None

    def to_json(self) -> dict:
        best = self.best
        return {
            "query": self.query,
            "identity": best.identity if best else None,
            "score": best.score if best else None,
            "appearances": [asdict(a) for a in best.appearances] if best else [],
            "matches": [asdict(m) for m in self.matches],
            "common_clock": self.common_clock,
            "clock_origin": self.clock_origin,
        }


def open_run_store(run_dir: str | Path, config: PipelineConfig | None = None) -> TrackStore:
    """The run's store, refusing a missing or empty one with one line."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CrosscamError(f"{run_dir}: no such run directory; run `crosscam track ... --out {run_dir}` first")
    inner = run_inside(run_dir)
    if inner is not None:
        raise CrosscamError(f"{run_dir}: not a run directory, but {inner} is one: give that")
    if is_camera_folder(run_dir):
        raise CrosscamError(f"{run_dir}: one camera's outputs, not a run directory; give the run directory "
                            f"{run_dir.resolve().parent}")
    if not (run_dir / STORE_DIR / DB_NAME).is_file() and any((p / "run.json").is_file() for p in run_dir.iterdir()):
        raise CrosscamError(f"{run_dir}: camera outputs but no track store: `crosscam associate {run_dir}` builds it "
                            "from the cameras whose run.json says complete or interrupted")
    store = TrackStore.open(run_dir / STORE_DIR, config=(config or PipelineConfig()).store)
    if len(store) == 0:
        tracked = [f.name for f in camera_folders(run_dir, allow_none=True) if _has_tracks(f)]
        if tracked:  # an association that did not finish (a full disk, Ctrl-C)
            raise CrosscamError(f"{run_dir / STORE_DIR}: the track store is empty, but camera {tracked[0]} has tracks: "
                                f"`crosscam associate {run_dir}` adds them")
        raise CrosscamError(f"{run_dir / STORE_DIR}: the track store is empty; track a video with people into {run_dir} first")
    return store


def _has_tracks(folder: Path) -> bool:
    try:
        return bool(json.loads((folder / "tracks.json").read_text()))
    except (OSError, ValueError):
        return False


def query_track(
    run_dir: str | Path, camera: str, track_id: int, top_k: int = 5, min_score: float = -1.0,
    config: PipelineConfig | None = None, store: TrackStore | None = None,
) -> QueryResult:
    """Identities like the stored track ``camera:track_id``; its own identity ranks first.

    ``store``: the run's store already open (a server keeps one, with its index loaded)."""
    store = store if store is not None else open_run_store(run_dir, config)  # not `or`: that counts its rows
    try:
        track = store.track(camera, track_id)
    except CrosscamError:
        if camera not in {c.name for c in store.cameras()}:
            _refuse_camera_outside_store(Path(run_dir), camera, track_id, store)
        raise
    vectors = store.match_features([track.key])[0]  # (1 + R, D): its aggregate feature and representatives
    result = _rank(store, vectors, top_k, min_score, run_dir, f"track {camera}:{track_id}")
    return _own_identity_first(result, store, track.identity, vectors, min_score, run_dir, top_k)


def _refuse_camera_outside_store(run_dir: Path, camera: str, track_id: int, store: TrackStore) -> None:
    """A camera the store lacks but whose outputs are in the run (tracked, not yet associated: its
    run was stopped, or tracked with --no-identities) is refused with what to do about it."""
    if "/" in camera or "\\" in camera or camera.startswith("."):  # only folders of the run itself
        return
    run = read_run_record(run_dir / camera)
    status = run.get("status")
    if status is None:
        return
    model = ((run.get("models") or {}).get("reid") or {})
    if status in ("complete", "interrupted") and model.get("fingerprint") not in (None, store.embedder.fingerprint):
        raise CrosscamError(f"--track {camera}:{track_id}: camera {camera} was tracked with embedder {model.get('name')}, "
                            f"the store's cameras with {store.embedder.name}: their features are not comparable, so it "
                            f"is not in the store; track it again with the store's --reid")
    what_to_do = {"complete": f"`crosscam associate {run_dir}` adds it", "interrupted": f"`crosscam associate {run_dir}` "
                  "adds what was tracked", "running": running_todo(Path(run_dir), camera)}
    raise CrosscamError(f"--track {camera}:{track_id}: camera {camera} is in {run_dir} (run.json: {status}) but not in "
                        f"the track store yet; {what_to_do.get(status, 'track it again')}")


def query_identity(
    run_dir: str | Path, identity: int, top_k: int = 5, min_score: float = -1.0,
    config: PipelineConfig | None = None, store: TrackStore | None = None,
) -> QueryResult:
    """The identity's appearances, each scored against the identity's mean feature: all of them
    (``min_score`` drops only the other identities' appearances: the store says where it was)."""
    store = store if store is not None else open_run_store(run_dir, config)  # not `or`: that counts its rows
    tracks = store.tracks(identity=identity)
    if not tracks:
        known = store.identities()
        shown = ", ".join(map(str, known)) if len(known) <= 12 else (
            f"{', '.join(map(str, known[:6]))}, ... {', '.join(map(str, known[-3:]))}")
        raise CrosscamError(f"--identity {identity}: no such identity; the store has {plural(len(known), 'identity', 'identities')}: "
                            f"{shown} (see report.html)")
    mean = store.features([t.key for t in tracks]).mean(axis=0, keepdims=True)
    result = _rank(store, mean, top_k, min_score, run_dir, f"identity {identity}")
    members = store.identity_tracks([identity])[identity]
    own = _match(identity, members, _track_scores(members, l2_normalize(mean)), -1.0, Path(run_dir).resolve())
    result.matches = ([own] + [m for m in result.matches if m.identity != identity])[:top_k]
    return result


def query_image(
    run_dir: str | Path, image_path: str | Path, box: tuple[float, float, float, float] | None = None,
    top_k: int = 5, min_score: float = -1.0, config: PipelineConfig | None = None, camera: str | None = None,
    store: TrackStore | None = None,
) -> QueryResult:
    """Identities like the person in ``image_path`` (a crop, or a frame with ``box`` xyxy pixels).

    Without a box and with an ultralytics detector in the run's config, the largest person the
    detector finds is used; an image where it finds none is taken whole when it is shaped like a
    person crop (taller than wide) and refused otherwise. With the motion or replay detector the
    whole image is taken as the crop. ``camera`` names the run's camera the image
    comes from: its colour normalisation (``reid.camera_colour``, kept in its ``run.json``) is
    applied to the crop, as it was to that camera's crops. Without it the crop is embedded as it is.
    """
    run_dir = Path(run_dir)
    store = store if store is not None else open_run_store(run_dir, config)  # not `or`: that counts its rows
    if not Path(image_path).is_file():
        what = "a folder, not an image" if Path(image_path).is_dir() else "no such file"
        raise CrosscamError(f"--image {image_path}: {what}; pass a JPEG/PNG file")
    image = cv2.imread(str(image_path))
    if image is None:
        raise CrosscamError(f"--image {image_path}: cannot read it as an image; pass a JPEG/PNG file")
    folders = camera_folders(run_dir)
    run_config = json.loads((folders[0] / "run.json").read_text())["config"]
    crop = _person_crop(image, box, DetectorConfig.model_validate(run_config["detector"]), str(image_path))
    if camera is not None:
        colour = _camera_colour(folders, camera)
        if colour.mode == "none":
            log.warning("--camera %s: the run embedded %s's crops as they were (reid.camera_colour none), so the "
                        "image is too", camera, camera)
        crop = colour.apply(np.ascontiguousarray(crop))
    embedder = _run_embedder(json.dumps(run_config["reid"], sort_keys=True), _file_stamp(run_config["reid"].get("weights")))
    if (embedder.fingerprint, embedder.dim) != (store.embedder.fingerprint, store.embedder.dim):
        raise CrosscamError(
            f"{store.folder}: built with embedder {store.embedder.name} ({store.embedder.fingerprint[:12]}), "
            f"but the run's reid config now gives {embedder.name} ({embedder.fingerprint[:12]}); "
            f"restore the weights the run was tracked with"
        )
    vector = embedder.embed([crop], bgr=True, normalize=True)
    return _rank(store, vector, top_k, min_score, run_dir, f"image {image_path}")


@lru_cache(maxsize=2)
def _run_embedder(reid_config_json: str, weights_stamp: tuple | None) -> Embedder:
    """The embedder of a run's reid config, loaded once per process and weights file version
    (loading exports and checks an ONNX graph: about a second, many times the cost of one query)."""
    from reid import Embedder  # here: queries by track or identity never load torch

    return Embedder.from_config(ReidConfig.model_validate(json.loads(reid_config_json)))


def _file_stamp(path: str | None) -> tuple | None:
    """(size, mtime ns) of a weights file, so a file replaced in place is loaded again; None for a name."""
    stat = Path(path).stat() if path and Path(path).is_file() else None
    return (stat.st_size, stat.st_mtime_ns) if stat else None


def colour_normalised_cameras(run_dir: str | Path) -> list[str]:
    """The run's cameras whose crops went through a colour table (``reid.camera_colour``), by name."""
    return [f.name for f in camera_folders(Path(run_dir)) if _recorded_colour(f).lut is not None]


def colour_normalised(run: dict) -> bool:
    """Whether a camera's ``run.json`` (as a dict) says its crops went through a colour table."""
    return CameraColour.from_description(run.get("colour")).lut is not None


def _camera_colour(folders: list[Path], camera: str) -> CameraColour:
    by_name = {f.name: f for f in folders}
    if camera not in by_name:
        raise CrosscamError(f"--camera {camera!r}: not a camera of this run; use one of {', '.join(sorted(by_name, key=counting_order))}")
    return _recorded_colour(by_name[camera])


def _recorded_colour(folder: Path) -> CameraColour:
    """The colour normalisation a camera folder's ``run.json`` recorded (none for older runs)."""
    return CameraColour.from_description(json.loads((folder / "run.json").read_text()).get("colour"))


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x1,y1,x2,y2"`` pixels -> a tuple; a one-line error for anything else."""
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError:
        raise CrosscamError(f"--box {text!r}: expected four numbers x1,y1,x2,y2 in pixels") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise CrosscamError(f"--box {text!r}: expected four finite numbers x1,y1,x2,y2 in pixels")
    return x1, y1, x2, y2


def _person_crop(image: np.ndarray, box, detector_cfg: DetectorConfig, name: str) -> np.ndarray:
    """The part of ``image`` to embed: ``box``; else the largest person the run's detector finds;
    else the whole image, when the detector is motion/replay or the image is shaped like a person
    crop (taller than wide: a detector often finds nobody in a crop the person fills)."""
    h, w = image.shape[:2]
    if box is None and detector_cfg.model not in ("motion", "replay"):
        box = _largest_person(image, detector_cfg)
        if box is None and h <= w:
            raise CrosscamError(f"--image {name}: no person found by {detector_cfg.model}, and the {w}x{h} image is "
                                "not a person crop (taller than wide); pass a person crop or --box x1,y1,x2,y2")
    if box is None:
        return image
    given = ",".join(f"{v:g}" for v in box)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 <= x1 or y2 <= y1:
        raise CrosscamError(f"--box {given}: empty or outside the {w}x{h} image; give x1,y1,x2,y2 inside it")
    smallest = detector_cfg.min_box_size
    if x2 - x1 < smallest or y2 - y1 < smallest:
        raise CrosscamError(f"--box {given}: {x2 - x1}x{y2 - y1} pixels inside the image, under the {smallest} pixels a "
                            "side the run tracks (detector.min_box_size); draw the box around the whole person")
    return image[y1:y2, x1:x2]


def _largest_person(image: np.ndarray, detector_cfg: DetectorConfig) -> tuple[float, float, float, float] | None:
    """The xyxy box of the largest person ``detector_cfg``'s detector finds in ``image``; None when none."""
    from pipeline.video.detectors import build_detector  # here: only image queries run a detector

    found = build_detector(detector_cfg).detect([Frame("query", 0, 0.0, image)])[0]
    if len(found) == 0:
        return None
    areas = (found.xyxy[:, 2] - found.xyxy[:, 0]) * (found.xyxy[:, 3] - found.xyxy[:, 1])
    return tuple(float(v) for v in found.xyxy[int(np.argmax(areas))])


def _rank(
    store: TrackStore, vectors: np.ndarray, top_k: int, min_score: float, run_dir, label: str
) -> QueryResult:
    """Identities of the tracks nearest to any of ``vectors`` (Q, D), best first."""
    k, total = max(top_k, 1) * CANDIDATES_PER_RESULT, len(store)
    while True:  # one identity may hold every track fetched (a person seen all day): fetch more
        _, keys = store.search(vectors, k=min(k, total))
        identities = store.identities_of([key for key in keys.reshape(-1).tolist() if key >= 0])
        if len(identities) >= top_k or k >= total:
            break
        k *= 4
    members = store.identity_tracks(identities)
    scores = _scores_by_identity(members, l2_normalize(vectors))
    # an identity scores its best track: rank on that, and draw visits only for those shown
    passing = [ident for ident in identities if scores[ident] and max(scores[ident]) >= min_score]
    best = sorted(passing, key=lambda ident: (-max(scores[ident]), ident))[:top_k]
    root = Path(run_dir).resolve()
    matches = [_match(ident, members[ident], scores[ident], min_score, root) for ident in best]
    return QueryResult(label, matches, _common_clock(store), store.setting("clock_origin") or None)


def _own_identity_first(
    result: QueryResult, store: TrackStore, identity: int, vectors: np.ndarray, min_score: float, run_dir,
    top_k: int,
) -> QueryResult:
    """Put ``identity`` first when any of its appearances passes ``min_score``, then the others, at most ``top_k``."""
    own = next((m for m in result.matches if m.identity == identity), None)
    if own is None:
        members = store.identity_tracks([identity])[identity]
        own = _match(identity, members, _track_scores(members, l2_normalize(vectors)), min_score, Path(run_dir).resolve())
    others = [m for m in result.matches if m.identity != identity]
    result.matches = (([own] if own.appearances else []) + others)[:top_k]
    return result


def _track_scores(members: list[tuple[StoredTrack, np.ndarray]], query: np.ndarray) -> list[float]:
    """Per track of ``members`` (tracks with their (1 + R, D) match features, as
    ``TrackStore.identity_tracks`` gives them), its best cosine similarity to any row of ``query``
    (Q, D), unit rows."""
    return _scores_by_identity({0: members}, query)[0]


def _scores_by_identity(
    members: dict[int, list[tuple[StoredTrack, np.ndarray]]], query: np.ndarray
) -> dict[int, list[float]]:
    """:func:`_track_scores` for every identity's members, in one product of all their features,
    in float64 by numpy's own loops (``einsum``, no BLAS: the same sums in every process, so a
    server and `crosscam query` give the same scores, and no BLAS threads left spinning on the
    cores the store's scan runs on next)."""
    features = [both for tracks in members.values() for _, both in tracks]
    if not features:
        return {ident: [] for ident in members}
    stacked = np.concatenate(features).astype(np.float64)
    sims = np.einsum("md,qd->mq", stacked, query.astype(np.float64)).astype(np.float32)  # (sum of (1 + R), Q)
    starts = np.cumsum([0] + [len(both) for both in features[:-1]])
    best = np.minimum(1.0, np.maximum.reduceat(sims.max(axis=1), starts)).tolist()  # float32 rounding can pass 1
    scores, at = {}, 0
    for ident, tracks in members.items():
        scores[ident], at = best[at : at + len(tracks)], at + len(tracks)
    return scores


def _match(identity: int, members: list[tuple[StoredTrack, np.ndarray]], scores: list[float], min_score: float,
           run_dir: Path) -> IdentityMatch:
    """``identity``'s appearances from its tracks (``members``) and their ``scores``; ``run_dir`` resolved."""
    tracks = [track for track, _ in members]
    appearances = [a for a in _visits(tracks, scores, run_dir) if a.score >= min_score]
    appearances.sort(key=lambda a: (a.start_s, counting_order(a.camera), a.start_frame))
    return IdentityMatch(identity, max((a.score for a in appearances), default=-1.0), appearances)


def _visits(tracks: list[StoredTrack], scores: list[float], run_dir: Path) -> list[Appearance]:
    """Group one identity's tracks per camera into visits (gaps of at most VISIT_GAP_S seconds)."""
    visits: list[Appearance] = []
    order = sorted(range(len(tracks)), key=lambda i: (tracks[i].camera, tracks[i].start_s))
    for i in order:
        t, score = tracks[i], scores[i]
        last = visits[-1] if visits else None
        if last is not None and last.camera == t.camera and t.start_s - last.end_s <= VISIT_GAP_S:
            last.end_s, last.end_frame = max(last.end_s, t.end_s), max(last.end_frame, t.last_frame)
            last.track_ids.append(t.track_id)
            if score > last.score:
                last.score, last.thumbnail = score, _thumbnail(run_dir, t)
            continue
        visits.append(
            Appearance(t.camera, t.start_s, t.end_s, t.first_frame, t.last_frame, [t.track_id], score,
                       _thumbnail(run_dir, t))
        )
    return visits


def _thumbnail(run_dir: Path, track: StoredTrack) -> str | None:
    """The thumbnail's absolute path (``run_dir`` is resolved already)."""
    return str(run_dir / track.thumbnail) if track.thumbnail else None


def _common_clock(store: TrackStore) -> bool:
    return all(c.common_clock for c in store.cameras())
