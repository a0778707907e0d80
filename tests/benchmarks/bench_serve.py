"""Benchmark: `crosscam serve` latency on a 100k-track store and on the demo run.

For each run a real `crosscam serve` process is started and asked, ``--requests`` times at each
concurrency (``--concurrency``, default 1 and 8): the identities page (``/api/identities``, the
gallery's first request), a track query (random stored tracks), an image query (an uploaded
person crop with its camera) and a frame seek (``/api/frames``: random frames, so every one is a
real seek). Printed: median and p95 latency, ms, for a server of one process and of two (``--workers``),
and for the synthetic store's exact index, with its bf16 scan (``store.bf16_scan``, the default where
the CPU has bf16 units) and with FAISS's fp32 scan alone. Peers measured in the same run: the same Python
functions called in this process (the identities overview there is built afresh each time; the
server keeps it per store generation), and one `crosscam query --track` process (what answering
a click cost before the server). Targets (issue 18): track query p95 < 100 ms,
image query p95 < 500 ms, frame seek < 300 ms.

The synthetic run: ``--tracks`` tracks in 20 cameras, grouped into identities of 1-5 tracks
(clustered unit features of the embedder's dimension, with five representatives each, the default),
stored with ``TrackStore.write`` as ``crosscam track`` stores them; its cameras show the real hall clip of
``../shared`` (or the demo's cam1 video without it). The embedder is ``--reid`` (default the
shared OSNet-x0.25 ONNX, else MobileNetV2-ImageNet), so an image query embeds for real.

    .venv/bin/python tests/benchmarks/bench_serve.py                       # 100k tracks + demo
    .venv/bin/python tests/benchmarks/bench_serve.py --tracks 20000 --requests 50
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from pipeline.config import ReidConfig, StoreConfig, load_pipeline_config  # noqa: E402
from pipeline.identity.exact_scan import bf16_scan_applies  # noqa: E402
from pipeline.identity.query import query_image, query_track  # noqa: E402
from pipeline.identity.report import identity_overviews  # noqa: E402
from pipeline.identity.store import CameraRecord, CameraTracks, EmbedderInfo, TrackStore  # noqa: E402
from pipeline.serve.frames import open_frames  # noqa: E402
from pipeline.types import TrackSummary  # noqa: E402
from reid import Embedder  # noqa: E402
from serve_runs import serving  # noqa: E402

SHARED = REPO.parent / "shared"
CAMERAS = 20
REPRESENTATIVES = 5  # output.representatives' default
TARGETS_MS = {"track query": 100.0, "image query": 500.0, "frame seek": 300.0}


def make_demo(folder: Path) -> Path:
    """``crosscam demo --seconds 8 --seed 1`` (the serve tests' run) into ``folder``; its run/."""
    subprocess.run([sys.executable, "-m", "pipeline.cli.main", "demo", "--out", str(folder), "--seconds", "8",
                    "--seed", "1", "--set", "output.video=false", "--quiet", "--json"],
                   check=True, stdout=subprocess.DEVNULL)
    return folder / "run"


def make_synthetic(folder: Path, n_tracks: int, reid: str, video: str, index: str = "auto") -> Path:
    """A run directory of ``n_tracks`` tracks in CAMERAS cameras (see the module docstring)."""
    embedder = Embedder.from_weights(reid)
    reid_config = ReidConfig(weights=reid).model_dump(mode="json")
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 6, n_tracks)  # tracks per identity
    identity_of = np.repeat(np.arange(1, len(sizes) + 1), sizes)[:n_tracks]
    centres = rng.standard_normal((identity_of.max() + 1, embedder.dim), dtype=np.float32)
    run = folder / "run"
    store = TrackStore.create(run / "store", EmbedderInfo(embedder.fingerprint, embedder.name, embedder.dim),
                              StoreConfig(index=index))
    fps, frames = 10.0, open_frames(run, video, 10.0).count
    thumb = rng.integers(0, 255, (128, 64, 3), np.uint8)  # any crop: image queries embed it for real
    updates = []
    for c in range(CAMERAS):
        name = f"cam{c + 1:02d}"
        (run / name / "thumbs").mkdir(parents=True)
        cv2.imwrite(str(run / name / "thumbs" / "1.jpg"), thumb)
        keys = np.arange(c, n_tracks, CAMERAS)
        feats = centres[identity_of[keys]] + 0.6 * rng.standard_normal((len(keys), embedder.dim), dtype=np.float32) / np.sqrt(embedder.dim)
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        first = rng.integers(0, max(1, frames - 60), len(keys))
        # REPRESENTATIVES individual features per track, as `crosscam track` keeps by default: a
        # track query searches with all of them (1 + R rows)
        reps = feats[:, None] + 0.3 * rng.standard_normal((len(keys), REPRESENTATIVES, embedder.dim),
                                                           dtype=np.float32) / np.sqrt(embedder.dim)
        reps /= np.linalg.norm(reps, axis=2, keepdims=True)
        summaries = [
            TrackSummary(name, i + 1, int(f), int(f) + 40, f / fps, (f + 40) / fps, 41, feats[i], reps[i],
                         f"{name}/thumbs/1.jpg")
            for i, f in enumerate(first)
        ]
        record = CameraRecord(name, 0.0, False, video, fps, (768, 432), frames, f"synthetic-{c}")
        updates.append(CameraTracks(record, summaries, identity_of[keys].tolist()))
        run_json = {"camera": name, "source": video, "fps": fps, "frame_size": [768, 432], "status": "complete",
                    "time_offset_s": 0.0, "frames_read": frames,
                    "config": {"reid": reid_config, "detector": {"model": "motion"}, "source": {"stride": 1}},
                    "models": {"reid": {"name": embedder.name, "fingerprint": embedder.fingerprint, "dim": embedder.dim}}}
        (run / name / "run.json").write_text(json.dumps(run_json))
        (run / name / "tracks.json").write_text("[]")
    store.write(updates)
    return run


