"""The store's FAISS indexes: which kind for how many vectors (flat, IVF, HNSW), building one, its
search-time knobs, and the GPU copy where faiss-gpu sees a GPU.

Vectors are unit rows (float32) searched by inner product (= cosine similarity) under int64 ids
(the store's track keys).
"""

from __future__ import annotations

import faiss
import numpy as np

from pipeline.config import StoreConfig

# faiss's own default for when exact search goes through BLAS (the faiss-cpu wheel ships 128000,
# under which a search read the whole index once per query row): over 100k 512-d tracks on a
# 2-core machine, a track query's 6 rows take 23 ms instead of 46, 16 rows (concurrent queries
# sharing a scan) 24 ms instead of 123.
faiss.cvar.distance_compute_blas_threshold = 20

_IVF_MIN_POINTS_PER_CELL = 39  # faiss k-means wants about this many training points per cell


def planned_kind(n_vectors: int, config: StoreConfig) -> str:
    """The index :func:`build_index` makes for ``n_vectors``: the configured kind, or flat/IVF for
    ``auto``; flat where there are too few vectors to train even one IVF cell."""
    kind = config.index if config.index != "auto" else "flat" if n_vectors <= config.large_store_size else "ivf"
    return "flat" if kind == "ivf" and n_vectors < _IVF_MIN_POINTS_PER_CELL else kind


def ivf_cells(n_vectors: int, config: StoreConfig) -> int:
    """IVF cells for ``n_vectors``: ``config.ivf_nlist`` or 4 sqrt(N), at most N / 39 (faiss's k-means)."""
    nlist = config.ivf_nlist or max(1, int(4 * np.sqrt(n_vectors)))
    return max(1, min(nlist, n_vectors // _IVF_MIN_POINTS_PER_CELL))


def inner_index(index: faiss.Index) -> faiss.Index:
    """The index an id map wraps (flat or HNSW), else ``index`` itself (IVF keeps its own ids)."""
    return faiss.downcast_index(index.index) if hasattr(index, "index") else index


def stored_kind(index: faiss.Index) -> str:
    """``flat``, ``ivf`` or ``hnsw``: the kind of an index ``build_index`` made."""
    inner = inner_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    return "flat" if isinstance(inner, faiss.IndexFlat) else "ivf"


def build_index(vectors: np.ndarray, keys: np.ndarray, config: StoreConfig) -> faiss.Index:
    """A CPU FAISS index of unit ``vectors`` (N, D) float32 under ids ``keys`` (N,) int64."""
    n, d = vectors.shape
    kind = planned_kind(n, config)
    if kind == "ivf":
        nlist = ivf_cells(n, config)
        index = faiss.index_factory(d, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        train = vectors[np.sort(np.random.default_rng(0).choice(n, min(n, nlist * 64), replace=False))]
        index.train(np.ascontiguousarray(train))
        index.add_with_ids(vectors, keys)
        return index
    if kind == "hnsw":
        inner = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        inner = faiss.IndexFlatIP(d)
    index = faiss.IndexIDMap2(inner)
    if n:
        index.add_with_ids(vectors, keys)
    return index


def tune_search(index: faiss.Index, config: StoreConfig) -> None:
    """Set the search-time knobs (IVF nprobe, HNSW efSearch) from ``config``."""
    try:
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = config.ivf_nprobe
    except RuntimeError:  # not an IVF index
        pass
    inner = inner_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = config.hnsw_ef_search


def maybe_to_gpu(index: faiss.Index, config: StoreConfig) -> faiss.Index:
    """Move flat/IVF indexes to the GPU when faiss-gpu is installed and one is visible."""
    if not (config.gpu and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0):
        return index
    if stored_kind(index) == "hnsw":  # faiss has no GPU HNSW
        return index
    return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
