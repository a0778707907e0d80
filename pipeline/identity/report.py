"""``report.html``: one self-contained page per run, one row per identity.

Each row shows the identity's best thumbnail in every camera that saw it (JPEG, inlined as
base64) and a timeline with one lane per camera: a bar for each track, on the run's common
clock, so "seen in the hall, then at the door 40 s later" reads at a glance. Without a cameras
file each lane is in seconds from its own video's start, and the page says so. A bar's tooltip
gives the track's times (dates and times where the cameras file gave start times) and its frames as 0-based indices of the source video (``tracks.txt``
numbers them from 1).

Rows come from :func:`identity_overviews`, which ``crosscam serve``'s gallery shows too: people
seen by the most cameras first; identities whose every track is a static box that is short-lived
or tiny (a patch of floor the motion detector took for someone, a fragment) come last, marked.
"""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from pipeline.identity.store import StoredTrack, TrackStore
from pipeline.text import counting_order, clock_text, plural
from pipeline.types import REPORT_FILE, read_run_record
from pipeline.video.render import color_for_id
from pipeline.video.tracks_file import read_tracks_file

THUMB_HEIGHT = 96  # pixels; thumbnails are shrunk so the page stays small
MAX_ROWS = 2000  # beyond this the identities seen by the most cameras (then lowest id) are shown; the page says how many
LANE_HEIGHT, TIMELINE_WIDTH, TICKS_HEIGHT = 16, 640, 16
MAX_LANES = 12  # cameras beyond this: each row draws lanes for the cameras its identity was seen by only
# A track is "not a person" when its box never moves by half its height (static) and it lasts
# under a second (short) or is under this fraction of the frame high (tiny). On the demo scene
# (seeds 0-1) that marks every 1-2 frame floor patch and no walker.
STATIC_TRAVEL = 0.5  # centre travel / mean box height
TINY_HEIGHT = 0.15  # mean box height / frame height
SHORT_SECONDS = 1.0
NOT_A_PERSON = "static box, short-lived or tiny: background or a fragment"


@dataclass(frozen=True)
class IdentityOverview:
    """One identity of the run: its tracks and what the report and the serve gallery show of it.

    Times are on the common clock (seconds from each video's start without a cameras file).
    """

    identity: int
    tracks: list[StoredTrack]  # by camera, then track id
    cameras: list[str]  # sorted
    first_s: float
    last_s: float
    likely_person: bool  # False: every track is a static box, short-lived or tiny (NOT_A_PERSON)

    def best_tracks(self) -> list[StoredTrack]:
        """Per camera (sorted) the track with the most detections: the one its thumbnail shows."""
        return [max((t for t in self.tracks if t.camera == c), key=lambda t: t.num_detections) for c in self.cameras]


def identity_overviews(run_dir: Path, store: TrackStore, tracks: list[StoredTrack] | None = None) -> list[IdentityOverview]:
    """Every identity of the store, ranked: likely people first, by cameras seen (most first),
    then lowest id; identities that look like background or fragments after them, by id.

    ``tracks``: the store's tracks when the caller has read them already (one state of the store).
    Box motion and size come from each camera's ``tracks.txt``; a camera without one counts as people.
    """
    tracks = store.tracks() if tracks is None else tracks
    unlikely = _not_a_person_tracks(Path(run_dir), store, tracks)
    by_identity: dict[int, list[StoredTrack]] = {}
    for t in tracks:
        by_identity.setdefault(t.identity, []).append(t)
    overviews = [
        IdentityOverview(
            ident, group, sorted({t.camera for t in group}, key=counting_order), min(t.start_s for t in group),
            max(t.end_s for t in group), not all((t.camera, t.track_id) in unlikely for t in group),
        )
        for ident, group in by_identity.items()
    ]
    return sorted(overviews, key=lambda o: (not o.likely_person, -len(o.cameras) if o.likely_person else 0, o.identity))


def recorded_stride(run: dict) -> int:
    """The ``source.stride`` a camera's ``run.json`` (as a dict) was tracked with: every n-th
    source frame was kept, and is a row of ``tracks.txt`` and a frame of ``annotated.mp4``."""
    return int(((run.get("config") or {}).get("source") or {}).get("stride") or 1)


def last_tracked_frame(run: dict) -> int | None:
    """The last source frame (0-based) a camera's tracking reached, from its ``run.json`` (frames read
    or given up as undecodable, x stride; ``--max-frames`` or Ctrl-C stop it before the video's end);
    None when unknown."""
    processed = run.get("frames_read")
    if not isinstance(processed, int) or processed < 1:
        return None
    failed = run.get("frames_failed")
    return (processed + (failed if isinstance(failed, int) and failed > 0 else 0) - 1) * recorded_stride(run)


