"""The synthetic scene generator: determinism, ground-truth consistency and its difficulty knobs."""

import json

import numpy as np
import pytest

from pipeline.cli.main import main
from pipeline.metrics import evaluate_mtmc, read_mot_file
from samples import CameraRenderer, SceneOptions, build_scene, make_scene, make_textures

from conftest import read_video_frames

# Small and short: 2 cameras x 12 frames of 192x108 render in about a second; each of the 8
# people is inside some view at some moment, so both cameras see someone.
SMALL = dict(cameras=2, people=8, seconds=4, fps=3, width=192, height=108, min_height=0)


@pytest.fixture(scope="module")
def small_scene_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("scene")
    make_scene(SceneOptions(seed=3, **SMALL), out, progress=False)
    return out


def test_same_seed_gives_identical_videos_and_ground_truth(small_scene_dir, tmp_path):
    make_scene(SceneOptions(seed=3, **SMALL), tmp_path, progress=False)
    assert json.loads((tmp_path / "scene.json").read_text()) == json.loads((small_scene_dir / "scene.json").read_text())
    for cam in ("cam1", "cam2"):
        assert (tmp_path / "gt" / f"{cam}.txt").read_text() == (small_scene_dir / "gt" / f"{cam}.txt").read_text()
        again, first = read_video_frames(tmp_path / f"{cam}.mp4"), read_video_frames(small_scene_dir / f"{cam}.mp4")
        assert len(first) == SceneOptions(**SMALL).num_frames
        assert all(np.array_equal(a, b) for a, b in zip(again, first))
    other = build_scene(SceneOptions(seed=4, **SMALL)).describe()
    assert other["people"] != json.loads((small_scene_dir / "scene.json").read_text())["people"]


def test_ground_truth_is_consistent_with_the_scene(small_scene_dir):
    scene = json.loads((small_scene_dir / "scene.json").read_text())
    width, height = scene["frame_size"]
    people = {p["id"] for p in scene["people"]}
    rebuilt = build_scene(SceneOptions(**scene["options"]))
    for index, cam in enumerate(scene["cameras"]):
        gt = read_mot_file(small_scene_dir / "gt" / f"{cam['name']}.txt", "gt")
        assert len(gt), f"nobody visible in {cam['name']}"
        frame, pid, x, y, w, h, flag, cls, vis = gt.T
        assert (x >= 0).all() and (y >= 0).all() and (w > 0).all() and (h > 0).all()
        assert (x + w <= width).all() and (y + h <= height).all()
        assert set(pid.astype(int)) <= people
        assert ((vis > 0) & (vis <= 1)).all()
        assert set(np.unique(cls)) <= {1, 8} and ((flag == 1) == (cls == 1)).all()
        assert ((frame >= 1) & (frame <= scene["num_frames"])).all()
        # The global id names the same person in every camera: that person's position in the world,
        # projected into this camera, lies inside the box (between the feet and the head).
        camera = rebuilt.cameras[index]
        for row in gt:
            person = rebuilt.people[int(row[1]) - 1]
            position, _, _ = person.place((row[0] - 1) / scene["fps"])
            uv, _ = camera.project(np.array([[*position, person.height * 0.5]]))
            u, v = np.clip(uv[0], 0, [width, height])  # a box cut by the frame edge holds the clipped point
            assert row[2] - 2 <= u <= row[2] + row[4] + 2 and row[3] - 2 <= v <= row[3] + row[5] + 2


def test_demo_scene_walkers_cross_several_views():
    """In the demo-sized scene most people pass through two or more cameras (projection only, no rendering)."""
    scene = build_scene(SceneOptions(seed=0))
    o = scene.options
    w, h = o.width, o.height
    views_per_person = []
    for person in scene.people:
        views = set()
        for k in range(o.num_frames):
            place = person.place(k / o.fps)
            if place is None:
                continue
            for camera in scene.cameras:
                uv, depth = camera.project(np.array([[*place[0], person.height / 2]]))
                if depth[0] > 0 and 0 <= uv[0, 0] < w and 0 <= uv[0, 1] < h:
                    views.add(camera.name)
        views_per_person.append(len(views))
    assert min(views_per_person) >= 1
    assert sum(v >= 2 for v in views_per_person) >= len(scene.people) / 2


