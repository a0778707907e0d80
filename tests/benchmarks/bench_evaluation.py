"""Speed of crosscam's evaluate_ranking against fast-reid's numpy and Cython eval_market1501.

A Market-1501-sized random case (3368 x 15913 distances, 750 ids, 6 cameras, 2798 distractors),
tie-free in float32, evaluated by all three in the same run; the metrics must be identical.
fast-reid's Cython module is compiled into a temporary folder when Cython is installed.

    .venv/bin/python tests/benchmarks/bench_evaluation.py [--skip-numpy] [--rerank] [--rounds 5]

Target: crosscam <= 0.5 s, >= 100x fast-reid numpy, >= 5x its Cython.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

FASTREID = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / "fastreid"
NUM_Q, NUM_G, NUM_IDS, NUM_CAMS, DISTRACTORS = 3368, 15913, 750, 6, 2798


def market_sized_case(seed: int = 0):
    """Distances (2k+1)/(2G) in a random order per row, divided by 8 (exact) for same-person pairs: distinct
    float32 values in every row (no ties), with same-person pairs ranked higher on average."""
    rng = np.random.default_rng(seed)
    g_pids = np.concatenate([rng.integers(1, NUM_IDS + 1, NUM_G - DISTRACTORS), np.zeros(DISTRACTORS, np.int64)])
    q_pids = rng.integers(1, NUM_IDS + 1, NUM_Q)
    q_camids, g_camids = rng.integers(1, NUM_CAMS + 1, NUM_Q), rng.integers(1, NUM_CAMS + 1, NUM_G)
    ranks = rng.permuted(np.broadcast_to(np.arange(NUM_G, dtype=np.float32), (NUM_Q, NUM_G)), axis=1)
    distmat = np.ascontiguousarray((2 * ranks + 1) / np.float32(2 * NUM_G))  # row-major, like fast-reid's
    distmat[q_pids[:, None] == g_pids[None, :]] *= np.float32(0.125)
    return distmat, q_pids, g_pids, q_camids, g_camids


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec.loader.exec_module(module)
    return module


def build_fastreid_cython(folder: Path):
    """Compile fast-reid's rank_cy.pyx in ``folder``; the module, or None with the reason printed."""
    try:
        import Cython  # noqa: F401  (only checks that it is installed)
    except ImportError:
        print("fast-reid Cython: not built (Cython is not installed; `pip install cython` to include it)")
        return None
    source = FASTREID / "evaluation" / "rank_cylib" / "rank_cy.pyx"
    (folder / "rank_cy.pyx").write_text(source.read_text())
    (folder / "setup.py").write_text(
        "from setuptools import setup, Extension\nimport numpy as np\nfrom Cython.Build import cythonize\n"
        "setup(ext_modules=cythonize([Extension('rank_cy', ['rank_cy.pyx'], include_dirs=[np.get_include()])],"
        " language_level=3))\n"
    )
    build = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"], cwd=folder, capture_output=True, text=True
    )
    built = list(folder.glob("rank_cy*.so"))
    if build.returncode != 0 or not built:
        print(f"fast-reid Cython: build failed:\n{build.stderr[-2000:]}")
        return None
    return load_module(built[0], "rank_cy")


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def peak_memory_mb(fn, *args) -> float:
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-numpy", action="store_true", help="skip fast-reid's numpy path (about a minute)")
    parser.add_argument("--rerank", action="store_true", help="also time k-reciprocal re-ranking on Market-sized features")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds of crosscam and Cython")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from reid.evaluation import evaluate_ranking, evaluate_roc

    case = market_sized_case()
    print(f"case: {NUM_Q} x {NUM_G} float32, {NUM_IDS} ids, {NUM_CAMS} cameras, {DISTRACTORS} distractors")
    with tempfile.TemporaryDirectory() as folder:
        cython = build_fastreid_cython(Path(folder))
        # Alternate the two so that load from other processes hits both alike.
        ours_times, cy_times = [], []
        for _ in range(args.rounds):
            seconds, ours = timed(evaluate_ranking, *case)
            ours_times.append(seconds)
            if cython is not None:
                seconds, (cy_cmc, cy_ap, _) = timed(cython.evaluate_cy, *case, 50, False)
                cy_times.append(seconds)
    ours_s = float(np.median(ours_times))
    print(f"crosscam evaluate_ranking: median {ours_s:.3f} s, best {min(ours_times):.3f} s of {args.rounds}; "
          f"peak extra memory {peak_memory_mb(evaluate_ranking, *case):.0f} MB "
          f"(distance matrix itself: {case[0].nbytes / 2**20:.0f} MB)")
    print(f"  rank1 {ours.cmc[0]:.4f}  mAP {ours.mAP:.6f}  mINP {ours.mINP:.6f}  valid queries {ours.num_valid_query}")
    print(f"  full np.argsort of the matrix, for scale: {timed(np.argsort, case[0])[0]:.3f} s")
    roc_s, _ = timed(evaluate_roc, *case)
    print(f"crosscam evaluate_roc (TAR@FAR, fast-reid TPR@FPR, histograms): {roc_s:.3f} s")

    def check(label, cmc, all_ap):
        same_cmc = np.array_equal(np.asarray(cmc, np.float32), ours.cmc)
        ap_diff = float(np.max(np.abs(np.asarray(all_ap, np.float64) - ours.ap[ours.valid])))
        print(f"  {label}: CMC identical: {same_cmc}; max |AP difference| {ap_diff:.2e}")

    if cy_times:
        cy_s = float(np.median(cy_times))
        print(f"fast-reid Cython: median {cy_s:.3f} s, best {min(cy_times):.3f} s -> crosscam is {cy_s / ours_s:.1f}x "
              f"faster (medians; {min(cy_times) / min(ours_times):.1f}x on best times)")
        check("vs Cython (computes AP in float32)", cy_cmc, cy_ap)

    if not args.skip_numpy:
        rank = load_module(FASTREID / "evaluation" / "rank.py", "fastreid_rank")
        np_s, (np_cmc, np_ap, _) = timed(rank.eval_market1501, *case, 50)
        print(f"fast-reid numpy: {np_s:.3f} s -> crosscam is {np_s / ours_s:.1f}x faster")
        check("vs numpy", np_cmc, np_ap)

    if args.rerank:
        from reid.evaluation import k_reciprocal_rerank

        rng = np.random.default_rng(1)
        centers = rng.normal(size=(NUM_IDS, 512)).astype(np.float32)
        query = centers[case[1] - 1] + rng.normal(size=(NUM_Q, 512)).astype(np.float32)
        gallery = centers[np.maximum(case[2], 1) - 1] + rng.normal(size=(NUM_G, 512)).astype(np.float32)
        rr_s, _ = timed(k_reciprocal_rerank, query, gallery)
        print(f"k-reciprocal re-ranking, {NUM_Q} + {NUM_G} features of dim 512: {rr_s:.1f} s")
        print(f"  peak extra memory {peak_memory_mb(k_reciprocal_rerank, query, gallery):.0f} MB")


if __name__ == "__main__":
    main()