def _not_a_person_tracks(run_dir: Path, store: TrackStore, tracks: list[StoredTrack]) -> set[tuple[str, int]]:
    """(camera, track id) of the tracks whose boxes are static and short-lived or tiny. A track cut
    by the tracked clip's first or last frame is not short: a walker may have just come or been
    cut off."""
    found: set[tuple[str, int]] = set()
    for camera in store.cameras():
        rows = read_tracks_file(run_dir / camera.name / "tracks.txt")
        if not len(rows.frame):
            continue
        order = np.argsort(rows.track_id, kind="stable")
        frame, xyxy = rows.frame[order], rows.xyxy[order].astype(np.float64)
        ids, starts, counts = np.unique(rows.track_id[order], return_index=True, return_counts=True)
        cx, cy, h = (xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2, xyxy[:, 3] - xyxy[:, 1]
        travel = np.hypot(*(np.maximum.reduceat(v, starts) - np.minimum.reduceat(v, starts) for v in (cx, cy)))
        mean_h = np.add.reduceat(h, starts) / counts
        frame_h = camera.frame_size[1] if camera.frame_size else np.inf
        first, last = frame[starts], np.maximum.reduceat(frame, starts)  # 0-based source frames
        run = read_run_record(run_dir / camera.name)
        end = last_tracked_frame(run)
        cut = (first <= 0) | (last >= (end if end is not None else np.inf))
        kept_per_s = (camera.fps or 10.0) / recorded_stride(run)  # rows a second: one per kept frame
        short = (counts < max(2.0, SHORT_SECONDS * kept_per_s)) & ~cut
        unlikely = (travel < STATIC_TRAVEL * mean_h) & (short | (mean_h < TINY_HEIGHT * frame_h))
        found |= {(camera.name, int(i)) for i in ids[unlikely]}
    return found


def run_title(run_dir: Path, cameras: list[str]) -> str:
    """What names a run for people: its folder with the one above it, and every camera of the run."""
    path = Path(run_dir).resolve()
    return f"crosscam: {path.parent.name}/{path.name} ({counted_cameras(cameras)})"


def counted_cameras(cameras: list[str]) -> str:
    """``"1 camera: hall"``, ``"2 cameras: door, hall"``, or ``"no cameras"``."""
    return f"{plural(len(cameras), 'camera')}: {', '.join(cameras)}" if cameras else "no cameras"


def write_report(run_dir: Path, store: TrackStore, common_clock: bool) -> Path:
    """Write ``run_dir/report.html`` (atomically) and return its path."""
    tracks = store.tracks()
    cameras = [c.name for c in store.cameras()]  # every camera of the run, those where nobody was tracked too
    overviews = identity_overviews(run_dir, store, tracks)
    # Over MAX_ROWS: keep the identities seen by the most cameras, ties by lowest id.
    shown = overviews[:MAX_ROWS]
    t0 = min((t.start_s for t in tracks), default=0.0)
    t1 = max((t.end_s for t in tracks), default=1.0)
    origin = store.setting("clock_origin")
    rows = "\n".join(_identity_row(o, cameras, t0, max(t1 - t0, 1e-6), run_dir, origin) for o in shown)
    if not rows:
        rows = '<tr><td colspan="3" class="none">No one was tracked: no identity to show.</td></tr>'
    clock = (
        "Times are on the common clock given by the cameras file" + (f" (0 s = {origin})." if origin else ".")
        if common_clock
        else "No cameras file: times are seconds from each video's own start, so bars in different "
        "cameras are not on one clock." if len(cameras) > 1 else "Times are seconds from the video's start."
    )
    multi = sum(len(o.cameras) > 1 for o in overviews)
    unlikely = sum(not o.likely_person for o in overviews)
    limit = f" Showing {len(shown)} of them." if len(shown) < len(overviews) else ""
    if len(cameras) > MAX_LANES:
        limit += f" Over {MAX_LANES} cameras: each row shows the cameras its identity was seen by."
    marked = (f" {plural(unlikely, 'identity', 'identities')} marked \u201cnot a person?\u201d ({NOT_A_PERSON}) "
              f"{'comes' if unlikely == 1 else 'come'} last." if unlikely else "")
    page = _PAGE.format(
        title=html.escape(run_title(run_dir, cameras)),
        summary=html.escape(
            f"{plural(len(overviews), 'identity', 'identities')}"
            + (f" ({multi} seen by more than one camera)" if len(cameras) > 1 else "")
            + f" from {plural(len(tracks), 'track')} in {counted_cameras(cameras)}"
            + (f"; time axis {_when(t0, origin)} to {_when(t1, origin)}." if tracks else ".")
            + f"{limit}{marked}"
        ),
        clock=html.escape(clock),
        rows=rows,
    )
    out = run_dir / REPORT_FILE
    tmp = run_dir / f".{REPORT_FILE}.partial"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


def _when(seconds: float, origin: str | None) -> str:
    """A time on the run's clock as `crosscam query` prints it: a date and time where the cameras
    file gave start times, else hh:mm:ss.s."""
    return clock_text(seconds, origin or None)  # "": a store without start times


def _identity_row(overview: IdentityOverview, cameras: list[str], t0: float, span: float, run_dir: Path,
                  origin: str | None) -> str:
    identity, tracks = overview.identity, overview.tracks
    thumbs = []
    best_tracks = overview.best_tracks()
    for best in best_tracks[:MAX_LANES]:  # a person seen by 100 cameras: a row of 12 pictures, not 100
        camera = best.camera
        image = _inline_jpeg(run_dir / best.thumbnail) if best.thumbnail else None
        tag = f'<img src="{image}" alt="">' if image else '<div class="noimg">no image</div>'
        thumbs.append(f'<figure>{tag}<figcaption>{html.escape(camera)} #{best.track_id}</figcaption></figure>')
    if len(best_tracks) > MAX_LANES:
        thumbs.append(f'<div class="meta">and {plural(len(best_tracks) - MAX_LANES, "camera")} more</div>')
    b, g, r = color_for_id(identity)
    color = f"rgb({r},{g},{b})"
    gutter = _label_width(cameras)
    if len(cameras) > MAX_LANES:  # 1200 cameras drew 1200 lanes a row: a 43 MB page
        cameras = [c for c in cameras if c in set(overview.cameras)]
    lanes = []
    for lane, camera in enumerate(cameras):
        y = lane * LANE_HEIGHT
        lanes.append(
            f'<text x="{gutter - 6}" y="{y + LANE_HEIGHT - 3}" class="lane">{html.escape(camera)}</text>'
            f'<line x1="{gutter}" x2="{gutter + TIMELINE_WIDTH}" y1="{y + LANE_HEIGHT / 2}" y2="{y + LANE_HEIGHT / 2}" '
            'class="axis"/>'
        )
        for t in (t for t in tracks if t.camera == camera):
            x = gutter + TIMELINE_WIDTH * (t.start_s - t0) / span
            w = max(2.0, TIMELINE_WIDTH * (t.end_s - t.start_s) / span)
            lanes.append(
                f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{LANE_HEIGHT - 4}" fill="{color}">'
                f"<title>{html.escape(camera)} track {t.track_id}: {_when(t.start_s, origin)} - {_when(t.end_s, origin)}, "
                f"frames {t.first_frame}-{t.last_frame} (0-based in the source video)</title></rect>"
            )
    lanes.append(_time_ticks(gutter, LANE_HEIGHT * len(cameras), t0, span, origin))
    height = LANE_HEIGHT * len(cameras) + TICKS_HEIGHT
    width = gutter + TIMELINE_WIDTH + 30
    svg = f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}">{"".join(lanes)}</svg>'
    mark = "" if overview.likely_person else f'<div class="unlikely" title="{NOT_A_PERSON}">not a person?</div>'
    return (
        f'<tr><td class="id" style="border-left:6px solid {color}">{identity}<div class="meta">'
        f"{plural(len(tracks), 'track')}, {plural(len(overview.cameras), 'camera')}<br>"
        f"{_when(overview.first_s, origin)} -<br>{_when(overview.last_s, origin)}</div>{mark}</td>"
        f'<td class="thumbs">{"".join(thumbs)}</td><td>{svg}</td></tr>'
    )


