"""Benchmark: cross-camera association of 100k synthetic tracks (target <= 60 s on 2 cores).

Synthetic world: ``--tracks / 5`` people each make 5 visits to random cameras out of
``--cameras``; each visit is one track (so one camera often holds several tracks of one person).
Features are 512-d, L2-normalised: a direction shared by every person (ReID features of people
are all somewhat alike), the person's own direction, and per-track noise, tuned so that
same-person cosines sit around 0.89 and different-person cosines around 0.53, close to what
OSNet-x0.25 gives on tracks of the real hall clip (same person in two virtual cameras
0.85-0.92, different people mostly 0.5-0.7; see tests/test_two_camera_real.py). A share of people
(``--twin-share``) have a "twin" with the same appearance who walks the same cameras at the
same time: only the time constraint can keep them apart.

Reports wall time, pairwise precision/recall/F1 against the synthetic truth, and the number of
same-camera time-overlap violations (must be 0). The peer, measured in the same
run on a subset small enough for it: SciPy's dense average-linkage clustering (N x N distances,
no constraints) at the same threshold.

    .venv/bin/python tests/benchmarks/bench_association.py            # 100k tracks
    .venv/bin/python tests/benchmarks/bench_association.py --tracks 20000 --peer-tracks 4000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from pipeline.config import AssociationConfig
from pipeline.identity.association import associate_tracks, pairwise_scores
from pipeline.types import TrackSummary

DIM = 512


def synthetic_tracks(
    n_tracks: int, n_cameras: int, twin_share: float, seed: int = 0
) -> tuple[list[TrackSummary], np.ndarray]:
    """Tracks (in time order per person) and the true person id of each, (N,) int64."""
    rng = np.random.default_rng(seed)
    visits_per_person = 5
    n_people = n_tracks // visits_per_person
    common = _unit(rng.standard_normal(DIM))
    people = _unit(rng.standard_normal((n_people, DIM)))
    twins = rng.random(n_people) < twin_share
    twin_of = np.where(twins, np.roll(np.arange(n_people), 1), np.arange(n_people))
    appearance = _unit(1.2 * common + people[twin_of])
    twins[0] = False  # person 0 has nobody before it to copy
    arrival = rng.uniform(0, 36_000, n_people)  # people arrive over ten hours
    schedules: list[list[tuple[int, float, float]]] = []  # (camera, start_s, duration_s) per visit
    for person in range(n_people):
        if twins[person]:  # walks alongside the person whose appearance it copies
            jitter = rng.uniform(0, 2)
            schedules.append([(c, t + jitter, d) for c, t, d in schedules[twin_of[person]]])
            continue
        t, visits = arrival[person], []
        for cam in rng.integers(0, n_cameras, visits_per_person).tolist():
            duration = rng.uniform(5, 40)
            visits.append((cam, t, duration))
            t += duration + rng.uniform(3, 120)
        schedules.append(visits)
    tracks: list[TrackSummary] = []
    truth: list[int] = []
    next_track_id = np.ones(n_cameras, np.int64)
    for person, visits in enumerate(schedules):
        for cam, t, duration in visits:
            noise = _unit(rng.standard_normal(DIM))
            feature = _unit(appearance[person] + 0.35 * noise).astype(np.float32)
            tid = int(next_track_id[cam])
            next_track_id[cam] += 1
            frame0 = int(t * 10)
            tracks.append(
                TrackSummary(
                    f"cam{cam}", tid, frame0, frame0 + int(duration * 10), t, t + duration,
                    int(duration * 10), feature, feature[None],
                )
            )
            truth.append(person)
    return tracks, np.array(truth, np.int64)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def violations(tracks: list[TrackSummary], ids: np.ndarray) -> int:
    """Pairs of same-camera tracks of one identity that overlap in time."""
    by_key: dict[tuple[int, str], list[TrackSummary]] = {}
    for t, ident in zip(tracks, ids.tolist()):
        by_key.setdefault((ident, t.camera), []).append(t)
    count = 0
    for group in by_key.values():
        group.sort(key=lambda t: t.start_s)
        count += sum(b.start_s < a.end_s for a, b in zip(group, group[1:]))
    return count


def dense_peer(tracks: list[TrackSummary], threshold: float) -> np.ndarray:
    """SciPy average linkage on the full cosine distance matrix, cut at 1 - threshold."""
    features = np.stack([t.feature for t in tracks]).astype(np.float64)
    tree = linkage(features, method="average", metric="cosine")
    return fcluster(tree, t=1.0 - threshold, criterion="distance")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--twin-share", type=float, default=0.05)
    parser.add_argument("--peer-tracks", type=int, default=6_000)
    args = parser.parse_args()
    # The synthetic features carry no camera bias and the peer (SciPy) compares raw cosines, so
    # both run on raw features at the raw threshold.
    config = AssociationConfig(center_cameras=False, join_same_camera=True)  # its people come back to a camera

    tracks, truth = synthetic_tracks(args.tracks, args.cameras, args.twin_share)
    feats = np.stack([t.feature for t in tracks[:4000]])
    sims = feats @ feats.T
    same = truth[:4000, None] == truth[None, :4000]
    off_diag = ~np.eye(len(feats), dtype=bool)
    print(
        f"data: {len(tracks)} tracks, {len(np.unique(truth))} people, {args.cameras} cameras, "
        f"dim {DIM}; cosine same-person mean {sims[same & off_diag].mean():.2f}, "
        f"different-person mean {sims[~same].mean():.2f}; threshold {config.threshold}"
    )

    start = time.perf_counter()
    result = associate_tracks(tracks, config, progress=True)
    elapsed = time.perf_counter() - start
    scores = pairwise_scores(result.identity_ids, truth)
    print(
        f"crosscam associate_tracks: {elapsed:.1f} s for {len(tracks)} tracks "
        f"({'OK' if elapsed <= 60 else 'OVER'} the 60 s target; kNN graph {result.seconds['knn']:.1f} s, "
        f"merging {result.seconds['merge']:.1f} s); links {result.links_considered}, "
        f"merges {result.merges}, blocked by constraints {result.blocked_by_constraints}; "
        f"pairwise precision {scores['precision']:.3f} recall {scores['recall']:.3f} "
        f"F1 {scores['f1']:.3f}; identities {scores['clusters']:.0f} for {scores['people']:.0f} people; "
        f"same-camera overlap violations {violations(tracks, result.identity_ids)}"
    )

    subset, sub_truth = tracks[: args.peer_tracks], truth[: args.peer_tracks]
    start = time.perf_counter()
    ours = associate_tracks(subset, config).identity_ids
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    peer = dense_peer(subset, config.threshold)
    peer_s = time.perf_counter() - start
    ours_scores, peer_scores = pairwise_scores(ours, sub_truth), pairwise_scores(peer, sub_truth)
    print(
        f"peer on {len(subset)} tracks: SciPy dense average linkage {peer_s:.1f} s, F1 "
        f"{peer_scores['f1']:.3f}, overlap violations {violations(subset, peer)}; crosscam "
        f"{ours_s:.1f} s, F1 {ours_scores['f1']:.3f}, violations {violations(subset, ours)}; "
        f"speed ratio peer/crosscam {peer_s / max(ours_s, 1e-9):.1f}x"
    )


if __name__ == "__main__":
    main()
