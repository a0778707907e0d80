"""Drawing track boxes: one stable colour per id, a label, optional trails.

Any stage that draws identities (per-camera tracks here, global identities later) uses these two
functions, so a given id has the same colour in every video.

>>> image = np.zeros((120, 160, 3), np.uint8)
>>> out = draw_tracks(image, np.array([[10, 10, 60, 100]], np.float32), np.array([7]))
>>> out.shape, bool(out.any()), bool(image.any())  # the input is left untouched
((120, 160, 3), True, False)
"""

from __future__ import annotations

import unicodedata
from typing import Mapping, Sequence

import cv2
import numpy as np

# 20 bright colours (RGB), neighbours in the list far apart in hue and lightness; black text reads on each.
_PALETTE = [
    (255, 80, 80), (80, 200, 80), (80, 150, 255), (255, 210, 0), (255, 130, 0),
    (200, 100, 255), (0, 220, 220), (255, 100, 200), (170, 230, 50), (255, 170, 140),
    (0, 170, 140), (190, 140, 60), (140, 200, 255), (230, 230, 120), (255, 60, 160),
    (120, 120, 255), (130, 255, 170), (210, 170, 255), (100, 255, 100), (60, 200, 255),
]


def color_for_id(track_id: int) -> tuple[int, int, int]:
    """A bright ``(b, g, r)`` colour for ``track_id``: ids 1-20 get 20 far-apart colours (golden-ratio
    hues made ids 2 and 10 two near-equal limes), ids 21-40 lighter ones, then the colours repeat.

    >>> color_for_id(3) == color_for_id(43), color_for_id(3) != color_for_id(23)
    (True, True)
    """
    index = int(track_id) - 1
    r, g, b = _PALETTE[index % len(_PALETTE)]
    if (index // len(_PALETTE)) % 2:  # ids 21-40 (61-80 ...): the same colours, 40 % lighter
        r, g, b = (round(v + 0.4 * (255 - v)) for v in (r, g, b))
    return b, g, r


def draw_tracks(
    image_bgr: np.ndarray,
    xyxy: np.ndarray,
    ids: np.ndarray,
    labels: list[str] | None = None,
    trails: Mapping[int, Sequence[tuple[float, float]]] | None = None,
    dashed: np.ndarray | None = None,
    caption: str | Sequence[str] | None = None,
) -> np.ndarray:
    """Return a copy of ``image_bgr`` with one box per row, coloured by id.

    ``xyxy``: ``(N, 4)`` pixels; ``ids``: ``(N,)`` ints; ``labels``: text per box (default the id);
    ``trails``: per id, past ``(x, y)`` points (e.g. box bottoms) drawn as a fading polyline;
    ``dashed``: ``(N,)`` bool, boxes drawn with a thin dashed outline (interpolated, not detected);
    ``caption``: text (or shorter and shorter texts) drawn first, at the bottom left (:func:`draw_caption`),
    under the boxes.
    """
    out = image_bgr.copy()
    if caption:
        draw_caption(out, caption)
    height, width = out.shape[:2]
    short_side = min(height, width)
    thickness = max(1, round(short_side / 360))
    scale = max(0.4, short_side / 600)  # about 0.7 on a 432-pixel-high frame: readable ids
    for track_id, points in (trails or {}).items():
        _draw_trail(out, points, color_for_id(track_id), thickness)
    boxes = [tuple(int(round(v)) for v in box) for box in np.asarray(xyxy).reshape(-1, 4)]
    ids = [int(track_id) for track_id in np.asarray(ids).reshape(-1)]
    for i, (box, track_id) in enumerate(zip(boxes, ids)):
        if dashed is not None and dashed[i]:  # interpolated: as thick as a box, dashed
            _draw_dashed_box(out, box, color_for_id(track_id), thickness + 1)
        else:
            cv2.rectangle(out, box[:2], box[2:], color_for_id(track_id), thickness + 1)
    texts = [labels[i] if labels is not None else str(track_id) for i, track_id in enumerate(ids)]
    sizes = [cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness) for text in texts]
    tags = [(tw + 4, th + base + 2) for (tw, th), base in sizes]
    for (left, top, w, h), text, track_id, (_, base) in zip(place_labels(boxes, tags, width, height), texts, ids, sizes):
        # labels last: no box crosses one
        cv2.rectangle(out, (left, top), (left + w, top + h), color_for_id(track_id), cv2.FILLED)
        cv2.putText(out, text, (left + 2, top + h - base - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness,
                    cv2.LINE_AA)
    return out


def drawable_text(text: str) -> str:
    """``text`` as OpenCV's font draws it: OpenCV 5 draws Latin, Greek and Cyrillic letters (others
    as ``?``); OpenCV 4 ASCII only, so accents are dropped there (``Süd`` -> ``Sud``)."""
    if int(cv2.__version__.split(".")[0]) >= 5:
        return text
    plain = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return plain.encode("ascii", "replace").decode()


MIN_CAPTION_SCALE = 0.3  # OpenCV's font below this (about 7 px high) is not worth reading: no caption


def draw_caption(image_bgr: np.ndarray, texts: str | Sequence[str]) -> None:
    """Write the first of ``texts`` (what the video shows: camera, frame, time, which ids; shorter
    ones after it) that fits, in white on a darkened band at the bottom left of ``image_bgr``, in place:
    before the boxes, which are drawn over it. A text is made smaller to fit the width; a frame too
    small for any of them readable gets none (:func:`drawable_text` says which letters show)."""
    height, width = image_bgr.shape[:2]
    short_side = min(height, width)
    thickness, pad = max(1, round(short_side / 540)), max(2, round(short_side / 200))
    for text in [texts] if isinstance(texts, str) else texts:
        text = drawable_text(text)
        fitted = _fitted_scale(text, max(0.35, short_side / 900), thickness, width - 2 * pad)
        if fitted is None:
            continue
        scale, (text_w, text_h), base = fitted
        if text_h + base + 2 * pad > height // 8:  # a frame too low for it: the band would hide the picture
            return
        band = image_bgr[max(0, height - text_h - base - 2 * pad):, :min(width, text_w + 2 * pad)]
        band[:] = band // 3  # darkened, the picture still faintly behind
        cv2.putText(image_bgr, text, (pad, height - base - pad), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
        return


def _fitted_scale(text: str, scale: float, thickness: int, room: int) -> tuple[float, tuple[int, int], int] | None:
    """The font scale at most ``scale`` at which ``text`` is at most ``room`` pixels wide, with its size and
    baseline; None below :data:`MIN_CAPTION_SCALE`."""
    while True:  # the font's width is not quite proportional to its scale: shrink until it fits
        (text_w, text_h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        if text_w <= room:
            return scale, (text_w, text_h), base
        scale *= min(0.97, room / max(text_w, 1))
        if scale < MIN_CAPTION_SCALE:
            return None


def place_labels(boxes: Sequence[tuple[int, int, int, int]], tags: Sequence[tuple[int, int]], width: int,
                 height: int) -> list[tuple[int, int, int, int]]:
    """Where each box's label goes, ``(left, top, w, h)`` pixels, for labels of ``tags`` sizes
    ``(w, h)`` in a ``width`` x ``height`` image: above the box's top-left corner, else the first of
    inside it at the top left, above or inside at the top right, below it, inside at the bottom left,
    that covers no label placed before (else the one covering least), always inside the image.

    >>> place_labels([(10, 50, 60, 150), (12, 52, 70, 160)], [(20, 14), (20, 14)], 320, 240)
    [(10, 36, 20, 14), (12, 52, 20, 14)]
    """
    placed: list[tuple[int, int, int, int]] = []
    for (x1, y1, x2, y2), (w, h) in zip(boxes, tags):
        spots = [(x1, y1 - h), (x1, y1), (x2 - w, y1 - h), (x2 - w, y1), (x1, y2), (x1, y2 - h)]
        spots = [(min(max(left, 0), max(width - w, 0)), min(max(top, 0), max(height - h, 0))) for left, top in spots]
        best = min(spots, key=lambda spot: (sum(_overlap((*spot, w, h), other) for other in placed), spots.index(spot)))
        placed.append((*best, w, h))
    return placed


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """Pixels two ``(left, top, w, h)`` rectangles share."""
    dx = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    dy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(dx, 0) * max(dy, 0)


def _draw_trail(image: np.ndarray, points: Sequence[tuple[float, float]], color, thickness: int) -> None:
    pts = np.asarray(points, np.float32).reshape(-1, 2)
    for k in range(1, len(pts)):
        fade = k / len(pts)  # older segments are thinner
        p, q = tuple(int(v) for v in pts[k - 1]), tuple(int(v) for v in pts[k])
        cv2.line(image, p, q, color, max(1, round(thickness * 2 * fade)), cv2.LINE_AA)


def _draw_dashed_box(image: np.ndarray, box: tuple[int, int, int, int], color, thickness: int) -> None:
    x1, y1, x2, y2 = box
    dash = max(4, 4 * thickness)
    for (px, py), (qx, qy) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(qx - px), abs(qy - py))
        for start in range(0, length, 2 * dash):
            end = min(start + dash, length)
            a = (px + (qx - px) * start // max(length, 1), py + (qy - py) * start // max(length, 1))
            b = (px + (qx - px) * end // max(length, 1), py + (qy - py) * end // max(length, 1))
            cv2.line(image, a, b, color, thickness)