def _label_width(cameras: list[str]) -> int:
    """Pixels left of the timeline for the longest camera name (11 px text, right-aligned)."""
    return max(48, 7 * max((len(c) for c in cameras), default=0) + 12)


TICK_STEPS_S = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def tick_times(t0: float, span: float, phase: float = 0.0) -> tuple[list[float], float]:
    """Round times for an axis from ``t0`` over ``span`` seconds, and their step: the multiples of the
    smallest round step (:data:`TICK_STEPS_S`; days past them) that gives at most 6, counted from
    ``-phase`` (the clock's seconds past midnight, so they fall on round times of day).

    >>> tick_times(0.0, 7.9), tick_times(3.0, 50.0), tick_times(0.0, 600.0, phase=5.0)
    (([0.0, 2.0, 4.0, 6.0], 2), ([10.0, 20.0, 30.0, 40.0, 50.0], 10), ([115.0, 235.0, 355.0, 475.0, 595.0], 120))
    >>> tick_times(0.05, 1e-6), tick_times(-95.0, 100.0)  # no round time inside: the axis's start
    (([0.05], 0.1), ([-90.0, -60.0, -30.0, 0.0], 30))
    """
    if not (math.isfinite(t0) and math.isfinite(span) and span > 0):
        return [t0], TICK_STEPS_S[0]
    step = next((s for s in TICK_STEPS_S if span / s <= 5), 86400 * math.ceil(span / 5 / 86400))
    first = math.ceil((t0 + phase) / step - 1e-9) * step - phase
    count = math.floor((t0 + span - first) / step + 1e-9) + 1  # 0 (or less): no round time on the axis
    times = [round(first + k * step, 6) for k in range(max(count, 0))]
    return times or [t0], step


