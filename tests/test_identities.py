import html
import json
import re
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import PipelineConfig
from pipeline.cli.main import main
from pipeline.identity.identities import update_identities
from pipeline.identity.query import query_identity, query_track
from pipeline.identity.report import identity_overviews
from pipeline.identity.store import TrackStore
from pipeline.types import write_track_summaries
from reid.errors import CrosscamError

from identity_runs import summary, write_camera

E = np.eye(8, dtype=np.float32)
P, Q, R = E[0], E[1], E[2]  # three people's appearances


def global_ids(folder: Path) -> dict[int, int]:
    """track id -> identity, from tracks.txt and tracks_global.txt read side by side."""
    local = [line.split(",") for line in (folder / "tracks.txt").read_text().splitlines()]
    glob = [line.split(",") for line in (folder / "tracks_global.txt").read_text().splitlines()]
    assert [row[0] for row in local] == [row[0] for row in glob] and [row[2:] for row in local] == [row[2:] for row in glob]
    return {int(a[1]): int(b[1]) for a, b in zip(local, glob)}


def frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


@pytest.fixture
def two_cameras(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    write_camera(run, "hall", [summary("hall", 1, 0.0, 3.0, P), summary("hall", 2, 1.0, 4.0, Q)])
    write_camera(run, "door", [summary("door", 1, 2.0, 5.0, P + 0.1 * E[3]), summary("door", 2, 2.0, 5.0, R)])
    return run


def test_people_seen_in_both_cameras_get_one_identity_and_outputs_are_written(two_cameras: Path):
    result = update_identities(two_cameras, PipelineConfig(), progress=False)
    hall, door = global_ids(two_cameras / "hall"), global_ids(two_cameras / "door")
    assert hall[1] == door[1]  # P
    assert len({hall[1], hall[2], door[2]}) == 3  # Q and R merge with nobody
    assert (result.identities, result.multi_camera_identities, result.tracks) == (3, 1, 4)
    assert result.cameras_updated == ["door", "hall"] and not result.common_clock
    for cam in ("hall", "door"):
        video = two_cameras / cam / "annotated_global.mp4"
        assert frame_count(video) == frame_count(two_cameras / cam / "source.mp4") > 40
    page = result.report.read_text()
    assert page.count("<tr><td class=\"id\"") == 3
    assert len(re.findall(r'src="data:image/jpeg;base64,', page)) == 4  # P twice, Q and R once
    assert "seconds from each video" in page and "<img src=\"thumbs" not in page


def test_a_camera_added_later_joins_existing_identities_without_touching_the_others(two_cameras: Path):
    update_identities(two_cameras, PipelineConfig(), progress=False)
    before = global_ids(two_cameras / "hall")
    stamp = (two_cameras / "hall" / "annotated_global.mp4").stat().st_mtime_ns
    write_camera(two_cameras, "lift", [summary("lift", 7, 30.0, 33.0, P), summary("lift", 8, 30.0, 33.0, E[5])])
    result = update_identities(two_cameras, PipelineConfig(), progress=False)
    assert result.cameras_updated == ["lift"]
    lift = global_ids(two_cameras / "lift")
    assert lift[7] == before[1] and lift[8] not in set(before.values()) | {before[1]}
    assert global_ids(two_cameras / "hall") == before
    assert (two_cameras / "hall" / "annotated_global.mp4").stat().st_mtime_ns == stamp
    assert result.identities == 4 and result.multi_camera_identities == 1


def test_a_camera_whose_summaries_were_deleted_is_said_and_loses_its_global_outputs(two_cameras: Path, caplog):
    """Its tracks_global.txt kept ids that the store, associated afresh without it, gave to others."""
    update_identities(two_cameras, PipelineConfig(), progress=False)
    assert (two_cameras / "door" / "tracks_global.txt").is_file() and (two_cameras / "door" / "annotated_global.mp4").is_file()
    shutil.rmtree(two_cameras / "store")
    (two_cameras / "door" / "tracks.json").unlink()
    result = update_identities(two_cameras, PipelineConfig(), progress=False)
    assert result.cameras == ["hall"]
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "door: run.json but no tracks.json (deleted?): its tracks are not read again" in said
    assert "door: not in the identities; its tracks_global.txt and annotated_global.mp4, whose ids no longer hold, removed" in said
    assert not (two_cameras / "door" / "tracks_global.txt").exists() and not (two_cameras / "door" / "annotated_global.mp4").exists()
    assert (two_cameras / "hall" / "tracks_global.txt").is_file()
    (two_cameras / "lobby").mkdir()  # a first run killed outright: run.json says running, nothing written (no word)
    (two_cameras / "lobby" / "run.json").write_text('{"status": "running"}')
    caplog.clear()
    update_identities(two_cameras, PipelineConfig(), progress=False)
    assert "lobby: run.json says running and no tracks are written yet: left out of the identities" in caplog.text


def test_cameras_file_puts_cameras_on_one_clock_and_applies_transit_rules(two_cameras: Path, tmp_path: Path, capsys):
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(
        "cameras:\n"
        "  - {name: hall, start: '2024-05-01 08:00:00'}\n"
        "  - {name: door, start: '2024-05-01 08:02:00'}\n"
        "transitions:\n"
        "  rules:\n"
        "    - {cameras: [hall, door], min_s: 0, max_s: 60}\n"
    )
    result = update_identities(two_cameras, PipelineConfig(), cameras_file=cameras, progress=False)
    assert result.common_clock and (two_cameras / "cameras.yaml").is_file()
    store = TrackStore.open(two_cameras / "store")
    assert store.track("door", 1).start_s == pytest.approx(122.0)  # 2 s into a video started 120 s later
    hall, door = global_ids(two_cameras / "hall"), global_ids(two_cameras / "door")
    assert hall[1] != door[1]  # 117 s from hall to door is longer than the 60 s the rule allows
    assert "common clock given by the cameras file (0 s = 2024-05-01 08:00:00)" in result.report.read_text()
    page = result.report.read_text()
    assert "time axis 2024-05-01 08:00:00.0 to 2024-05-01 08:02:05.0." in page
    # rows, bars' tooltips and the axis ticks on the same clock
    assert "door track 1: 2024-05-01 08:02:02.0 - 2024-05-01 08:02:05.0, frames" in page
    assert ">08:00:30.0</text>" in page and ">08:02:00.0</text>" in page and " s</text>" not in page  # round times of day
    # the start times come back: they were turned into offsets and lost
    answer = query_track(two_cameras, "door", 1, config=PipelineConfig())
    assert answer.clock_origin == "2024-05-01 08:00:00" and answer.to_json()["clock_origin"] == "2024-05-01 08:00:00"
    assert main(["query", str(two_cameras), "--track", "door:1"]) == 0
    printed = capsys.readouterr().out
    assert "(times: the cameras file's start times;" in printed and "2024-05-01 08:02:02.0 - 2024-05-01 08:02:05.0" in printed
    cameras.write_text(cameras.read_text().replace(" 08:0", " 09:0"))  # every start an hour later: same offsets
    update_identities(two_cameras, PipelineConfig(), cameras_file=cameras, progress=False)
    assert query_track(two_cameras, "door", 1, config=PipelineConfig()).clock_origin == "2024-05-01 09:00:00"
    # an axis past midnight dates its first tick and the first tick of the next day
    cameras.write_text(cameras.read_text().replace("2024-05-01 09:00", "2024-05-01 23:59")
                       .replace("2024-05-01 09:02", "2024-05-02 00:01"))
    page = update_identities(two_cameras, PipelineConfig(), cameras_file=cameras, progress=False).report.read_text()
    assert ">05-01 23:59:00.0</text>" in page and ">05-02 00:00:00.0</text>" in page and ">00:01:00.0</text>" in page


def test_cameras_given_a_clock_later_keep_their_identity_ids(two_cameras: Path, tmp_path: Path):
    """A cameras file added later re-associates every camera (their clocks changed), but a person
    whose tracks are the same keeps the id they had; a changed track gets a new one."""
    update_identities(two_cameras, PipelineConfig(), progress=False)
    hall, door = global_ids(two_cameras / "hall"), global_ids(two_cameras / "door")
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text("cameras:\n  - {name: hall, offset_s: 0}\n  - {name: door, offset_s: 0}\n")
    result = update_identities(two_cameras, PipelineConfig(), cameras_file=cameras, progress=False)
    assert result.common_clock and result.cameras_updated == ["door", "hall"]
    assert global_ids(two_cameras / "hall") == hall and global_ids(two_cameras / "door") == door
    write_camera(two_cameras, "door", [summary("door", 1, 2.0, 5.0, P + 0.1 * E[3]), summary("door", 2, 2.0, 6.0, R)])
    update_identities(two_cameras, PipelineConfig(), progress=False)  # door's track 2 changed (its end)
    again = global_ids(two_cameras / "door")
    assert again[1] == door[1] and again[2] not in set(door.values()) | set(hall.values())


def test_changed_association_settings_associate_every_camera_again(two_cameras: Path, tmp_path: Path, caplog):
    """`crosscam associate RUN --set association.threshold=...` on an associated run changed nothing:
    only cameras whose tracks changed were associated again."""
    update_identities(two_cameras, PipelineConfig(), progress=False)
    hall = global_ids(two_cameras / "hall")
    assert global_ids(two_cameras / "door")[1] == hall[1]  # P in both
    strict = PipelineConfig.model_validate({"association": {"threshold": 0.999, "center_cameras": False}})
    result = update_identities(two_cameras, strict, progress=False)
    assert result.cameras_updated == ["door", "hall"] and "every camera is associated again" in caplog.text
    assert "changed (association.center_cameras True -> False, association.threshold 0.825 -> 0.999)" in caplog.text
    assert global_ids(two_cameras / "door")[1] != global_ids(two_cameras / "hall")[1]  # P no longer merged
    assert global_ids(two_cameras / "hall") == hall  # hall's ids kept
    assert update_identities(two_cameras, strict, progress=False).cameras_updated == []  # the same settings again
    rules = tmp_path / "cameras.yaml"  # transit rules are association settings too
    rules.write_text("cameras:\n  - {name: hall, offset_s: 0}\n  - {name: door, offset_s: 0}\n")
    update_identities(two_cameras, PipelineConfig(), cameras_file=rules, progress=False)
    assert global_ids(two_cameras / "door")[1] == global_ids(two_cameras / "hall")[1]
    rules.write_text(rules.read_text() + "transitions:\n  only_listed: true\n")
    assert update_identities(two_cameras, PipelineConfig(), cameras_file=rules, progress=False).cameras_updated == ["door", "hall"]
    assert global_ids(two_cameras / "door")[1] != global_ids(two_cameras / "hall")[1]  # no rule links the two
    with_rule = rules.read_text() + "  rules: [{cameras: [hall, door], max_s: 30}]\n"
    rules.write_text(with_rule)
    assert update_identities(two_cameras, PipelineConfig(), cameras_file=rules, progress=False).cameras_updated == ["door", "hall"]
    rules.write_text(with_rule.replace("[hall, door]", "[door, hall]"))  # the same rule: a rule applies both ways
    assert update_identities(two_cameras, PipelineConfig(), cameras_file=rules, progress=False).cameras_updated == []


def test_a_cameras_file_of_clocks_alone_changes_no_association_setting(two_cameras: Path, tmp_path: Path, caplog):
    """It said "association settings or transit rules changed": the file has no rule."""
    update_identities(two_cameras, PipelineConfig(), progress=False)
    clocks = tmp_path / "cameras.yaml"
    clocks.write_text("cameras:\n  - {name: hall, offset_s: 0}\n  - {name: door, offset_s: 0}\n")
    update_identities(two_cameras, PipelineConfig(), cameras_file=clocks, progress=False)
    assert "transit rules changed" not in caplog.text


def test_a_store_of_an_older_crosscam_is_associated_again_once(two_cameras: Path, caplog):
    """A store without the settings its identities came from took today's settings as its own."""
    import sqlite3

    update_identities(two_cameras, PipelineConfig(), progress=False)
    with sqlite3.connect(two_cameras / "store" / "tracks.sqlite") as conn:  # as an older crosscam left it
        conn.execute("DELETE FROM meta WHERE key LIKE 'setting.%'")
    strict = PipelineConfig.model_validate({"association": {"threshold": 0.999, "center_cameras": False}})
    assert update_identities(two_cameras, strict, progress=False).cameras_updated == ["door", "hall"]
    assert "unknown (an older crosscam wrote it)" in caplog.text
    assert global_ids(two_cameras / "door")[1] != global_ids(two_cameras / "hall")[1]  # the strict settings applied
    assert update_identities(two_cameras, strict, progress=False).cameras_updated == []


def test_an_interrupted_camera_joins_the_identities_with_a_warning(two_cameras: Path, caplog):
    record = json.loads((two_cameras / "door" / "run.json").read_text())
    (two_cameras / "door" / "run.json").write_text(json.dumps({**record, "status": "interrupted"}))
    result = update_identities(two_cameras, PipelineConfig(), progress=False)
    assert "door" in result.cameras
    said = [r.getMessage() for r in caplog.records if "interrupted" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("door: run.json says interrupted")


def report_texts(page: str) -> tuple[str, str]:
    """The page's title and its summary paragraph, unescaped."""
    title = re.search(r"<title>(.*?)</title>", page).group(1)
    summary_text = re.search(r"<p>(.*?)</p>", page).group(1)
    return html.unescape(title), html.unescape(summary_text)


def test_the_report_counts_every_camera_and_words_its_counts_in_the_singular(tmp_path: Path):
    """A camera where nobody was tracked is still one of the run's cameras; one of anything is singular."""
    run = tmp_path / "run"
    write_camera(run, "cam1", [])
    title, text = report_texts(update_identities(run, PipelineConfig(), progress=False).report.read_text())
    assert title == f"crosscam: {tmp_path.name}/run (1 camera: cam1)"
    page = update_identities(run, PipelineConfig(), progress=False).report.read_text()
    assert text == "0 identities from 0 tracks in 1 camera: cam1."  # no axis of a made-up second, no other cameras
    assert "No one was tracked: no identity to show." in page and "Times are seconds from the video's start." in html.unescape(page)
    assert '<meta name="viewport"' in page  # phones lay the rows out at their width
    write_camera(run, "cam2", [summary("cam2", 1, 0.0, 3.0, P), summary("cam2", 2, 1.0, 1.2, Q)])  # 2: a fragment
    write_camera(run, "cam3", [summary("cam3", 1, 0.0, 3.0, R)])
    title, text = report_texts(update_identities(run, PipelineConfig(), progress=False).report.read_text())
    assert title == f"crosscam: {tmp_path.name}/run (3 cameras: cam1, cam2, cam3)"
    assert "from 3 tracks in 3 cameras: cam1, cam2, cam3;" in text
    assert text.endswith(" 1 identity marked \u201cnot a person?\u201d (static box, short-lived or tiny: background or "
                         "a fragment) comes last.")


def test_cameras_tracked_with_different_embedders_are_refused(tmp_path: Path):
    run = tmp_path / "run"
    write_camera(run, "hall", [summary("hall", 1, 0.0, 1.0, P)], video=False)
    write_camera(run, "door", [summary("door", 1, 0.0, 1.0, P)], video=False, fingerprint="0" * 64)
    with pytest.raises(CrosscamError, match=r"hall/run.json: tracked with embedder synthetic \(ffffffffffff, dim 8\) but door"):
        update_identities(run, PipelineConfig(), progress=False)
    assert not (run / "store").exists()


def test_a_store_from_another_embedder_is_refused_and_left_unchanged(two_cameras: Path):
    update_identities(two_cameras, PipelineConfig(), progress=False)
    db = (two_cameras / "store" / "tracks.sqlite").read_bytes()
    write_camera(two_cameras, "lift", [summary("lift", 1, 0.0, 1.0, P)], fingerprint="1" * 64, video=False)
    write_camera(two_cameras, "hall", [summary("hall", 1, 0.0, 1.0, P)], fingerprint="1" * 64, video=False)
    write_camera(two_cameras, "door", [summary("door", 1, 0.0, 1.0, P)], fingerprint="1" * 64, video=False)
    with pytest.raises(CrosscamError, match="store was built with embedder"):
        update_identities(two_cameras, PipelineConfig(), progress=False)
    assert (two_cameras / "store" / "tracks.sqlite").read_bytes() == db


def test_a_run_without_camera_outputs_is_one_line(tmp_path: Path):
    with pytest.raises(CrosscamError, match="no camera outputs"):
        update_identities(tmp_path, PipelineConfig(), progress=False)


@pytest.mark.parametrize(
    "text, message",
    [
        ("cameras:\n  - {name: hall}\n", "give exactly one of 'start' or 'offset_s'"),
        ("cameras:\n  - {name: hall, offset_s: 0}\n  - {name: door, start: '2024-05-01 08:00:00'}\n", "not both"),
        ("cameras:\n  - {name: hall, offset_s: 0}\ntransitions:\n  rules: [{cameras: [hall, lift]}]\n",
         ": transitions: a rule names camera(s) lift, which the file does not list (hall)"),
        ("camera:\n  - {name: hall, offset_s: 0}\n", "camera: unknown key; did you mean cameras?"),
        ("cameras:\n  - {name: hall, offset_s: 0\n", "not valid YAML at line 3"),
        ("cameras:\n  - {name: hall, offset_s: 0}\n", "no entry for camera(s) door;"),
        ("cameras:\n  - {name: hall, offset_s: 0}\n  - {name: dor, offset_s: 3}\n",
         "no entry for camera(s) door (dor in it is no camera of this run: misspelt?)"),
        ("cameras:\n  - {name: hall, offset_s: 0}\n  - {name: door, strat: '2024-05-01 08:00:00'}\n",
         "cameras.1.strat: unknown key; did you mean cameras.1.start?"),
        ("cameras:\n  - {name: hall, offset_s: 0}\ntransition:\n  rules: []\n",
         "transition: unknown key; did you mean transitions?"),
    ],
)
def test_bad_cameras_files_are_one_line_and_change_nothing(two_cameras: Path, tmp_path: Path, text: str, message: str):
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(text)
    with pytest.raises(CrosscamError, match=re.escape(message)) as info:
        update_identities(two_cameras, PipelineConfig(), cameras_file=cameras, progress=False)
    assert str(info.value).startswith(str(cameras)) and "\n" not in str(info.value)
    assert not (two_cameras / "store").exists() and not (two_cameras / "cameras.yaml").exists()


def test_ids_of_replaced_tracks_are_never_handed_to_someone_else(two_cameras: Path):
    update_identities(two_cameras, PipelineConfig(), progress=False)
    r_identity = global_ids(two_cameras / "door")[2]  # person R, seen only by door
    assert r_identity == 3
    # door is tracked again: R is gone and a new person S appears.
    S = E[4]
    write_camera(two_cameras, "door", [summary("door", 1, 2.0, 5.0, P + 0.1 * E[3]), summary("door", 5, 2.0, 5.0, S)])
    update_identities(two_cameras, PipelineConfig(), progress=False)
    assert global_ids(two_cameras / "door")[5] == 4  # not R's 3


def test_a_failed_camera_run_is_left_out_and_the_store_keeps_its_earlier_tracks(two_cameras: Path, caplog):
    update_identities(two_cameras, PipelineConfig(), progress=False)
    run_json = two_cameras / "door" / "run.json"
    run_json.write_text(run_json.read_text().replace('"complete"', '"failed"'))
    write_track_summaries(two_cameras / "door", [summary("door", 9, 2.0, 5.0, R)])  # what the failed run left
    result = update_identities(two_cameras, PipelineConfig(), progress=False)
    assert result.cameras_updated == [] and result.tracks == 4
    store = TrackStore.open(two_cameras / "store")
    assert sorted(t.track_id for t in store.tracks(camera="door")) == [1, 2]
    assert "door: run.json status 'failed'" in caplog.text and "re-run `crosscam track` for this camera" in caplog.text
    run_json.write_text(run_json.read_text().replace('"failed"', '"running"'))  # tracked again now, into its folder
    caplog.clear()
    update_identities(two_cameras, PipelineConfig(), progress=False)
    assert "door: run.json status 'running'; left out" in caplog.text and "stopped outright" in caplog.text


@pytest.mark.parametrize("damage", ["json cut short", "npz cut short", "npz bytes changed"])
def test_unreadable_track_summaries_are_one_line(two_cameras: Path, damage: str):
    features = two_cameras / "door" / "track_features.npz"
    if damage == "json cut short":
        (two_cameras / "door" / "tracks.json").write_text('[{"camera": "door", "track_id": 1,')
    elif damage == "npz cut short":
        features.write_bytes(features.read_bytes()[:1000])
    else:  # a CRC that no longer matches: np.load opens it, reading a member fails
        with zipfile.ZipFile(features) as archive:
            member = archive.getinfo("feature_1.npy")
        data = bytearray(features.read_bytes())
        data[member.header_offset + 30 + len(member.filename) + len(member.extra) + member.file_size - 1] ^= 0xFF
        features.write_bytes(bytes(data))
    with pytest.raises(CrosscamError, match=r"door: tracks.json / track_features.npz unreadable .*re-run") as err:
        update_identities(two_cameras, PipelineConfig(), progress=False)
    assert "\n" not in str(err.value)


def test_a_global_video_without_its_finished_stamp_is_rendered_again(two_cameras: Path):
    update_identities(two_cameras, PipelineConfig(), progress=False)
    video = two_cameras / "hall" / "annotated_global.mp4"
    full = frame_count(video)
    # As if the last render was stopped midway: a short video and no stamp.
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 120))
    for _ in range(3):
        writer.write(np.zeros((120, 160, 3), np.uint8))
    writer.release()
    (two_cameras / "hall" / ".annotated_global.stamp").unlink()
    update_identities(two_cameras, PipelineConfig(), progress=False)
    assert frame_count(video) == full
    mtime = video.stat().st_mtime_ns
    update_identities(two_cameras, PipelineConfig(), progress=False)  # stamp matches: left alone
    assert video.stat().st_mtime_ns == mtime


