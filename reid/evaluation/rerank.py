"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) on the CPU, with sparse matrices.

Same algorithm and defaults as fast-reid's ``re_ranking`` (k1=20, k2=6, lambda=0.3): distances
are squared Euclidean between the (L2-normalised, for the cosine metric) features of all query
and gallery images, each row divided by its maximum; each image's k-reciprocal neighbour set
(expanded by the k1/2 sets of its members that overlap it by more than 2/3) gets Gaussian-kernel
weights exp(-d); the weight vectors are averaged over each image's k2 nearest neighbours; the
Jaccard distance of two weight vectors is 1 - sum(min) / sum(max); the result is
``(1 - lambda) * jaccard + lambda * distance``.

fast-reid holds several dense (N, N) matrices (N = queries + gallery: 19,281 for Market-1501,
1.5 GB each) or needs faiss on a GPU. Here the neighbour sets and weights are sparse matrices
and the distances are computed in row blocks, so memory stays near the (Q, G) result.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> k_reciprocal_rerank(rng.normal(size=(4, 8)), rng.normal(size=(30, 8)), k1=5, k2=2).shape
(4, 30)
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from reid.errors import CrosscamError
from reid.evaluation.distance import METRICS
from reid.vectors import l2_normalize

_BLOCK_ROWS = 512
# Jaccard step, per block of query rows: expanded pairs (~40 bytes each) and dense output cells.
_JACCARD_PAIRS = 4_000_000
_JACCARD_CELLS = 2**20
# Pairs whose feature rows are gathered at once when weighting the neighbour sets.
_PAIR_CHUNK = 32768


def k_reciprocal_rerank(
    query: np.ndarray,
    gallery: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = "cosine",
) -> np.ndarray:
    """(Q, D), (G, D) features -> (Q, G) float32 re-ranked distances."""
    if metric not in METRICS:
        raise CrosscamError(f"--metric {metric}: unknown; use one of {', '.join(METRICS)}")
    if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
        raise CrosscamError(f"re-ranking: need k1 >= 1, k2 >= 1 and 0 <= lambda <= 1, got {k1}, {k2}, {lambda_value}")
    features = np.concatenate([query, gallery]).astype(np.float32)
    if metric == "cosine":
        features = l2_normalize(features)
    num_q = len(query)
    initial_rank, row_max, query_dist = _nearest_neighbours(features, max(k1 + 1, k2), num_q)

    reciprocal = _k_reciprocal_sets(initial_rank, k1 + 1)
    half = _k_reciprocal_sets(initial_rank, int(np.around(k1 / 2.0)) + 1)
    expansion = _expand(reciprocal, half)
    weights = _kernel_weights(features, expansion, row_max)
    if k2 > 1:
        weights = _average_over_neighbours(weights, initial_rank[:, :k2])
    final = _jaccard_to_gallery(weights, num_q)
    final *= np.float32(1.0 - lambda_value)
    query_dist *= np.float32(lambda_value)
    final += query_dist
    return final


def _squared_distances(features: np.ndarray, sq_norms: np.ndarray, rows: slice) -> np.ndarray:
    block = features[rows] @ features.T
    block *= -2.0
    block += sq_norms[rows, None]
    block += sq_norms[None, :]
    np.maximum(block, 0.0, out=block)
    block[np.arange(block.shape[0]), np.arange(rows.start, rows.start + block.shape[0])] = 0.0
    return block


def _nearest_neighbours(features: np.ndarray, k: int, num_q: int):
    """Per image: its k nearest images in order (N, k) int64, its row maximum of the squared
    distance (N,), and the row-normalised squared query-to-gallery distances (Q, G) float32."""
    n = len(features)
    k = min(k, n)
    sq_norms = np.einsum("ij,ij->i", features, features)
    initial_rank = np.empty((n, k), dtype=np.int64)
    row_max = np.empty(n, dtype=np.float32)
    query_dist = np.empty((num_q, n - num_q), dtype=np.float32)
    for start in range(0, n, _BLOCK_ROWS):
        rows = slice(start, min(start + _BLOCK_ROWS, n))
        dist = _squared_distances(features, sq_norms, rows)
        row_max[rows] = dist.max(axis=1)
        dist /= np.maximum(row_max[rows, None], np.float32(1e-12))
        nearest = np.argpartition(dist, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (dist.shape[0], 1))
        order = np.argsort(np.take_along_axis(dist, nearest, axis=1), axis=1, kind="stable")
        initial_rank[rows] = np.take_along_axis(nearest, order, axis=1)
        if start < num_q:
            query_dist[start : min(rows.stop, num_q)] = dist[: min(rows.stop, num_q) - start, num_q:]
    return initial_rank, row_max, query_dist


