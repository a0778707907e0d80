"""Benchmark of ``crosscam track`` on the real hall clip, against BoxMOT in the same run.

    .venv/bin/python tests/benchmarks/bench_pipeline.py [--frames 200] [--boxmot /tmp/boxmot-venv/bin/boxmot]

Prints, for the first ``--frames`` frames of ``../shared/videos/one-by-one-person-detection.mp4``:
1. frames/s of the whole chain with (a) YOLOv8n INT8 ONNX + OSNet-x0.25 ONNX and (b) YOLOv8n +
   BoT R50 (``--bot-weights FILE``, e.g. a ``crosscam train`` model.pth, or else random weights in
   fast-reid's layout: the arithmetic, and so the time, is the same), loaded like any checkpoint
   (the default runtime: onnxruntime on the CPU), with where the time goes;
2. the chain's overhead, on a sequential run (``detector.prefetch=0``, so stage times add up):
   time outside the stages' own work (generator plumbing), and time outside the two models
   (decode + track + write + plumbing), as shares of the total;
3. batched vs per-frame detection and embedding (ratio of per-frame time to batched time; the
   YOLOv8n export has a fixed batch of 1, so ultralytics runs a batch frame by frame and the
   detection ratio measures only the per-call overhead);
4. BoxMOT (``boxmot track --tracker deepocsort``, same clip, same two ONNX models) timed here
   (its onnxruntime threads spin-wait, onnxruntime's default; crosscam's sleep unless
   ``CROSSCAM_ORT_SPIN=1``, so (a) is also run that way),
   with the onnxruntime version of each side (BoxMOT's ``onnx`` extra pins its own) and the
   detector input both use: the export's fixed 1x3x640x640, whatever ``--imgsz`` says.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import onnxruntime
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pipeline.config import load_pipeline_config  # noqa: E402
from pipeline.video.detectors import _load_yolo, build_detector, import_ultralytics_offline  # noqa: E402
from pipeline.video.embedding import embed_detections  # noqa: E402
from pipeline.video.run import track_camera  # noqa: E402
from pipeline.video.sources import open_source  # noqa: E402
from reid import Embedder  # noqa: E402
from reid.models.bot import build_bot_model  # noqa: E402
from reid.onnx_backend import SPIN_ENV  # noqa: E402
from reid.training.checkpoint_io import to_fastreid_state_dict  # noqa: E402

SHARED = REPO.parent / "shared"
CLIP = SHARED / "videos" / "one-by-one-person-detection.mp4"
YOLO = SHARED / "weights" / "yolov8n_int8.onnx"
OSNET = SHARED / "weights" / "osnet_x0_25_msmt17.onnx"
STAGES = ("decode", "detect", "embed", "track", "write")


def trim_clip(frames: int, out: Path) -> Path:
    """The first ``frames`` frames as an mp4v file: the one input both trackers read."""
    cap = cv2.VideoCapture(str(CLIP))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), cap.get(cv2.CAP_PROP_FPS), size)
    for _ in range(frames):
        ok, image = cap.read()
        if not ok:
            break
        writer.write(image)
    writer.release()
    cap.release()
    return out


def bot_r50(weights: Path | None, folder: Path) -> Embedder:
    """``weights``, or a random BoT R50 saved in fast-reid's layout, through ``Embedder.from_weights``."""
    if weights is None:
        weights = folder / "bot_r50_random.pth"
        model = build_bot_model()
        torch.save({"model": to_fastreid_state_dict(model, model.cfg.stem)}, weights)
    return Embedder.from_weights(str(weights), device="cpu")


def run_chain(clip: Path, embedder: Embedder, out: Path, prefetch: int | None = None) -> dict:
    """One ``track_camera`` run; ``prefetch`` None keeps the config's default (detection runs ahead)."""
    overrides = [f"detector.model={YOLO}", "detector.device=cpu"]
    cfg = load_pipeline_config(None, overrides + ([] if prefetch is None else [f"detector.prefetch={prefetch}"]))
    with open_source(str(clip), "hall", cfg.source) as source:
        detector = build_detector(cfg.detector)
        cpu_start = time.process_time()
        run = track_camera(source, detector, embedder, out, cfg, progress=False)
        cpu = time.process_time() - cpu_start
    stages = run.stage_seconds
    total = run.elapsed_s
    return {
        "fps": run.frames_read / total,
        "total": total,
        "stages": stages,
        "plumbing": total - sum(stages.values()),
        "outside_models": total - stages.get("detect", 0.0) - stages.get("embed", 0.0),
        "tracks": run.num_tracks,
        "overlapped": cfg.detector.prefetch > 0,
        "cpu_per_frame": cpu / run.frames_read,
    }