def test_a_short_static_track_cut_by_the_clip_is_not_marked_not_a_person(tmp_path: Path):
    # Three 3-frame static tracks of one camera (tracked frames 0-49): one in the middle (a
    # fragment), one at the clip's first frames and one at its last (people who had just come or
    # were cut off: the demo marked walkers entering in its last 0.5 s "not a person?").
    from pipeline.identity.report import identity_overviews

    eye = np.eye(8, dtype=np.float32)
    run = tmp_path / "run"
    write_camera(run, "hall", [summary("hall", 1, 0.0, 0.2, eye[0]), summary("hall", 2, 2.0, 2.2, eye[1]),
                               summary("hall", 3, 4.7, 4.9, eye[2])], video=False)
    update_identities(run, PipelineConfig(), progress=False)
    store = TrackStore.open(run / "store")
    unlikely = {t.track_id for o in identity_overviews(run, store) if not o.likely_person for t in o.tracks}
    assert unlikely == {2}


def test_a_static_track_of_a_strided_run_is_short_by_its_seconds_not_its_rows(tmp_path: Path):
    """With source.stride 4, a 1.3 s track has 4 rows of tracks.txt: it counted as shorter than 1 s
    (10 rows at 10 fps) and was marked "not a person?"; one of 0.5 s still is."""
    from pipeline.identity.report import identity_overviews

    eye = np.eye(8, dtype=np.float32)
    run = tmp_path / "run"
    folder = write_camera(run, "hall", [summary("hall", 1, 2.0, 3.2, eye[0]), summary("hall", 2, 5.2, 5.6, eye[1]),
                                        summary("hall", 3, 0.0, 9.6, eye[2])], video=False)
    rows = [line for line in (folder / "tracks.txt").read_text().splitlines(keepends=True) if int(line.split(",")[0]) % 4 == 1]
    (folder / "tracks.txt").write_text("".join(rows))  # every 4th source frame (1, 5, 9...), as a strided run writes
    record = json.loads((folder / "run.json").read_text())
    record["config"]["source"]["stride"], record["frames_read"] = 4, 25
    (folder / "run.json").write_text(json.dumps(record))
    update_identities(run, PipelineConfig(), progress=False)
    store = TrackStore.open(run / "store")
    unlikely = {t.track_id for o in identity_overviews(run, store) if not o.likely_person for t in o.tracks}
    assert unlikely == {2}


