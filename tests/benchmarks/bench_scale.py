"""Benchmark of ``crosscam track --workers N`` against the single-process path, in one run.

    .venv/bin/python tests/benchmarks/bench_scale.py [--seconds 30] [--clip-frames 1394] [--segment-s 30] [--models real|embedded]

Two workloads, each tracked three ways with the same models and config:
1. a synthetic 4-camera scene (``crosscam samples make``, ``--seconds`` long, whole videos);
2. the shared camera clip (its first ``--clip-frames`` frames) cut into segments of
   ``--segment-s`` seconds (one camera: only segments can spread it over workers).

The three ways: the single-process path (``pipeline.video.run.track_videos``, the models' default
threads), ``--workers 1`` and ``--workers 2`` with one thread per worker (Ray started on this
machine for each run). On the scene, a fourth: two plain processes with one thread each, half
the cameras each, no Ray and no stitching: the most two workers could give on this machine. On
the cut clip, a fourth: ``--workers 2`` with each segment computing its overlaps itself (the peer
of :mod:`pipeline.scale.overlaps`). Wall times include loading the models (and starting Ray), as a user
sees them; the association into identities is timed on its own (for the Ray runs with the workers
still up: they draw the global videos). Printed per workload: frames/s
end to end and steady (without the start-up: loading the models, or starting Ray and its workers
loading them), each with its ratio to the single-process path, the scaling efficiency of 2
workers over 1 (1.0: twice the frames/s), and the driver's share: seconds it spent stitching,
writing and joining videos (``run.json`` ``driver_seconds``) plus associating, over the run's wall time.

``--models real`` (default when ../shared is present): YOLOv8n INT8 + OSNet-x0.25 from ../shared;
``embedded``: the demo's motion detector and ImageNet MobileNetV2 (no files needed).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline.config import load_pipeline_config  # noqa: E402
from pipeline.identity.identities import update_identities  # noqa: E402
from pipeline.scale import driver  # noqa: E402
from pipeline.scale.driver import RaySession  # noqa: E402
from pipeline.scale.worker import limit_threads  # noqa: E402
from pipeline.video.run import track_videos  # noqa: E402
from samples import SceneOptions, make_scene  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import CLIP, trim_clip  # noqa: E402

SHARED = REPO.parent / "shared"
YOLO = SHARED / "weights" / "yolov8n_int8.onnx"
OSNET = SHARED / "weights" / "osnet_x0_25_msmt17.onnx"


def _track_alone(specs: list[str], out: str, overrides: list[str]) -> tuple[int, float]:
    """In a process of its own with one thread: track ``specs``; (frames, seconds loading the models)."""
    limit_threads(1)
    cfg = load_pipeline_config(None, overrides)
    start = time.perf_counter()
    runs = track_videos(specs, out, cfg, progress=False)
    return sum(r.frames_read for r in runs), time.perf_counter() - start - sum(r.elapsed_s for r in runs)


@contextmanager
def overlaps_shared(shared: bool):
    """The peer for overlap sharing: with ``shared`` False, every unit computes its overlaps itself
    (as before pipeline.scale.overlaps)."""
    if shared:
        yield
        return
    original = driver._Driver._overlaps
    driver._Driver._overlaps = lambda self, cam, unit: None
    try:
        yield
    finally:
        driver._Driver._overlaps = original


def run_once(way: str, specs: list[str], out: Path, overrides: list[str]) -> dict:
    """Track ``specs`` into ``out`` one way; wall seconds of tracking and of association, frames,
    and the driver's own seconds."""
    shutil.rmtree(out, ignore_errors=True)
    if way == "2 processes":  # no Ray, no driver: what two workers could give on this machine at best
        halves = [specs[: len(specs) // 2], specs[len(specs) // 2:]]
        start = time.perf_counter()
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_track_alone, halves, [str(out / "a"), str(out / "b")], [overrides] * 2))
        tracked = time.perf_counter() - start
        return {"tracking_s": tracked, "startup_s": max(s for _, s in done), "association_s": 0.0,
                "frames": sum(f for f, _ in done), "driver_s": 0.0}
    if way == "single":
        cfg = load_pipeline_config(None, overrides)
        start = time.perf_counter()
        runs = track_videos(specs, out, cfg, progress=False)
        tracked = time.perf_counter() - start
        start = time.perf_counter()
        update_identities(out, cfg, progress=False)
        associated = time.perf_counter() - start
    else:  # as `crosscam track --workers N` runs: association while the workers are up (they draw the global videos)
        workers = int(way.split()[0])
        cfg = load_pipeline_config(None, [*overrides, "scale.threads_per_worker=1"])
        start = time.perf_counter()
        with RaySession(cfg, workers) as session, overlaps_shared("overlaps twice" not in way):
            runs = session.track(specs, out, progress=False)
            tracked = time.perf_counter() - start
            start = time.perf_counter()
            update_identities(out, cfg, progress=False, render_videos=session.render_global_videos)
            associated = time.perf_counter() - start
            start = time.perf_counter()
        tracked += time.perf_counter() - start  # stopping the workers (and Ray)
    assert all(r.status == "complete" for r in runs), [(r.camera, r.error) for r in runs]
    records = [json.loads((r.folder / "run.json").read_text()) for r in runs]
    # Starting up: loading the models (single), or starting Ray and the workers loading them.
    startup = records[0]["scale"]["startup_s"] if way != "single" else tracked - sum(r.elapsed_s for r in runs)
    return {
        "tracking_s": tracked,
        "startup_s": startup,
        "association_s": associated,
        "frames": sum(r.frames_read for r in runs),
        "driver_s": sum(r.get("driver_seconds", 0.0) for r in records) + associated,
    }


