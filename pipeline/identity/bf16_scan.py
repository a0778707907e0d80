"""A bfloat16 scan in front of an exact inner-product top-k over a flat index (torch).

A flat search reads every stored vector. On CPUs with bfloat16 matrix units (AMX, AVX512-BF16),
a bf16 matrix product with the vectors packed once in oneDNN's blocked layout scores 6-48 query
rows against 100k 512-d vectors in 2.5-4 ms on 2 cores (a plain bf16 ``@`` repacks them on every
call: 8-10 ms; FAISS's whole fp32 search takes 22-34 ms). Its scores are off by at most ``eps``
(a rounding bound, below), so the exact top k are certainly among the vectors whose bf16 score
is within ``2 eps`` of the k-th best bf16 score. Those few (a few hundred a row) are scored again
in fp32 and the best k returned: the same vectors and scores a flat FAISS search gives (up to
ties and fp32 rounding, ~1e-7). Where a row's band of candidates is wider than kept, it is
widened; where bf16 cannot tell a quarter of the index apart, FAISS searches that row.

Rounding bound, for a query ``q`` and a stored vector ``x`` rounded to ``q~``, ``x~``:
``q . x - q~ . x~ = q~ . (x - x~) + (q - q~) . x``, bounded by the norms of the rounding residues
(measured, not assumed: about 0.0016 for a unit vector); the fp32 sum of ``D`` exact bf16
products adds at most ``2D 2**-24 |q~| |x~|`` in any order; rounding the sum to bf16 at most
``2**-7`` of the score. The bound is taken with 1 % to spare.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

_OUTPUT_ROUNDING = 2.0**-7  # relative error of a bf16 result (2**-8 rounded to nearest; truncated, 2**-7)
_FP32_ROUNDOFF = 2.0**-24
_SPARE = 1.01
_PACKED_FOR_ROWS = 32  # oneDNN's packing is tuned for this many query rows; 1-100 all run well


def _bf16_product(vectors: torch.Tensor):
    """``product(rows)``: (Q, D) bf16 -> (Q, N) bf16, ``rows @ vectors.T`` for ``vectors`` (N, D)
    bf16, by oneDNN's linear with ``vectors`` packed once, or by ``@`` where torch lacks those ops."""
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(vectors, _PACKED_FOR_ROWS)
        torch.ops.mkldnn._linear_pointwise(vectors[:1], packed, None, "none", [], "")
    except (AttributeError, RuntimeError, NotImplementedError):  # a torch without mkldnn, or other ops
        return lambda rows: rows @ vectors.T
    return lambda rows: torch.ops.mkldnn._linear_pointwise(rows, packed, None, "none", [], "")


