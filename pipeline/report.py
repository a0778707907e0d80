"""``report.html``: one self-contained page per run, one row per identity.

Each row shows the identity's best thumbnail in every camera that saw it (JPEG, inlined as
base64) and a timeline with one lane per camera: a bar for each track, on the run's common
clock, so "seen in the hall, then at the door 40 s later" reads at a glance. Without a cameras
file each lane is in seconds from its own video's start, and the page says so. A bar's tooltip
gives the track's seconds and its frames as 0-based indices of the source video (``tracks.txt``
numbers them from 1).
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import cv2

from pipeline.render import color_for_id
from pipeline.store import StoredTrack, TrackStore

THUMB_HEIGHT = 96  # pixels; thumbnails are shrunk so the page stays small
MAX_ROWS = 2000  # beyond this the identities seen by the most cameras (then lowest id) are shown; the page says how many
LANE_HEIGHT, TIMELINE_WIDTH = 14, 640


def write_report(run_dir: Path, store: TrackStore, common_clock: bool) -> Path:
    """Write ``run_dir/report.html`` (atomically) and return its path."""
    tracks = store.tracks()
    cameras = sorted({t.camera for t in tracks})
    by_identity: dict[int, list[StoredTrack]] = {}
    for t in tracks:
        by_identity.setdefault(t.identity, []).append(t)
    # Over MAX_ROWS: keep the identities seen by the most cameras, ties by lowest id.
    shown = sorted(by_identity, key=lambda i: (-len({t.camera for t in by_identity[i]}), i))[:MAX_ROWS]
    shown.sort()
    t0 = min((t.start_s for t in tracks), default=0.0)
    t1 = max((t.end_s for t in tracks), default=1.0)
    rows = "\n".join(
        _identity_row(ident, by_identity[ident], cameras, t0, max(t1 - t0, 1e-6), run_dir) for ident in shown
    )
    clock = (
        "Times are on the common clock given by the cameras file."
        if common_clock
        else "No cameras file: times are seconds from each video's own start, so bars in different "
        "cameras are not on one clock."
    )
    multi = sum(len({t.camera for t in group}) > 1 for group in by_identity.values())
    limit = f" Showing {len(shown)} of them." if len(shown) < len(by_identity) else ""
    page = _PAGE.format(
        title=html.escape(f"crosscam run {run_dir.name}"),
        summary=html.escape(
            f"{len(by_identity)} identities ({multi} seen by more than one camera) from "
            f"{len(tracks)} tracks in {len(cameras)} cameras ({', '.join(cameras)}); "
            f"time axis {t0:.1f} s to {t1:.1f} s.{limit}"
        ),
        clock=html.escape(clock),
        rows=rows,
    )
    out = run_dir / "report.html"
    tmp = run_dir / "report.partial.html"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


def _identity_row(
    identity: int, tracks: list[StoredTrack], cameras: list[str], t0: float, span: float, run_dir: Path
) -> str:
    seen_in = sorted({t.camera for t in tracks})
    thumbs = []
    for camera in seen_in:
        best = max((t for t in tracks if t.camera == camera), key=lambda t: t.num_detections)
        image = _inline_jpeg(run_dir / best.thumbnail) if best.thumbnail else None
        tag = f'<img src="{image}" alt="">' if image else '<div class="noimg">no image</div>'
        thumbs.append(f'<figure>{tag}<figcaption>{html.escape(camera)} #{best.track_id}</figcaption></figure>')
    b, g, r = color_for_id(identity)
    color = f"rgb({r},{g},{b})"
    lanes = []
    for lane, camera in enumerate(cameras):
        y = lane * LANE_HEIGHT
        lanes.append(
            f'<text x="0" y="{y + LANE_HEIGHT - 3}" class="lane">{html.escape(camera)}</text>'
            f'<line x1="90" x2="{90 + TIMELINE_WIDTH}" y1="{y + LANE_HEIGHT / 2}" y2="{y + LANE_HEIGHT / 2}" class="axis"/>'
        )
        for t in (t for t in tracks if t.camera == camera):
            x = 90 + TIMELINE_WIDTH * (t.start_s - t0) / span
            w = max(2.0, TIMELINE_WIDTH * (t.end_s - t.start_s) / span)
            lanes.append(
                f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{LANE_HEIGHT - 4}" fill="{color}">'
                f"<title>{html.escape(camera)} track {t.track_id}: {t.start_s:.1f}-{t.end_s:.1f} s, "
                f"frames {t.first_frame}-{t.last_frame} (0-based in the source video)</title></rect>"
            )
    height = LANE_HEIGHT * len(cameras)
    svg = f'<svg width="{TIMELINE_WIDTH + 100}" height="{height}">{"".join(lanes)}</svg>'
    first, last = min(t.start_s for t in tracks), max(t.end_s for t in tracks)
    return (
        f'<tr><td class="id" style="border-left:6px solid {color}">{identity}<div class="meta">'
        f"{len(tracks)} tracks, {len(seen_in)} cameras<br>{first:.1f}-{last:.1f} s</div></td>"
        f'<td class="thumbs">{"".join(thumbs)}</td><td>{svg}</td></tr>'
    )


def _inline_jpeg(path: Path) -> str | None:
    image = cv2.imread(str(path))
    if image is None:
        return None
    scale = THUMB_HEIGHT / image.shape[0]
    image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), THUMB_HEIGHT), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii") if ok else None


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; }}
td {{ padding: 6px 10px; border-bottom: 1px solid #ddd; vertical-align: middle; }}
td.id {{ font-size: 1.4em; font-weight: bold; min-width: 7em; }}
.meta {{ font-size: 0.55em; font-weight: normal; color: #666; }}
figure {{ display: inline-block; margin: 0 6px 0 0; text-align: center; }}
figcaption {{ font-size: 0.75em; color: #555; }}
.noimg {{ width: 48px; height: {thumb}px; background: #eee; font-size: 0.7em; }}
svg .lane {{ font-size: 10px; fill: #555; }}
svg .axis {{ stroke: #ddd; }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<p><em>{clock}</em></p>
<table><thead><tr><th>identity</th><th>seen as</th><th>when, per camera (hover a bar: seconds, 0-based frame indices)</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
""".replace("{thumb}", str(THUMB_HEIGHT))
