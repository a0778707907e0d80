"""``crosscam query``: which identity is this person, and in which cameras was it seen when?"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from pipeline.config import load_pipeline_config
from pipeline.text import clock_text, numbered
from reid.errors import CrosscamError

if TYPE_CHECKING:
    from pipeline.identity.query import QueryResult


def _parse_track(text: str) -> tuple[str, int]:
    camera, sep, number = text.rpartition(":")
    if not sep or not camera or not number.strip().lstrip("-").isdigit():
        raise CrosscamError(f"--track {text!r}: expected CAMERA:TRACK_ID, e.g. --track hall:3")
    return camera, int(number)


def _print_table(result: QueryResult) -> None:
    if result.best is None:
        typer.echo(f"{result.query}: no identity reaches the score threshold")
        return
    clock = "from each video's start (no cameras file)" if not result.common_clock else (
        "the cameras file's start times" if result.clock_origin else "common clock")
    typer.echo(f"{result.query}  (times: {clock}; frames: 0-based indices in the source video)")
    appearances = [a for match in result.matches for a in match.appearances]
    # aligned columns, each as wide as its longest entry
    camera_width = max((len(a.camera) for a in appearances), default=0)
    frames_width = max((len(f"{a.start_frame}-{a.end_frame}") for a in appearances), default=0)
    tracks_width = max((len(numbered("track", a.track_ids)) for a in appearances), default=0)
    for match in result.matches:
        typer.echo(f"identity {match.identity}  score {match.score:.3f}")
        for a in match.appearances:
            frames = f"{a.start_frame}-{a.end_frame}"
            typer.echo(
                f"  {a.camera:{camera_width}s}  {clock_text(a.start_s, result.clock_origin)} - {clock_text(a.end_s, result.clock_origin)}"
                f"  frames {frames:{frames_width}s}  {numbered('track', a.track_ids):{tracks_width}s}  score {a.score:.3f}"
                f"  {_shown_path(a.thumbnail) if a.thumbnail else ''}".rstrip()
            )


def _shown_path(path: str) -> str:
    """``path`` relative to the working folder where it lies under it (shorter lines), else as it is."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def register(app: typer.Typer) -> None:
    """Add ``query`` to ``app``."""

    @app.command("query")
    def query(
        run_dir: Path = typer.Argument(..., help="Run directory written by `crosscam track --out RUN_DIR`."),
        image: Optional[Path] = typer.Option(None, "--image", help="A person crop, or a frame with --box."),
        box: Optional[str] = typer.Option(None, "--box", help="x1,y1,x2,y2 pixels of the person in --image."),
        camera: Optional[str] = typer.Option(None, "--camera", help="The run's camera --image comes from: "
                                             "its colour normalisation (reid.camera_colour) is applied to the crop."),
        track: Optional[str] = typer.Option(None, "--track", help="A stored track, CAMERA:TRACK_ID."),
        identity: Optional[int] = typer.Option(None, "--identity", help="A global identity id."),
        top_k: int = typer.Option(5, "--top-k", min=1, help="Identities to return, best first."),
        min_score: float = typer.Option(-1.0, "--min-score", min=-1.0, max=1.0,
                                        help="Drop appearances (and identities) below this cosine similarity; an --identity "
                                        "query lists all of its own."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML config (store settings; default configs/base.yaml)."),
        set_: Optional[List[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                                 help="Override one config key, e.g. store.bf16_scan=false (repeatable)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object: identity, appearances, matches."),
    ) -> None:
        """Find a person in a run: by image, by CAMERA:TRACK_ID or by identity. Prints the identity
        and its appearances per camera (start/end time, start/end frame as 0-based indices of the
        source video, track ids, score, thumbnail)."""
        from pipeline.identity.query import colour_normalised_cameras, parse_box, query_identity, query_image, query_track

        given = [name for name, value in (("--image", image), ("--track", track), ("--identity", identity))
                 if value is not None]
        if len(given) != 1:
            raise CrosscamError("query: give exactly one of --image PATH, --track CAMERA:ID or --identity ID")
        if box is not None and image is None:
            raise CrosscamError("--box: only meaningful with --image; pass the frame with --image")
        if camera is not None and image is None:
            raise CrosscamError("--camera: only meaningful with --image; name the camera the image comes from")
        cfg = load_pipeline_config(config, set_ or [])
        if image is not None:
            result = query_image(run_dir, image, parse_box(box) if box else None, top_k, min_score, cfg, camera)
            normalised = colour_normalised_cameras(run_dir) if camera is None else []
            if normalised:
                typer.echo(f"note: this run equalised the colours of {', '.join(normalised)} before embedding "
                           "(reid.camera_colour); if --image comes from one of them, pass --camera NAME", err=True)
        elif track is not None:
            camera, track_id = _parse_track(track)
            result = query_track(run_dir, camera, track_id, top_k, min_score, cfg)
        else:
            result = query_identity(run_dir, identity, top_k, min_score, cfg)
        if as_json:
            typer.echo(json.dumps(result.to_json()))
        else:
            _print_table(result)
