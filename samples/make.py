"""Write a generated scene to disk: ``camX.mp4`` per camera, ``gt/camX.txt`` and ``scene.json``.

>>> import tempfile
>>> options = SceneOptions(cameras=1, people=2, lookalikes=1, seconds=0.5, width=160, height=90)
>>> out = make_scene(options, tempfile.mkdtemp(), progress=False)
>>> sorted(out["gt_rows"])
['cam1']
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import fields
from pathlib import Path

import cv2
from tqdm import tqdm

from reid.errors import CrosscamError
from reid.paths import check_video_written, check_writable_here
from reid.progress import progress_bar
from samples.render import CameraRenderer, make_textures
from samples.layout import build_scene
from samples.scene import SceneOptions

# (option, lowest allowed value, highest allowed value or None)
_BOUNDS = {
    "cameras": (1, 12), "people": (0, 200), "seconds": (0.1, 3600), "fps": (1, 60), "width": (64, 3840),
    "height": (48, 2160), "overlap": (0, 1), "overlap_m": (0, 20), "gap_m": (0, 100), "lookalikes": (0, 100),
    "occlusion": (0, 1), "lighting": (0, 1), "noise": (0, 100), "blur": (0, 10), "pauses": (0, 1),
    "min_visibility": (0, 1), "min_height": (0, 2160),
}


def check_options(options: SceneOptions) -> None:
    """Raise :class:`CrosscamError` naming the first option out of range."""
    for f in fields(options):
        if f.name not in _BOUNDS:
            continue
        lo, hi = _BOUNDS[f.name]
        value = getattr(options, f.name)
        if not lo <= value <= hi:
            raise CrosscamError(f"--{f.name.replace('_', '-')} {value}: must be between {lo} and {hi}")
    if 2 * options.lookalikes > options.people:
        raise CrosscamError(
            f"--lookalikes {options.lookalikes}: needs {2 * options.lookalikes} people but --people is {options.people}"
        )


_LEFT_BY_A_STOP = re.compile(r"(cam\d+\.tmp\.mp4|gt|scene\.json\.tmp)")  # partial files of an interrupted make
_CAMERA_FILE = re.compile(r"cam(\d+)\.(?:mp4|txt)")  # a camera's video or ground truth
_MAKING = ".making"  # present from a make's first file to its scene.json: the folder is a scene being made


def check_out_folder(out: Path) -> None:
    """Refuse a file, and a folder that is neither empty, nor a scene, nor a scene whose make was
    stopped (its videos would be replaced)."""
    if out.exists() and not out.is_dir():
        raise CrosscamError(f"{out}: exists and is not a folder; pass a folder for --out")
    if out.is_dir() and not (out / "scene.json").is_file() and not (out / _MAKING).is_file():
        foreign = sorted(p.name for p in out.iterdir() if not _LEFT_BY_A_STOP.fullmatch(p.name))
        if foreign:
            raise CrosscamError(f"{out}: holds files that are not a crosscam scene ({', '.join(foreign[:3])}"
                                f"{', ...' if len(foreign) > 3 else ''}; no scene.json); give an empty or new folder for --out")


def make_scene(options: SceneOptions, out_dir: str | Path, progress: bool = True) -> dict:
    """Render every camera of the scene drawn from ``options`` into ``out_dir``; returns a summary.

    Every file is written under a temporary name and the new scene's files replace the folder's
    only once all are complete, so a stop (Ctrl-C) leaves an earlier scene there whole, and
    never a truncated video or ground truth under a final name.
    """
    check_options(options)
    out = Path(out_dir)
    check_out_folder(out)
    try:
        (out / "gt").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CrosscamError(f"{out}: cannot make this folder ({exc.strerror}); give another --out") from None
    if not (out / "scene.json").is_file():
        (out / _MAKING).touch()  # no scene here yet: the folder is one being made until scene.json
    started = time.perf_counter()
    scene = build_scene(options)
    textures = make_textures(scene)
    n_frames = options.num_frames
    made: list[tuple[Path, Path]] = []  # (temporary file, its final name)
    bar = progress_bar(total=n_frames * len(scene.cameras), desc="rendering", unit="frame", disable=not progress)
    try:
        gt_rows = {camera.name: _render_camera(scene, index, textures, out, options, made, bar)
                   for index, camera in enumerate(scene.cameras)}
        description = scene.describe()
        scene_tmp = out / "scene.json.tmp"
        scene_tmp.write_text(json.dumps(description, indent=1))
        made.append((scene_tmp, out / "scene.json"))
    except BaseException:
        for tmp, _ in made:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    # The new scene's files replace the earlier ones (a stop in these few renames leaves a scene being
    # made, which the same command makes again)
    (out / _MAKING).touch()
    (out / "scene.json").unlink(missing_ok=True)
    for old in [*out.glob("cam*.mp4"), *(out / "gt").glob("cam*.txt")]:  # cameras the new scene lacks
        if (camera := _CAMERA_FILE.fullmatch(old.name)) and int(camera[1]) > options.cameras:
            old.unlink()
    for tmp, final in made:
        tmp.replace(final)
    (out / _MAKING).unlink()
    return {
        "out": str(Path(out).resolve()),
        "cameras": [c.name for c in scene.cameras],
        "num_frames": n_frames,
        "fps": options.fps,
        "people": len(scene.people),
        "gt_rows": gt_rows,
        "overlapping_pairs": description["overlapping_pairs"],
        "elapsed_s": round(time.perf_counter() - started, 2),
    }


def _render_camera(scene, index: int, textures, out: Path, options: SceneOptions, made: list[tuple[Path, Path]],
                   bar: tqdm) -> int:
    """Camera ``index``'s video and ground truth under temporary names (added to ``made`` as they
    are opened, so a stop removes them); returns its ground-truth rows."""
    camera = scene.cameras[index]
    renderer = CameraRenderer(scene, index, textures)
    video_tmp = out / f"{camera.name}.tmp.mp4"
    made.append((video_tmp, out / f"{camera.name}.mp4"))
    writer = cv2.VideoWriter(str(video_tmp), cv2.VideoWriter_fourcc(*"mp4v"), options.fps, camera.size)
    if not writer.isOpened():
        check_writable_here(video_tmp)  # a full disk or a read-only folder is said as such
        raise CrosscamError(f"{video_tmp}: OpenCV cannot write MP4 here; check the folder is writable")
    rows = []
    try:
        for k in range(options.num_frames):
            image, frame_rows = renderer.render(k)
            writer.write(image)
            rows += frame_rows
            bar.update(1)
    finally:
        writer.release()
    check_video_written(video_tmp, options.num_frames, out / f"{camera.name}.mp4")  # a full disk cuts it silently
    gt_tmp = out / "gt" / f"{camera.name}.txt.tmp"
    made.append((gt_tmp, out / "gt" / f"{camera.name}.txt"))
    gt_tmp.write_text("".join(",".join(_fmt(v) for v in r) + "\n" for r in rows))
    return len(rows)


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(int(value))