def percentiles(ms: list[float]) -> tuple[float, float]:
    ordered = sorted(ms)
    return float(np.median(ordered)), ordered[min(len(ordered) - 1, int(np.ceil(0.95 * len(ordered))) - 1)]


def timed_requests(url: str, make_request, n: int, concurrency: int) -> list[float]:
    """Latencies (ms) of ``n`` requests ``make_request(client, i)`` on ``concurrency`` threads."""
    clients = [httpx.Client(base_url=url, timeout=120) for _ in range(concurrency)]

    def one(i: int) -> float:
        start = time.perf_counter()
        response = make_request(clients[i % concurrency], i)
        assert response.status_code == 200, response.text[:200]
        return (time.perf_counter() - start) * 1000

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(one, range(n)))
    finally:
        for c in clients:
            c.close()


def bench_run(label: str, run: Path, args, workers: int, peers: dict | None, settings: Path | None) -> dict:
    """One server of ``workers`` processes on ``run`` with ``--config settings`` (None: the defaults);
    ``peers`` measured before (None: measure them)."""
    store = TrackStore.open(run / "store")
    tracks = store.tracks()
    rng = np.random.default_rng(1)
    picks = [tracks[i] for i in rng.integers(0, len(tracks), args.requests)]
    cams = [c.name for c in store.cameras()]
    crop_track = max(tracks, key=lambda t: t.num_detections)
    crop = (run / crop_track.thumbnail).read_bytes()
    frames = {c: open_frames(run / c, json.loads((run / c / "run.json").read_text())["source"], 10.0).count for c in cams}
    seeks = [(cams[i % len(cams)], int(rng.integers(0, frames[cams[i % len(cams)]]))) for i in range(args.requests)]
    requests = {
        "identities page": lambda c, i: c.get("/api/identities", params={"limit": 120}),
        "track query": lambda c, i: c.get("/api/query/track", params={"camera": picks[i].camera, "track": picks[i].track_id}),
        "image query": lambda c, i: c.post("/api/query/image", data={"camera": crop_track.camera},
                                           files={"image": ("crop.jpg", crop, "image/jpeg")}),
        "frame seek": lambda c, i: c.get(f"/api/frames/{seeks[i][0]}/{seeks[i][1]}", params={"width": 640}),
    }
    out: dict = {"run": f"{label}, --workers {workers}", "tracks": len(tracks), "identities": len(store.identities()),
                 "rows": {}}
    config = ["--config", str(settings)] if settings else []
    with serving(run, "--workers", str(workers), *config) as url:
        with httpx.Client(base_url=url, timeout=300) as client:
            client.get("/api/cameras")  # the server's processes are up
            start = time.perf_counter()
            client.get("/api/identities", params={"limit": 120})
            out["identities page, first (uncached)"] = (time.perf_counter() - start) * 1000
        for name, make in requests.items():  # warm every process: index and embedder loaded, decoders open
            timed_requests(url, make, 4 * workers, 4 * workers)
        for name, make in requests.items():
            for conc in args.concurrency:
                out["rows"][(name, conc)] = percentiles(timed_requests(url, make, args.requests, conc))
    out["peers"] = peers or in_process_peers(run, store, picks, run / crop_track.thumbnail, crop_track.camera, args, settings)
    return out


