"""Re-linking within a camera: fragments of one person's track joined after the video ends.

A person hidden for longer than DeepSORT's ``max_age`` (or whose return its gates refused)
comes back as a new track. With the whole video seen, each track that ends can be compared
with each track that starts later, and the fragments of one person joined:

1. **motion first** (no appearance): the later track must start within ``max_gap_s`` of the
   earlier one's end, no farther from it than a person walks in that time (``max_speed`` body
   heights per second, plus half a body height), at a similar height (within a factor 1.5);
2. **then appearance**: among the plausible pairs, the cosine distance of their mean ReID
   features must be at most ``max_cosine_distance``; the cost of a pair is that distance plus a
   small term for how far the later track starts from where the earlier one's motion led;
3. **one global assignment** (Hungarian, ``scipy.optimize.linear_sum_assignment``, solved per
   connected group of plausible pairs): each track gets at most one successor and one
   predecessor, so chains of fragments form and no early good pair is taken greedily from a
   better one.

:func:`link_fragments` is a pure function of per-track end information (:class:`TrackEnds`) to
an id map ``{old id: id of the chain's first track}`` (ids not linked are left out); apply it to
a camera's outputs with :func:`pipeline.video.relabel.apply_id_map`.

>>> feature = np.array([1.0, 0.0], np.float32)
>>> a = TrackEnds(1, 0, 9, 0.0, 0.9, np.array([[0.0, 0, 0, 20, 60]]), np.array([[0.9, 18, 0, 38, 60]]), feature)
>>> b = TrackEnds(2, 20, 30, 2.0, 3.0, np.array([[2.0, 40, 0, 60, 60]]), np.array([[3.0, 50, 0, 70, 60]]), feature)
>>> link_fragments([a, b], max_gap_s=5.0, max_speed=1.5, max_cosine_distance=0.3)
{2: 1}
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.video.track_state import TrackAccumulator

HEIGHT_RATIO = 1.5  # largest ratio between the heights of two fragments of one person
REACH_MARGIN = 0.5  # body heights added to the walking reach (box jitter, a step out of view)
MOTION_WEIGHT = 0.05  # cost per body height between where a track's motion led and where the next starts
_INFEASIBLE = 1e6


@dataclass(frozen=True)
class TrackEnds:
    """What re-linking knows of a track: extent, the boxes near both ends, mean appearance.

    ``head`` / ``tail``: ``(K, 5)`` rows ``time_s, x1, y1, x2, y2`` of the first / last detected
    boxes (time order); ``feature``: ``(D,)`` unit mean feature, or None (no feature seen).
    """

    track_id: int
    first_frame: int
    last_frame: int
    start_s: float
    end_s: float
    head: np.ndarray
    tail: np.ndarray
    feature: np.ndarray | None

    @classmethod
    def from_state(cls, track_id: int, state: TrackAccumulator) -> "TrackEnds":
        def rows(items):
            return np.array([[t, *b] for _, t, b in items], np.float64).reshape(-1, 5)

        return cls(track_id, state.first_frame, state.last_frame, state.start_s, state.end_s,
                   rows(state.head), rows(state.tail), state.mean_feature)


def _foot_and_velocity(rows: np.ndarray, at_end: bool) -> tuple[np.ndarray, float, np.ndarray]:
    """Bottom-centre point (x, y) of the end box, its height, and the velocity (pixels / s) of
    the bottom centre fitted over ``rows`` (zero when they span no time)."""
    feet = np.stack([(rows[:, 1] + rows[:, 3]) / 2, rows[:, 4]], axis=1)
    end = -1 if at_end else 0
    height = float(rows[end, 4] - rows[end, 2])
    times = rows[:, 0]
    if len(rows) < 2 or np.ptp(times) <= 0:
        return feet[end], height, np.zeros(2)
    centred = times - times.mean()
    velocity = (centred[:, None] * (feet - feet.mean(axis=0))).sum(axis=0) / (centred**2).sum()
    return feet[end], height, velocity


def link_cost(earlier: TrackEnds, later: TrackEnds, max_gap_s: float, max_speed: float,
              max_cosine_distance: float) -> float:
    """The cost of ``later`` continuing ``earlier`` (lower is better), or ``inf`` if implausible."""
    gap = later.start_s - earlier.end_s
    if later.first_frame <= earlier.last_frame or not 0.0 < gap <= max_gap_s:
        return np.inf
    if len(earlier.tail) == 0 or len(later.head) == 0 or earlier.feature is None or later.feature is None:
        return np.inf
    end, end_height, velocity = _foot_and_velocity(earlier.tail, at_end=True)
    start, start_height, _ = _foot_and_velocity(later.head, at_end=False)
    height = max(min(end_height, start_height), 1.0)
    if max(end_height, start_height) > HEIGHT_RATIO * height:
        return np.inf
    if np.linalg.norm(start - end) > (max_speed * gap + REACH_MARGIN) * height:
        return np.inf
    distance = 1.0 - float(np.dot(earlier.feature, later.feature))
    if distance > max_cosine_distance:
        return np.inf
    speed = np.linalg.norm(velocity)
    if speed > max_speed * height:  # a jittery end: do not extrapolate faster than a person walks
        velocity = velocity * (max_speed * height / speed)
    drift = np.linalg.norm(end + velocity * gap - start) / height
    return distance + MOTION_WEIGHT * drift


def link_fragments(ends: Sequence[TrackEnds], max_gap_s: float, max_speed: float,
                   max_cosine_distance: float) -> dict[int, int]:
    """``{track id: id of the first track of its chain}`` for every track joined to an earlier one.

    Only pairs whose gap is within ``max_gap_s`` are scored (found by bisecting the tracks sorted
    by start time: linear in the tracks, where every pair was quadratic: 24 s for 3,500 tracks),
    and the assignment is solved per connected group of plausible pairs, which gives the same links
    as one assignment over every pair.
    """
    if len(ends) < 2:
        return {}
    by_start = sorted(range(len(ends)), key=lambda k: ends[k].start_s)
    starts = [ends[k].start_s for k in by_start]
    pairs: dict[tuple[int, int], float] = {}
    for i, earlier in enumerate(ends):
        for position in range(bisect_right(starts, earlier.end_s), bisect_right(starts, earlier.end_s + max_gap_s)):
            j = by_start[position]
            cost = link_cost(earlier, ends[j], max_gap_s, max_speed, max_cosine_distance) if j != i else np.inf
            if np.isfinite(cost):
                pairs[i, j] = cost
    successor = {}
    for rows, cols in _groups(pairs, len(ends)):
        cost = np.full((len(rows), len(cols)), _INFEASIBLE)
        for a, i in enumerate(rows):
            for b, j in enumerate(cols):
                cost[a, b] = pairs.get((i, j), _INFEASIBLE)
        for a, b in zip(*linear_sum_assignment(cost)):
            if cost[a, b] < _INFEASIBLE:
                successor[ends[rows[a]].track_id] = ends[cols[b]].track_id
    return chain_links(ends, successor)


def chain_links(ends: Sequence[TrackEnds], successor: dict[int, int]) -> dict[int, int]:
    """``{track id: id of the first track of its chain}`` for the tracks ``successor`` (``{track id:
    the id continuing it}``) puts after another."""
    predecessor = {v: k for k, v in successor.items()}
    links = {}
    for track in sorted(ends, key=lambda e: e.first_frame):
        root = track.track_id
        while root in predecessor:
            root = predecessor[root]
        if root != track.track_id:
            links[track.track_id] = root
    return links


def _groups(pairs: dict[tuple[int, int], float], n: int) -> list[tuple[list[int], list[int]]]:
    """The connected groups of the bipartite graph of ``pairs`` (earlier track i -> later track j,
    over ``n`` tracks): each group's earlier and later tracks, sorted."""
    if not pairs:
        return []
    earlier, later = (np.array(side) for side in zip(*pairs))
    graph = coo_matrix((np.ones(len(pairs)), (earlier, n + later)), shape=(2 * n, 2 * n))
    _, label = connected_components(graph, directed=False)
    groups: dict[int, tuple[set[int], set[int]]] = {}
    for i, j in pairs:
        rows, cols = groups.setdefault(int(label[i]), (set(), set()))
        rows.add(i)
        cols.add(j)
    return [(sorted(rows), sorted(cols)) for rows, cols in groups.values()]
