"""Give a finished camera's tracks new ids: the one way to apply an id map to its outputs.

An id map ``{old id: new id}`` may send several old ids to one new id (fragments of one person
joined, ``pipeline.video.refine.relink``; one person's pieces of several segments stitched), or an id
to :data:`DROPPED` (a track that is not a person: its boxes and summary are removed). Ids it
does not name keep their own id. :func:`apply_id_map` rewrites the camera folder consistently:
``tracks.txt`` (rows relabelled, frame then id order), the summaries in ``tracks.json`` +
``track_features.npz`` (the merged tracks' accumulators merged, so the mean feature is exact)
and ``thumbs/`` (the best crop of the merged tracks). ``annotated.mp4`` is drawn by the chain
with the old ids: redraw it with :func:`pipeline.video.annotate.render_tracks_video` when the ids
changed and the source can be read again.

Ids after a link are renumbered densely, 1..N in order of first appearance (first frame, then
the smaller old id): :func:`dense_id_map` composes a link map with that renumbering, so the
result is deterministic whatever ids the tracker (or a segment) handed out.

>>> sorted(dense_id_map({5: 2}, {2: 10, 5: 40, 7: 3}).items())  # 5 joins 2; by first frame: 7 (3), 2 (10)
[(2, 2), (5, 2), (7, 1)]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.types import TrackSummary
from pipeline.video.track_state import TrackAccumulator, read_track_states, write_track_states
from pipeline.video.tracks_file import read_tracks_file, write_tracks_file


DROPPED = 0  # the new id of a track to remove (track ids are >= 1)


def dense_id_map(links: Mapping[int, int], first_frames: Mapping[int, int]) -> dict[int, int]:
    """``{old id: new id}`` for every id of ``first_frames`` (``{id: first frame}``): each id goes
    to its group (``links[id]``, or itself when not linked), and the groups are numbered 1..N by
    their first frame, ties by their smallest old id."""
    groups: dict[int, list[int]] = {}
    for track_id in first_frames:
        groups.setdefault(int(links.get(track_id, track_id)), []).append(int(track_id))
    order = sorted(groups.values(), key=lambda members: (min(first_frames[m] for m in members), min(members)))
    return {member: new for new, members in enumerate(order, start=1) for member in members}


def merge_states(states: Mapping[int, TrackAccumulator], id_map: Mapping[int, int]) -> dict[int, TrackAccumulator]:
    """The accumulators regrouped by new id (merged in old-id order: the result does not depend on
    the dict's order), without the dropped ones. Raises ``ValueError`` for a new id below 0."""
    merged: dict[int, TrackAccumulator] = {}
    for old in sorted(states):
        new = int(id_map.get(old, old))
        if new < DROPPED:
            raise ValueError(f"id map sends track {old} to {new}; track ids are >= 1 ({DROPPED}: dropped)")
        if new == DROPPED:
            continue
        merged[new] = states[old] if new not in merged else merged[new].merge(states[old])
    return merged


def apply_id_map(folder: str | Path, id_map: Mapping[int, int], representatives: int = 5,
                 thumbnails: bool = True) -> list[TrackSummary]:
    """Relabel the camera outputs in ``folder`` with ``id_map``; returns the new summaries.

    Raises ``ValueError`` when two tracks sent to one id both have a box in the same frame (one
    person cannot be in two places: such tracks are not fragments of one track), before anything
    is written.
    """
    folder = Path(folder)
    rows = read_tracks_file(folder / "tracks.txt")
    rows.track_id = np.array([id_map.get(int(t), int(t)) for t in rows.track_id], np.int64).reshape(-1)
    rows = rows.take(rows.track_id != DROPPED)
    keys = rows.frame * (1 << 32) + rows.track_id
    unique, counts = np.unique(keys, return_counts=True)
    if (counts > 1).any():
        clash = int(unique[counts > 1][0])
        raise ValueError(f"{folder}: the id map puts two boxes of track {clash % (1 << 32)} in frame "
                         f"{(clash >> 32) + 1} (tracks.txt numbering)")
    merged = merge_states(read_track_states(folder), id_map)
    summaries = write_track_states(folder, _camera_name(folder), merged, representatives, thumbnails)
    write_tracks_file(folder / "tracks.txt", rows)
    return summaries


def _camera_name(folder: Path) -> str:
    entries = json.loads((folder / "tracks.json").read_text())
    return entries[0]["camera"] if entries else folder.name
