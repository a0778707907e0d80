"""crosscam's appearance side: ReID models, checkpoints, the batched Embedder, datasets in
Market-1501 layout, evaluation and training. Usable without any video; never imports ``pipeline``.
"""

from reid import zoo
from reid.benchmark import BenchmarkSettings, run_benchmark
from reid.data import MarketDataset
from reid.embedder import Embedder
from reid.errors import CrosscamError
from reid.evaluation import (
    alpha_query_expansion,
    evaluate_ranking,
    evaluate_roc,
    k_reciprocal_rerank,
    pairwise_distance,
)

__all__ = [
    "BenchmarkSettings",
    "CrosscamError",
    "Embedder",
    "MarketDataset",
    "alpha_query_expansion",
    "evaluate_ranking",
    "evaluate_roc",
    "k_reciprocal_rerank",
    "pairwise_distance",
    "run_benchmark",
    "zoo",
]