def _time_ticks(left: int, y: int, t0: float, span: float, origin: str | None) -> str:
    """An SVG tick row under the lanes at round times (:func:`tick_times`): seconds, or hh:mm:ss.s
    (``clock_text``) where the axis reaches a minute; the time of day where the run's clock has an
    ``origin``, with the month and day on the first tick and where the date changes when the axis
    spans more than one date."""
    phase = _seconds_past_midnight(origin) if origin else 0.0
    times, step = tick_times(t0, span, phase)
    decimals = 1 if step < 1 else 0
    labels = _tick_clock_labels(times, origin) if origin else [
        f"{t:.{decimals}f} s" if max(abs(t0), abs(t0 + span)) < 60 else clock_text(t) for t in times]
    marks = []
    for t, text in zip(times, labels):
        x = left + TIMELINE_WIDTH * (t - t0) / span
        anchor = "start" if x - left < 20 else "end" if left + TIMELINE_WIDTH - x < 20 else "middle"
        marks.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y}" y2="{y + 4}" class="tick"/>'
                     f'<text x="{x:.1f}" y="{y + TICKS_HEIGHT - 2}" text-anchor="{anchor}" class="time">{text}</text>')
    return "".join(marks)


def _seconds_past_midnight(origin: str) -> float:
    """Seconds from midnight to the clock's ``origin`` (ISO 8601); 0 where it does not read."""
    try:
        when = datetime.fromisoformat(origin)
    except ValueError:
        return 0.0
    return when.hour * 3600 + when.minute * 60 + when.second + when.microsecond / 1e6


def _tick_clock_labels(times: list[float], origin: str) -> list[str]:
    """Times of day for ticks at ``times`` (seconds from ``origin``): "08:02:05.0", or "05-02 00:01:10.0"
    on the first tick and at each change of date when the ticks fall on more than one date.

    >>> _tick_clock_labels([0, 1800, 3600], "2024-05-01 23:30:00")
    ['05-01 23:30:00.0', '05-02 00:00:00.0', '00:30:00.0']
    >>> _tick_clock_labels([0, 60], "2024-05-01 08:00:00+02:00")
    ['08:00:00.0', '08:01:00.0']
    """
    full = [clock_text(t, origin) for t in times]  # "2024-05-01 08:02:05.0+02:00"; seconds past year 9999
    if any(text[10:11] != " " for text in full):
        return full
    dates = [text[:10] for text in full]
    spans_dates = len(set(dates)) > 1
    return [f"{dates[k][5:]} {text[11:21]}" if spans_dates and (k == 0 or dates[k] != dates[k - 1]) else text[11:21]
            for k, text in enumerate(full)]


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
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
svg {{ max-width: 100%; height: auto; }}
td.none {{ color: #666; font-style: italic; }}
table {{ border-collapse: collapse; }}
td {{ padding: 6px 10px; border-bottom: 1px solid #ddd; vertical-align: middle; }}
td.id {{ font-size: 1.4em; font-weight: bold; min-width: 7em; }}
.meta {{ font-size: 0.55em; font-weight: normal; color: #666; }}
figure {{ display: inline-block; margin: 0 6px 0 0; text-align: center; }}
figcaption {{ font-size: 0.75em; color: #555; }}
.noimg {{ width: 48px; height: {thumb}px; background: #eee; font-size: 0.7em; }}
svg .lane {{ font-size: 11px; fill: #333; text-anchor: end; }}
svg .axis {{ stroke: #ddd; }}
svg .tick {{ stroke: #999; }}
svg .time {{ font-size: 10px; fill: #666; }}
.unlikely {{ font-size: 0.5em; font-weight: normal; color: #a40; }}
@media (max-width: 760px) {{  /* a phone: each identity's cells one under another, the timeline as wide as the screen */
  body {{ margin: 0.6em; }}
  thead {{ display: none; }}
  table, tbody, tr, td {{ display: block; }}
  td {{ border-bottom: none; padding: 4px 0; }}
  tr {{ border-bottom: 1px solid #ddd; padding: 6px 0; }}
}}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<p><em>{clock}</em></p>
<table><thead><tr><th>identity</th><th>seen as</th><th>when, per camera (hover a bar: times, 0-based frame indices)</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
""".replace("{thumb}", str(THUMB_HEIGHT))
