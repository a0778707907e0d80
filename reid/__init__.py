"""crosscam's appearance side: ReID models, checkpoints, the batched Embedder, datasets in
Market-1501 layout, evaluation and training. Usable without any video; never imports ``pipeline``.

The names below load their module on first use (``from reid import Embedder`` imports torch then),
so ``import reid.errors`` and the CLI's start stay light.
"""

from importlib import import_module

_HOMES = {
    "BenchmarkSettings": "reid.benchmark",
    "CrosscamError": "reid.errors",
    "Embedder": "reid.embedder",
    "MarketDataset": "reid.data",
    "alpha_query_expansion": "reid.evaluation",
    "evaluate_ranking": "reid.evaluation",
    "evaluate_roc": "reid.evaluation",
    "k_reciprocal_rerank": "reid.evaluation",
    "pairwise_distance": "reid.evaluation",
    "resolve_device": "reid.embedder",
    "run_benchmark": "reid.benchmark",
    "zoo": "reid.zoo",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'reid' has no attribute {name!r}")
    home = import_module(_HOMES[name])
    value = home if home.__name__ == f"reid.{name}" else getattr(home, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