def test_boxes_fit_the_rendered_figures():
    """With the camera look off, pixels that differ from the empty background are the figures:
    a fully visible person's box is covered by them and touches them on all four sides."""
    scene = build_scene(SceneOptions(seed=5, lighting=0, noise=0, blur=0, **SMALL))
    renderer = CameraRenderer(scene, 0, make_textures(scene))
    checked = 0
    for k in range(0, scene.options.num_frames, 3):
        image, rows = renderer.render(k, look=False)
        changed = (image != renderer.background).any(axis=2)
        for _, _, x, y, w, h, _, _, vis in rows:
            if vis < 1.0:
                continue
            box = changed[y : y + h, x : x + w]
            assert box.mean() > 0.15
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
            checked += 1
        covered = np.zeros_like(changed)
        for _, _, x, y, w, h, *_ in rows:
            covered[y : y + h, x : x + w] = True
        assert not (changed & ~covered).any(), "figure pixels outside every gt box"
    assert checked > 0


def test_lookalike_knob_dresses_pairs_alike():
    people = build_scene(SceneOptions(seed=2, people=8, lookalikes=3)).people
    pairs = [(people[p.lookalike_of - 1], p) for p in people if p.lookalike_of is not None]
    assert len(pairs) == 3
    for a, b in pairs:
        looks = ("shirt", "pants", "skin", "hair", "long_sleeves", "bag_colour")
        assert [getattr(a, k) for k in looks] == [getattr(b, k) for k in looks]
        differences = [a.pattern != b.pattern, abs(a.height - b.height) > 0.05, a.bag != b.bag]
        assert sum(differences) == 1
    assert all(p.lookalike_of is None for p in build_scene(SceneOptions(seed=2, people=8, lookalikes=0)).people)


def occluded_share(occlusion: float) -> float:
    """Share of gt rows, away from the frame border, whose figure is partly hidden."""
    options = SceneOptions(seed=1, occlusion=occlusion, cameras=2, people=8, seconds=8, fps=2, width=240, height=135)
    scene = build_scene(options)
    textures = make_textures(scene)
    hidden = total = 0
    for index in range(len(scene.cameras)):
        renderer = CameraRenderer(scene, index, textures)
        for k in range(options.num_frames):
            for _, _, x, y, w, h, _, _, vis in renderer.render(k, look=False)[1]:
                if x > 0 and y > 0 and x + w < options.width and y + h < options.height:
                    total += 1
                    hidden += vis < 0.97
    return hidden / max(total, 1)


def test_occlusion_knob_adds_objects_and_hidden_people():
    assert build_scene(SceneOptions(occlusion=0.0)).obstacles == []
    busy = build_scene(SceneOptions(occlusion=1.0))
    assert len(busy.obstacles) >= 5
    assert any(p.walks_with is not None for p in build_scene(SceneOptions(occlusion=1.0, people=20)).people)
    assert occluded_share(1.0) > occluded_share(0.0)


def test_lighting_knob_spreads_the_camera_casts():
    flat = build_scene(SceneOptions(lighting=0.0, cameras=4))
    assert all(c.gains_bgr == (1.0, 1.0, 1.0) and c.gamma == 1.0 for c in flat.cameras)
    strong = build_scene(SceneOptions(lighting=1.0, cameras=4))
    gains = np.array([c.gains_bgr for c in strong.cameras])
    assert np.ptp(gains, axis=0).max() > 0.15  # the same shirt differs by over 15% in some channel


def test_overlap_knob_sets_shared_and_disjoint_views():
    overlapping = build_scene(SceneOptions(cameras=3, overlap=1.0))
    assert len(overlapping.overlapping_pairs) == 2
    for a, b in zip(overlapping.cameras, overlapping.cameras[1:]):
        assert b.x_range[0] < a.x_range[1]
    disjoint = build_scene(SceneOptions(cameras=3, overlap=0.0, gap_m=5.0))
    assert disjoint.overlapping_pairs == []
    for a, b in zip(disjoint.cameras, disjoint.cameras[1:]):
        assert b.x_range[0] - a.x_range[1] == pytest.approx(5.0, abs=0.3)


def test_ground_truth_scores_perfectly_against_itself(small_scene_dir):
    gt = {c: read_mot_file(small_scene_dir / "gt" / f"{c}.txt", "gt") for c in ("cam1", "cam2")}
    scores = evaluate_mtmc(gt, {c: rows[rows[:, 6] == 1][:, :6] for c, rows in gt.items()})
    assert scores.mtmc.idf1 == 1.0 and all(s.mota == 1.0 for s in scores.cameras.values())


