"""Real end to end: two virtual cameras cut from the real hall clip, tracked with the shared YOLO
and OSNet models, associated into global identities, queried.

The clip (10 fps, 1394 frames) shows six people who walk up to a table one at a time, stand and
leave (source frame windows, checked by eye on extracted frames):

    P1 blonde, grey cardigan     ~80-195      only in camera A
    P2 dark hoodie               ~230-430     A (and the last few frames of it in B)
    P3 blonde, black top         ~530-690     A and B
    P4 black T-shirt             ~735-890     A (entering) and B
    P5 dark hair, grey cardigan  ~935-1200    only in camera B
    P6 grey shirt, jeans         ~1225-1394   only in camera B

Camera A = source frames 0-800 as they are; camera B = frames 400-1394 mirrored, scaled to 75%
and colour-shifted, starting 40 s later on the common clock (a cameras file says so).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.cli.main import main
from pipeline.config import PipelineConfig
from pipeline.identity.identities import update_identities
from pipeline.identity.store import TrackStore

B_FIRST = 400  # camera B's frame 0 is source frame 400
PEOPLE = {"P1": (80, 195), "P2": (230, 430), "P3": (530, 690), "P4": (735, 890), "P5": (935, 1200), "P6": (1225, 1394)}
STRIDE = 5  # 2 frames/s: people stand for 10-25 s, and the INT8 YOLO (fixed 640 px input) is the slow part
# DeepSORT's max_age counts processed frames: at 2 fps the default 30 is 15 s, longer than the
# 4-5 s between one person leaving and the next arriving, and one track ran on from person to
# person. 5 frames = 2.5 s.
OPTIONS = ["--stride", str(STRIDE), "--set", "tracker.max_age=5", "--quiet", "--json"]


def render_camera_b(clip: Path, out: Path) -> None:
    """Frames 400.. of the clip, mirrored, scaled to 75% and colour-shifted (another camera's look)."""
    cap = cv2.VideoCapture(str(clip))
    cap.set(cv2.CAP_PROP_POS_FRAMES, B_FIRST)
    writer = None
    gain = np.array([1.15, 0.95, 0.8], np.float32)  # bluer, less red: another white balance
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frame = cv2.flip(frame, 1)
        frame = cv2.resize(frame, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
        frame = np.clip(frame.astype(np.float32) * gain + 10, 0, 255).astype(np.uint8)
        if writer is None:
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
        writer.write(frame)
    writer.release()
    cap.release()


def person_of(track: dict, first_source_frame: int) -> str | None:
    """The person whose window holds most of this track's frames (None: between people)."""
    lo, hi = track["first_frame"] + first_source_frame, track["last_frame"] + first_source_frame
    overlaps = {p: min(hi, b) - max(lo, a) for p, (a, b) in PEOPLE.items()}
    best = max(overlaps, key=overlaps.get)
    return best if overlaps[best] > 0.5 * (hi - lo) else None


@pytest.mark.slow
def test_two_virtual_cameras_of_the_real_clip(tmp_path: Path, hall_clip: Path, yolo_onnx: Path, osnet_onnx: Path,
                                              capsys):
    camera_b = tmp_path / "camera_b.mp4"
    render_camera_b(hall_clip, camera_b)
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(
        "cameras:\n"
        f"  - {{name: A, video: {hall_clip}, start: '2024-05-01 09:00:00'}}\n"
        f"  - {{name: B, video: {camera_b}, start: '2024-05-01 09:00:40'}}\n"
    )
    run = tmp_path / "run"
    models = ["--detector", str(yolo_onnx), "--reid", str(osnet_onnx)]
    # Camera A first, camera B added to the same run later: B joins A's identities (incremental;
    # the cameras file given with A stays in the run directory and puts B on the same clock).
    capsys.readouterr()
    assert main(["track", str(hall_clip), "--camera", "A", "--max-frames", "801", "--out", str(run),
                 "--cameras", str(cameras), *models, *OPTIONS]) == 0
    first = json.loads(capsys.readouterr().out)["identities"]
    assert first["cameras"] == ["A"] and first["cameras_updated"] == ["A"]
    assert main(["track", str(camera_b), "--camera", "B", "--out", str(run), *models, *OPTIONS]) == 0
    second = json.loads(capsys.readouterr().out)["identities"]
    assert second["cameras_updated"] == ["B"] and second["cameras"] == ["A", "B"] and second["common_clock"]
    assert update_identities(run, PipelineConfig(), progress=False).cameras_updated == []  # nothing changed

    store = TrackStore.open(run / "store")
    people: dict[str, set[tuple[str, int]]] = {}
    identity_of: dict[tuple[str, int], int] = {}
    for cam, offset in (("A", 0), ("B", B_FIRST)):
        for t in json.loads((run / cam / "tracks.json").read_text()):
            person = person_of(t, offset)
            if person is not None:
                people.setdefault(person, set()).add((cam, t["track_id"]))
            identity_of[cam, t["track_id"]] = store.track(cam, t["track_id"]).identity
    seen_by = {p: {cam for cam, _ in tracks} for p, tracks in people.items()}
    assert {"P1", "P3", "P4"} <= {p for p, cams in seen_by.items() if "A" in cams}
    assert {"P3", "P4", "P5", "P6"} <= {p for p, cams in seen_by.items() if "B" in cams}

    identities = {p: {identity_of[k] for k in tracks} for p, tracks in people.items()}
    for person, cams in seen_by.items():
        if cams == {"A", "B"}:  # one identity across both cameras
            assert len(identities[person]) == 1, (person, people[person], identities[person])
    for person in ("P1", "P5", "P6"):  # seen in one range only: merged with nobody
        others = set().union(*(ids for p, ids in identities.items() if p != person))
        assert not identities[person] & others, (person, identities)
    # Not asserted: P2 and P4, two men in dark clothes seen from behind, score 0.81-0.91 with
    # OSNet-x0.25 (as high as the same person across cameras), so they may share an identity.

    p3_in_a = min(k for k in people["P3"] if k[0] == "A")
    capsys.readouterr()  # drop what the track commands printed
    assert main(["query", str(run), "--track", f"A:{p3_in_a[1]}", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["identity"] == identity_of[p3_in_a]
    assert {a["camera"] for a in answer["appearances"]} == {"A", "B"}
    b_visit = next(a for a in answer["appearances"] if a["camera"] == "B")
    a_visit = next(a for a in answer["appearances"] if a["camera"] == "A")
    assert abs(b_visit["start_s"] - a_visit["start_s"]) < 10  # same moment on the common clock
    for cam in ("A", "B"):
        assert (run / cam / "tracks_global.txt").stat().st_size > 0
        assert (run / cam / "annotated_global.mp4").stat().st_size > 0
    assert "common clock" in (run / "report.html").read_text()