def test_report_timelines_have_a_time_axis_and_room_for_long_camera_names(tmp_path: Path):
    eye = np.eye(8, dtype=np.float32)
    run = tmp_path / "run"
    name = "one-by-one-person-detection"  # 27 characters ran past the 90-pixel gutter, under the bars
    write_camera(run, name, [summary(name, 1, 0.0, 3.0, eye[0])], video=False)
    write_camera(run, "door", [summary("door", 1, 1.0, 4.0, eye[1])], video=False)
    update_identities(run, PipelineConfig(), progress=False)
    page = (run / "report.html").read_text()
    svg = re.search(r"<svg.*?</svg>", page).group(0)
    times = re.findall(r'class="time">([^<]*)<', svg)
    assert times == ["0 s", "1 s", "2 s", "3 s", "4 s"]  # the run's span, at round steps
    assert f"{name} track 1: 00:00:00.0 - 00:00:03.0, frames" in page  # as `crosscam query` says times (it said 0.0-3.0 s)
    label_end = float(re.search(r'<text x="([\d.]+)"[^>]*class="lane">' + name, svg).group(1))
    first_bar = min(float(x) for x in re.findall(r'<rect x="([\d.]+)"', svg))
    assert label_end >= 7 * len(name) and first_bar > label_end  # right-aligned before the bars begin