def test_cli_make_and_bad_option(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    args = ["samples", "make", "--out", tmp_path.name, "--cameras", "1", "--people", "2", "--seconds", "1",
            "--fps", "4", "--width", "128", "--height", "72", "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cameras"] == ["cam1"] and summary["num_frames"] == 4
    assert summary["out"] == str(tmp_path.resolve())  # absolute, as track's and query's paths (it was "scene" as typed)
    assert (tmp_path / "cam1.mp4").is_file() and (tmp_path / "gt" / "cam1.txt").is_file()
    assert not list(tmp_path.rglob("*.tmp*"))
    assert main(["samples", "make", "--out", str(tmp_path / "x"), "--people", "2", "--lookalikes", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --lookalikes 2") and err.count("\n") == 1
    assert main(["samples", "make", "--out", str(tmp_path / "cam1.mp4"), "--seconds", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "cam1.mp4: exists and is not a folder" in err and err.count("\n") == 1


def test_make_never_replaces_files_it_did_not_write(tmp_path, capsys):
    """Scene videos went into any folder, over a user's own cam1.mp4 (the demo refused that already)."""
    small = ["--cameras", "1", "--people", "2", "--seconds", "1", "--fps", "4", "--width", "128", "--height", "72"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "cam1.mp4").write_bytes(b"my own video")
    assert main(["samples", "make", "--out", str(tmp_path / "mine"), *small]) == 2
    assert "holds files that are not a crosscam scene (cam1.mp4; no scene.json)" in capsys.readouterr().err
    assert (tmp_path / "mine" / "cam1.mp4").read_bytes() == b"my own video"
    assert main(["samples", "make", "--out", str(tmp_path / "scene"), *small]) == 0  # a scene can be made again
    assert main(["samples", "make", "--out", str(tmp_path / "scene"), *small, "--seed", "5"]) == 0
    (tmp_path / "file").write_text("x")
    assert main(["samples", "make", "--out", str(tmp_path / "file" / "sub"), *small]) == 2
    assert "cannot make this folder" in capsys.readouterr().err
    assert main(["samples", "make", "--out", str(tmp_path / "neg"), *small, "--seed", "-1"]) == 2  # was a traceback
    assert not (tmp_path / "neg").exists()


def test_a_make_stopped_midway_can_be_made_again(tmp_path, monkeypatch, capsys):
    """Ctrl-C after the first camera left cam1.mp4 without scene.json, and every later make into the
    folder was refused as 'not a crosscam scene'."""
    import samples.make as make

    small = ["--cameras", "2", "--people", "2", "--seconds", "1", "--fps", "4", "--width", "128", "--height", "72"]
    real_render = make.CameraRenderer.render

    def stop_on_cam2(self, k):
        if self.index == 1:
            raise KeyboardInterrupt
        return real_render(self, k)

    monkeypatch.setattr(make.CameraRenderer, "render", stop_on_cam2)
    assert main(["samples", "make", "--out", str(tmp_path / "scene"), *small]) == 130
    assert sorted(p.name for p in (tmp_path / "scene").iterdir()) == [".making", "gt"]  # no file cut short, none half
    monkeypatch.setattr(make.CameraRenderer, "render", real_render)
    assert main(["samples", "make", "--out", str(tmp_path / "other"), *small]) == 0  # a complete scene, made again
    whole = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "other").rglob("*") if p.is_file()}
    monkeypatch.setattr(make.CameraRenderer, "render", stop_on_cam2)  # with another seed, and stopped midway:
    assert main(["samples", "make", "--out", str(tmp_path / "other"), *small, "--seed", "3"]) == 130
    # the earlier scene stays whole (cam1 of the new one replaced its video, and scene.json was gone)
    assert {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "other").rglob("*") if p.is_file()} == whole
    assert "interrupted: " in capsys.readouterr().err  # said nothing
    monkeypatch.setattr(make.CameraRenderer, "render", real_render)
    one = [a if a != "2" else "1" for a in small]  # --cameras 1 over a 2-camera scene: cam2 goes
    assert main(["samples", "make", "--out", str(tmp_path / "other"), *one]) == 0
    assert sorted(p.name for p in (tmp_path / "other").rglob("*") if p.is_file()) == ["cam1.mp4", "cam1.txt", "scene.json"]
    monkeypatch.setattr(make.CameraRenderer, "render", real_render)
    assert main(["samples", "make", "--out", str(tmp_path / "scene"), *small]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "scene").iterdir()) == ["cam1.mp4", "cam2.mp4", "gt", "scene.json"]


def test_quiet_make_writes_nothing_to_stderr(tmp_path, capfd):
    small = ["--cameras", "1", "--people", "2", "--seconds", "1", "--fps", "4", "--width", "128", "--height", "72"]
    assert main(["samples", "make", "--out", str(tmp_path / "a"), *small]) == 0
    assert "rendering" in capfd.readouterr().err  # the progress bar, without --quiet
    assert main(["samples", "make", "--out", str(tmp_path / "b"), *small, "--quiet"]) == 0
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out.startswith("wrote 1 camera x 4 frames to ")
