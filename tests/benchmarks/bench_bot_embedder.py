"""BoT R50 embedding throughput on this machine: crosscam's ``reid.Embedder`` vs fast-reid's forward.

Both run the same weights (fast-reid 1.4.0's BoT R50, built and calibrated as in
tests/test_fastreid_conformance.py, saved in fast-reid's own checkpoint layout and loaded by
crosscam through ``Embedder.from_weights``) on the same real person crops, batch 32 at 256x128,
measured in the same run with the rounds interleaved so machine load hits both alike. On a
shared machine wall times swing with other processes; CPU seconds of this process are printed too.

- fast-reid: its model's forward on an already preprocessed contiguous batch (model only);
- crosscam ``Embedder.embed(crops)`` end to end (parity preprocessing from uint8 crops included):
  fp32 with the default runtime on a CPU (onnxruntime, exported at load), fp32 with
  ``runtime="torch"`` (BNs folded, channels_last), and bf16 (torch autocast, BNs not folded).

Prints img/s, the speed ratio, the max abs feature difference (fp32, target <= 1e-4), fast-reid's
own fp32 error against a float64 forward (the scale of fp32 rounding for these weights), and the
cosine similarity of bf16 to fp32 features (target >= 0.999) and how often both precisions agree
on each crop's nearest neighbour.

Without ``--weights`` the weights are random (BN-calibrated): such a network sees all people
alike, so its BNNeck divides small differences by small standard deviations, which magnifies
rounding far more than trained weights do. ``--weights FILE`` runs a trained BoT R50 instead (a
fast-reid model-zoo file, or ``model.pth`` from ``crosscam train --config configs/reid/bot_r50.yaml``),
loaded into fast-reid's own model (strictly, under fast-reid 1.4.0's key names) and into crosscam.

    .venv/bin/python tests/benchmarks/bench_bot_embedder.py [--weights FILE] [--batches 3] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from test_fastreid_conformance import batch_of_crops, build_fastreid_bot_r50, fastreid_bot_r50, person_crops  # noqa: E402

from reid import Embedder  # noqa: E402
from reid.checkpoint import (  # noqa: E402
    detect_generation,
    extract_state_dict,
    load_bot_checkpoint,
    read_checkpoint,
    to_crosscam_names,
    to_fastreid_name,
)
from reid.preprocess import crops_to_tensor  # noqa: E402


def fastreid_model_from_file(path: Path) -> torch.nn.Module:
    """fast-reid 1.4.0's BoT R50 holding a trained file's weights (eval mode).

    Keys are renamed to fast-reid 1.4.0's generation (c) and loaded strictly. Zoo files (generation
    a) were trained with the torchvision stem, so fast-reid's max-pool is set back to that stem.
    """
    state = dict(extract_state_dict(read_checkpoint(path), path))
    generation = detect_generation(state, path)
    state = {k: v for k, v in state.items() if k not in ("pixel_mean", "pixel_std")}
    state = {to_fastreid_name(k, "c"): v.float() for k, v in to_crosscam_names(state, generation).items()}
    model = fastreid_bot_r50(num_classes=state["heads.weight"].shape[0] if "heads.weight" in state else 1)
    if "heads.weight" not in state:
        state["heads.weight"] = model.state_dict()["heads.weight"]  # unused at inference
    model.load_state_dict(state, strict=True)
    if generation == "a":
        model.backbone.maxpool = torch.nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    return model.eval()


def seconds(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3, help="timed batches per contender (after 1 warm-up)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--weights", type=Path, help="a trained BoT R50 file (default: random, BN-calibrated weights)")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch_size} at 256x128", flush=True)
    print(f"weights: {args.weights or 'random, BN-calibrated (no trained file given)'}", flush=True)

    crops = batch_of_crops(args.batch_size)
    pixels = crops_to_tensor(crops, size=(256, 128), mode="parity").contiguous()
    if args.weights:
        fastreid_model = fastreid_model_from_file(args.weights)
    else:
        fastreid_model = build_fastreid_bot_r50(crops_to_tensor(person_crops(first=15), mode="parity"))
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.weights or Path(folder) / "bot_r50_fastreid140.pth"
        if not args.weights:
            torch.save({"model": fastreid_model.state_dict()}, checkpoint)
        embedders = {
            name: Embedder.from_weights(
                str(checkpoint), device="cpu", batch_size=args.batch_size, precision=precision, preprocess="parity", runtime=runtime
            )
            for name, precision, runtime in (
                ("crosscam fp32", "fp32", "auto"),
                ("crosscam fp32 torch", "fp32", "torch"),
                ("crosscam bf16", "bf16", "auto"),
            )
        }
        float64_model = load_bot_checkpoint(checkpoint).double()
        hooked_model = load_bot_checkpoint(checkpoint).to(memory_format=torch.channels_last)

    def fastreid_forward() -> torch.Tensor:
        with torch.inference_mode():
            return fastreid_model(pixels.clone())  # fast-reid normalises its input in place

    contenders = {"fast-reid fp32": fastreid_forward}
    contenders.update({name: (lambda embedder=embedder: embedder.embed(crops)) for name, embedder in embedders.items()})
    outputs = {name: fn() for name, fn in contenders.items()}  # warm-up, and the features compared
    times: dict[str, list[float]] = {name: [] for name in contenders}
    cpu_times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_index in range(args.batches):
        for name, fn in contenders.items():
            wall, cpu = seconds(fn)
            times[name].append(wall)
            cpu_times[name].append(cpu)
        print(f"round {round_index + 1}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()), flush=True)

    rate = {name: args.batch_size / statistics.median(t) for name, t in times.items()}
    cpu_rate = {name: args.batch_size / statistics.median(t) for name, t in cpu_times.items()}
    reference = outputs["fast-reid fp32"].numpy()
    fp32, bf16 = outputs["crosscam fp32"], outputs["crosscam bf16"]
    with torch.inference_mode():
        exact = float64_model(pixels[:8].double()).numpy()
    cosine = row_cosine(fp32, bf16)
    pooled = {precision: pooled_features(hooked_model, pixels, precision) for precision in ("fp32", "bf16")}
    pooled_cosine = row_cosine(pooled["fp32"], pooled["bf16"])
    neck = hooked_model.neck
    mean_over_std = (neck.running_mean.abs() / neck.running_var.sqrt()).median().item()

    print()
    print(f"load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (other processes share these cores)")
    for name in contenders:
        print(
            f"{name:20s} {rate[name]:6.2f} img/s wall, {cpu_rate[name]:6.2f} img per CPU-second"
            f"  (medians of {args.batches} batches)"
        )
    for name in embedders:
        print(
            f"speed-up {name} / fast-reid fp32: {rate[name] / rate['fast-reid fp32']:.2f}x wall, "
            f"{cpu_rate[name] / cpu_rate['fast-reid fp32']:.2f}x CPU time  (target >= 1.5x in fp32)"
        )
    print(f"feature scale: mean |x| {np.abs(reference).mean():.3f}, max |x| {np.abs(reference).max():.3f}")
    print(f"max |crosscam fp32 - fast-reid fp32|: {np.abs(fp32 - reference).max():.2e}  (target <= 1e-4)")
    print(f"max |fast-reid fp32 - float64| (first 8): {np.abs(reference[:8] - exact).max():.2e}  (fp32 rounding scale)")
    print(f"max |crosscam fp32 - float64| (first 8): {np.abs(fp32[:8] - exact).max():.2e}")
    torch_fp32 = outputs["crosscam fp32 torch"]
    print(f"max |crosscam fp32 torch - fast-reid fp32|: {np.abs(torch_fp32 - reference).max():.2e}")
    print(f"max |crosscam fp32 torch - float64| (first 8): {np.abs(torch_fp32[:8] - exact).max():.2e}")
    print(f"bf16 vs fp32 cosine: min {cosine.min():.5f}, mean {cosine.mean():.5f}  (target >= 0.999)")
    print(f"bf16 vs fp32 nearest-neighbour agreement: {nearest_neighbour_agreement(fp32, bf16):.0%} of crops")
    print(f"bf16 vs fp32 cosine before the BNNeck (pooled): min {pooled_cosine.min():.5f}, mean {pooled_cosine.mean():.5f}")
    print(f"BNNeck |running_mean| / sqrt(running_var), median over channels: {mean_over_std:.1f} (its error magnification)")


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def pooled_features(model: torch.nn.Module, pixels: torch.Tensor, precision: str) -> np.ndarray:
    """The BNNeck's input (pooled backbone features) of one forward, at ``precision``."""
    captured = []
    hook = model.neck.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast:
        model(pixels.contiguous(memory_format=torch.channels_last))
    hook.remove()
    return captured[0].float().numpy()


def nearest_neighbour_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows whose cosine nearest neighbour (excluding itself) is the same under ``a`` and ``b``."""

    def nearest(features: np.ndarray) -> np.ndarray:
        unit = features / np.linalg.norm(features, axis=1, keepdims=True)
        similarity = unit @ unit.T
        np.fill_diagonal(similarity, -np.inf)
        return similarity.argmax(axis=1)

    return float((nearest(a) == nearest(b)).mean())


if __name__ == "__main__":
    main()