def in_process_peers(run: Path, store: TrackStore, picks, crop_path: Path, camera: str, args,
                     settings: Path | None) -> dict:
    """The same work without HTTP, one at a time (median ms), and one CLI process per question."""
    cfg = load_pipeline_config(settings)
    store = TrackStore.open(run / "store", config=cfg.store)
    peers = {}
    for name, call in {
        "identities page": lambda i: identity_overviews(run, store),
        "track query": lambda i: query_track(run, picks[i].camera, picks[i].track_id, config=cfg, store=store),
        "image query": lambda i: query_image(run, crop_path, None, config=cfg, camera=camera, store=store),
    }.items():
        call(0)
        times = []
        for i in range(min(args.requests, 30)):
            start = time.perf_counter()
            call(i)
            times.append((time.perf_counter() - start) * 1000)
        peers[name] = float(np.median(times))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.cli.main", "query", str(run), "--track",
                    f"{picks[0].camera}:{picks[0].track_id}", "--json"], check=True, stdout=subprocess.DEVNULL)
    peers["cli track query"] = (time.perf_counter() - start) * 1000
    return peers


def report(result: dict, concurrency: list[int]) -> None:
    print(f"\n== {result['run']}: {result['tracks']} tracks, {result['identities']} identities")
    print(f"identities page, first request (builds the overview): {result['identities page, first (uncached)']:.0f} ms")
    head = "".join(f"  c={c}: median / p95 ms" for c in concurrency)
    print(f"{'request':16s}{head}   in-process median ms (x served c=1)  target p95")
    for name in ("identities page", "track query", "image query", "frame seek"):
        cells = "".join(f"  {result['rows'][(name, c)][0]:8.1f} / {result['rows'][(name, c)][1]:8.1f}  " for c in concurrency)
        peer = result["peers"].get(name)
        peer_text = f"{peer:8.1f} ({result['rows'][(name, 1)][0] / peer:4.2f}x)" if peer else " " * 17
        target = TARGETS_MS.get(name)
        verdict = ""
        if target:
            worst = max(result["rows"][(name, c)][1] for c in concurrency)
            verdict = f"< {target:.0f} ms: {'met' if worst < target else 'NOT met'} (worst p95 {worst:.0f})"
        print(f"{name:16s}{cells} {peer_text}  {verdict}")
    cli = result["peers"]["cli track query"]
    print(f"peer: one `crosscam query --track` process {cli:.0f} ms -> serve's median track query is "
          f"{cli / result['rows'][('track query', 1)][0]:.0f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="crosscam serve --workers: server processes (each value is its own server)")
    default_reid = SHARED / "weights" / "osnet_x0_25_msmt17.onnx"
    parser.add_argument("--reid", default=str(default_reid) if default_reid.is_file() else "mobilenetv2_imagenet")
    parser.add_argument("--demo", type=Path, help="An existing demo run/ to reuse (default: make one).")
    parser.add_argument("--index", default="auto", choices=["auto", "flat", "ivf", "hnsw"],
                        help="store.index of the synthetic store (auto: exact flat up to 200k tracks).")
    parser.add_argument("--scans", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"],
                        help="the synthetic store's servers: store.bf16_scan true (bf16) and/or false (fp32)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp = Path(tmp)
        demo = args.demo or make_demo(tmp / "demo")
        hall = SHARED / "videos" / "one-by-one-person-detection.mp4"
        video = str(hall if hall.is_file() else json.loads((demo / "cam1" / "run.json").read_text())["source"])
        start = time.perf_counter()
        synthetic = make_synthetic(tmp / "synthetic", args.tracks, args.reid, video, args.index)
        print(f"synthetic store: {args.tracks} tracks, index {args.index}, written in {time.perf_counter() - start:.0f} s "
              f"(embedder {args.reid}; frames from {Path(video).name})")
        runs = [("demo run (crosscam demo --seconds 8 --seed 1)", demo, None)]
        for scan in args.scans:
            settings = tmp / f"{scan}.yaml"
            settings.write_text(f"store:\n  bf16_scan: {str(scan == 'bf16').lower()}\n")
            shown = scan if scan == "fp32" or bf16_scan_applies(args.tracks, True) else "bf16 asked, fp32 (no bf16 units or too few tracks)"
            runs.append((f"synthetic {args.tracks} (index {args.index}, {shown} scan)", synthetic, settings))
        for label, run, settings in runs:
            peers = None
            for workers in args.workers:
                result = bench_run(label, run, args, workers, peers, settings)
                peers = result["peers"]
                report(result, args.concurrency)


if __name__ == "__main__":
    main()
