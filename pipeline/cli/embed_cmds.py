"""``crosscam embed`` and ``crosscam weights``: appearance features for image files, and the weights registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from pipeline.cli import REID_HELP, RUNTIME_HELP
from reid import zoo
from reid.errors import CrosscamError
from reid.image_files import read_image_file
from reid.paths import output_file, written_atomically

weights_app = typer.Typer(help="Known ReID weights: list them, download them.", no_args_is_help=True)


def read_images_bgr(paths: list[Path]) -> list[np.ndarray]:
    """Decode image files to (H, W, 3) uint8 BGR arrays; a missing or undecodable file, or a folder,
    is a one-line error. A truncated JPEG is kept, with a warning on stderr (see :mod:`reid.image_files`)."""
    images = []
    for path in paths:
        if path.is_dir():
            raise CrosscamError(f"{path}: a folder, not an image; pass its image files, e.g. {path / '*.jpg'}")
        if not path.is_file():
            raise CrosscamError(f"{path}: image not found; check the path")
        image, cut = read_image_file(path)
        if image is None:
            raise CrosscamError(f"{path}: not a readable image (corrupt or unsupported format); pass JPEG/PNG files")
        if cut:
            typer.echo(
                f"warning: {path}: does not end with a JPEG end-of-image marker, so it may be cut off; "
                "embedded anyway, as decoded (the missing part of a cut-off image is filled in)",
                err=True,
            )
        images.append(image)
    return images


def save_npy_atomically(array: np.ndarray, out: Path) -> None:
    """Write ``array`` to ``out`` via a temporary file in the same folder, so ``out`` is never half-written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with written_atomically(out) as handle:
        np.save(handle, array)


def _entry_row(entry: zoo.WeightsEntry) -> dict:
    path = entry.local_path()
    return {
        "name": entry.name,
        "architecture": entry.architecture,
        "format": entry.format,
        "dataset": entry.dataset,
        "loadable": entry.loadable,
        "on_disk": path.is_file(),
        "path": str(path),
        "url": entry.url,
        "sha256": entry.sha256,
        "preprocessing": entry.preprocessing,
        "published": {key: round(value / 100, 4) for key, value in entry.published.items()},  # fractions, as benchmark --json's
        "note": entry.note,
    }


def _entries_table(rows: list[dict]) -> str:
    width = max(len(row["name"]) for row in rows)
    data = max([len("dataset"), *(len(str(row["dataset"])) for row in rows)])  # whole names: "ImageNet-1k"
    arch = max([len("architecture"), *(len(row["architecture"]) for row in rows)])
    lines = [f"{'name':{width}}  {'architecture':{arch}} {'dataset':{data}} loadable on_disk  rank1   mAP"]
    for row in rows:
        published = row["published"]
        scores = f"{100 * published['rank1']:5.1f} {100 * published['mAP']:5.1f}" if published else "    -     -"
        lines.append(
            f"{row['name']:{width}}  {row['architecture']:{arch}} {str(row['dataset']):{data}} "
            f"{'yes' if row['loadable'] else 'no':8} {'yes' if row['on_disk'] else 'no':8} {scores}"
        )
    return "\n".join(lines)


@weights_app.command("list")
def list_weights(as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object instead of a table: weights_dir, weights (name, architecture, "
                              "format, dataset, loadable, on_disk, path, url, sha256, preprocessing, published: rank1 / "
                              "mAP / mINP as fractions, {} when none, note).")) -> None:
    """List the known weights names, whether crosscam can load them and whether they are on disk."""
    rows = [_entry_row(entry) for entry in zoo.load_registry().values()]
    if as_json:
        typer.echo(json.dumps({"weights_dir": str(zoo.weights_dir()), "weights": rows}))
    else:
        typer.echo(_entries_table(rows))
        typer.echo(f"downloads go to {zoo.weights_dir()} (set {zoo.WEIGHTS_DIR_ENV} to change)")


@weights_app.command("download")
def download_weights(
    name: str = typer.Argument(..., help="A name from `crosscam weights list`."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the path: name, "
                                 "path, loadable, downloaded (false: it was on disk already)."),
    force: bool = typer.Option(False, "--force", help="Download it again though a file is on disk (a corrupt "
                               "or truncated one); the old file stays until the new one is complete."),
) -> None:
    """Download a registry entry into the weights folder (progress on stderr); print where it is."""
    entry = zoo.get_entry(name)
    on_disk = entry.local_path().is_file()
    path = zoo.download_entry(entry, force=force)
    if on_disk and not force:
        typer.echo(f"{path}: already on disk, not downloaded" + ("; --force downloads it again" if entry.url else ""), err=True)
    if as_json:
        typer.echo(json.dumps({"name": name, "path": str(Path(path).resolve()), "loadable": entry.loadable,
                               "downloaded": force or not on_disk}))
    else:
        typer.echo(str(path))


def embed(
    images: list[Path] = typer.Argument(
        ..., help="Image files (JPEG/PNG person crops), not folders: pass FOLDER/*.jpg; one feature row each."
    ),
    reid_weights: str = typer.Option(..., "--reid", help=REID_HELP),
    out: Path = typer.Option(..., "--out", help="Output .npy: (N, D) float32 in the order of IMAGE arguments."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Crops per forward pass."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (torch models)."),
    runtime: str = typer.Option("auto", "--runtime", help=RUNTIME_HELP),
    normalize: bool = typer.Option(False, "--normalize", help="L2-normalise each row (default: raw model output)."),
    flip: bool = typer.Option(False, "--flip", help="Flip test-time augmentation (mean of image and mirror features)."),
    preprocess: str = typer.Option("fast", "--preprocess", help="fast (OpenCV resize) or parity (fast-reid's PIL bicubic)."),
    model_card: Path | None = typer.Option(None, "--model-card", help="YAML model card of an .onnx model."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="Allow full unpickling (trusted files only)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object describing the output."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Embed image files with a ReID model and write their features to a .npy file."""
    from reid import Embedder

    out = output_file(out, "--out", example="features.npy")
    crops = read_images_bgr(images)
    embedder = Embedder.from_weights(
        reid_weights,
        device=device,
        batch_size=batch_size,
        precision=precision,
        flip=flip,
        preprocess=preprocess,
        trust_checkpoint=trust_checkpoint,
        model_card=model_card,
        runtime=runtime,
    )
    try:
        features = embedder.embed(crops, bgr=True, normalize=normalize, progress=not quiet)
    except KeyboardInterrupt:
        typer.echo(f"interrupted while embedding: nothing written to {out}", err=True)
        raise typer.Exit(130) from None
    save_npy_atomically(features, out)
    summary = {"out": str(Path(out).resolve()), "shape": list(features.shape), "weights": embedder.name, "fingerprint": embedder.fingerprint}
    typer.echo(json.dumps(summary) if as_json else f"wrote {out}: {features.shape[0]} x {features.shape[1]} float32")


def register(app: typer.Typer) -> None:
    """Add ``embed`` and the ``weights`` group to ``app``."""
    app.command("embed")(embed)
    app.add_typer(weights_app, name="weights")
