"""Calibrate ``association.threshold`` on real ReID features of real people.

Data: ``../shared/data/cuhk03-market`` (CUHK03 crops, two cameras per person). Every crop is
embedded with the shared OSNet-x0.25 ONNX model through ``reid.Embedder`` (unit features). A
"track" is what the video pipeline would summarise: the renormalised mean of one person's crops
in one camera. Association links tracks of *different* cameras, so the positives are the
pairs (same person, camera c1 vs c2) and the negatives every pair of different people.

Prints the two cosine-similarity distributions (crop level and track level) with the true-link
and false-link rate per threshold, then runs ``associate_tracks`` itself on those tracks for a
sweep of thresholds and reports pairwise precision / recall / F1 against the true person ids:
once with all people at once (a crowded gallery: hundreds of people, no time constraint helps)
and once averaged over random groups of ``--group`` people (a typical run). The suggested
threshold is the smallest one whose mean group precision reaches ``--min-precision`` (0.8): a
false merge makes query answers wrong (another person's appearances), a split only loses some,
so precision comes first. The F1-best threshold is printed too.

    .venv/bin/python tests/benchmarks/calibrate_threshold.py [--split bounding_box_train] [--cache f.npz] [--center-cameras]

``--center-cameras`` calibrates ``association.centered_threshold`` instead: the same sweep on
track features centred per camera (``pipeline.identity.association.center_per_camera``). ``--reciprocal T``
adds reciprocal links from T (``association.reciprocal_threshold``; off by default here), and
``--one-camera N`` keeps only the first camera's track of N people in each group (people who do
not reach the other camera: the case where a best match is not a true one).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import AssociationConfig
from pipeline.identity.association import associate_tracks, pairwise_scores
from pipeline.types import TrackSummary
from reid import Embedder

SHARED = Path(__file__).resolve().parents[3] / "shared"
NAME = re.compile(r"^(\d{4})_c(\d)")


def load_crops(folder: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """RGB crops, person ids (N,) and camera ids (N,) of a Market-1501-layout folder."""
    crops, pids, cams = [], [], []
    for path in sorted(folder.glob("*.jpg")):
        match = NAME.match(path.name)
        if match is None:
            continue
        crops.append(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
        pids.append(int(match.group(1)))
        cams.append(int(match.group(2)))
    return crops, np.array(pids), np.array(cams)


def track_features(features: np.ndarray, pids: np.ndarray, cams: np.ndarray):
    """One renormalised mean feature per (person, camera): (T, D), pids (T,), cams (T,)."""
    keys = sorted(set(zip(pids.tolist(), cams.tolist())))
    tracks = np.stack([features[(pids == p) & (cams == c)].mean(0) for p, c in keys])
    tracks /= np.linalg.norm(tracks, axis=1, keepdims=True)
    return tracks, np.array([k[0] for k in keys]), np.array([k[1] for k in keys])


def pair_similarities(features: np.ndarray, pids: np.ndarray, cams: np.ndarray):
    """Cosines of cross-camera same-person pairs and of different-person pairs."""
    sims = features @ features.T
    upper = np.triu(np.ones_like(sims, dtype=bool), k=1)
    same = (pids[:, None] == pids[None, :]) & (cams[:, None] != cams[None, :]) & upper
    different = (pids[:, None] != pids[None, :]) & upper
    return sims[same], sims[different]


def describe(label: str, positives: np.ndarray, negatives: np.ndarray, max_false: float) -> float:
    print(f"\n{label}: {len(positives)} same-person cross-camera pairs, {len(negatives)} different-person pairs")
    for name, values in (("same person", positives), ("different people", negatives)):
        q = np.percentile(values, [1, 5, 25, 50, 75, 95, 99])
        print(f"  {name:17s} mean {values.mean():.3f}  percentiles 1/5/25/50/75/95/99: "
              + " ".join(f"{v:.3f}" for v in q))
    print("  threshold  true-link rate  false-link rate")
    for t in np.arange(0.40, 0.91, 0.05):
        print(f"  {t:9.2f}  {np.mean(positives >= t):14.3f}  {np.mean(negatives >= t):15.5f}")
    candidates = np.sort(negatives)[::-1]
    allowed = int(np.floor(max_false * len(negatives)))
    chosen = float(candidates[allowed]) if allowed < len(candidates) else float(candidates[-1])
    print(f"  smallest threshold with false-link rate <= {max_false:g}: {chosen:.3f} "
          f"(true-link rate there {np.mean(positives > chosen):.3f})")
    return chosen


def association_f1(tracks: np.ndarray, pids: np.ndarray, cams: np.ndarray, threshold: float, centre: bool,
                   reciprocal: float | None = None) -> dict:
    """Run associate_tracks on the tracks (each its own 5 s slot, so time never decides); with
    ``centre``, on features centred per camera at ``centered_threshold``, with reciprocal links
    from ``reciprocal`` (None: none)."""
    summaries = [
        TrackSummary(f"c{c}", i + 1, 100 * i, 100 * i + 50, 10.0 * i, 10.0 * i + 5, 50, f, f[None])
        for i, (f, c) in enumerate(zip(tracks, cams.tolist()))
    ]
    config = AssociationConfig(threshold=threshold, centered_threshold=threshold, center_cameras=centre,
                               reciprocal_threshold=reciprocal)
    result = associate_tracks(summaries, config)
    assert result.centered == centre, "every camera needs 4+ tracks to centre"
    ids = result.identity_ids
    return pairwise_scores(ids, pids)


def draw_groups(pids: np.ndarray, cams: np.ndarray, group: int, draws: int, one_camera: int) -> list[np.ndarray]:
    """``draws`` masks over the tracks (T,): ``group`` random people each, ``one_camera`` of whom
    lose every track but their first camera's."""
    rng = np.random.default_rng(0)
    people = np.unique(pids)
    masks = []
    for _ in range(draws):
        chosen = rng.choice(people, group, replace=False)
        single = rng.choice(chosen, one_camera, replace=False) if one_camera else chosen[:0]
        first_camera = {p: cams[pids == p].min() for p in single.tolist()}
        later = np.array([p in first_camera and c > first_camera[p] for p, c in zip(pids.tolist(), cams.tolist())], bool)
        masks.append(np.isin(pids, chosen) & ~later)
    return masks


