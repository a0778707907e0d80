"""Stitching: the tracked segments of one camera joined back into one camera's tracks.

Consecutive segments overlap (:mod:`pipeline.scale.units`), so both have tracked the people in
the shared frames. A track of the earlier segment and one of the later are one person's when
their boxes coincide on the frames they share: mean box IoU of at least :data:`MIN_IOU` over
common frames, common frames covering at least half of the shorter one's presence in the
overlap; among such pairs, one-to-one by global assignment on IoU, then appearance (the cosine
of their mean features in the overlap) to part people whose boxes overlap each other. Matched
tracks continue one id; unmatched ones continue as new ids.

Each frame is owned by one segment, so the camera's rows are each segment's owned rows under
their joined ids, and each joined track's accumulator is the merge of its pieces' (exact mean
feature over the whole track). Ids are numbered 1..N by first owned frame (ties: segment, then
the segment's id), so the same segments always give the same ids.

>>> rows, states, joins = stitch_segments(results)  # doctest: +SKIP
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.boxes import iou_matrix
from pipeline.scale.worker import BoundaryObservations, SegmentResult
from pipeline.video.track_state import TrackAccumulator
from pipeline.video.tracks_file import TrackRows
from reid.vectors import l2_normalize

MIN_IOU = 0.5  # mean box IoU on common frames for two segments' tracks to be one person
MIN_SHARED = 0.5  # common frames / the shorter track's frames in the overlap
APPEARANCE_WEIGHT = 0.25  # cost of a pair = (1 - mean IoU) + this * (1 - cosine) / 2


def _in_frames(obs: BoundaryObservations, start: int, end: int) -> BoundaryObservations:
    keep = (obs.frame >= start) & (obs.frame < end)
    return BoundaryObservations(obs.frame[keep], obs.track_id[keep], obs.xyxy[keep], obs.feature[keep])


def _mean_features(obs: BoundaryObservations) -> dict[int, np.ndarray | None]:
    means = {}
    for track_id in np.unique(obs.track_id):
        feats = obs.feature[obs.track_id == track_id]
        feats = feats[~np.isnan(feats).any(axis=1)] if feats.size else feats
        if len(feats) == 0:
            means[int(track_id)] = None
            continue
        means[int(track_id)] = l2_normalize(feats.mean(axis=0))
    return means


def match_overlap(earlier: BoundaryObservations, later: BoundaryObservations, start: int, end: int) -> list[tuple[int, int]]:
    """Pairs ``(earlier id, later id)`` of one person in the overlap frames ``[start, end)``."""
    a, b = _in_frames(earlier, start, end), _in_frames(later, start, end)
    if len(a.frame) == 0 or len(b.frame) == 0:
        return []
    ids_a, ids_b = np.unique(a.track_id), np.unique(b.track_id)
    col_a = {int(t): i for i, t in enumerate(ids_a)}
    col_b = {int(t): i for i, t in enumerate(ids_b)}
    iou_sum = np.zeros((len(ids_a), len(ids_b)))
    shared = np.zeros((len(ids_a), len(ids_b)))
    frames_b = defaultdict(list)
    for i, f in enumerate(b.frame):
        frames_b[int(f)].append(i)
    frames_a = defaultdict(list)
    for i, f in enumerate(a.frame):
        frames_a[int(f)].append(i)
    for frame, rows_a in frames_a.items():
        rows_b = frames_b.get(frame)
        if not rows_b:
            continue
        ious = iou_matrix(a.xyxy[rows_a], b.xyxy[rows_b])
        ia = [col_a[int(t)] for t in a.track_id[rows_a]]
        ib = [col_b[int(t)] for t in b.track_id[rows_b]]
        np.add.at(iou_sum, (np.array(ia)[:, None], np.array(ib)[None, :]), ious)
        np.add.at(shared, (np.array(ia)[:, None], np.array(ib)[None, :]), 1.0)
    present_a = np.array([np.count_nonzero(a.track_id == t) for t in ids_a], np.float64)
    present_b = np.array([np.count_nonzero(b.track_id == t) for t in ids_b], np.float64)
    mean_iou = iou_sum / np.maximum(shared, 1.0)
    enough = shared >= MIN_SHARED * np.minimum(present_a[:, None], present_b[None, :])
    feat_a, feat_b = _mean_features(a), _mean_features(b)
    cosine = np.array([[float(feat_a[int(ta)] @ feat_b[int(tb)])
                        if feat_a[int(ta)] is not None and feat_b[int(tb)] is not None else 0.0
                        for tb in ids_b] for ta in ids_a]).reshape(len(ids_a), len(ids_b))
    allowed = enough & (mean_iou >= MIN_IOU)
    cost = np.where(allowed, (1.0 - mean_iou) + APPEARANCE_WEIGHT * (1.0 - cosine) / 2.0, 1e6)
    rows, cols = linear_sum_assignment(cost)
    return [(int(ids_a[r]), int(ids_b[c])) for r, c in zip(rows, cols) if allowed[r, c]]


def stitch_segments(results: list[SegmentResult]) -> tuple[TrackRows, dict[int, TrackAccumulator], int]:
    """One camera's segments (in segment order) as one camera: its rows, its accumulators by id,
    and how many tracks continued across a segment boundary."""
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def find(node):
        while parent.get(node, node) != node:
            node = parent[node]
        return node

    joins = 0
    for k in range(len(results) - 1):
        earlier, later = results[k], results[k + 1]
        start, end = later.unit.frames.start, earlier.unit.frames.end
        for ta, tb in match_overlap(earlier.boundary, later.boundary, start, end):
            parent[find((k + 1, tb))] = find((k, ta))
            joins += 1
    pieces = defaultdict(list)  # root -> [(segment, own id)] with owned frames
    for k, result in enumerate(results):
        for track_id in result.states:
            pieces[find((k, int(track_id)))].append((k, int(track_id)))
    order = sorted(pieces.values(), key=lambda nodes: min(
        (results[k].states[t].first_frame, k, t) for k, t in nodes))
    new_id = {node: i for i, nodes in enumerate(order, start=1) for node in nodes}
    parts, states = [], {}
    for k, result in enumerate(results):
        rows = result.rows
        ids = np.array([new_id[(k, int(t))] for t in rows.track_id], np.int64).reshape(-1)
        parts.append(TrackRows(rows.frame, ids, rows.xyxy, rows.confidence, rows.interpolated))
        for track_id, state in sorted(result.states.items()):
            camera_id = new_id[(k, int(track_id))]
            states[camera_id] = state if camera_id not in states else states[camera_id].merge(state)
    rows = TrackRows(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                       ("frame", "track_id", "xyxy", "confidence", "interpolated"))) if parts else TrackRows.empty()
    return rows.sorted(), dict(sorted(states.items())), joins
