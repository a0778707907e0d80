"""Exact inner-product top-k over a flat index: FAISS's own search, or for a large flat index on a
CPU with bfloat16 units a :class:`pipeline.identity.bf16_scan.Bf16Scan` (the same answers, faster).

Only a store that takes the scan loads torch (``crosscam query`` on a small run stays light).
"""

from __future__ import annotations

import faiss

from pipeline.identity.search_batcher import SearchFn

MIN_VECTORS = 20_000  # below this FAISS's own scan is quick; the bf16 copy is not worth its memory


def bf16_matmul_is_fast() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX tiles or AVX512-BF16)."""
    import torch  # here, not at the top: a store too small to scan never loads torch

    cpu = torch.cpu
    return bool(cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported())


def bf16_scan_applies(n_vectors: int, bf16_scan: bool) -> bool:
    """Whether a flat CPU index of ``n_vectors`` is searched by a :class:`~pipeline.identity.bf16_scan.Bf16Scan`: ``bf16_scan``
    (``store.bf16_scan``) is on, there are at least ``MIN_VECTORS``, and this CPU has bf16 units."""
    return bf16_scan and n_vectors >= MIN_VECTORS and bf16_matmul_is_fast()


def exact_searcher(index: faiss.Index, bf16_scan: bool) -> SearchFn:
    """``index.search``, or a :class:`~pipeline.identity.bf16_scan.Bf16Scan`'s (the same answers, faster) for a flat CPU index
    (an id map over ``IndexFlatIP``) where :func:`bf16_scan_applies`."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else None
    if isinstance(inner, faiss.IndexFlatIP) and bf16_scan_applies(index.ntotal, bf16_scan):
        from pipeline.identity.bf16_scan import Bf16Scan

        return Bf16Scan(index).search
    return index.search