def test_an_identity_query_lists_all_of_its_own_appearances_whatever_the_min_score(two_cameras: Path):
    """--identity N --min-score S answered 'no identity reaches the score threshold' for an identity the
    store holds: its own tracks were scored against its mean feature and dropped."""
    update_identities(two_cameras, PipelineConfig(), progress=False)
    person = global_ids(two_cameras / "hall")[1]  # P, seen by hall and door
    everything = query_identity(two_cameras, person, config=PipelineConfig())
    strict = query_identity(two_cameras, person, min_score=0.9999, config=PipelineConfig())
    assert strict.best is not None and strict.best.identity == person
    assert strict.best.appearances == everything.best.appearances and len(strict.best.appearances) == 2


def test_waiting_outputs_take_the_place_of_a_folder_emptied_meanwhile(two_cameras: Path, tmp_path: Path, caplog):
    """A camera folder without tracks.json is no camera folder: its waiting outputs were skipped as
    input, yet put in place, so the store kept the old tracks beside the folder's new ones."""
    update_identities(two_cameras, PipelineConfig(), progress=False)
    write_camera(tmp_path / "new", "hall", [summary("hall", 1, 0.0, 3.0, P)])  # one track, where there were two
    record = json.loads((tmp_path / "new" / "hall" / "run.json").read_text())
    (tmp_path / "new" / "hall").rename(two_cameras / ".hall.retrack")  # as a stopped re-track leaves it
    (two_cameras / "hall" / "tracks.json").unlink()
    result = update_identities(two_cameras, PipelineConfig(), progress=False)
    assert json.loads((two_cameras / "hall" / "run.json").read_text()) == record and "hall" in result.cameras_updated
    assert [t.track_id for t in TrackStore.open(two_cameras / "store").tracks(camera="hall")] == [1]
    assert "no tracks.json" not in caplog.text and not (two_cameras / ".hall.retrack").exists()


