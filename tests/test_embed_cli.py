"""`crosscam embed` and `crosscam weights` end to end, through the CLI entry point."""

from __future__ import annotations

import json
import os
import stat

import cv2
import numpy as np
import pytest
import torch

from pipeline.cli.main import main
from reid import Embedder, zoo


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three small PNG person-like crops with different content."""
    folder = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(3)
    paths = []
    for i in range(3):
        path = folder / f"crop{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (64 + 16 * i, 32, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_embed_writes_features_in_input_order(images, tmp_path, capsys, osnet_onnx):
    out = tmp_path / "feats.npy"
    code, stdout, stderr = run_cli(capsys, "embed", "--reid", osnet_onnx, "--device", "cpu", "--batch-size", "2", "--json", "--out", out, *images)
    assert code == 0 and "embed " in stderr  # the progress bar
    summary = json.loads(stdout)  # stdout is exactly one JSON object
    assert summary["shape"] == [3, 512] and summary["out"] == str(out.resolve())
    features = np.load(out)
    assert features.dtype == np.float32 and features.shape == (3, 512)
    expected = Embedder.from_weights(str(osnet_onnx), device="cpu").embed([cv2.imread(str(p)) for p in images], bgr=True)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)
    reversed_out = tmp_path / "reversed.npy"
    code, _, stderr = run_cli(capsys, "embed", "--reid", osnet_onnx, "--normalize", "--quiet", "--out", reversed_out, *images[::-1])
    assert code == 0 and "embed " not in stderr  # no progress bar
    reversed_features = np.load(reversed_out)
    np.testing.assert_allclose(reversed_features[::-1], expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_default_weights_embed_offline(images, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path / "empty"))
    out = tmp_path / "mobilenet.npy"
    code, stdout, _ = run_cli(capsys, "embed", "--reid", "mobilenetv2_imagenet", "--flip", "--out", out, images[0])
    assert code == 0 and "1 x 1280" in stdout
    assert np.load(out).shape == (1, 1280)


@pytest.mark.parametrize("problem", ["missing image", "unreadable image", "missing weights", "not a checkpoint", "truncated checkpoint"])
def test_bad_input_is_one_error_line_and_keeps_the_old_output(images, tmp_path, capsys, problem):
    out = tmp_path / "feats.npy"
    np.save(out, np.arange(3.0))
    weights, inputs = "mobilenetv2_imagenet", list(images)
    culprit = tmp_path / "culprit"
    if problem == "missing image":
        culprit = tmp_path / "nowhere.jpg"
        inputs.append(culprit)
    elif problem == "unreadable image":
        culprit = tmp_path / "text.jpg"
        culprit.write_text("this is not a JPEG")
        inputs.append(culprit)
    elif problem == "missing weights":
        culprit = tmp_path / "absent.pth"
        weights = culprit
    elif problem == "not a checkpoint":
        culprit = tmp_path / "notes.pth"
        culprit.write_text("hello")
        weights = culprit
    else:
        culprit = tmp_path / "cut.pth"
        full = tmp_path / "full.pth"
        torch.save({"model": {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}}, full)
        culprit.write_bytes(full.read_bytes()[:400])
        weights = culprit
    code, stdout, stderr = run_cli(capsys, "embed", "--reid", weights, "--out", out, *inputs)
    assert code == 2 and stdout == ""
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(culprit) in lines[0]
    np.testing.assert_array_equal(np.load(out), np.arange(3.0))


def test_a_folder_of_images_is_refused_with_the_way_to_pass_its_files(images, tmp_path, capsys):
    folder = images[0].parent
    code, stdout, stderr = run_cli(capsys, "embed", "--reid", "mobilenetv2_imagenet", "--out", tmp_path / "f.npy", folder)
    assert code == 2 and stdout == ""
    assert stderr.strip() == f"error: {folder}: a folder, not an image; pass its image files, e.g. {folder / '*.jpg'}"


@pytest.mark.parametrize("where", ["a folder", "under a file"])
def test_an_unwritable_out_is_refused_before_any_work(tmp_path, capsys, where):
    out = tmp_path
    if where == "under a file":
        (tmp_path / "taken").write_text("x")
        out = tmp_path / "taken" / "feats.npy"
    # the image does not exist either: --out is checked first, before images are read
    code, stdout, stderr = run_cli(capsys, "embed", "--reid", "mobilenetv2_imagenet", "--out", out, tmp_path / "none.jpg")
    assert code == 2 and stdout == ""
    assert stderr.startswith(f"error: --out {out}: ") and len(stderr.splitlines()) == 1


def test_a_truncated_jpeg_is_embedded_with_a_warning(tmp_path, capsys):
    rng = np.random.default_rng(5)
    whole, cut = tmp_path / "whole.jpg", tmp_path / "cut.jpg"
    cv2.imwrite(str(whole), rng.integers(0, 256, (128, 64, 3), dtype=np.uint8))
    cut.write_bytes(whole.read_bytes()[:-400])
    out = tmp_path / "feats.npy"
    code, stdout, stderr = run_cli(capsys, "embed", "--reid", "mobilenetv2_imagenet", "--out", out, whole, cut)
    assert code == 0 and "2 x 1280" in stdout and np.load(out).shape == (2, 1280)
    warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {cut}: does not end with a JPEG end-of-image marker")


def test_weights_list_json_and_table(capsys):
    code, stdout, _ = run_cli(capsys, "weights", "list", "--json")
    listing = json.loads(stdout)
    names = {row["name"]: row for row in listing["weights"]}
    assert code == 0 and names["mobilenetv2_imagenet"]["on_disk"] and names["market_bot_R50"]["loadable"]
    assert names["market_sbs_R101-ibn"]["loadable"] and names["duke_mgn_R50-ibn"]["loadable"]
    assert names["market_bot_R50"]["published"]["rank1"] == 0.944  # a fraction, as benchmark --json's rank1 (was 94.4)
    code, stdout, _ = run_cli(capsys, "weights", "list")
    assert code == 0 and "market_bot_R50" in stdout and "downloads go to" in stdout
    assert " 94.4  86.1" in next(line for line in stdout.splitlines() if line.startswith("market_bot_R50 "))
    assert all(str(row["dataset"]) in stdout for row in listing["weights"])  # dataset names whole, not cut


def test_weights_download_reports_the_path(capsys):
    code, stdout, _ = run_cli(capsys, "weights", "download", "mobilenetv2_imagenet")
    assert code == 0 and stdout.strip() == str(zoo.get_entry("mobilenetv2_imagenet").local_path())
    code, stdout, _ = run_cli(capsys, "weights", "download", "mobilenetv2_imagenet", "--json")
    assert code == 0 and json.loads(stdout)["downloaded"] is False  # on disk: a script can tell (stderr said so alone)
    code, _, stderr = run_cli(capsys, "weights", "download", "nope")
    assert code == 2 and "error: nope: not a known weights name" in stderr


def test_embed_output_is_readable_like_the_users_other_files(images, tmp_path, capsys):
    """The .npy is renamed into place from a temporary file (0o600): it gets the umask's mode; an
    --out that is not .npy is refused (numpy.save's data under another name)."""
    out = tmp_path / "f.npy"
    old = os.umask(0o022)
    try:
        code, _, _ = run_cli(capsys, "embed", "--reid", "mobilenetv2_imagenet", "--out", out, images[0])
    finally:
        os.umask(old)
    assert code == 0 and stat.S_IMODE(out.stat().st_mode) == 0o644
    code, _, err = run_cli(capsys, "embed", "--reid", "mobilenetv2_imagenet", "--out", tmp_path / "f.txt", images[0])
    assert code == 2 and "must end in .npy" in err and not (tmp_path / "f.txt").exists()


def test_ctrl_c_while_embedding_says_nothing_was_written(images, tmp_path, capsys, osnet_onnx, monkeypatch):
    """It exited 130 without a word."""
    def stopped(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Embedder, "embed", stopped)
    code, _, err = run_cli(capsys, "embed", "--reid", osnet_onnx, "--quiet", "--out", tmp_path / "f.npy", *images)
    assert code == 130 and err == f"interrupted while embedding: nothing written to {tmp_path / 'f.npy'}\n"
    assert not (tmp_path / "f.npy").exists()
