"""``crosscam benchmark`` (embed a Market-1501-layout dataset and evaluate) and
``crosscam evaluate-ranking`` (evaluate a saved distance matrix)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import typer

from pipeline.cli import REID_HELP, RUNTIME_HELP
from reid.config import EmbedderConfig
from reid.data.market import find_market_root
from reid.errors import CrosscamError
from reid.paths import output_folder

JSON_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP", "num_query", "num_gallery", "num_valid_query")
BENCHMARK_JSON_KEYS = JSON_KEYS + (  # the settings scored, the verification rates and the speeds the text prints
    "preprocess", "pixels", "runtime", "precision", "flip", "metric", "rerank", "aqe",
    "TAR@FAR=1e-04", "TAR@FAR=1e-03", "TAR@FAR=1e-02", "features_cached", "images_per_second", "eval_seconds",
)
NPZ_KEYS = ("distmat", "q_pids", "g_pids", "q_camids", "g_camids")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("benchmark")(benchmark)
    app.command("evaluate-ranking")(evaluate_ranking_file)


def benchmark(
    root: Path = typer.Argument(..., help="Market-1501-layout dataset root (query/, bounding_box_test/), or its parent."),
    reid: str = typer.Option(EmbedderConfig().weights, "--reid", help=REID_HELP),
    rerank: bool = typer.Option(False, "--rerank", help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)."),
    aqe: bool = typer.Option(False, "--aqe", help="Alpha query expansion (fast-reid: qe_k=5, alpha=3)."),
    flip: bool = typer.Option(False, "--flip", help="Flip test-time augmentation (mean of crop and mirror features)."),
    metric: str = typer.Option("cosine", "--metric", help="Distance: cosine or euclidean."),
    out: Path = typer.Option(None, "--out", help="Report folder [default: runs/benchmark/DATASET]."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Feature cache folder [default: OUT/cache]."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Crops per forward pass."),
    preprocess: str = typer.Option(
        "parity", "--preprocess", help="parity (fast-reid's PIL bicubic test loader, its protocol) or fast (OpenCV, as tracking uses)."
    ),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (torch models)."),
    runtime: str = typer.Option("auto", "--runtime", help=RUNTIME_HELP),
    save_distances: bool = typer.Option(False, "--save-distances", help="Also write OUT/distances.npz for evaluate-ranking."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow full unpickling (trusted files only)."),
    model_card: Path | None = typer.Option(None, "--model-card", help="YAML model card of an .onnx model (its pixels)."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object (the report's metrics) on stdout."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Benchmark a ReID model on a Market-1501-layout dataset with fast-reid's protocol.

    Prints Rank-1/5/10, mAP, mINP, TAR@FAR, embedding speed and evaluation time; writes
    report.json, report.md, roc.png, distance_histogram.png and rank-list pictures to --out.
    Features are cached per model fingerprint, so re-running with --rerank/--aqe/--metric
    does not embed again.
    """
    from reid import BenchmarkSettings, Embedder, run_benchmark

    if metric not in ("cosine", "euclidean"):
        raise CrosscamError(f"--metric {metric}: unknown; use cosine or euclidean")
    find_market_root(root)  # a wrong dataset path is said before any model download or load
    out = output_folder(out if out is not None else Path("runs") / "benchmark" / root.resolve().name, "--out")
    if cache_dir is not None:
        output_folder(cache_dir, "--cache-dir")
    embedder = Embedder.from_weights(
        reid, device=device, batch_size=batch_size, precision=precision, flip=flip, preprocess=preprocess, runtime=runtime,
        trust_checkpoint=trust_checkpoint, model_card=model_card,
    )
    settings = BenchmarkSettings(metric=metric, rerank=rerank, aqe=aqe)
    try:
        result = run_benchmark(root, embedder, out, settings, cache_dir=cache_dir, progress=not quiet, save_distances=save_distances)
    except KeyboardInterrupt:
        typer.echo(f"interrupted before {out}/report.json was written; features are cached only once all are "
                   "embedded, so a new run embeds them again", err=True)
        raise typer.Exit(130) from None
    report = result.report
    if json_output:
        typer.echo(json.dumps({key: report[key] for key in BENCHMARK_JSON_KEYS} | {"report": str(Path(result.files["report.json"]).resolve())}))
        return
    typer.echo(f"{report['model']} on {report['dataset']} ({report['num_query']} query, {report['num_gallery']} gallery)")
    on = {True: "on", False: "off"}
    typer.echo(f"settings: preprocessing {report['preprocess']}, {report['runtime']} {report['precision']}, "
               f"flip {on[report['flip']]}, metric {report['metric']}, rerank {on[report['rerank']]}, "
               f"aqe {on[report['aqe']]}")
    typer.echo(f"pixels: {report['pixels']}")
    _echo_metrics(report)
    for key in ("TAR@FAR=1e-04", "TAR@FAR=1e-03", "TAR@FAR=1e-02"):
        typer.echo(f"{key:>14}: {100 * report[key]:6.2f}%")
    speed = "cached features" if report["features_cached"] else f"{report['images_per_second']:.1f} images/s"
    typer.echo(f"embedding: {speed}; evaluation: {report['eval_seconds']:.2f} s")
    typer.echo(f"report: {result.files['report.md']}")


