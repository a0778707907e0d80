"""Cross-camera association: the tracks of all cameras become global identities.

The method is constrained agglomerative clustering on a k-nearest-neighbour graph:

1. every track's aggregate feature (unit length) is searched against all tracks with FAISS
   (exact inner product up to ``AssociationConfig.exact_search_max`` tracks, IVF above), giving
   at most ``neighbors`` candidate links per track, never a dense N x N matrix;
2. candidate links with cosine similarity >= ``threshold`` are visited from the most similar
   down (ties broken by track order, so the result is deterministic);
3. a link merges its two clusters (union-find) only if
   - the mean cosine over all pairs across the two clusters is still >= ``threshold`` (average
     linkage, from running feature sums): this stops the chaining of single linkage, and unlike
     the cosine of cluster centroids it does not drift towards "similar to everyone" as a
     cluster grows (ReID features of different people share a large common component),
   - no two tracks of the same camera in the merged cluster overlap in time (one person is not
     in two places of one view at once), whatever their features; with ``join_same_camera``
     off, no two tracks of the same camera are in one cluster at all,
   - the optional camera-transition rules hold for every consecutive pair of appearances in
     different cameras (allowed camera pairs, min/max travel time),
   - they are not two different identities already in the store (existing ids stay stable).

Times are seconds on the common clock (``pipeline.identity.cameras`` puts every camera on it).

Before step 1, with ``AssociationConfig.center_cameras`` (the default) and at least
``MIN_TRACKS_TO_CENTER`` tracks in every camera, each feature has its camera's mean track feature
subtracted (:func:`center_per_camera`), and ``centered_threshold`` replaces ``threshold`` below.
Centred features can add *reciprocal* links (``reciprocal_threshold``): two tracks of two cameras
that are each other's most similar track in the other camera, with a cosine from
``reciprocal_threshold`` up; they are visited after the links above ``centered_threshold``, and
their merges need the mean cross-pair cosine to reach ``reciprocal_threshold`` (the other rules
are the same). A person's view in another camera is often not similar in absolute terms but is
still the best match there (:func:`reciprocal_links`).

Both default thresholds were calibrated on real OSNet-x0.25 features, see
``tests/benchmarks/calibrate_threshold.py`` and the note in ``pipeline/config.py``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import faiss
import numpy as np

from pipeline.config import AssociationConfig
from pipeline.types import TrackSummary
from reid.progress import progress_bar
from reid.vectors import l2_normalize

MIN_TRACKS_TO_CENTER = 6  # center_cameras: below this many tracks in a camera, features stay raw
_IVF_NPROBE = 8  # cells visited per kNN query when the graph is built with IVF
_IVF_PCA_DIM = 128  # the approximate kNN graph is searched in this many PCA dimensions
_IVF_TRAIN_POINTS_PER_CELL = 40  # faiss' k-means wants about 40 points per centroid
_IVF_KMEANS_ITERATIONS = 10  # coarse cells only route the search; 10 rounds suffice (default 25)
MIN_LINKS_FOR_A_BAR = 10_000  # candidate links; fewer are merged in well under a second, without a progress bar


@dataclass(frozen=True)
class TransitRule:
    """People can go between two cameras (either direction) in ``min_s`` to ``max_s`` seconds.

    >>> TransitRule(("hall", "door"), min_s=2.0, max_s=60.0).allows(10.0)
    True
    """

    cameras: tuple[str, str]
    min_s: float = -math.inf  # negative: the views may overlap (seen in both at once)
    max_s: float = math.inf

    def allows(self, gap_s: float) -> bool:
        return self.min_s <= gap_s <= self.max_s


@dataclass(frozen=True)
class TransitConstraints:
    """Camera-transition rules. With ``only_listed`` a pair of cameras without a rule is not allowed.

    >>> rules = TransitConstraints([TransitRule(("a", "b"), 0.0, 30.0)], only_listed=True)
    >>> rules.allows("b", "a", 12.0), rules.allows("a", "c", 12.0)
    (True, False)
    """

    rules: list[TransitRule] = field(default_factory=list)
    only_listed: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_pair", {frozenset(r.cameras): r for r in self.rules})

    def allows(self, camera_a: str, camera_b: str, gap_s: float) -> bool:
        """Whether someone last seen in ``camera_a`` can appear in ``camera_b`` ``gap_s`` later."""
        rule = self._by_pair.get(frozenset((camera_a, camera_b)))
        if rule is None:
            return not self.only_listed
        return rule.allows(gap_s)

    @property
    def active(self) -> bool:
        return bool(self.rules) or self.only_listed


@dataclass
class AssociationResult:
    """Identity ids of the new tracks (same order as given) and what the clustering did."""

    identity_ids: np.ndarray  # (N,) int64, >= 1
    links_considered: int  # candidate links above the threshold, plus reciprocal links under it
    merges: int  # links that merged two clusters
    blocked_by_constraints: int  # links refused because of time overlap or transit rules
    centered: bool  # features were centred per camera (and compared at centered_threshold)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of "knn" and "merge"


def associate_tracks(
    tracks: Sequence[TrackSummary],
    config: AssociationConfig | None = None,
    transit: TransitConstraints | None = None,
    known: Sequence[TrackSummary] = (),
    known_identities: Sequence[int] = (),
    progress: bool = False,
    first_new_identity: int = 1,
) -> AssociationResult:
    """Give every track in ``tracks`` a global identity id.

    ``known`` are tracks already in the store with their ``known_identities`` (one id each): new
    tracks may join those identities, which keep their ids and never merge with each other. New
    identities are numbered from ``first_new_identity`` (at least one above the largest known
    id), in order of first appearance.

    >>> f = np.eye(4, dtype=np.float32)
    >>> def track(cam, tid, t, v):
    ...     return TrackSummary(cam, tid, 0, 9, t, t + 1.0, 10, f[v], f[v][None])
    >>> res = associate_tracks([track("a", 1, 0.0, 0), track("b", 1, 5.0, 0), track("b", 2, 5.0, 1)])
    >>> res.identity_ids.tolist()
    [1, 1, 2]
    """
    config = config or AssociationConfig()
    transit = transit or TransitConstraints()
    if len(known) != len(known_identities):
        raise ValueError("known and known_identities must have the same length")
    if not tracks:
        return AssociationResult(np.zeros((0,), np.int64), 0, 0, 0, False)
    everything = [*known, *tracks]
    features = l2_normalize(np.stack([t.feature for t in everything]).astype(np.float32))
    threshold, centered = config.threshold, None
    if config.center_cameras:
        centered = center_per_camera(features, [t.camera for t in everything])
    if centered is not None:
        features, threshold = centered, config.centered_threshold
    clusters = _Clusters(everything, features, config.overlap_tolerance_s, transit, config.join_same_camera)
    members_of: dict[int, list[int]] = {}
    for i, identity in enumerate(known_identities):  # one pass: a scan per identity was quadratic
        members_of.setdefault(identity, []).append(i)
    for identity in sorted(members_of):
        clusters.seed(members_of[identity], identity)

    n_known = len(known)
    started = time.perf_counter()
    first, second, sims = _candidate_links(features, n_known, config, threshold)
    if centered is not None and config.reciprocal_threshold is not None:
        weak = reciprocal_links(features, [t.camera for t in everything], n_known, config)
        keep = weak[2] < threshold  # links from threshold up come from the kNN graph
        first, second, sims = (np.concatenate([x, w[keep]]) for x, w in zip((first, second, sims), weak))
    knn_done = time.perf_counter()
    merges = blocked = 0
    pairs = zip(first.tolist(), second.tolist(), sims.tolist())
    bar = progress and len(sims) >= MIN_LINKS_FOR_A_BAR  # a few links take milliseconds: no bar then
    for a, b, sim in progress_bar(pairs, total=len(sims), desc="associating", unit="link", disable=not bar):
        outcome = clusters.try_merge(a, b, threshold if sim >= threshold else config.reciprocal_threshold)
        merges += outcome == "merged"
        blocked += outcome == "blocked"

    ids = clusters.identity_ids(next_id=max(max(known_identities, default=0) + 1, first_new_identity))
    seconds = {"knn": knn_done - started, "merge": time.perf_counter() - knn_done}
    return AssociationResult(ids[n_known:], len(sims), merges, blocked, centered is not None, seconds)


def pairwise_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Pairwise precision / recall / F1 of identity ids ``pred`` (N,) against true ids ``truth`` (N,).

    Precision: of the track pairs put in one identity, the share that are one person; recall: of
    the pairs that are one person, the share put in one identity. Also the number of clusters
    and of people.

    >>> pairwise_scores(np.array([1, 1, 2, 2]), np.array([5, 5, 5, 6]))["precision"]
    0.5
    """
    def pairs(counts: np.ndarray) -> float:
        return float((counts * (counts - 1) // 2).sum())

    _, joint = np.unique(np.stack([pred, truth], 1), axis=0, return_counts=True)
    same_both = pairs(joint)
    same_pred = pairs(np.unique(pred, return_counts=True)[1])
    same_true = pairs(np.unique(truth, return_counts=True)[1])
    precision = same_both / max(same_pred, 1.0)
    recall = same_both / max(same_true, 1.0)
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "clusters": float(len(np.unique(pred))),
        "people": float(len(np.unique(truth))),
    }


def center_per_camera(features: np.ndarray, cameras: Sequence[str]) -> np.ndarray | None:
    """Unit ``features`` (N, D) minus the mean feature of their camera, made unit length again;
    None when a camera has fewer than ``MIN_TRACKS_TO_CENTER`` tracks (no reliable mean).

    Every camera adds its own bias to appearance features (colour cast, light, background, viewing
    angle): the tracks of one camera resemble each other more than one person seen by two cameras.
    Subtracting each camera's mean track feature removes that shared part, so cosines compare
    people, not cameras. With one track, a camera's mean is the track itself, hence the minimum.

    >>> f = np.array([[1.0, 0.2], [1.0, -0.2], [0.2, 1.0], [-0.2, 1.0]] * 4, np.float32)
    >>> c = center_per_camera(l2_normalize(f), ["a", "a", "b", "b"] * 4)
    >>> np.round(c[:4] @ c[:4].T, 2).tolist()[0] == [1.0, -1.0, 0.0, 0.0]  # a's two people: opposite
    True
    >>> center_per_camera(l2_normalize(f[:10]), ["a"] * 8 + ["b"] * 2) is None  # b: 2 tracks
    True
    """
    cameras = np.asarray(cameras)
    names, counts = np.unique(cameras, return_counts=True)
    if len(names) == 0 or counts.min() < MIN_TRACKS_TO_CENTER:
        return None
    centered = np.empty_like(features)
    for camera in names:
        rows = cameras == camera
        centered[rows] = features[rows] - features[rows].mean(axis=0)
    return l2_normalize(centered)


def _candidate_links(
    features: np.ndarray, n_known: int, config: AssociationConfig, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Links (i, j, cosine) from each new track to its nearest neighbours, strongest first.

    Each unordered pair appears once; ties are ordered by (i, j) so the visit order is fixed.
    """
    k = min(config.neighbors + 1, len(features))  # +1: a track finds itself first
    sims, neighbors = knn_search(features, features[n_known:], k, config.exact_search_max)
    rows = np.repeat(np.arange(n_known, len(features)), k)
    cols = neighbors.reshape(-1)
    sims = sims.reshape(-1)
    keep = (cols >= 0) & (cols != rows) & (sims >= threshold)
    i = np.minimum(rows[keep], cols[keep]).astype(np.int64)
    j = np.maximum(rows[keep], cols[keep]).astype(np.int64)
    sims = sims[keep]
    key = i * len(features) + j
    key, unique_at = np.unique(key, return_index=True)
    i, j, sims = i[unique_at], j[unique_at], sims[unique_at]
    order = np.lexsort((key, -sims))
    return i[order], j[order], sims[order]


def reciprocal_links(
    features: np.ndarray, cameras: Sequence[str], n_known: int, config: AssociationConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Links (i, j, cosine) between tracks of two cameras that are each other's nearest track in
    the other camera, with cosine >= ``config.reciprocal_threshold``; at least one of i, j is new
    (index >= ``n_known``). Strongest first, i < j.

    ``features`` (N, D) unit rows, ``cameras`` (N,) names. One nearest-neighbour search per camera
    (:func:`knn_search`): the other cameras' tracks against that camera's, or only their new tracks
    when the camera has none (a camera added to a large store costs its own tracks' searches).

    >>> f = np.array([[1, 0], [0, 1], [0.9, 0.44], [0.6, 0.8]], np.float32)
    >>> i, j, s = reciprocal_links(f, ["a", "a", "b", "b"], 0, AssociationConfig(reciprocal_threshold=0.5))
    >>> list(zip(i.tolist(), j.tolist()))  # a's track 0 and b's track 2; 1 and 3
    [(0, 2), (1, 3)]
    """
    names, camera_of = np.unique(np.asarray(cameras), return_inverse=True)
    nearest = np.full((len(names), len(features)), -1, np.int64)  # [c, i]: track i's nearest track in camera c
    similarity = np.full((len(names), len(features)), -np.inf, np.float32)
    new_cameras = set(camera_of[n_known:].tolist())
    for c in range(len(names)):
        inside, outside = np.flatnonzero(camera_of == c), np.flatnonzero(camera_of != c)
        if c not in new_cameras:  # a link needs a new track: here only the new tracks' nearest are asked for
            outside = outside[outside >= n_known]
        if len(outside) == 0:
            continue
        sims, rows = knn_search(features[inside], features[outside], 1, config.exact_search_max)
        found = rows[:, 0] >= 0  # an IVF search can come back empty
        nearest[c, outside[found]] = inside[rows[found, 0]]
        similarity[c, outside[found]] = sims[found, 0]
    c, first = np.nonzero(nearest >= 0)
    second = nearest[c, first]
    sims = similarity[c, first]
    mutual = nearest[camera_of[first], second] == first
    keep = mutual & (first < second) & (second >= n_known) & (sims >= config.reciprocal_threshold)
    first, second, sims = first[keep].astype(np.int64), second[keep], sims[keep]
    order = np.lexsort((second, first, -sims))
    return first[order], second[order], sims[order]


def knn_search(
    database: np.ndarray, queries: np.ndarray, k: int, exact_max: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inner-product k nearest neighbours of ``queries`` (Q, D) in ``database`` (N, D).

    Exact up to ``exact_max`` database rows. Above, candidates come from an IVF index over a
    PCA projection to 128 dimensions (a dense search of 100k x 100k x 512 takes minutes on two
    cores) and their similarities are then recomputed exactly in full dimension. Returns
    similarities (Q, k) float32 and indices (Q, k) int64 (-1 where fewer than k were found).
    """
    d = database.shape[1]
    n = len(database)
    if n <= exact_max:
        index = faiss.IndexFlatIP(d)
        index.add(np.ascontiguousarray(database))
        return index.search(np.ascontiguousarray(queries), k)
    nlist = max(1, min(int(2 * math.sqrt(n)), n // _IVF_TRAIN_POINTS_PER_CELL))
    projection = f"PCA{_IVF_PCA_DIM}," if d > _IVF_PCA_DIM else ""
    index = faiss.index_factory(d, f"{projection}IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    train_size = min(n, nlist * _IVF_TRAIN_POINTS_PER_CELL)
    sample = np.random.default_rng(0).choice(n, size=train_size, replace=False)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.niter = _IVF_KMEANS_ITERATIONS
    index.train(np.ascontiguousarray(database[np.sort(sample)]))
    ivf.nprobe = _IVF_NPROBE
    index.add(np.ascontiguousarray(database))
    _, neighbors = index.search(np.ascontiguousarray(queries), k)
    return _exact_similarities(database, queries, neighbors), neighbors


def _exact_similarities(database: np.ndarray, queries: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """Inner products of each query with its listed neighbours, (Q, k) float32; -inf for -1."""
    sims = np.full(neighbors.shape, -np.inf, np.float32)
    chunk = 2048  # bounds the (chunk, k, D) gather to ~100 MB at k=21, D=512
    for lo in range(0, len(queries), chunk):
        idx = neighbors[lo : lo + chunk]
        gathered = database[np.maximum(idx, 0)]
        block = np.matmul(gathered, queries[lo : lo + chunk, :, None])[..., 0]
        sims[lo : lo + chunk] = np.where(idx >= 0, block, -np.inf)
    return sims


class _Clusters:
    """Union-find over tracks with the state needed to refuse merges that break a constraint."""

    def __init__(
        self,
        tracks: Sequence[TrackSummary],
        features: np.ndarray,
        tolerance_s: float,
        transit: TransitConstraints,
        join_same_camera: bool = False,
    ) -> None:
        self.tracks = tracks
        self.features = features
        self.parent = list(range(len(tracks)))
        self.members: dict[int, list[int]] = {}  # only for roots of clusters with > 1 track
        self.sums: dict[int, np.ndarray] = {}  # sum of member features, same keys as members
        self.fixed: dict[int, int] = {}  # root -> identity id already in the store
        self.tolerance_s = tolerance_s
        self.transit = transit
        self.join_same_camera = join_same_camera
        # plain lists: the merge loop reads these millions of times
        self.camera = [t.camera for t in tracks]
        self.start = [float(t.start_s) for t in tracks]
        self.end = [float(t.end_s) for t in tracks]

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:  # path compression
            parent[i], i = root, parent[i]
        return root

    def seed(self, members: list[int], identity: int) -> None:
        root = members[0]
        for m in members[1:]:
            self.parent[m] = root
        self.members[root] = list(members)
        self.sums[root] = self.features[members].sum(axis=0)
        self.fixed[root] = identity

    def _members(self, root: int) -> list[int]:
        return self.members.get(root, [root])

    def _sum(self, root: int) -> np.ndarray:
        return self.sums[root] if root in self.sums else self.features[root]

    def try_merge(self, a: int, b: int, threshold: float) -> str:
        """Merge the clusters of tracks ``a`` and ``b`` if allowed; say what happened."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return "same"
        if ra in self.fixed and rb in self.fixed:
            return "blocked"
        sa, sb = self._sum(ra), self._sum(rb)
        ma, mb = self._members(ra), self._members(rb)
        # mean cross-pair cosine; for two single tracks it is the link's own cosine (>= threshold)
        if (len(ma) > 1 or len(mb) > 1) and float(sa @ sb) / (len(ma) * len(mb)) < threshold:
            return "dissimilar"
        if self._same_camera_conflict(ma, mb) or not self._transits_allowed(ma + mb):
            return "blocked"
        if len(ma) < len(mb) or (rb in self.fixed and ra not in self.fixed):
            ra, rb, ma, mb = rb, ra, mb, ma  # keep the larger (or the stored) cluster's root
        self.parent[rb] = ra
        self.members[ra] = ma + mb
        self.sums[ra] = sa + sb
        self.members.pop(rb, None)
        self.sums.pop(rb, None)
        if rb in self.fixed:
            self.fixed[ra] = self.fixed.pop(rb)
        return "merged"

    def _same_camera_conflict(self, ma: list[int], mb: list[int]) -> bool:
        """Whether a track of ``ma`` and one of ``mb`` are in one camera and overlap in time (or,
        without ``join_same_camera``, are in one camera at all)."""
        # Intervals include both end frames: at tolerance 0, tracks sharing one frame overlap
        # (one identity twice in a frame would make tracks_global.txt invalid).
        camera, start, end, tol = self.camera, self.start, self.end, self.tolerance_s
        for i in ma:
            for j in mb:
                if camera[i] == camera[j] and (
                    not self.join_same_camera or (start[i] <= end[j] - tol and start[j] <= end[i] - tol)
                ):
                    return True
        return False

    def _transits_allowed(self, members: list[int]) -> bool:
        if not self.transit.active:
            return True
        seen = sorted((self.tracks[m] for m in members), key=lambda t: (t.start_s, t.end_s))
        last_by_time = seen[0]
        for t in seen[1:]:
            if t.camera != last_by_time.camera and not self.transit.allows(
                last_by_time.camera, t.camera, t.start_s - last_by_time.end_s
            ):
                return False
            if t.end_s >= last_by_time.end_s:
                last_by_time = t
        return True

    def identity_ids(self, next_id: int) -> np.ndarray:
        """Identity id per track: stored ids kept, new ones numbered by first appearance."""
        roots = [self.find(i) for i in range(len(self.tracks))]
        first_seen: dict[int, tuple] = {}
        for i, root in enumerate(roots):
            t = self.tracks[i]
            key = (t.start_s, t.camera, t.track_id)
            if root not in first_seen or key < first_seen[root]:
                first_seen[root] = key
        ids: dict[int, int] = dict(self.fixed)
        for root in sorted((r for r in first_seen if r not in ids), key=first_seen.__getitem__):
            ids[root] = next_id
            next_id += 1
        return np.array([ids[r] for r in roots], np.int64)
