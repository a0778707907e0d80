"""``crosscam samples make``: render a synthetic multi-camera scene with ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipeline.text import plural
from samples import SceneOptions, make_scene

_DEFAULTS = SceneOptions()


def register(app: typer.Typer) -> None:
    """Add the ``samples`` group to ``app``."""
    samples = typer.Typer(help="Synthetic multi-camera scenes with ground truth.", no_args_is_help=True)

    @samples.command("make")
    def make(
        out: Path = typer.Option(..., "--out", help="Folder to write camX.mp4, gt/camX.txt and scene.json into."),
        cameras: int = typer.Option(_DEFAULTS.cameras, help="Number of cameras along the hall."),
        people: int = typer.Option(_DEFAULTS.people, help="Number of pedestrians."),
        seconds: float = typer.Option(_DEFAULTS.seconds, help="Duration of every video, seconds."),
        seed: int = typer.Option(_DEFAULTS.seed, min=0, help="Random seed: the same seed gives the same scene."),
        fps: float = typer.Option(_DEFAULTS.fps, help="Frames per second."),
        width: int = typer.Option(_DEFAULTS.width, help="Frame width, pixels."),
        height: int = typer.Option(_DEFAULTS.height, help="Frame height, pixels."),
        overlap: float = typer.Option(_DEFAULTS.overlap, help="Share (0-1) of adjacent camera pairs whose views overlap."),
        overlap_m: float = typer.Option(_DEFAULTS.overlap_m, help="Metres of hall two overlapping cameras share."),
        gap_m: float = typer.Option(_DEFAULTS.gap_m, help="Metres of unseen hall between non-overlapping cameras."),
        lookalikes: int | None = typer.Option(
            None, help=f"Pairs of people dressed alike, differing in pattern, height or bag [default: {_DEFAULTS.lookalikes}, "
            "fewer when there are not enough people]."
        ),
        occlusion: float = typer.Option(_DEFAULTS.occlusion, help="0-1: static objects in the hall and people walking in pairs."),
        lighting: float = typer.Option(_DEFAULTS.lighting, help="0-1: spread of per-camera colour cast, brightness, contrast."),
        noise: float = typer.Option(_DEFAULTS.noise, help="Sensor noise, grey levels (each camera 0.6-1.4x)."),
        blur: float = typer.Option(_DEFAULTS.blur, help="Largest lens blur, Gaussian sigma in pixels."),
        pauses: float = typer.Option(_DEFAULTS.pauses, help="Probability that a walker stops for 1-4 s."),
        min_visibility: float = typer.Option(_DEFAULTS.min_visibility, help="Less visible than this: a don't-care gt row."),
        min_height: int = typer.Option(_DEFAULTS.min_height, help="Boxes shorter than this (pixels): don't-care gt rows."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text: out, cameras, "
                                     "num_frames, fps, people, gt_rows, overlapping_pairs, elapsed_s."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Render M synchronised camera videos of N people walking through one hall, with ground truth.

        Writes OUT/camX.mp4, OUT/gt/camX.txt (MOTChallenge frame,id,x,y,w,h,flag,class,visibility with
        GLOBAL person ids) and OUT/scene.json (cameras, layout, people). Deterministic per --seed.
        """
        if lookalikes is None:
            lookalikes = min(_DEFAULTS.lookalikes, people // 2)
        options = SceneOptions(
            cameras=cameras, people=people, seconds=seconds, seed=seed, fps=fps, width=width, height=height,
            overlap=overlap, overlap_m=overlap_m, gap_m=gap_m, lookalikes=lookalikes, occlusion=occlusion,
            lighting=lighting, noise=noise, blur=blur, pauses=pauses, min_visibility=min_visibility,
            min_height=min_height,
        )
        try:
            summary = make_scene(options, out, progress=not quiet)
        except KeyboardInterrupt:
            typer.echo(f"interrupted: {out} is as it was (an earlier scene there stays whole); the same command makes "
                       "the scene again", err=True)
            raise typer.Exit(130) from None
        if as_json:
            typer.echo(json.dumps(summary))
        else:
            rows = ", ".join(f"{c}: {n}" for c, n in summary["gt_rows"].items())
            typer.echo(f"wrote {plural(len(summary['cameras']), 'camera')} x {plural(summary['num_frames'], 'frame')} to {out} "
                       f"in {summary['elapsed_s']} s (gt rows {rows})")

    app.add_typer(samples, name="samples")