def report(name: str, results: dict[str, dict]) -> None:
    base = results["single"]
    print(f"\n{name}: {base['frames']} frames")
    print(f"{'way':<26}{'frames/s':>10}{'vs single':>11}{'steady f/s':>12}{'vs single':>11}{'startup s':>11}"
          f"{'tracking s':>12}{'assoc s':>9}{'driver share':>14}")

    def steady(r: dict) -> float:
        return r["frames"] / (r["tracking_s"] - r["startup_s"])

    for way, r in results.items():
        fps = r["frames"] / r["tracking_s"]
        total = r["tracking_s"] + r["association_s"]
        share = r["driver_s"] / total if "worker" in way else float("nan")
        print(f"{way:<26}{fps:>10.2f}{fps / (base['frames'] / base['tracking_s']):>11.2f}{steady(r):>12.2f}"
              f"{steady(r) / steady(base):>11.2f}{r['startup_s']:>11.1f}{r['tracking_s']:>12.1f}"
              f"{r['association_s']:>9.2f}{share:>14.1%}")
    one, two = results["1 worker"], results["2 workers"]
    print(f"scaling efficiency of 2 workers over 1 (steady): {steady(two) / (2 * steady(one)):.2f}")
    if "2 processes" in results:
        print(f"2 workers / 2 plain processes (steady): {steady(two) / steady(results['2 processes']):.2f}")
    if "2 workers, overlaps twice" in results:
        twice = results["2 workers, overlaps twice"]
        print(f"2 workers, overlaps once / twice (steady): {steady(two) / steady(twice):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the synthetic scene")
    parser.add_argument("--clip-frames", type=int, default=1394, help="frames of the shared clip (all: 1394)")
    parser.add_argument("--segment-s", type=float, default=30.0, help="segment length for the clip")
    parser.add_argument("--models", choices=["real", "embedded"], default="real" if YOLO.is_file() else "embedded")
    args = parser.parse_args()
    if args.models == "real":
        models = [f"detector.model={YOLO}", f"reid.weights={OSNET}"]
    else:
        models = ["detector.model=motion", "reid.weights=mobilenetv2_imagenet", "reid.camera_colour=equalize"]
    print(f"models: {args.models}; cpus: {os.cpu_count()}")
    ways = ["single", "1 worker", "2 workers"]
    with tempfile.TemporaryDirectory(prefix="crosscam-bench-scale-") as tmp:
        tmp = Path(tmp)
        make_scene(SceneOptions(cameras=4, people=10, seconds=args.seconds, seed=0), tmp / "scene", progress=False)
        scene = [str(tmp / "scene" / f"cam{i}.mp4") for i in range(1, 5)]
        workloads = {f"4-camera scene, {args.seconds:g} s each, whole videos": (scene, ["scale.segment_s=0"])}
        if CLIP.is_file():
            clip = trim_clip(args.clip_frames, tmp / "hall.mp4")
            workloads[f"shared clip, {args.clip_frames} frames in {args.segment_s:g} s segments"] = (
                [str(clip)], [f"scale.segment_s={args.segment_s}", "scale.overlap_s=4"])
        for name, (specs, extra) in workloads.items():
            # several cameras: the machine's ceiling; one cut camera: the overlaps computed by both segments
            plain = ["2 processes"] if len(specs) > 1 else ["2 workers, overlaps twice"]
            results = {way: run_once(way, specs, tmp / way.replace(" ", "_"), [*models, *extra])
                       for way in ways + plain}
            report(name, results)


if __name__ == "__main__":
    main()
