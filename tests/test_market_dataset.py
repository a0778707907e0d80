"""MarketDataset on a generated tree (junk, distractors, errors) and on the real CUHK03 copy."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from reid.data import MarketDataset
from reid.errors import CrosscamError


def make_tree(root: Path, files: dict[str, list[str]]) -> Path:
    pixel = np.zeros((8, 4, 3), np.uint8)
    for split, names in files.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            cv2.imwrite(str(root / split / name), pixel)
    return root


@pytest.fixture
def tree(tmp_path):
    return make_tree(
        tmp_path / "Market-1501-v15.09.15",
        {
            "query": ["0001_c1s1_000151_00.jpg", "0002_c3s1_000201_00.jpg"],
            "bounding_box_test": [
                "-1_c1s1_000401_03.jpg",  # junk: dropped
                "0000_c6s1_000501_02.jpg",  # distractor: kept
                "0001_c2s1_000301_01.jpg",
                "0002_c1s1_000451_00.jpg",
            ],
            "bounding_box_train": ["0005_c4s2_000101_00.jpg"],
        },
    )


def test_reads_ids_cameras_and_drops_junk(tree):
    dataset = MarketDataset(tree)
    assert dataset.pids("query").tolist() == [1, 2]
    assert dataset.camids("query").tolist() == [1, 3]
    assert dataset.pids("gallery").tolist() == [0, 1, 2]
    assert dataset.camids("gallery").tolist() == [6, 2, 1]
    assert [image.pid for image in dataset.train] == [5]
    assert all(path.is_file() for path in dataset.paths("gallery"))


def test_parent_folder_is_accepted(tree):
    assert MarketDataset(tree.parent).root == tree


def test_wrong_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CrosscamError, match="not a Market-1501-layout dataset"):
        MarketDataset(tmp_path)
    with pytest.raises(CrosscamError, match="not found"):
        MarketDataset(tmp_path / "missing")


def test_empty_split_is_a_clear_error(tmp_path):
    root = make_tree(tmp_path, {"query": ["0001_c1s1_000151_00.jpg"], "bounding_box_test": ["-1_c1s1_000401_03.jpg"]})
    with pytest.raises(CrosscamError, match=r"bounding_box_test: no person images in this split \(only junk ones, id -1, or none\)"):
        MarketDataset(root).gallery


def test_unparsable_names_are_listed(tmp_path):
    root = make_tree(
        tmp_path, {"query": ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "0001_c1s1_000151_00.jpg"], "bounding_box_test": ["x.jpg"]}
    )
    with pytest.raises(CrosscamError, match=r"4 image names .* a.jpg, b.jpg, c.jpg \(and 1 more\)"):
        MarketDataset(root).query


def test_real_cuhk03_copy(cuhk03_market):
    dataset = MarketDataset(cuhk03_market)
    assert (len(dataset.query), len(dataset.gallery), len(dataset.train)) == (200, 738, 7239)
    assert set(dataset.camids("gallery").tolist()) == {1, 2}
    assert len(set(dataset.pids("train").tolist())) == 743
    assert set(dataset.pids("query").tolist()) == set(dataset.pids("gallery").tolist())


def test_msmt17_as_distributed_reads_from_its_lists(tmp_path):
    """MSMT17's own layout (list_*.txt beside test/ and train/; the camera in the name's third field)
    was refused as "not a Market-1501-layout dataset"."""
    root = tmp_path / "MSMT17_V1"
    lines = {"list_query.txt": [("0000/0000_003_01_0303morning_0015_0.jpg", 0)],
             "list_gallery.txt": [("0000/0000_011_07_0303noon_0042_1.jpg", 0), ("0001/0001_002_15_0303afternoon_0001_0.jpg", 1)],
             "list_train.txt": [("0000/0000_000_01_0303morning_0008_0.jpg", 0)]}
    for name, entries in lines.items():
        folder = root / ("train" if name == "list_train.txt" else "test")
        for relative, _ in entries:
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / relative), np.full((64, 32, 3), 128, np.uint8))
        (root / name).write_text("".join(f"{relative} {pid}\n" for relative, pid in entries))
    dataset = MarketDataset(tmp_path)  # its parent works too
    assert dataset.root == root
    assert dataset.pids("gallery").tolist() == [0, 1] and dataset.camids("gallery").tolist() == [7, 15]
    assert dataset.camids("query").tolist() == [1] and dataset.paths("train")[0].is_file()
    (root / "list_gallery.txt").write_text("\ufeff0001/0001_002_15_0303afternoon_0001_0.jpg 1\n"  # a BOM, a junk row
                                           "0000/0000_011_07_0303noon_0042_1.jpg -1\n")
    assert MarketDataset(root).pids("gallery").tolist() == [1]
    (root / "list_gallery.txt").write_text("0001/0001_002_15_0303afternoon_0001_0.jpg 1\n0002/missing_01_02_x.jpg 2\n")
    with pytest.raises(CrosscamError, match="lists .*missing_01_02_x.jpg, which is not there"):
        MarketDataset(root).gallery
