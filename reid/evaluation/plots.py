"""Pictures of an evaluation: rank lists, the ROC curve, genuine/impostor distance histograms.

Drawn with matplotlib's Agg canvas (no display, no pyplot global state) and written atomically
(temporary file, then rename), so a failed run never leaves half a PNG.

>>> import numpy as np
>>> from reid.evaluation.ranking import evaluate_ranking
>>> dist = np.array([[0.1, 0.5], [0.9, 0.2]], np.float32)
>>> result = evaluate_ranking(dist, np.array([1, 2]), np.array([1, 2]), np.array([0, 0]), np.array([1, 1]))
>>> select_queries(result, "worst", 1).tolist()
[0]
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reid.errors import CrosscamError
from reid.evaluation.ranking import RankingResult
from reid.paths import written_atomically
from reid.evaluation.roc import RocResult

CORRECT, WRONG, QUERY = "#1a9850", "#d73027", "#4575b4"


def select_queries(result: RankingResult, which: str = "worst", count: int = 8) -> np.ndarray:
    """Indices of the ``count`` valid queries with the lowest (``worst``) or highest (``best``) AP."""
    if which not in ("best", "worst"):
        raise CrosscamError(f"query selection {which!r}: unknown; use best or worst")
    valid = np.flatnonzero(result.valid)
    order = np.argsort(result.ap[valid], kind="stable")
    chosen = order[:count] if which == "worst" else order[::-1][:count]
    return valid[chosen]


def top_matches(distances: np.ndarray, q_pid: int, q_camid: int, g_pids, g_camids, k: int) -> np.ndarray:
    """The k nearest gallery indices of one query row, junk (same id and camera) left out."""
    distances = np.where((g_pids == q_pid) & (g_camids == q_camid), np.inf, distances)
    k = min(k, int(np.isfinite(distances).sum()))
    nearest = np.argpartition(distances, k - 1)[:k] if 0 < k < len(distances) else np.flatnonzero(np.isfinite(distances))
    return nearest[np.argsort(distances[nearest], kind="stable")]


# Rank-list cell geometry in pixels: the crop, its coloured border, the caption strip below.
_CROP_H, _CROP_W, _BORDER, _CAPTION_H, _GAP = 160, 80, 5, 36, 8
_PAD = (200, 200, 200)  # grey around a crop narrower or wider than the 1:2 cell


def plot_rank_lists(
    path: str | Path,
    distmat: np.ndarray,
    query_paths: Sequence[str | Path],
    gallery_paths: Sequence[str | Path],
    q_pids, g_pids, q_camids, g_camids,
    query_indices: Sequence[int],
    top_k: int = 10,
    title: str = "",
    query_ap: np.ndarray | None = None,
) -> Path:
    """One row per query: the query crop (blue), then its top_k gallery crops (green = same
    person, red = wrong), each captioned with its rank, distance, person id and camera.

    The crops are pasted into one mosaic image and captioned on a single axes: one matplotlib
    axes per crop would be ~50x slower.
    """
    if len(query_indices) == 0:
        raise CrosscamError("rank list: no queries to draw")
    cell_w = _CROP_W + 2 * _BORDER + _GAP
    cell_h = _CROP_H + 2 * _BORDER + _CAPTION_H + _GAP
    query_gap = 3 * _GAP  # sets the query column apart
    mosaic = np.full((cell_h * len(query_indices), cell_w * (top_k + 1) + query_gap, 3), 255, np.uint8)
    captions = []
    for row, q in enumerate(query_indices):
        caption = f"query {q_pids[q]}\ncam {q_camids[q]}" + (f"  AP {query_ap[q]:.2f}" if query_ap is not None else "")
        cells = [(query_paths[q], QUERY, caption, "black")]
        for rank, g in enumerate(top_matches(distmat[q], q_pids[q], q_camids[q], g_pids, g_camids, top_k)):
            color = CORRECT if g_pids[g] == q_pids[q] else WRONG
            cells.append((gallery_paths[g], color, f"#{rank + 1} d={distmat[q, g]:.3f}\nid {g_pids[g]} cam {g_camids[g]}", color))
        for col, (image_path, color, text, text_color) in enumerate(cells):
            x = col * cell_w + (query_gap if col else 0)
            y = row * cell_h
            _paste_crop(mosaic, y, x, image_path, color)
            captions.append((x + cell_w / 2 - _GAP / 2, y + _CROP_H + 2 * _BORDER + 2, text, text_color))

    dpi = 100
    title_h = 30 if title else 0
    fig = Figure(figsize=(mosaic.shape[1] / dpi, (mosaic.shape[0] + title_h) / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, mosaic.shape[0] / (mosaic.shape[0] + title_h)))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for x, y, text, color in captions:
        ax.text(x, y, text, ha="center", va="top", fontsize=8, color=color, linespacing=1.15)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.5 * title_h / (mosaic.shape[0] + title_h), va="center")
    return _save(fig, path)


def _paste_crop(mosaic: np.ndarray, y: int, x: int, image_path, color: str) -> None:
    image = cv2.imread(str(image_path))
    if image is None:
        raise CrosscamError(f"{image_path}: cannot read this image; check the dataset files")
    h, w = image.shape[:2]
    scale = min(_CROP_W / w, _CROP_H / h)  # the person's shape kept, padded with grey (not stretched)
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    crop = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (cw, ch), interpolation=cv2.INTER_AREA)
    rgb = tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
    mosaic[y : y + _CROP_H + 2 * _BORDER, x : x + _CROP_W + 2 * _BORDER] = rgb
    mosaic[y + _BORDER : y + _BORDER + _CROP_H, x + _BORDER : x + _BORDER + _CROP_W] = _PAD
    top, left = y + _BORDER + (_CROP_H - ch) // 2, x + _BORDER + (_CROP_W - cw) // 2
    mosaic[top : top + ch, left : left + cw] = crop


def plot_roc(path: str | Path, roc: RocResult, title: str = "") -> Path:
    """TAR against FAR (log scale), with the TAR@FAR targets marked."""
    fig = Figure(figsize=(6, 4.5), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    keep = roc.far_curve > 0
    ax.plot(roc.far_curve[keep], roc.tar_curve[keep], color=QUERY, linewidth=2, label="ROC")
    for far, tar in roc.tar_at_far.items():
        ax.plot([far], [tar], "o", color=WRONG)
        ax.annotate(
            f"TAR {tar:.3f} @ FAR {far:.0e}", (far, tar), textcoords="offset points", xytext=(-8, 10), fontsize=8,
            ha="right", bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
        )
    ax.set_xscale("log")
    ax.set_xlim(max(1e-5, 0.3 / max(roc.num_impostor, 1)), 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false accept rate (impostor pairs accepted)")
    ax.set_ylabel("true accept rate (genuine pairs accepted)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or f"ROC: {roc.num_genuine:,} genuine, {roc.num_impostor:,} impostor pairs", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_distance_histograms(path: str | Path, roc: RocResult, title: str = "", xlabel: str = "distance") -> Path:
    """Genuine and impostor distance distributions (each normalised to unit area) and the
    suggested threshold."""
    fig = Figure(figsize=(6, 4.0), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    edges = roc.histogram_edges
    widths = np.diff(edges)
    for counts, color, label in (
        (roc.genuine_histogram, CORRECT, f"genuine ({roc.num_genuine:,})"),
        (roc.impostor_histogram, WRONG, f"impostor ({roc.num_impostor:,})"),
    ):
        density = counts / max(counts.sum(), 1) / widths
        ax.stairs(density, edges, color=color, fill=True, alpha=0.45, label=label)
    ax.axvline(roc.suggested_threshold, color="black", linestyle="--",
               label=f"threshold {roc.suggested_threshold:.3f} (largest TAR - FAR)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(title or "distance of genuine vs impostor pairs", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    with written_atomically(path) as handle:  # a full disk leaves no half-written picture beside the others
        fig.savefig(handle, format=path.suffix.lstrip(".") or "png")
    return path
