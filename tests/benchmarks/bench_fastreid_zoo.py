"""Every fast-reid person zoo architecture on this CPU: crosscam's ``auto`` runtime and bf16 vs fast-reid's forward.

Per architecture (BoT/AGW/SBS x R50/R50-ibn/S50/R101-ibn, MGN R50-ibn), at its input size (SBS and
MGN 384x128), batch 32 of real person crops: fast-reid 1.4.0's model (built as in
tests/fastreid_reference.py: random weights, BN statistics from real crops) saved as a zoo file
(key generation a) under its registry name in a temporary weights folder, then loaded by
``Embedder.from_weights(name)`` exactly as a downloaded zoo file would be. Measured in the same
run, rounds interleaved so machine load hits all alike:

- fast-reid fp32: its model's forward on an already preprocessed contiguous batch (model only);
- crosscam fp32 ``runtime="auto"`` (onnxruntime on the CPU, exported and parity-checked at load)
  and bf16 (torch autocast), both end to end from uint8 crops (parity preprocessing included).

For AGW/SBS S50 fast-reid 1.4.0 builds no non-local blocks (its ResNeSt dropped them), so its
forward there is cheaper than the zoo file's network. Prints img/s, the speed-ups (target >= 2x
fast-reid fp32 for the auto runtime), the max difference of unit-normalised features from the
zoo-era reference (fp32 and bf16), and the export parity (unit diff, raw diff, feature scale).

It also measures this CPU's fp32 rate (the better of a 4096 x 4096 matrix product and a large 3x3
convolution: near the peak of its FMA units) and counts each network's multiply-adds (torch's FLOP counter), so it prints what share of that
peak each contender reaches and what 2x fast-reid's forward would need: above 100 % no fp32 direct
convolution can reach it on this machine.

    .venv/bin/python tests/benchmarks/bench_fastreid_zoo.py [--archs sbs_R101-ibn mgn_R50-ibn] [--batches 2] [--batch-size 32]
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

from fastreid_reference import ZOO, Reference, input_size  # noqa: E402
from test_fastreid_conformance import batch_of_crops  # noqa: E402

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from reid import Embedder, zoo  # noqa: E402
from reid.vectors import l2_normalize  # noqa: E402
from reid.export import export_onnx, smooth_random_pixels  # noqa: E402
from reid.preprocess import crops_to_tensor  # noqa: E402


def wall(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fp32_peak_gflops(size: int = 4096, repeats: int = 5) -> float:
    """This CPU's fp32 rate, in GFLOP/s: the better of its best (size x size) matrix product (torch's
    BLAS, MKL) and its best 3x3 convolution of 256 channels in channels-last layout (oneDNN's JIT), over
    ``repeats`` runs each. MKL takes a slow path on AMD CPUs: on a Zen 5 its product ran at 176 GFLOP/s
    where oneDNN's convolution ran at 463."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    product = 2 * size**3 / min(wall(lambda: a @ b) for _ in range(repeats)) / 1e9
    x = torch.randn(32, 256, 32, 16).contiguous(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.nn.functional.conv2d(x, w, padding=1)
        seconds = min(wall(lambda: torch.nn.functional.conv2d(x, w, padding=1)) for _ in range(repeats))
    convolution = 2 * x.numel() * w.shape[0] * 9 / seconds / 1e9
    return max(product, convolution)


def gflops_per_image(model: torch.nn.Module, size: tuple[int, int]) -> float:
    """Floating-point operations (2 per multiply-add) of one (1, 3, H, W) forward of ``model``, in GFLOP."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.rand(1, 3, *size) * 255)
    return counter.get_total_flops() / 1e9


def bench_architecture(arch: str, crops: list[np.ndarray], batches: int, folder: Path) -> dict[str, float]:
    size = input_size(arch)
    pixels = crops_to_tensor(crops, size, mode="parity").contiguous()
    # BN statistics from real crops and from the export check's images: random non-local ResNeSts
    # (not trained ones) blow up on images unlike those they were calibrated on.
    reference = Reference(arch, torch.cat([pixels[:16], torch.from_numpy(smooth_random_pixels(3, size))]))
    name = f"market_{arch}"
    torch.save({"model": reference.state_dict("a")}, folder / f"{name}.pth")
    load_start = time.perf_counter()
    fp32 = Embedder.from_weights(name, device="cpu", batch_size=len(crops), preprocess="parity")
    load_seconds = time.perf_counter() - load_start
    bf16 = Embedder.from_weights(name, device="cpu", batch_size=len(crops), preprocess="parity", precision="bf16")
    assert fp32.runtime == "onnxruntime" and fp32.input_size == size

    def fastreid_forward() -> None:
        with torch.inference_mode():
            reference.model(pixels.clone())  # fast-reid normalises its input in place

    contenders = {"fast-reid fp32": fastreid_forward, "crosscam auto": lambda: fp32.embed(crops), "crosscam bf16": lambda: bf16.embed(crops)}
    for fn in contenders.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {key: [] for key in contenders}
    for _ in range(batches):
        for key, fn in contenders.items():
            times[key].append(wall(fn))
    rate = {key: len(crops) / statistics.median(values) for key, values in times.items()}
    with torch.inference_mode():
        expected = l2_normalize(reference.features(pixels, "zoo").numpy())
    parity = export_parity(name, folder)
    (folder / f"{name}.pth").unlink()
    return {
        **{f"{key} img/s": value for key, value in rate.items()},
        "auto / fast-reid": rate["crosscam auto"] / rate["fast-reid fp32"],
        "bf16 / fast-reid": rate["crosscam bf16"] / rate["fast-reid fp32"],
        "unit diff fp32": float(np.abs(fp32.embed(crops, normalize=True) - expected).max()),
        "unit diff bf16": float(np.abs(bf16.embed(crops, normalize=True) - expected).max()),
        "export unit diff": parity.unit_diff,
        "export raw diff": parity.max_abs_diff,
        "feature scale": parity.feature_scale,
        "load s": load_seconds,
        "fast-reid GFLOP": gflops_per_image(reference.model, size),
        "crosscam GFLOP": gflops_per_image(bf16._features.module, size),
    }


def export_parity(name: str, folder: Path):
    return export_onnx(name, folder / f"{name}.onnx").parity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(ZOO), choices=list(ZOO))
    parser.add_argument("--batches", type=int, default=2, help="timed batches per contender (after 1 warm-up)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch_size}", flush=True)
    peak = fp32_peak_gflops()
    print(f"fp32 peak (best of a matrix product and a convolution): {peak:.0f} GFLOP/s", flush=True)
    crops = batch_of_crops(args.batch_size)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        os.environ[zoo.WEIGHTS_DIR_ENV] = folder
        for arch in args.archs:
            rows[arch] = bench_architecture(arch, crops, args.batches, Path(folder))
            row = rows[arch]
            print(
                f"{arch:14s} {input_size(arch)[0]}x{input_size(arch)[1]}: fast-reid {row['fast-reid fp32 img/s']:5.1f} img/s, "
                f"auto {row['crosscam auto img/s']:5.1f} ({row['auto / fast-reid']:.2f}x), "
                f"bf16 {row['crosscam bf16 img/s']:5.1f} ({row['bf16 / fast-reid']:.2f}x); "
                f"unit diff fp32 {row['unit diff fp32']:.1e}, bf16 {row['unit diff bf16']:.1e}; "
                f"export unit {row['export unit diff']:.1e} (raw {row['export raw diff']:.1e} at {row['feature scale']:.3g})",
                flush=True,
            )
            fastreid_share = row["fast-reid fp32 img/s"] * row["fast-reid GFLOP"] / peak
            row["2x needs"] = 2 * fastreid_share * row["crosscam GFLOP"] / row["fast-reid GFLOP"]
            print(
                f"{'':14s} {row['crosscam GFLOP']:.2f} GFLOP/img (fast-reid's {row['fast-reid GFLOP']:.2f}): fast-reid at "
                f"{fastreid_share:.0%} of the fp32 peak, auto at {row['crosscam auto img/s'] * row['crosscam GFLOP'] / peak:.0%}; "
                f"2x fast-reid needs {row['2x needs']:.0%}",
                flush=True,
            )
    print(f"\nload average: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (other processes share these cores)")
    below = [arch for arch, row in rows.items() if row["auto / fast-reid"] < 2]
    print(f"auto runtime >= 2x fast-reid fp32: {len(rows) - len(below)} of {len(rows)}" + (f" (below: {', '.join(below)})" if below else ""))
    beyond = [arch for arch, row in rows.items() if row["2x needs"] > 1]
    print(f"2x fast-reid needs more than the fp32 peak ({peak:.0f} GFLOP/s) for {len(beyond)} of {len(rows)}" + (f": {', '.join(beyond)}" if beyond else ""))


if __name__ == "__main__":
    main()