class Bf16Scan:
    """``scan.search(rows, k)`` answers as ``index.search`` on the flat ``index`` it was built from.

    ``index``: a ``faiss.IndexIDMap2`` over a ``faiss.IndexFlatIP`` of N unit vectors (N, D); the
    scan keeps a view of its fp32 vectors (no copy) and a packed bf16 copy (N x D x 2 bytes).
    """

    def __init__(self, index: faiss.Index):
        inner = faiss.downcast_index(index.index)
        n, d = inner.ntotal, inner.d
        self._index = index
        self._xb, self._dim = inner.get_xb(), d
        self._vectors = torch.from_numpy(faiss.rev_swig_ptr(self._xb, n * d).reshape(n, d))  # FAISS's memory
        self._ids = faiss.vector_to_array(index.id_map)
        self._max_residue = self._max_norm = 0.0  # max |x - x~| and max |x|, in blocks: small temporaries
        for block in torch.split(self._vectors, 16384):
            residues = torch.linalg.vector_norm(block - block.to(torch.bfloat16).float(), dim=1)
            self._max_residue = max(self._max_residue, float(residues.max()))
            self._max_norm = max(self._max_norm, float(torch.linalg.vector_norm(block, dim=1).max()))
        self.rough_scores = _bf16_product(self._vectors.to(torch.bfloat16))
        self._sum_rounding = 2 * d * _FP32_ROUNDOFF

    def _input_bound(self, queries: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
        """(Q,) bound on the score error from rounding the inputs and summing in fp32."""
        q_norm = torch.linalg.vector_norm(rounded.float(), dim=1)
        q_residue = torch.linalg.vector_norm(queries - rounded.float(), dim=1)
        rounded_x_norm = self._max_norm + self._max_residue
        bound = q_norm * self._max_residue + q_residue * self._max_norm
        return _SPARE * (bound + self._sum_rounding * q_norm * rounded_x_norm)

    def search(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores (Q, k) float32, best first, and ids (Q, k) int64 for ``rows`` (Q, D) float32."""
        n = len(self._ids)
        width = 2 * k + 64  # candidates kept per row: k and a band below it, widened where it overflows
        if width >= n // 4:  # much of the index is asked for: little to prune
            return self._index.search(rows, k)
        rows = np.ascontiguousarray(rows, np.float32)
        queries = torch.from_numpy(rows)
        rounded = queries.to(torch.bfloat16)
        rough = self.rough_scores(rounded)  # (Q, N) bf16
        bound = self._input_bound(queries, rounded)  # (Q,)
        scores = np.empty((len(rows), k), np.float32)
        ids = np.empty((len(rows), k), np.int64)
        left = np.arange(len(rows))  # rows not answered yet
        while len(left) and width < n // 4:
            every = len(left) == len(rows)  # rough[left] would copy all of it
            answered = self._rescore(rows[left], rough if every else rough[left], bound[left], k, width)
            for (row, best, chosen) in zip(left, *answered):
                if best is not None:
                    scores[row], ids[row] = best, chosen
            left = np.array([row for row, best in zip(left, answered[0]) if best is None], np.int64)
            width *= 4
        if len(left):  # bf16 cannot tell these rows' candidates apart: FAISS's fp32 scan
            scores[left], ids[left] = self._index.search(rows[left], k)
        return scores, ids

    def _rescore(self, rows: np.ndarray, rough: torch.Tensor, bound: torch.Tensor, k: int, width: int):
        """Per row of ``rows`` (Q, D): its best k scores and ids, or None twice where the band of
        candidates reaches past the ``width`` best rough scores."""
        values, positions = torch.topk(rough, width, dim=1)  # (Q, width), best first
        values = values.float()
        # |exact - rough| <= a + b |rough|, and s + b|s| grows with s: a vector can be in the exact
        # top k only if its rough + a + b|rough| reaches the k-th best rough - a - b|rough|
        a, b = bound[:, None], _SPARE * _OUTPUT_ROUNDING
        reach = values + b * values.abs()
        floor = values[:, k - 1 : k] - b * values[:, k - 1 : k].abs() - 2 * a  # (Q, 1)
        in_band = (reach >= floor).sum(dim=1)  # (Q,) candidates to score again
        certain = (reach[:, -1] < floor[:, 0]).numpy()  # the band ends inside the kept candidates
        best = [None] * len(rows)
        chosen = [None] * len(rows)
        if not certain.any():
            return best, chosen
        depth = int(in_band[certain].max())
        candidates = positions[certain, :depth].clone()  # (C, depth); -1 past a row's band ends it
        candidates[torch.arange(depth)[None, :] >= in_band[certain, None]] = -1
        candidates = np.ascontiguousarray(candidates.numpy())
        exact_rows = np.ascontiguousarray(rows[certain])
        top = np.empty((len(exact_rows), k), np.float32)
        top_positions = np.empty((len(exact_rows), k), np.int64)
        faiss.knn_inner_products_by_idx(  # exact fp32 scores of the candidates, best k first
            faiss.swig_ptr(exact_rows), self._xb, faiss.swig_ptr(candidates), self._dim, len(exact_rows),
            len(self._ids), depth, k, faiss.swig_ptr(top), faiss.swig_ptr(top_positions), depth,
        )
        for i, row in enumerate(np.flatnonzero(certain)):
            best[row], chosen[row] = top[i], self._ids[top_positions[i]]
        return best, chosen
