"""Benchmark an embedder on a Market-1501-layout dataset with fast-reid's protocol.

Query and gallery crops are embedded once and cached on disk, keyed by the embedder's
fingerprint (weights bytes + preprocessing) and the dataset's file list, so re-evaluating
(another metric, re-ranking, AQE) does not embed again, and a different model or dataset never
reuses stale features. Then: optional AQE, distances, optional k-reciprocal re-ranking,
CMC/mAP/mINP, ROC, pictures and the report.

>>> from reid import Embedder
>>> embedder = Embedder.from_weights("../shared/weights/osnet_x0_25_msmt17.onnx")  # doctest: +SKIP
>>> result = run_benchmark("../shared/data/cuhk03-market", embedder, out_dir="runs/bench")  # doctest: +SKIP
>>> result.report["rank1"]  # doctest: +SKIP
0.5
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from reid.data.market import MarketDataset, read_dataset_image
from reid.evaluation.distance import pairwise_distance
from reid.evaluation.query_expansion import alpha_query_expansion
from reid.evaluation.ranking import RankingResult, evaluate_ranking
from reid.evaluation.report import write_report
from reid.evaluation.rerank import k_reciprocal_rerank
from reid.evaluation.roc import RocResult, evaluate_roc
from reid.progress import progress_bar

# Images decoded and embedded at a time: bounds memory for datasets of any size.
_EMBED_CHUNK = 256


class FeatureExtractor(Protocol):
    """What the benchmark needs from ``reid.Embedder``."""

    name: str
    fingerprint: str
    preprocess: str  # "parity" (fast-reid's PIL bicubic loader) or "fast" (OpenCV)
    flip: bool  # features are the mean of each crop's and its mirror's
    runtime: str  # torch or onnxruntime
    precision: str  # fp32, bf16 or fp16
    pixels: str  # what the network is fed (reid.Embedder.pixels); the report says it

    def embed(self, crops: Sequence[np.ndarray], bgr: bool = False, normalize: bool = False, progress: bool = False) -> np.ndarray: ...


@dataclass(frozen=True)
class BenchmarkSettings:
    """How features become distances. ``metric``: cosine | euclidean."""

    metric: str = "cosine"
    rerank: bool = False
    aqe: bool = False
    max_rank: int = 50


@dataclass
class BenchmarkResult:
    """Everything a benchmark run measured; ``report`` is what ``report.json`` holds."""

    ranking: RankingResult
    roc: RocResult
    distmat: np.ndarray = field(repr=False)
    report: dict[str, Any]
    files: dict[str, Path]


def dataset_file_key(dataset: MarketDataset) -> list[list[Any]]:
    """The query and gallery file list (split, name, size): part of the feature-cache key."""
    return [[split, image.path.name, image.path.stat().st_size] for split in ("query", "gallery") for image in dataset.split(split)]


def feature_cache_path(cache_dir: str | Path, embedder: FeatureExtractor, dataset: MarketDataset) -> Path:
    """Cache file for this embedder and dataset: ``cache_dir/features-<sha256 prefix>.npz``."""
    key = json.dumps({"fingerprint": embedder.fingerprint, "files": dataset_file_key(dataset)})
    return Path(cache_dir) / f"features-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


def embed_images(embedder: FeatureExtractor, paths: Sequence[Path], progress: bool = True, desc: str = "embed") -> np.ndarray:
    """(N, D) float32 raw features of the image files, read and embedded in chunks."""
    chunks = []
    with progress_bar(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(paths), _EMBED_CHUNK):
            crops = [read_dataset_image(path) for path in paths[start : start + _EMBED_CHUNK]]
            chunks.append(embedder.embed(crops, bgr=True))
            bar.update(len(crops))
    return np.concatenate(chunks).astype(np.float32)


def dataset_features(
    dataset: MarketDataset, embedder: FeatureExtractor, cache_dir: str | Path | None, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Query (Q, D) and gallery (G, D) raw features, from the cache when it matches.

    Returns the features and ``info``: ``cached`` (bool), ``embed_seconds`` and
    ``images_per_second`` (None when cached).
    """
    cache = feature_cache_path(cache_dir, embedder, dataset) if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            if str(stored["fingerprint"]) == embedder.fingerprint:
                return stored["query"], stored["gallery"], {"cached": True, "embed_seconds": None, "images_per_second": None}
    start = time.perf_counter()
    query = embed_images(embedder, dataset.paths("query"), progress, "embed query")
    gallery = embed_images(embedder, dataset.paths("gallery"), progress, "embed gallery")
    seconds = time.perf_counter() - start
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache.with_name(f".{cache.stem}.tmp.npz")
        np.savez(temporary, query=query, gallery=gallery, fingerprint=embedder.fingerprint)
        os.replace(temporary, cache)
    info = {"cached": False, "embed_seconds": seconds, "images_per_second": (len(query) + len(gallery)) / seconds}
    return query, gallery, info