def test_two_associations_at_once_take_turns(two_cameras: Path):
    """Both redrew annotated_global.mp4 through one temporary file: the second rename found it gone
    (a traceback). They now hold the run in turn."""
    import threading

    update_identities(two_cameras, PipelineConfig(), progress=False)
    for stamp in two_cameras.glob("*/.annotated_global.stamp"):
        stamp.unlink()  # both draw every camera again
    failures = []

    def associate():
        try:
            update_identities(two_cameras, PipelineConfig(), progress=False)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            failures.append(exc)

    threads = [threading.Thread(target=associate) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == [] and not [p.name for p in two_cameras.iterdir() if p.name.startswith(".")]


def test_a_report_of_many_cameras_draws_each_row_for_its_own_cameras(tmp_path: Path):
    """1200 cameras drew 1200 lanes in every row (a 43 MB page): past 12, a row has its identity's cameras."""
    run = tmp_path / "run"
    people = [P, Q, R]
    for c in range(14):
        write_camera(run, f"cam{c:02d}", [summary(f"cam{c:02d}", 1, 0.0, 3.0, people[c % 3] + 0.01 * E[c % 8])], video=False)
    result = update_identities(run, PipelineConfig(), progress=False)
    page = result.report.read_text()
    rows = page.count("<tr><td class=\"id\"")
    seen = sum(len(o.cameras) for o in identity_overviews(run, TrackStore.open(run / "store"), None))
    assert page.count('class="lane"') == seen < 14 * rows
    assert "Over 12 cameras: each row shows the cameras its identity was seen by." in page


def test_cameras_come_in_the_order_people_count_them(tmp_path: Path):
    run = tmp_path / "run"
    for name in ("cam10", "cam2", "cam1"):
        write_camera(run, name, [summary(name, 1, 0.0, 3.0, P)], video=False)
    result = update_identities(run, PipelineConfig(), progress=False)
    assert result.cameras == ["cam1", "cam2", "cam10"]  # not cam1, cam10, cam2
    assert [c.name for c in TrackStore.open(run / "store").cameras()] == ["cam1", "cam2", "cam10"]
    assert "(3 cameras: cam1, cam2, cam10)" in html.unescape(result.report.read_text())


def test_a_person_seen_by_many_cameras_gets_a_row_of_twelve_pictures(tmp_path: Path):
    run = tmp_path / "run"
    for c in range(14):
        write_camera(run, f"cam{c}", [summary(f"cam{c}", 1, 0.0, 3.0, P + 0.01 * E[c % 8])], video=False)
    page = update_identities(run, PipelineConfig(), progress=False).report.read_text()
    rows = page.split('<tr><td class="id"')[1:]
    seen = max(rows, key=lambda row: row.count("<figure>"))
    assert "14 cameras" in seen and seen.count("<figure>") == 12 and "and 2 cameras more" in seen


def test_a_camera_embedded_with_other_feature_settings_than_the_run_is_said(tmp_path: Path):
    """A camera added without the run's --config (configs/demo.yaml: camera_colour equalize) was embedded
    without the colour table, silently: the embedder is the same, the features are not comparable."""
    from pipeline.identity.identities import feature_settings_apart

    run = tmp_path / "run"
    demo = {"weights": "synthetic", "camera_colour": "equalize", "flip": False, "preprocess": "fast"}
    write_camera(run, "cam1", [summary("cam1", 1, 0.0, 1.0, np.eye(8, dtype=np.float32)[0])], video=False, reid_config=demo)
    reid = PipelineConfig().reid
    assert feature_settings_apart(run, ["cam3"], reid) == ["reid.camera_colour none (the run's: equalize)"]
    assert feature_settings_apart(run, ["cam1"], reid) == []  # tracking a camera again: its own settings do not count
    same = reid.model_copy(update={"camera_colour": "equalize"})
    assert feature_settings_apart(run, ["cam3"], same) == []


def test_damaged_settings_and_records_are_said_plainly_not_as_tracebacks(tmp_path: Path):
    from pipeline.identity.identities import _changes, feature_settings_apart

    now = json.dumps({"association": {"threshold": 0.9}, "transitions": None})
    assert _changes('{"association": null', now) == "changed" and _changes("[1]", now) == "changed"
    assert _changes(json.dumps({"association": {"threshold": 0.8}, "transitions": None}), now) == \
        "changed (association.threshold 0.8 -> 0.9)"
    run = tmp_path / "run"
    folder = write_camera(run, "cam1", [summary("cam1", 1, 0.0, 1.0, np.eye(8, dtype=np.float32)[0])], video=False)
    for damaged in ('{"config": null}', '{"config": {"reid": null}}', "[]", "{not json"):
        (folder / "run.json").write_text(damaged)
        assert feature_settings_apart(run, ["cam2"], PipelineConfig().reid) == []  # nothing to compare: nothing said
