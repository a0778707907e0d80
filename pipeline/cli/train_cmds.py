"""``crosscam train`` (BoT recipe on a Market-1501-layout folder) and ``crosscam export`` (ONNX)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline.config import DEFAULT_CONFIG
from reid.errors import CrosscamError
from reid.paths import output_folder

METRIC_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP")
REID_CONFIGS = DEFAULT_CONFIG.parent / "reid"  # the repository's configs/reid/, from any working folder


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("train")(train)
    app.command("export")(export)


def train(
    config: Path = typer.Option(REID_CONFIGS / "bot_r50.yaml", "--config", help="Training YAML (see configs/reid/), or a fast-reid training .yml (README: Training)."),
    data: Path = typer.Option(..., "--data", help="Market-1501-layout root with bounding_box_train/, query/, bounding_box_test/."),
    out: Path = typer.Option(..., "--out", help="Run folder: log.csv, last.pth, model.pth, metrics.json, config.yaml."),
    overrides: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override one config key, e.g. --set solver.epochs=10 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.pth (same config and data)."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object (last evaluation, file paths) on stdout."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars (the per-epoch lines in log.csv stay)."),
) -> None:
    """Train a ReID model with fast-reid's BoT recipe and evaluate it on the folder's query/gallery.

    PK batches (P identities x K=4), flip / pad+crop / random erasing, label-smoothed
    cross-entropy + hard-mining triplet, Adam with warm-up and MultiStep decay, AMP on CUDA.
    Progress bars go to stderr; one CSV row per epoch goes to OUT/log.csv.
    """
    from reid.training import Trainer, load_train_config

    output_folder(out, "--out")
    cfg = load_train_config(config, overrides, said=lambda line: typer.echo(line, err=True))  # a fast-reid file: says whence
    if not resume and (out / "last.pth").exists():
        raise CrosscamError(f"--out {out}: already holds a training (last.pth); pass --resume to continue it or choose a new --out")
    foreign = [] if (out / "last.pth").exists() else [name for name in ("model.pth", "metrics.json") if (out / name).exists()]
    if foreign:  # not a training of crosscam's: a file of the user's that training would write over
        raise CrosscamError(f"--out {out}: holds {' and '.join(foreign)} but no training (last.pth); training would "
                            "replace it: choose a new --out")
    try:
        result = Trainer(cfg, data, out, resume=resume, progress=not quiet).run()
    except KeyboardInterrupt:
        if (out / "last.pth").is_file():
            typer.echo(f"interrupted: {out}/last.pth holds the last finished epoch; continue with "
                       f"crosscam train ... --out {out} --resume", err=True)
        else:
            typer.echo("interrupted before an epoch finished: nothing to resume; run it again without --resume", err=True)
        raise typer.Exit(130) from None
    if json_output:
        typer.echo(json.dumps(result))
        return
    trained = f"{cfg.model.onnx} (fine-tuned)" if cfg.model.backbone == "onnx" else cfg.model.backbone
    typer.echo(f"trained {trained} for {cfg.solver.epochs} epoch{'s' if cfg.solver.epochs != 1 else ''} on {data}")
    for key in METRIC_KEYS:
        if key in result:
            typer.echo(f"{key:>8}: {100 * result[key]:6.2f}%")
    typer.echo(f"weights: {result['model']}  (export: crosscam export --reid {result['model']} --out model.onnx)")
    typer.echo(f"log: {result['log']}")


def export(
    reid: str = typer.Option(..., "--reid", help="Weights to export: a crosscam-trained .pth, a fast-reid or torchreid OSNet checkpoint, or a registry name."),
    out: Path = typer.Option(..., "--out", help="Output .onnx file; its model card goes beside it (.yaml)."),
    export_format: str = typer.Option("onnx", "--format", help="Export format (only onnx)."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow full unpickling (only for files you trust)."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Export a ReID model to ONNX: dynamic batch, RGB 0..255 input, normalisation inside the graph.

    Checks torch/onnxruntime parity (unit-normalised features within 1e-4) before anything is written.
    The result works everywhere as --reid model.onnx.
    """
    from reid.export import export_onnx

    if export_format.lower() != "onnx":
        raise CrosscamError(f"--format {export_format}: unknown; only onnx is supported")
    result = export_onnx(reid, out, trust=trust_checkpoint)
    if json_output:
        typer.echo(json.dumps(result.summary()))
        return
    height, width = result.input_size
    typer.echo(f"exported {reid} -> {result.onnx_path} (input N x 3 x {height} x {width} RGB 0..255, output N x {result.dim})")
    parity = result.parity
    typer.echo(
        f"parity torch vs onnxruntime: unit-feature diff {parity.unit_diff:.2e} (tolerance 1e-4); "
        f"raw max abs diff {parity.max_abs_diff:.2e} at feature scale {parity.feature_scale:.3g}"
    )
    typer.echo(f"model card: {result.card_path}")
