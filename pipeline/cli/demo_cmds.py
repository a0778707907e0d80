"""``crosscam demo``: a synthetic three-camera scene through the whole pipeline, offline, scored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from samples import SceneOptions


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for scene/ (videos, gt) and run/ (outputs)."),
        seconds: float = typer.Option(SceneOptions.seconds, "--seconds", min=1.0, help="Length of the scene, seconds."),
        seed: int = typer.Option(SceneOptions.seed, "--seed", min=0, help="Scene seed: the same seed gives the same scene."),
        set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help="Override one key of configs/demo.yaml, "
                                                                     "e.g. association.threshold=0.7."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object (mtmc_idf1, per camera mota/idf1, ...)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
        gt_detections: bool = typer.Option(False, "--gt-detections", help="Replay the scene's ground-truth boxes "
                                           "instead of detecting: scores tracking and association alone."),
    ) -> None:
        """Render a 3-camera scene with ground truth (10 people, look-alikes, occlusion, colour casts),
        track it with the offline defaults (motion detector, ImageNet MobileNetV2, DeepSORT), link
        identities across cameras into the FAISS + SQLite store, score per-camera MOTA/IDF1 and MTMC
        IDF1, query the longest track, and print the results and where the report is. No downloads."""
        from pipeline.demo import demo_config, results_table, run_demo
        from pipeline.video.run import check_out_dir

        check_out_dir(out)
        try:
            result = run_demo(out, seconds=seconds, seed=seed, config=demo_config(set_ or []), progress=not quiet,
                              gt_detections=gt_detections)
        except KeyboardInterrupt:
            typer.echo(f"interrupted: the demo stopped; run it again to replace {out / 'run'}", err=True)
            raise typer.Exit(130) from None
        if as_json:
            typer.echo(json.dumps(result.to_json()))
        else:
            typer.echo(results_table(result))