def sweep(tracks: np.ndarray, pids: np.ndarray, cams: np.ndarray, args: argparse.Namespace) -> float:
    group, draws, min_precision, centre = args.group, args.draws, args.min_precision, args.center_cameras
    people = np.unique(pids)
    groups = draw_groups(pids, cams, group, draws, args.one_camera)
    print(f"\nassociate_tracks on {len(tracks)} tracks of {len(people)} people, and on {draws} groups of {group}"
          f" ({args.one_camera} seen by one camera), reciprocal links from {args.reciprocal}:")
    print("  threshold  all: precision recall  F1     groups: precision recall  F1")
    best, precise = (-1.0, 0.0), None
    for t in np.arange(0.3, 0.61, 0.025) if centre else np.arange(0.55, 0.86, 0.025):
        full = association_f1(tracks, pids, cams, t, centre, args.reciprocal)
        parts = [association_f1(tracks[g], pids[g], cams[g], t, centre, args.reciprocal) for g in groups]
        mean = {k: float(np.mean([p[k] for p in parts])) for k in ("precision", "recall", "f1")}
        print(f"  {t:9.3f}  {full['precision']:14.3f} {full['recall']:6.3f} {full['f1']:6.3f}"
              f"  {mean['precision']:17.3f} {mean['recall']:6.3f} {mean['f1']:6.3f}")
        best = max(best, (mean["f1"], round(float(t), 3)))
        if precise is None and mean["precision"] >= min_precision:
            precise = round(float(t), 3)
    print(f"  best group F1 at {best[1]:.3f}")
    return precise if precise is not None else best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="bounding_box_train")
    parser.add_argument("--weights", default=str(SHARED / "weights/osnet_x0_25_msmt17.onnx"))
    parser.add_argument("--max-false-link-rate", type=float, default=1e-3)
    parser.add_argument("--group", type=int, default=20, help="people per simulated run")
    parser.add_argument("--draws", type=int, default=50)
    parser.add_argument("--min-precision", type=float, default=0.8, help="group precision the threshold must reach")
    parser.add_argument("--cache", type=Path, help="npz of features/pids/cams to reuse (written if missing)")
    parser.add_argument("--center-cameras", action="store_true",
                        help="calibrate association.centered_threshold (features centred per camera)")
    parser.add_argument("--reciprocal", type=float, default=None,
                        help="association.reciprocal_threshold during the sweep (centred features only)")
    parser.add_argument("--one-camera", type=int, default=0, help="people per group seen by their first camera only")
    args = parser.parse_args()

    if args.cache is not None and args.cache.is_file():
        with np.load(args.cache) as cached:
            features, pids, cams = cached["features"], cached["pids"], cached["cams"]
    else:
        crops, pids, cams = load_crops(SHARED / "data/cuhk03-market" / args.split)
        embedder = Embedder.from_weights(args.weights, device="cpu")
        features = embedder.embed(crops, normalize=True, progress=True)
        if args.cache is not None:
            np.savez(args.cache, features=features, pids=pids, cams=cams)
    print(f"{Path(args.weights).name}: {len(features)} crops of {len(set(pids.tolist()))} people "
          f"in {args.split}, dim {features.shape[1]}")
    describe("crops", *pair_similarities(features, pids, cams), args.max_false_link_rate)
    tracks, track_pids, track_cams = track_features(features, pids, cams)
    describe("tracks (mean of a person's crops per camera)",
             *pair_similarities(tracks, track_pids, track_cams), args.max_false_link_rate)
    chosen = sweep(tracks, track_pids, track_cams, args)
    key = "centered_threshold" if args.center_cameras else "threshold"
    print(f"\nsuggested association.{key} (smallest with mean precision >= {args.min_precision} "
          f"over groups of {args.group}): {chosen:.3f}")


if __name__ == "__main__":
    main()