def untrained_dynamic_batch_yolo(folder: Path) -> Path:
    """An untrained YOLOv5nu (ultralytics builds it from its yaml, offline) saved as a .pt: a detector
    whose batch is dynamic, to measure what batching frames buys (its boxes are meaningless)."""
    path = folder / "yolov5nu_untrained.pt"
    import_ultralytics_offline().YOLO("yolov5nu.yaml").save(str(path))
    return path


def run_spinning(clip: Path, out: Path) -> dict:
    """(a) with onnxruntime's spin-waiting threads (new sessions for both models), then back to the default."""
    os.environ[SPIN_ENV] = "1"
    try:
        _load_yolo.cache_clear()
        return run_chain(clip, Embedder.from_weights(str(OSNET), device="cpu"), out)
    finally:
        del os.environ[SPIN_ENV]
        _load_yolo.cache_clear()


def batched_vs_single(clip: Path, detectors: dict[str, Path], embedders: dict[str, Embedder], start: int = 64,
                      count: int = 32, batch: int = 8) -> dict:
    """Seconds for per-frame calls vs ``batch``-frame calls: each detector, then each embedder (on the
    first detector's boxes)."""
    cfg = load_pipeline_config(None, ["detector.device=cpu"])
    with open_source(str(clip), "hall", cfg.source) as source:
        frames = [f for f in source if start <= f.index < start + count]
    out: dict = {"frames": len(frames)}
    boxes = None
    for name, model in detectors.items():
        detector = build_detector(cfg.detector.model_copy(update={"model": str(model)}))
        detector.detect(frames[:batch])  # warm-up
        t0 = time.perf_counter()
        single = [detector.detect([f])[0] for f in frames]
        t1 = time.perf_counter()
        for i in range(0, len(frames), batch):
            detector.detect(frames[i : i + batch])
        out[name] = (t1 - t0, time.perf_counter() - t1)
        boxes = single if boxes is None else boxes
    out["crops"] = sum(len(d) for d in boxes)
    pairs = [(f.image, d) for f, d in zip(frames, boxes)]
    for name, embedder in embedders.items():
        t2 = time.perf_counter()
        for pair in pairs:
            embed_detections(embedder, [pair])
        t3 = time.perf_counter()
        for i in range(0, len(pairs), batch):
            embed_detections(embedder, pairs[i : i + batch])
        out[name] = (t3 - t2, time.perf_counter() - t3)
    return out


