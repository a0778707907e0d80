"""After a camera's video has been tracked to the end: re-link its fragments, drop tracks that
are not people, and keep every output consistent with the final ids.

:func:`finalise_camera` runs on a camera folder whose sinks are closed (a complete run only: an
interrupted run keeps its online tracks). With ``tracker.relink`` it joins fragments of one
person (:mod:`pipeline.video.refine.relink`) and renumbers the ids densely by first appearance
(:func:`pipeline.video.relabel.dense_id_map`); with ``tracker.min_peak_confidence`` it drops the
tracks none of whose boxes the detector was that sure of. When that changes any id, it redraws
``annotated.mp4`` from the re-read source with the new ids first (:mod:`pipeline.video.annotate`), then
rewrites ``tracks.txt`` and the summaries (:func:`pipeline.video.relabel.apply_id_map`) and puts the
new video in place. A Ctrl-C during the redraw leaves the online outputs as they were. A
source that cannot be read again (a stream) keeps the video drawn online, with the online ids.

>>> result = finalise_camera(folder, states, source, cfg)  # doctest: +SKIP
>>> result.links, result.redrawn  # doctest: +SKIP
({7: 3}, True)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import PipelineConfig
from pipeline.video.annotate import render_tracks_video
from pipeline.video.refine.relink import TrackEnds, link_fragments
from pipeline.video.relabel import DROPPED, apply_id_map, dense_id_map
from pipeline.video.sources import FrameSource, StreamSource, open_source, source_warnings_muted
from pipeline.video.track_state import TrackAccumulator
from pipeline.video.tracks_file import read_camera_tracks

log = logging.getLogger(__name__)

VIDEO = "annotated.mp4"


@dataclass
class FinaliseResult:
    """What :func:`finalise_camera` changed."""

    links: dict[int, int] = field(default_factory=dict)  # fragment id -> id of its chain's first track (online ids)
    id_map: dict[int, int] = field(default_factory=dict)  # online id -> final id (only ids that changed)
    redrawn: bool = False  # annotated.mp4 drawn again with the final ids


def final_ids(states: dict[int, TrackAccumulator], cfg: PipelineConfig) -> tuple[dict[int, int], dict[int, int]]:
    """The fragments of a finished camera to join (``{fragment id: first id of its chain}``) and the
    whole id map (``{id: final id}``): with ``tracker.relink``, or when tracks are dropped, every id,
    dense by first appearance; the tracks of a chain none of whose boxes reached
    ``tracker.min_peak_confidence`` go to :data:`~pipeline.video.relabel.DROPPED`. Both empty when
    nothing changes. ``states``: the camera's tracks' accumulators, by id."""
    t = cfg.tracker
    relinking = t.relink and bool(states)
    links: dict[int, int] = {}
    if relinking:
        ends = [TrackEnds.from_state(track_id, state) for track_id, state in sorted(states.items())]
        links = link_fragments(ends, t.link_max_gap_s, t.link_max_speed, t.link_max_cosine_distance)
    weak = weak_tracks(states, links, t.min_peak_confidence)
    id_map = {track_id: DROPPED for track_id in weak}
    if relinking or weak:  # the kept ids 1..N again, and every one in the map (a video redrawn draws only those)
        id_map.update(dense_id_map(links, {tid: s.first_frame for tid, s in states.items() if tid not in weak}))
    return links, id_map


def relinked_record(links: dict[int, int], id_map: dict[int, int], redrawn: bool) -> dict:
    """What ``run.json`` says of a camera's finalising (``relinked``): links made, ids of kept tracks
    changed, tracks dropped, whether the video was drawn again."""
    return {"links": len(links), "ids_changed": sum(new not in (old, DROPPED) for old, new in id_map.items()),
            "dropped": sum(new == DROPPED for new in id_map.values()), "video_redrawn": redrawn}


def weak_tracks(states: dict[int, TrackAccumulator], links: dict[int, int], min_peak: float | None) -> set[int]:
    """The ids of the chains of tracks (``links``: fragment id -> its chain's first id) whose
    highest detector confidence is below ``min_peak`` (none when it is None)."""
    if min_peak is None:
        return set()
    peaks: dict[int, float] = {}
    for track_id, state in states.items():
        chain = links.get(track_id, track_id)
        peaks[chain] = max(peaks.get(chain, 0.0), state.peak_confidence)
    return {track_id for track_id in states if peaks[links.get(track_id, track_id)] < min_peak}


def finalise_camera(folder: Path, states: dict[int, TrackAccumulator], source: FrameSource,
                    cfg: PipelineConfig) -> FinaliseResult:
    """Re-link the finished camera in ``folder`` (``states``: its tracks' accumulators, by id)."""
    result = FinaliseResult()
    result.links, id_map = final_ids(states, cfg)
    result.id_map = {old: new for old, new in id_map.items() if old != new}
    if not result.id_map:
        return result
    redrawn = _redraw(folder, id_map, source, cfg) if cfg.output.video else None
    apply_id_map(folder, id_map, cfg.output.representatives, cfg.output.thumbnails)
    if redrawn is not None:
        os.replace(redrawn, folder / VIDEO)
        result.redrawn = True
    return result


def _redraw(folder: Path, id_map: dict[int, int], source: FrameSource, cfg: PipelineConfig) -> Path | None:
    """The camera's video drawn again with ``id_map`` beside ``annotated.mp4``; None for a stream."""
    if isinstance(source, StreamSource):
        log.warning("%s: a stream cannot be read again; %s keeps the ids drawn online (tracks.txt has the "
                    "re-linked ones)", source.camera, VIDEO)
        return None
    out = folder / "annotated.relinked.mp4"
    trail = cfg.output.trail_length if cfg.output.trails else 0
    with source_warnings_muted(), open_source(source.uri, source.camera, source.cfg) as again:
        render_tracks_video(again, read_camera_tracks(folder), out, id_map, codec=cfg.output.codec,
                            trail_length=trail)  # a drawing stopped leaves no file
    return out
