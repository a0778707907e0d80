"""Benchmark: track-store search at 1M stored vectors, flat (exact; FAISS's fp32 scan and the store's
bf16 scan with fp32 re-scoring where the CPU has bf16 units) against IVF and HNSW.

Data: ``--n`` unit vectors of ``--dim`` dimensions (default 1,000,000 x 128, 512 MB float32),
clustered like track features: 200k "people" with 5 tracks each (person direction + noise).
Queries: ``--queries`` fresh noisy views of stored people. Each index is built the way
``pipeline.identity.store.build_index`` builds it for the store (same code, same settings from
``StoreConfig``); recall@10 is measured against the exact flat index's top 10, latency per query
both one query at a time and in batches of 100.

    .venv/bin/python tests/benchmarks/bench_store.py               # 1M x 128
    .venv/bin/python tests/benchmarks/bench_store.py --n 200000 --kinds flat ivf
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from pipeline.config import StoreConfig
from pipeline.identity.bf16_scan import Bf16Scan
from pipeline.identity.exact_scan import bf16_scan_applies
from pipeline.identity.search_batcher import SearchFn
from pipeline.identity.faiss_index import build_index, tune_search


def clustered(n: int, dim: int, rng: np.random.Generator, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors in groups of 5 around random centres, and the centres."""
    centres = rng.standard_normal((n // 5, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, 100_000):  # in chunks: keeps the temporary arrays small
        hi = min(n, lo + 100_000)
        block = centres[np.arange(lo, hi) // 5] + noise * rng.standard_normal((hi - lo, dim), dtype=np.float32) / np.sqrt(dim)
        out[lo:hi] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out, centres


def timed_search(search: SearchFn, queries: np.ndarray, k: int) -> tuple[np.ndarray, float, float]:
    """Ids of the batched search, ms per query batched (100) and one at a time."""
    start = time.perf_counter()
    ids = np.vstack([search(queries[i:i + 100], k)[1] for i in range(0, len(queries), 100)])
    batched = (time.perf_counter() - start) * 1000 / len(queries)
    singles = queries[:50]
    start = time.perf_counter()
    for q in singles:
        search(q[None], k)
    single = (time.perf_counter() - start) * 1000 / len(singles)
    return ids, batched, single


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vectors, centres = clustered(args.n, args.dim, rng)
    people = rng.integers(0, len(centres), args.queries)
    queries = centres[people] + 0.5 * rng.standard_normal((args.queries, args.dim), dtype=np.float32) / np.sqrt(args.dim)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    keys = np.arange(args.n, dtype=np.int64)
    print(f"data: {args.n} x {args.dim} float32 ({vectors.nbytes / 2**20:.0f} MiB), {args.queries} queries, "
          f"{faiss.omp_get_max_threads()} threads")

    truth = None
    flat_ms = None
    config = StoreConfig()
    for kind in ["flat"] + [k for k in args.kinds if k != "flat"]:
        start = time.perf_counter()
        index = build_index(vectors, keys, config.model_copy(update={"index": kind}))
        build_s = time.perf_counter() - start
        settings = {"ivf": [("nprobe", n) for n in args.nprobe],
                    "hnsw": [("efSearch", e) for e in args.ef_search]}.get(kind, [("exact", 0)])
        if kind == "flat" and bf16_scan_applies(args.n, True):
            settings.append(("bf16 scan", 0))
        for name, value in settings:
            tune_search(index, config.model_copy(update={"ivf_nprobe": value or 1, "hnsw_ef_search": value or 1}))
            search = Bf16Scan(index).search if name == "bf16 scan" else index.search
            ids, batched, single = timed_search(search, queries, 10)
            if truth is None:
                truth = ids
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), truth.tolist())])
            same_person = np.mean(ids[:, :5] // 5 == people[:, None])  # the person's tracks in the top 5
            flat_ms = flat_ms or single
            label = f"{kind} {name} {value}" if value else kind if name == "exact" else f"{kind} {name}"
            print(f"{label:17s} build {build_s:7.1f} s | per query: {single:7.2f} ms single, {batched:6.2f} ms "
                  f"batched | speed-up vs flat (single) {flat_ms / single:6.1f}x | recall@10 vs exact "
                  f"{recall:.3f} | top-5 are the query's person {same_person:.3f}", flush=True)
        del index


if __name__ == "__main__":
    main()