def evaluate_ranking_file(
    path: Path = typer.Argument(..., help="An .npz with distmat, q_pids, g_pids, q_camids, g_camids."),
    max_rank: int = typer.Option(50, "--max-rank", min=1, help="Length of the CMC curve."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout: rank1, rank5, rank10 "
                                     "(those up to --max-rank), mAP, mINP (fractions), num_query, num_gallery, "
                                     "num_valid_query."),
) -> None:
    """Evaluate a saved (num_query, num_gallery) distance matrix with the Market-1501 protocol."""
    from reid import evaluate_ranking

    arrays = _load_npz(path)
    try:
        result = evaluate_ranking(*(arrays[key] for key in NPZ_KEYS), max_rank=max_rank)
    except CrosscamError as exc:
        raise CrosscamError(f"{path}: {exc}") from None
    num_query, num_gallery = arrays["distmat"].shape
    report = result.summary() | {"num_query": num_query, "num_gallery": num_gallery}
    if json_output:
        typer.echo(json.dumps({key: report[key] for key in JSON_KEYS if key in report}))
        return
    typer.echo(f"{path}: {num_query} query, {num_gallery} gallery, {result.num_valid_query} valid queries")
    _echo_metrics(report)


def _echo_metrics(report: dict) -> None:
    for key, label in (("rank1", "Rank-1"), ("rank5", "Rank-5"), ("rank10", "Rank-10"), ("mAP", "mAP"), ("mINP", "mINP")):
        if key in report:
            typer.echo(f"{label:>14}: {100 * report[key]:6.2f}%")
    if "dataset" in report:
        typer.echo(fastreid_table(Path(report["dataset"]).name, report))


def fastreid_table(dataset: str, report: dict) -> str:
    """The summary as fast-reid prints it after an evaluation (percent, and its ``metric``: the mean
    of mAP and Rank-1), to paste beside fast-reid's own.

    >>> print(fastreid_table("Market1501", {"rank1": 0.9442, "rank5": 0.9822, "rank10": 0.9893, "mAP": 0.8612, "mINP": 0.6058}))
    | Dataset    | Rank-1 | Rank-5 | Rank-10 | mAP   | mINP  | metric |
    |:-----------|:-------|:-------|:--------|:------|:------|:-------|
    | Market1501 | 94.42  | 98.22  | 98.93   | 86.12 | 60.58 | 90.27  |
    """
    values = [f"{100 * report[k]:.2f}" for k in ("rank1", "rank5", "rank10", "mAP", "mINP")]
    values.append(f"{50 * (report['mAP'] + report['rank1']):.2f}")
    heads = ["Dataset", "Rank-1", "Rank-5", "Rank-10", "mAP", "mINP", "metric"]
    cells = [dataset, *values]
    widths = [max(len(h), len(c)) for h, c in zip(heads, cells)]
    rows = ["| " + " | ".join(f"{item:{w}}" for item, w in zip(items, widths)) + " |" for items in (heads, cells)]
    return "\n".join([rows[0], "|" + "|".join(":" + "-" * (w + 1) for w in widths) + "|", rows[1]])


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of ``NPZ_KEYS`` from the .npz archive (a zip file) at ``path``; anything else is a one-line error."""
    if path.is_dir():
        raise CrosscamError(f"{path}: a folder; pass the distances.npz that `crosscam benchmark --save-distances` writes")
    if not path.is_file():
        raise CrosscamError(f"{path}: file not found; pass an .npz saved with numpy.savez")
    if not zipfile.is_zipfile(path):  # a single .npy array, a text file, ...
        raise CrosscamError(
            f"{path}: not an .npz archive; pass the distances.npz that `crosscam benchmark --save-distances` writes"
        )
    try:
        with np.load(path, allow_pickle=False) as stored:
            missing = [key for key in NPZ_KEYS if key not in stored.files]
            if missing:
                raise CrosscamError(f"{path}: missing arrays {', '.join(missing)}; save all of {', '.join(NPZ_KEYS)}")
            return {key: stored[key] for key in NPZ_KEYS}
    except (ValueError, OSError) as exc:
        raise CrosscamError(f"{path}: not a readable .npz file ({exc}); save it with numpy.savez") from None
