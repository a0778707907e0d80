"""``crosscam benchmark`` end to end with the real OSNet ONNX model on the CUHK03 copy, the
feature cache, and ``crosscam evaluate-ranking``."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
from conftest import shared_path
from test_evaluation_ranking import market_like_case

from pipeline.cli.main import main
from reid import Embedder, MarketDataset, evaluate_ranking
from reid.benchmark import dataset_features

JSON_KEYS = {"rank1", "rank5", "rank10", "mAP", "mINP", "num_query", "num_gallery", "num_valid_query"}


def run_cli(args: list[str]) -> tuple[int, str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(args)
    return code, stdout.getvalue()


@pytest.fixture(scope="module")
def osnet_run(tmp_path_factory):
    """One real benchmark run (about 30 s on 2 cores), shared by the tests below."""
    root = shared_path("data/cuhk03-market")
    weights = shared_path("weights/osnet_x0_25_msmt17.onnx")
    out = tmp_path_factory.mktemp("bench")
    code, stdout = run_cli(["benchmark", str(root), "--reid", str(weights), "--device", "cpu", "--out", str(out), "--json"])
    return root, weights, out, code, stdout


def chance_rank1(dataset: MarketDataset) -> float:
    """Expected rank-1 of a random ranking: per valid query, positives / candidates."""
    q_pids, g_pids = dataset.pids("query"), dataset.pids("gallery")
    q_cams, g_cams = dataset.camids("query"), dataset.camids("gallery")
    same = q_pids[:, None] == g_pids[None, :]
    junk = same & (q_cams[:, None] == g_cams[None, :])
    positives = (same & ~junk).sum(1)
    valid = positives > 0
    return float(np.mean(positives[valid] / (~junk).sum(1)[valid]))


def test_benchmark_json_and_report(osnet_run):
    root, _, out, code, stdout = osnet_run
    assert code == 0
    result = json.loads(stdout)
    assert JSON_KEYS <= set(result)
    assert result["preprocess"] == "parity"  # fast-reid's protocol by default: its PIL bicubic loader
    assert (result["flip"], result["metric"], result["rerank"], result["aqe"]) == (False, "cosine", False, False)
    assert (result["num_query"], result["num_gallery"]) == (200, 738)
    assert result["rank1"] > 10 * chance_rank1(MarketDataset(root))
    assert 0 < result["mINP"] <= result["mAP"] <= 1 and result["rank1"] <= result["rank5"] <= result["rank10"]
    report = json.loads((out / "report.json").read_text())
    assert {key: report[key] for key in JSON_KEYS} == {key: result[key] for key in JSON_KEYS}
    assert report["features_cached"] is False and report["images_per_second"] > 0
    for name in ("report.md", "roc.png", "distance_histogram.png", "ranklist_worst.png", "ranklist_best.png"):
        assert (out / name).stat().st_size > 0, name
    assert "ranklist_worst.png" in (out / "report.md").read_text()


def test_rerun_with_rerank_uses_cached_features(osnet_run):
    root, weights, out, _, first_stdout = osnet_run
    args = ["benchmark", str(root), "--reid", str(weights), "--device", "cpu", "--out", str(out), "--rerank"]
    code, stdout = run_cli([*args, "--save-distances"])
    assert code == 0
    assert "cached features" in stdout and "Rank-1" in stdout
    assert "settings: preprocessing parity, onnxruntime fp32, flip off, metric cosine, rerank on, aqe off" in stdout
    assert "| Dataset " in stdout and "| metric |" in stdout  # fast-reid's own summary table too
    # which pixels the cardless ONNX model got, and on whose word
    assert "pixels: rgb /255, mean [0.485, 0.456, 0.406] std [0.229, 0.224, 0.225] (no model card: the " \
        "torchreid/BoxMOT export convention)" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["features_cached"] is True and report["rerank"] is True and report["preprocess"] == "parity"
    assert "| flip | False |" in (out / "report.md").read_text()  # the settings scored are in both reports
    assert "not a cosine one" in (out / "report.md").read_text()  # a re-ranked threshold is no similarity
    assert json.loads(run_cli([*args, "--json"])[1])["rerank"] is True
    assert report["mAP"] != json.loads(first_stdout)["mAP"]
    # The saved re-ranked distances evaluate to the same numbers.
    code, stdout = run_cli(["evaluate-ranking", str(out / "distances.npz"), "--json"])
    assert code == 0 and json.loads(stdout)["mAP"] == pytest.approx(report["mAP"], abs=1e-12)


def test_changed_model_invalidates_the_cache(tmp_path, cuhk03_market, osnet_onnx):
    # A small copy of the dataset keeps this quick: 3 people.
    for split in ("query", "bounding_box_test"):
        (tmp_path / "data" / split).mkdir(parents=True)
        for path in sorted((cuhk03_market / split).glob("100[123]_*.jpg")):
            shutil.copy(path, tmp_path / "data" / split / path.name)
    dataset = MarketDataset(tmp_path / "data")
    cache = tmp_path / "cache"
    plain = Embedder.from_weights(str(osnet_onnx), device="cpu")
    q1, g1, info1 = dataset_features(dataset, plain, cache, progress=False)
    q2, g2, info2 = dataset_features(dataset, plain, cache, progress=False)
    assert not info1["cached"] and info2["cached"]
    np.testing.assert_array_equal(q1, q2)
    flipped = Embedder.from_weights(str(osnet_onnx), device="cpu", flip=True)
    q3, _, info3 = dataset_features(dataset, flipped, cache, progress=False)
    assert not info3["cached"]
    assert not np.allclose(q1, q3)
    assert len(list(cache.glob("features-*.npz"))) == 2


def test_evaluate_ranking_command(tmp_path):
    case = market_like_case(11, 80, 500, 40, 3, 50, 2)
    path = tmp_path / "dist.npz"
    np.savez(path, **dict(zip(("distmat", "q_pids", "g_pids", "q_camids", "g_camids"), case)))
    code, stdout = run_cli(["evaluate-ranking", str(path), "--json"])
    assert code == 0
    result = json.loads(stdout)
    expected = evaluate_ranking(*case)
    assert result["rank1"] == pytest.approx(expected.rank(1)) and result["mAP"] == pytest.approx(expected.mAP)
    assert (result["num_query"], result["num_gallery"], result["num_valid_query"]) == (80, 500, expected.num_valid_query)
    code, stdout = run_cli(["evaluate-ranking", str(path)])
    assert code == 0 and "mAP" in stdout


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    path = tmp_path / "partial.npz"
    np.savez(path, distmat=np.zeros((2, 2)))
    assert main(["evaluate-ranking", str(path)]) == 2
    assert "missing arrays q_pids" in capsys.readouterr().err
    assert main(["benchmark", str(tmp_path), "--metric", "manhattan"]) == 2
    assert "--metric manhattan" in capsys.readouterr().err
    # a missing dataset is said before a registry model is downloaded (offline: instead of the download's error)
    assert main(["benchmark", str(tmp_path / "Market-1501-v15.09.15"), "--reid", "market_bot_R50"]) == 2
    assert "Market-1501-v15.09.15: dataset folder not found" in capsys.readouterr().err
    dataset = tmp_path / "market"
    for split in ("query", "bounding_box_test"):
        (dataset / split).mkdir(parents=True)
    assert main(["benchmark", str(dataset), "--runtime", "tensorrt"]) == 2
    assert "runtime 'tensorrt': unknown" in capsys.readouterr().err
    assert main(["benchmark", str(dataset), "--precision", "bf16", "--runtime", "onnxruntime"]) == 2
    assert "runs fp32 only" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["npy", "text"])
def test_evaluate_ranking_refuses_what_is_not_an_npz_archive(tmp_path, capsys, kind):
    path = tmp_path / ("distances.npy" if kind == "npy" else "distances.npz")
    if kind == "npy":
        np.save(path, np.zeros((2, 2)))  # was a TypeError traceback
    else:
        path.write_text("distmat\n")  # was blamed on pickled data and allow_pickle
    assert main(["evaluate-ranking", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"error: {path}: not an .npz archive; pass the distances.npz that `crosscam benchmark --save-distances` writes\n"
    )


def test_output_folders_that_are_files_are_one_line(tmp_path, capsys):
    """benchmark --out / --cache-dir and train --out naming a file: one line before any work (were tracebacks)."""
    (tmp_path / "file.txt").write_text("x")
    dataset = tmp_path / "market"
    for split in ("query", "bounding_box_test"):
        (dataset / split).mkdir(parents=True)
    for argv in (["benchmark", str(dataset), "--out", str(tmp_path / "file.txt")],
                 ["benchmark", str(dataset), "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "file.txt")],
                 ["train", "--data", str(tmp_path), "--out", str(tmp_path / "file.txt" / "run")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "is a file, not a folder" in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "market"]


def test_a_file_given_as_the_dataset_is_said_to_be_a_file(tmp_path, capsys):
    (tmp_path / "crop.jpg").write_bytes(b"x")
    assert main(["benchmark", str(tmp_path / "crop.jpg")]) == 2
    assert "crop.jpg: a file, not a dataset folder;" in capsys.readouterr().err  # said 'dataset folder not found'


def test_every_command_that_loads_a_checkpoint_can_trust_it(capsys, monkeypatch, tmp_path):
    """The refusal of a file needing full unpickling says '--trust-checkpoint': benchmark had no such option."""
    for command in ("benchmark", "embed", "export"):
        assert main([command, "--help"]) == 0
        assert "--trust-checkpoint" in capsys.readouterr().out, command
    seen = {}

    class Stop(Exception):
        pass

    def loaded(name, **options):
        seen["loaded"] = options
        return object()

    def ran(root, embedder, out, settings, **options):
        seen["ran"] = options
        raise Stop

    monkeypatch.setattr("reid.Embedder.from_weights", loaded)
    monkeypatch.setattr("reid.run_benchmark", ran)
    from test_training import write_market_folder

    data = write_market_folder(tmp_path / "market")
    with pytest.raises(Stop):  # benchmark hands both options on
        main(["benchmark", str(data), "--reid", "x.pth", "--out", str(tmp_path / "out"), "--trust-checkpoint", "--quiet"])
    assert seen["loaded"]["trust_checkpoint"] is True and seen["ran"]["progress"] is False


def test_a_cut_off_jpeg_in_a_dataset_is_said(tmp_path, caplog):
    """embed warned of a cut-off JPEG; benchmark embedded it silently, and its scores moved."""
    import cv2

    from reid.benchmark import embed_images

    whole, cut = tmp_path / "0001_c1s1_000001_00.jpg", tmp_path / "0001_c2s1_000002_00.jpg"
    cv2.imwrite(str(whole), np.random.default_rng(0).integers(0, 255, (128, 64, 3), dtype=np.uint8))
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])

    class Counting:
        def embed(self, crops, bgr=False):
            return np.zeros((len(crops), 4), np.float32)

    assert embed_images(Counting(), [whole, cut], progress=False).shape == (2, 4)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and f"{cut}: does not end with a JPEG end-of-image marker" in said[0]


def test_a_run_stopped_while_writing_leaves_the_earlier_reports_whole(osnet_run, monkeypatch):
    """A re-run that met a full disk left the new run's ROC beside the old run's report."""
    import errno

    import reid.benchmark

    root, weights, out, _, _ = osnet_run
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "report.json"))

    monkeypatch.setattr(reid.benchmark, "write_report", disk_full)
    code, _ = run_cli(["benchmark", str(root), "--reid", str(weights), "--device", "cpu", "--out", str(out), "--rerank"])
    assert code == 2
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # roc.png included: not the rerank's
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
