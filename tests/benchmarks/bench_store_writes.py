"""Benchmark: adding one camera's tracks to a large track store, updated in place vs built anew.

A store of ``--tracks`` synthetic 512-d track features in 20 cameras (``bench_store.clustered``'s
people), then ``--repeats`` writes that each add one camera of ``--new`` tracks. Each write is timed
twice, in the same run: as the store does it (the committed FAISS index read back, the new tracks
added, written as the next generation) and with the index built again from the table's features,
which is what every write did before (the peer). Cases: the exact index (flat, the default up to
200k tracks) and IVF (the default above; ``--ivf-tracks``), where a build trains k-means.

    .venv/bin/python tests/benchmarks/bench_store_writes.py                  # 100k flat, 400k IVF
    .venv/bin/python tests/benchmarks/bench_store_writes.py --tracks 20000 --ivf-tracks 50000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_store import clustered
from pipeline.config import StoreConfig
from pipeline.identity.store import CameraRecord, CameraTracks, EmbedderInfo, TrackStore
from pipeline.types import TrackSummary

DIM = 512
INFO = EmbedderInfo("bench" * 8, "synthetic-512", DIM)


def camera_tracks(name: str, features: np.ndarray, first_identity: int) -> CameraTracks:
    """One camera holding one 10-frame track per feature row."""
    tracks = [
        TrackSummary(name, i + 1, 10 * i, 10 * i + 9, float(i), i + 0.9, 10, f, f[None], f"thumbs/{i + 1}.jpg")
        for i, f in enumerate(features)
    ]
    record = CameraRecord(name, 0.0, False, f"/videos/{name}.mp4", 10.0, (640, 480), 10 * len(tracks), name)
    return CameraTracks(record, tracks, list(range(first_identity, first_identity + len(tracks))))


def filled_store(folder: Path, features: np.ndarray, config: StoreConfig, cameras: int = 20) -> TrackStore:
    store = TrackStore.create(folder, INFO, config)
    start = time.perf_counter()
    store.write([
        camera_tracks(f"cam{c:02d}", part, first_identity=1 + c * len(part))
        for c, part in enumerate(np.array_split(features, cameras))
    ])
    print(f"  filled with {len(features)} tracks in {time.perf_counter() - start:.1f} s", flush=True)
    return store


def timed_adds(store: TrackStore, new: np.ndarray, repeats: int, rebuild: bool) -> list[float]:
    """Seconds per write of one new camera (each removed again by an untimed write of nothing)."""
    if rebuild:
        store._updated_index = lambda *args: None  # the peer: every write builds from the table
    seconds = []
    try:
        for r in range(repeats):
            start = time.perf_counter()
            store.write([camera_tracks("added", new, first_identity=10_000_000 + r * len(new))])
            seconds.append(time.perf_counter() - start)
            store.write([camera_tracks("added", new[:0], first_identity=1)])
    finally:
        store.__dict__.pop("_updated_index", None)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=100_000, help="tracks in the flat store")
    parser.add_argument("--ivf-tracks", type=int, default=400_000, help="tracks in the IVF store (0: skip)")
    parser.add_argument("--new", type=int, default=50, help="tracks of the added camera")
    parser.add_argument("--repeats", type=int, default=2, help="timed writes per contender and round (two rounds)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = [("flat", args.tracks, StoreConfig())]
    if args.ivf_tracks:
        cases.append(("ivf", args.ivf_tracks, StoreConfig(index="ivf")))
    for kind, n, config in cases:
        print(f"{kind}: {n} tracks of {DIM}-d, adding a camera of {args.new}", flush=True)
        features, _ = clustered(n + args.new, DIM, rng)
        with tempfile.TemporaryDirectory() as folder:
            store = filled_store(Path(folder) / "store", features[:n], config)
            rates = {}
            for rebuild in (False, True, False, True):  # interleaved: machine load hits both alike
                key = "built anew (peer)" if rebuild else "updated in place"
                rates.setdefault(key, []).extend(timed_adds(store, features[n:], args.repeats, rebuild))
            for key, seconds in rates.items():
                print(f"  {key:18s} median {statistics.median(seconds):6.2f} s (min {min(seconds):.2f}, max {max(seconds):.2f})", flush=True)
            ratio = statistics.median(rates["built anew (peer)"]) / statistics.median(rates["updated in place"])
            print(f"  -> {ratio:.1f}x faster", flush=True)


if __name__ == "__main__":
    main()