def onnxruntime_version(python: Path) -> str:
    """The onnxruntime version that interpreter ``python`` imports ("?" when it cannot)."""
    if not python.is_file():
        return "?"
    proc = subprocess.run([str(python), "-c", "import onnxruntime; print(onnxruntime.__version__)"],
                          capture_output=True, text=True)
    return proc.stdout.strip() or "?"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_boxmot(boxmot: Path, clip: Path, project: Path) -> dict | str:
    if not boxmot.is_file():
        return f"not run: {boxmot} not found (install: python3.11 -m venv /tmp/boxmot-venv && pip install boxmot ...)"
    cmd = [str(boxmot), "track", "--detector", str(YOLO), "--reid", str(OSNET), "--tracker", "deepocsort",
           "--source", str(clip), "--save", "--save-txt", "--project", str(project), "--device", "cpu",
           "--classes", "0"]
    start, cpu_start = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "YOLO_OFFLINE": "1"})
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu_start
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        return f"failed (exit {proc.returncode}): {text.strip().splitlines()[-1] if text.strip() else ''}"

    def total_ms(label: str) -> float:
        match = re.search(rf"{label}\s+([\d,\.]+) ms total", text)
        return float(match.group(1).replace(",", "")) / 1000.0 if match else 0.0

    overall, detector, reid = total_ms("Overall"), total_ms("Detector"), total_ms("ReID encoder")
    fps = re.search(r"Overall\s+[\d,\.]+ ms total\s+·\s+[\d,\.]+ ms/frame\s+·\s+([\d\.]+) FPS", text)
    return {"wall": wall, "cpu": cpu, "overall": overall, "detector": detector, "reid": reid,
            "fps": float(fps.group(1)) if fps else float("nan"),
            "outside_models": overall - detector - reid}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--boxmot", type=Path, default=Path("/tmp/boxmot-venv/bin/boxmot"))
    parser.add_argument("--bot-weights", type=Path, help="a trained BoT R50 file for (b) (default: random weights)")
    args = parser.parse_args()
    if not (CLIP.is_file() and YOLO.is_file() and OSNET.is_file()):
        sys.exit(f"needs {CLIP}, {YOLO} and {OSNET}")
    print(f"load average at start: {os.getloadavg()}  cpus: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = trim_clip(args.frames, tmp / "hall.mp4")
        osnet = Embedder.from_weights(str(OSNET), device="cpu")
        bot = bot_r50(args.bot_weights, tmp)
        results = {"(a) YOLOv8n INT8 + OSNet x0.25": run_chain(clip, osnet, tmp / "a"),
                   "(b) YOLOv8n INT8 + BoT R50": run_chain(clip, bot, tmp / "b"),
                   "(a) sequential (detector.prefetch=0)": run_chain(clip, osnet, tmp / "s", prefetch=0),
                   f"(a) {SPIN_ENV}=1 (spin-waiting threads)": run_spinning(clip, tmp / "spin")}
        print(f"\n## crosscam track, {args.frames} frames of {CLIP.name} (768x432), CPU\n")
        print("| models | frames/s | CPU s/frame | " + " | ".join(f"{s} s" for s in STAGES) + " | plumbing | outside models | tracks |")
        print("|---|---|---|" + "---|" * (len(STAGES) + 3))
        for name, r in results.items():
            cells = " | ".join(f"{r['stages'].get(s, 0.0):.2f}" for s in STAGES)
            # With prefetch, decode + detect overlap the other stages: shares of wall time mean nothing there.
            shares = ("overlapped", "overlapped") if r["overlapped"] else (
                f"{100 * r['plumbing'] / r['total']:.1f}%", f"{100 * r['outside_models'] / r['total']:.1f}%")
            print(f"| {name} | {r['fps']:.2f} | {r['cpu_per_frame']:.3f} | {cells} | {shares[0]} | {shares[1]} | {r['tracks']} |")
        print("\n## batched vs per-frame calls (same frames, person visible; ratio = per-frame / batched)\n")
        detectors = {"detect (YOLOv8n INT8)": YOLO, "detect (YOLOv5nu, dynamic batch)": untrained_dynamic_batch_yolo(tmp)}
        b = batched_vs_single(clip, detectors, {"OSNet x0.25": osnet, "BoT R50": bot})
        print(f"{b['frames']} frames, {b['crops']} crops, batches of 8 frames (the YOLOv8n INT8 export's batch is fixed "
              "at 1: ultralytics runs a batch frame by frame, so its ratio is per-call overhead only; the YOLOv5nu, "
              "untrained, torch, shows what batching buys a detector with a dynamic batch)")
        for name in (*detectors, "OSNet x0.25", "BoT R50") if b["crops"] else ():
            single, batched = b[name]
            print(f"- {name}: per-frame {single:.2f} s, batched {batched:.2f} s, ratio {single / batched:.2f}x")
        print("\n## BoxMOT (deepocsort, same clip and ONNX models), timed in this run\n")
        shape = onnxruntime.InferenceSession(str(YOLO), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
        print(f"- both: detector input {shape} (fixed by the export: frames letterboxed to 640x640); onnxruntime "
              f"{onnxruntime_version(Path(sys.executable))} here, {onnxruntime_version(args.boxmot.parent / 'python')} in BoxMOT's venv")
        boxmot = run_boxmot(args.boxmot, clip, tmp / "boxmot")
        if isinstance(boxmot, str):
            print(f"- BoxMOT {boxmot}")
        else:
            ours = results["(a) YOLOv8n INT8 + OSNet x0.25"]
            print(f"- BoxMOT: {boxmot['fps']:.2f} frames/s (its own report; {boxmot['overall']:.1f} s runtime, "
                  f"{boxmot['wall']:.1f} s wall with start-up), detector {boxmot['detector']:.1f} s, ReID {boxmot['reid']:.1f} s, "
                  f"outside the models {100 * boxmot['outside_models'] / max(boxmot['overall'], 1e-9):.1f}%")
            sequential = results["(a) sequential (detector.prefetch=0)"]
            spinning = results[f"(a) {SPIN_ENV}=1 (spin-waiting threads)"]
            print(f"- crosscam (a): {ours['fps']:.2f} frames/s -> {ours['fps'] / boxmot['fps']:.2f}x BoxMOT's rate "
                  f"(sequential: {sequential['fps']:.2f} frames/s -> {sequential['fps'] / boxmot['fps']:.2f}x; "
                  f"spin-waiting: {spinning['fps']:.2f} frames/s -> {spinning['fps'] / boxmot['fps']:.2f}x)")
            # Wall-clock rates swing with other processes' load; CPU seconds per frame swing less.
            boxmot_cpu = boxmot["cpu"] / args.frames
            print(f"- CPU seconds per frame (BoxMOT's include its ~2 s start-up): crosscam (a) "
                  f"{ours['cpu_per_frame']:.3f}, BoxMOT {boxmot_cpu:.3f} -> crosscam uses "
                  f"{ours['cpu_per_frame'] / boxmot_cpu:.2f}x BoxMOT's CPU time")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