def _k_reciprocal_sets(initial_rank: np.ndarray, k: int) -> sparse.csr_matrix:
    """Boolean (N, N): j is among i's k nearest and i among j's k nearest."""
    n = len(initial_rank)
    k = min(k, initial_rank.shape[1])
    rows = np.repeat(np.arange(n), k)
    forward = sparse.csr_matrix((np.ones(n * k, dtype=np.float32), (rows, initial_rank[:, :k].ravel())), shape=(n, n))
    return forward.multiply(forward.T).tocsr().astype(bool)


def _expand(reciprocal: sparse.csr_matrix, half: sparse.csr_matrix) -> sparse.csr_matrix:
    """Add to each set R(i) the half-size set R'(c) of every member c with |R'(c) & R(i)| > 2/3 |R'(c)|."""
    overlap = (reciprocal.astype(np.float32) @ half.T.astype(np.float32)).multiply(reciprocal).tocoo()
    half_size = np.asarray(half.sum(axis=1)).ravel()
    keep = overlap.data > 2.0 / 3.0 * half_size[overlap.col]
    n = reciprocal.shape[0]
    chosen = sparse.csr_matrix((np.ones(keep.sum(), np.float32), (overlap.row[keep], overlap.col[keep])), shape=(n, n))
    expanded = reciprocal.astype(np.float32) + chosen @ half.astype(np.float32)
    expanded.data[:] = 1.0
    return expanded.tocsr()


def _kernel_weights(features: np.ndarray, expansion: sparse.csr_matrix, row_max: np.ndarray) -> sparse.csr_matrix:
    """V: row i holds exp(-d(i, j)) over j in i's expanded set, divided by the row sum."""
    coo = expansion.tocoo()
    rows, cols = coo.row, coo.col
    sq = np.einsum("ij,ij->i", features, features)
    dots = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), _PAIR_CHUNK):  # gathered feature rows: ~2 x 64 MB at a time
        chunk = slice(start, start + _PAIR_CHUNK)
        dots[chunk] = np.einsum("ij,ij->i", features[rows[chunk]], features[cols[chunk]])
    dist = np.maximum(sq[rows] + sq[cols] - 2.0 * dots, 0.0)
    dist[rows == cols] = 0.0
    weight = np.exp(-dist / np.maximum(row_max[rows], np.float32(1e-12)))
    weight /= np.bincount(rows, weights=weight, minlength=expansion.shape[0])[rows]
    return sparse.csr_matrix((weight.astype(np.float32), (rows, cols)), shape=expansion.shape)


def _average_over_neighbours(weights: sparse.csr_matrix, neighbours: np.ndarray) -> sparse.csr_matrix:
    """Row i becomes the mean of the rows of its k2 nearest neighbours (local query expansion)."""
    n, k = neighbours.shape
    mean = sparse.csr_matrix(
        (np.full(n * k, 1.0 / k, dtype=np.float32), (np.repeat(np.arange(n), k), neighbours.ravel())), shape=(n, n)
    )
    return (mean @ weights).tocsr()


def _jaccard_to_gallery(weights: sparse.csr_matrix, num_q: int) -> np.ndarray:
    """(Q, G) Jaccard distance between query rows and gallery rows of the weight matrix.

    sum(min(V_i, V_j)) is accumulated from the columns V_i shares with each j (its nonzeros'
    columns, read from a CSC copy). Query rows are taken in blocks whose number of
    (entry, column-entry) pairs stays under ``_JACCARD_PAIRS``, so memory stays bounded even
    when a few "hub" images sit in very many neighbour sets.
    """
    n = weights.shape[0]
    by_column = weights.tocsc()
    column_sizes = np.diff(by_column.indptr).astype(np.float64)
    work = np.cumsum(_row_work(weights[:num_q], column_sizes))
    jaccard = np.empty((num_q, n - num_q), dtype=np.float32)
    start = 0
    while start < num_q:
        done = work[start - 1] if start else 0.0
        stop = max(start + 1, int(np.searchsorted(work, done + _JACCARD_PAIRS, side="right")))
        stop = min(stop, start + max(1, _JACCARD_CELLS // n), num_q)
        block = weights[start:stop].tocoo()
        starts, ends = by_column.indptr[block.col], by_column.indptr[block.col + 1]
        lengths = ends - starts
        entry = np.repeat(np.arange(len(block.col)), lengths)
        positions = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) + starts[entry]
        shared = np.minimum(block.data[entry], by_column.data[positions])
        target = block.row[entry] * n + by_column.indices[positions]
        rows = stop - start
        overlap = np.bincount(target, weights=shared, minlength=rows * n).reshape(rows, n)[:, num_q:]
        jaccard[start:stop] = 1.0 - overlap / (2.0 - overlap)
        start = stop
    return jaccard


def _row_work(rows: sparse.csr_matrix, column_sizes: np.ndarray) -> np.ndarray:
    """Per row: the number of (nonzero, column entry) pairs the Jaccard step will expand."""
    pattern = rows.copy()
    pattern.data[:] = 1.0
    return np.asarray(pattern @ column_sizes).ravel()
