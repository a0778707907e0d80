"""Rank-list, ROC and histogram pictures: drawn, sized by their content, correct/wrong colours."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from reid.errors import CrosscamError
from reid.evaluation import evaluate_ranking, evaluate_roc
from reid.evaluation.plots import (
    CORRECT,
    WRONG,
    plot_distance_histograms,
    plot_rank_lists,
    plot_roc,
    select_queries,
)


@pytest.fixture
def case(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        path = tmp_path / f"crop{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (120, 50, 3), dtype=np.uint8))
        paths.append(path)
    q_pids, g_pids = np.array([1, 2]), np.array([1, 2, 3, 1, 2, 4])
    q_camids, g_camids = np.array([0, 0]), np.array([1, 1, 1, 1, 1, 1])
    # Query 0 ranks its matches first (AP 1); query 1 ranks them last.
    distmat = np.array([[0.1, 0.5, 0.6, 0.2, 0.7, 0.8], [0.3, 0.9, 0.1, 0.2, 0.95, 0.4]])
    return distmat, paths[:2], paths[2:], q_pids, g_pids, q_camids, g_camids


def border_colours(image_bgr):
    """Distinct saturated colours present in the picture, as '#rrggbb'."""
    rgb = image_bgr[..., ::-1].reshape(-1, 3)
    return {"#%02x%02x%02x" % tuple(c) for c in np.unique(rgb, axis=0)}


def test_select_queries_orders_by_ap(case):
    distmat, _, _, *ids = case
    result = evaluate_ranking(distmat, *ids)
    assert select_queries(result, "best", 1).tolist() == [0]
    assert select_queries(result, "worst", 2).tolist() == [1, 0]
    with pytest.raises(CrosscamError):
        select_queries(result, "median")


def test_rank_list_has_one_row_per_query_and_both_colours(case, tmp_path):
    distmat, query_paths, gallery_paths, *ids = case
    one = cv2.imread(str(plot_rank_lists(tmp_path / "one.png", distmat, query_paths, gallery_paths, *ids, [0], top_k=4)))
    two = cv2.imread(str(plot_rank_lists(tmp_path / "two.png", distmat, query_paths, gallery_paths, *ids, [0, 1], top_k=4)))
    assert one.shape[1] == two.shape[1] and two.shape[0] > 1.8 * one.shape[0]
    colours = border_colours(two)
    assert CORRECT in colours and WRONG in colours
    assert not list(tmp_path.glob(".*tmp*")), "temporary files must be renamed away"


def test_rank_list_unreadable_image_is_a_clear_error(case, tmp_path):
    distmat, query_paths, gallery_paths, *ids = case
    with pytest.raises(CrosscamError, match="cannot read"):
        plot_rank_lists(tmp_path / "x.png", distmat, [tmp_path / "missing.png"] * 2, gallery_paths, *ids, [0])


def test_roc_and_histogram_pictures(case, tmp_path):
    distmat, _, _, *ids = case
    roc = evaluate_roc(distmat, *ids)
    for path in (plot_roc(tmp_path / "roc.png", roc), plot_distance_histograms(tmp_path / "hist.png", roc)):
        image = cv2.imread(str(path))
        assert image is not None and image.shape[0] > 200 and image.shape[1] > 300


def test_rank_list_crops_keep_their_shape(tmp_path):
    # CUHK03 crops are 0.24-0.53 as wide as high: forced into the 1:2 cell they were stretched up to 2x wide.
    from reid.evaluation.plots import _BORDER, _CROP_H, _CROP_W, _PAD, _paste_crop

    narrow = tmp_path / "narrow.png"
    cv2.imwrite(str(narrow), np.full((120, 30, 3), (0, 0, 255), np.uint8))  # red, 1:4
    mosaic = np.zeros((_CROP_H + 2 * _BORDER, _CROP_W + 2 * _BORDER, 3), np.uint8)
    _paste_crop(mosaic, 0, 0, narrow, CORRECT)
    cell = mosaic[_BORDER:-_BORDER, _BORDER:-_BORDER]
    red = np.all(cell == (255, 0, 0), axis=2)
    columns = np.flatnonzero(red.any(axis=0))
    assert red.any(axis=1).all() and columns.size == 40  # full height, 160 / 4 wide
    assert tuple(cell[80, 0]) == _PAD and tuple(cell[80, -1]) == _PAD


def test_markdown_report_says_rates_in_percent_and_what_they_mean():
    from reid.evaluation.report import markdown_report

    text = markdown_report({"rank1": 0.3317, "mAP": 0.333, "num_valid_query": 199, "num_query": 200,
                            "TAR@FAR=1e-03": 0.0556, "fastreid_TPR@FPR=1e-03": 0.1351,
                            "suggested_threshold": 0.4264}, {})
    # TAR was a fraction (0.0556) beside ranks in percent, and nothing told the two TAR rows apart
    assert "| TAR@FAR=1e-03 | 5.56% |" in text and "| fastreid_TPR@FPR=1e-03 | 13.51% |" in text
    assert "not comparable with TAR@FAR" in text and "199 of 200" in text and "| suggested_threshold | 0.4264 |" in text
