"""Drawing track boxes: one stable colour per id, a label, optional trails.

Any stage that draws identities (per-camera tracks here, global identities later) uses these two
functions, so a given id has the same colour in every video.

>>> image = np.zeros((120, 160, 3), np.uint8)
>>> out = draw_tracks(image, np.array([[10, 10, 60, 100]], np.float32), np.array([7]))
>>> out.shape, bool(out.any()), bool(image.any())  # the input is left untouched
((120, 160, 3), True, False)
"""

from __future__ import annotations

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
) -> np.ndarray:
    """Return a copy of ``image_bgr`` with one box per row, coloured by id.

    ``xyxy``: ``(N, 4)`` pixels; ``ids``: ``(N,)`` ints; ``labels``: text per box (default the id);
    ``trails``: per id, past ``(x, y)`` points (e.g. box bottoms) drawn as a fading polyline;
    ``dashed``: ``(N,)`` bool, boxes drawn with a thin dashed outline (interpolated, not detected).
    """
    out = image_bgr.copy()
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
    for i, ((x1, y1, _, _), track_id) in enumerate(zip(boxes, ids)):  # labels last: no box crosses one
        text = labels[i] if labels is not None else str(track_id)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        left = min(max(x1, 0), max(width - tw - 4, 0))  # inside the image at the left and right edges
        top = max(y1, th + base + 2)  # ... and at the top edge
        cv2.rectangle(out, (left, top - th - base - 2), (left + tw + 4, top), color_for_id(track_id), cv2.FILLED)
        cv2.putText(out, text, (left + 2, top - base - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness,
                    cv2.LINE_AA)
    return out


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