def compute_distances(query: np.ndarray, gallery: np.ndarray, settings: BenchmarkSettings) -> np.ndarray:
    """(Q, G) float32 distances after the optional AQE and re-ranking steps."""
    if settings.aqe:
        query, gallery = alpha_query_expansion(query, gallery)
    if settings.rerank:
        return k_reciprocal_rerank(query, gallery, metric=settings.metric)
    return pairwise_distance(query, gallery, settings.metric)


def run_benchmark(
    root: str | Path,
    embedder: FeatureExtractor,
    out_dir: str | Path,
    settings: BenchmarkSettings = BenchmarkSettings(),
    cache_dir: str | Path | None = None,
    progress: bool = True,
    rank_list_queries: int = 8,
    save_distances: bool = False,
) -> BenchmarkResult:
    """Embed (or load cached features), evaluate, and write report and pictures into ``out_dir``.

    ``cache_dir`` defaults to ``out_dir/cache``. ``save_distances`` also writes
    ``distances.npz`` (distmat, q_pids, g_pids, q_camids, g_camids) for ``crosscam evaluate-ranking``.
    """
    dataset = MarketDataset(root)
    out_dir = Path(out_dir)
    query, gallery, info = dataset_features(dataset, embedder, out_dir / "cache" if cache_dir is None else cache_dir, progress)
    q_pids, g_pids = dataset.pids("query"), dataset.pids("gallery")
    q_camids, g_camids = dataset.camids("query"), dataset.camids("gallery")

    start = time.perf_counter()
    distmat = compute_distances(query, gallery, settings)
    ranking = evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids, settings.max_rank)
    eval_seconds = time.perf_counter() - start
    roc = evaluate_roc(distmat, q_pids, g_pids, q_camids, g_camids)

    report: dict[str, Any] = dict(ranking.summary())
    report.update(
        num_query=len(query),
        num_gallery=len(gallery),
        **roc.summary(),
        model=embedder.name,
        fingerprint=embedder.fingerprint,
        preprocess=embedder.preprocess,
        flip=embedder.flip,
        runtime=embedder.runtime,
        precision=embedder.precision,
        pixels=embedder.pixels,
        dataset=str(dataset.root.resolve()),
        metric=settings.metric,
        rerank=settings.rerank,
        aqe=settings.aqe,
        features_cached=info["cached"],
        embed_seconds=info["embed_seconds"],
        images_per_second=info["images_per_second"],
        eval_seconds=eval_seconds,
        cmc=[float(v) for v in ranking.cmc],
    )
    # Everything is written beside --out first and put in place together: a run that stops (a full
    # disk) leaves the folder as the run before wrote it, not its pictures with the old report.
    staging = out_dir / ".benchmark.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        pictures = write_pictures(staging, dataset, distmat, ranking, roc, embedder.name, rank_list_queries, settings)
        written = [*write_report(staging, report, {caption: path.name for caption, path in pictures.items()}),
                   *pictures.values()]
        if save_distances:
            np.savez(staging / "distances.npz", distmat=distmat, q_pids=q_pids, g_pids=g_pids, q_camids=q_camids,
                     g_camids=g_camids)
            written.append(staging / "distances.npz")
        files = {path.name: path.replace(out_dir / path.name) for path in written}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BenchmarkResult(ranking=ranking, roc=roc, distmat=distmat, report=report, files=files)


def write_pictures(
    out_dir: Path, dataset: MarketDataset, distmat: np.ndarray, ranking: RankingResult, roc: RocResult,
    model_name: str, rank_list_queries: int, settings: BenchmarkSettings = BenchmarkSettings(),
) -> dict[str, Path]:
    """ROC, histograms and best/worst rank lists into ``out_dir``; {caption: path}. Each picture
    names the model and dataset, so it keeps its meaning when copied elsewhere."""
    # matplotlib takes most of a second to import: only runs that draw should pay for it.
    from reid.evaluation.plots import plot_distance_histograms, plot_rank_lists, plot_roc, select_queries

    context = f"{model_name} on {dataset.root.name}"
    distance = f"{settings.metric} distance" + (", re-ranked" if settings.rerank else "")
    pictures = {
        "ROC": plot_roc(out_dir / "roc.png", roc, title=f"ROC, {context}\n{roc.num_genuine:,} genuine, "
                                                         f"{roc.num_impostor:,} impostor pairs"),
        "Distance histograms": plot_distance_histograms(out_dir / "distance_histogram.png", roc,
                                                        title=f"genuine vs impostor pairs, {context}", xlabel=distance),
    }
    ids = (dataset.pids("query"), dataset.pids("gallery"), dataset.camids("query"), dataset.camids("gallery"))
    for which in ("worst", "best"):
        pictures[f"Rank lists, {which} queries by AP"] = plot_rank_lists(
            out_dir / f"ranklist_{which}.png", distmat, dataset.paths("query"), dataset.paths("gallery"), *ids,
            select_queries(ranking, which, rank_list_queries), title=f"{which} queries by AP ({model_name})",
            query_ap=ranking.ap,
        )
    return pictures
