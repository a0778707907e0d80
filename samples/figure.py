"""An articulated pedestrian: a 3D skeleton with a walk cycle, drawn part by part through a camera.

The body is built in world metres from the person's height (proportions of an adult), posed by the
phase of the walk cycle (thighs, knees, arms swing; the hips bob), projected with the camera's
pinhole model and drawn far part first, so the near arm covers the torso and the torso covers the
far arm. The result is a :class:`Sprite`: the figure's pixels, its exact silhouette mask and its
depth, which the renderer composites and uses for ground truth.

>>> from samples.scene import Camera, Person
>>> cam = Camera.looking("cam", (0, 0, 3), yaw_deg=90, pitch_deg=25, hfov_deg=70, size=(320, 180))
>>> person = Person(1, 1.75, "red", "jeans", (150, 180, 225), (20, 20, 25), "plain", "none", True,
...                 np.array([[-1.0, 5.0], [1.0, 5.0]]), 1.3, 0.0)
>>> sprite = draw_figure(cam, person, np.array([0.0, 5.0]), np.array([1.0, 0.0]), 0.5, True)
>>> bool(sprite.mask.any()), sprite.depth > 0
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from samples.scene import PANTS_COLOURS, SHIRT_COLOURS, Camera, Person

_SHIFT = 3  # cv2 drawing with 1/8 pixel precision
_ONE = 1 << _SHIFT
SHOE = (25, 25, 30)


@dataclass
class Sprite:
    """A drawn figure in a box whose top-left corner is ``origin`` (x, y) in frame pixels (it may
    stick out of the frame): ``image`` (h, w, 3) uint8 BGR premultiplied by ``alpha`` (h, w) uint8
    coverage (255 inside, less on anti-aliased edges); ``depth`` metres from the camera."""

    image: np.ndarray
    alpha: np.ndarray
    origin: tuple[int, int]
    depth: float

    @property
    def mask(self) -> np.ndarray:
        """``(h, w)`` bool: every pixel the figure touches."""
        return self.alpha > 0


def skeleton(person: Person, position: np.ndarray, heading: np.ndarray, walked: float, moving: bool) -> dict:
    """World joint positions ``(3,)`` of the posed body, plus the body's frame vectors.

    ``walked`` (metres along the path) drives the walk cycle, so feet do not slide; a standing
    person (``moving`` false) keeps the neutral pose.
    """
    H = person.height
    fwd = np.array([heading[0], heading[1], 0.0])
    left = np.array([-heading[1], heading[0], 0.0])
    up = np.array([0.0, 0.0, 1.0])
    stride = 0.82 * H  # one full cycle (two steps) in metres
    phase = person.stride_phase + 2 * math.pi * walked / stride
    amp = math.radians(20) if moving else 0.0

    def limb_dir(angle: float) -> np.ndarray:
        return math.sin(angle) * fwd - math.cos(angle) * up

    ground = np.array([position[0], position[1], 0.0])
    pelvis = ground + up * (0.52 * H + (0.012 * H * math.cos(2 * phase) if moving else 0.0))
    joints = {"fwd": fwd, "left": left, "up": up, "pelvis": pelvis}
    for side, sign, offset in (("l", 1.0, 0.0), ("r", -1.0, math.pi)):
        swing = amp * math.sin(phase + offset)
        knee_bend = (math.radians(6) + math.radians(42) * max(0.0, math.cos(phase + offset))) if moving else 0.03
        hip = pelvis + left * sign * 0.075 * H
        knee = hip + limb_dir(swing) * 0.245 * H
        ankle = knee + limb_dir(swing - knee_bend) * 0.245 * H
        joints[f"hip_{side}"], joints[f"knee_{side}"], joints[f"ankle_{side}"] = hip, knee, ankle
        joints[f"toe_{side}"] = ankle + fwd * 0.075 * H - up * 0.01 * H
        arm_swing = -0.75 * amp * math.sin(phase + offset)
        shoulder = pelvis + up * 0.30 * H + left * sign * 0.118 * H
        elbow = shoulder + limb_dir(arm_swing) * 0.17 * H + left * sign * 0.01 * H
        hand = elbow + limb_dir(arm_swing + math.radians(18 if moving else 6)) * 0.16 * H
        joints[f"shoulder_{side}"], joints[f"elbow_{side}"], joints[f"hand_{side}"] = shoulder, elbow, hand
    joints["neck"] = pelvis + up * 0.335 * H
    joints["head"] = pelvis + up * (H - 0.064 * H - 0.52 * H)
    return joints


def _shade(colour, factor: float) -> tuple[int, int, int]:
    return tuple(min(255, int(c * factor)) for c in colour)


def _contrast(colour) -> tuple[int, int, int]:
    """A pattern colour that stands out on ``colour`` (dark on light clothes, light on dark)."""
    return (30, 30, 35) if sum(colour) > 380 else (225, 225, 220)


class _Canvas:
    """Drawing surface for one figure: premultiplied colour and coverage in a box of the frame."""

    def __init__(self, camera: Camera, points: np.ndarray, margin: float):
        uv, _ = camera.project(points)
        lo = np.floor(uv.min(axis=0) - margin).astype(int)
        hi = np.ceil(uv.max(axis=0) + margin).astype(int)
        self.focal = camera.focal
        # One 3x4 projection matrix: single points are projected many times per figure.
        self.P = camera.K @ np.column_stack([camera.R, -camera.R @ camera.center])
        self.origin = (int(lo[0]), int(lo[1]))
        size = hi - lo + 1
        self.image = np.zeros((size[1], size[0], 3), np.uint8)
        self.mask = np.zeros((size[1], size[0]), np.uint8)

    def px(self, point: np.ndarray) -> tuple[tuple[int, int], float]:
        """Fixed-point canvas pixel (1/8 px) and depth (metres) of a world point."""
        h = self.P[:, :3] @ point + self.P[:, 3]
        return (int(round((h[0] / h[2] - self.origin[0]) * _ONE)), int(round((h[1] / h[2] - self.origin[1]) * _ONE))), h[2]

    def width(self, metres: float, depth: float) -> int:
        return max(1, int(round(self.focal * metres / max(depth, 1e-3))))

    def line(self, a: np.ndarray, b: np.ndarray, metres: float, colour) -> None:
        (pa, da), (pb, db) = self.px(a), self.px(b)
        thickness = self.width(metres, (da + db) / 2)
        cv2.line(self.image, pa, pb, colour, thickness, cv2.LINE_AA, _SHIFT)
        cv2.line(self.mask, pa, pb, 255, thickness, cv2.LINE_AA, _SHIFT)

    def disc(self, centre: np.ndarray, radius_m: float, colour) -> None:
        p, d = self.px(centre)
        radius = max(1, int(round(self.focal * radius_m / max(d, 1e-3) * _ONE)))
        cv2.circle(self.image, p, radius, colour, -1, cv2.LINE_8, _SHIFT)
        cv2.circle(self.mask, p, radius, 255, -1, cv2.LINE_8, _SHIFT)

    def disc_region(self, centre: np.ndarray, radius_m: float) -> np.ndarray:
        """Mask of a disc, for parts clipped to another part (hair to the head)."""
        p, d = self.px(centre)
        radius = max(1, int(round(self.focal * radius_m / max(d, 1e-3) * _ONE)))
        region = np.zeros_like(self.mask)
        cv2.circle(region, p, radius, 255, -1, cv2.LINE_8, _SHIFT)
        return region

    def _hull(self, points: np.ndarray) -> np.ndarray:
        return cv2.convexHull(np.array([self.px(p)[0] for p in points], np.int32))

    def solid(self, points: np.ndarray, colour) -> None:
        """Fill the convex hull of the projected world ``points`` (N, 3)."""
        hull = self._hull(points)
        cv2.fillConvexPoly(self.image, hull, colour, cv2.LINE_8, _SHIFT)
        cv2.fillConvexPoly(self.mask, hull, 255, cv2.LINE_8, _SHIFT)

    def hull_region(self, points: np.ndarray) -> np.ndarray:
        """Mask of the convex hull of the projected world ``points`` (N, 3), for clipping patterns."""
        region = np.zeros_like(self.mask)
        cv2.fillConvexPoly(region, self._hull(points), 255, cv2.LINE_8, _SHIFT)
        return region

    def fill(self, region: np.ndarray, colour) -> None:
        on = region > 0
        self.image[on] = colour
        self.mask[on] = 255


def _box_points(centre: np.ndarray, axes: list[np.ndarray], halves: list[float]) -> np.ndarray:
    """The 8 corners ``(8, 3)`` of a box with the given centre, unit axes and half sizes."""
    signs = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], float)
    return centre + (signs * np.array(halves)) @ np.stack(axes)


def draw_figure(
    camera: Camera, person: Person, position: np.ndarray, heading: np.ndarray, walked: float, moving: bool
) -> Sprite | None:
    """Draw ``person`` standing at ``position`` (x, y) facing ``heading`` (unit 2-vector).

    Returns ``None`` when any part of the body is behind or too close to the camera.
    """
    j = skeleton(person, position, heading, walked, moving)
    H = person.height
    fwd, left, up = j["fwd"], j["left"], j["up"]
    names = [k for k in j if k not in ("fwd", "left", "up")]
    points = np.array([j[k] for k in names] + [j["head"] + up * 0.07 * H])
    if (camera.to_camera(points)[:, 2] < 0.4).any():
        return None
    depth = float(camera.to_camera(j["pelvis"][None])[0, 2])
    canvas = _Canvas(camera, points, margin=camera.focal * 0.12 * H / depth + 3)
    shirt, pants = SHIRT_COLOURS[person.shirt], PANTS_COLOURS[person.pants]
    to_camera = camera.center - j["pelvis"]
    facing_camera = float(np.dot(fwd, to_camera)) > 0
    left_is_near = float(np.dot(left, to_camera)) > 0

    parts = []  # (depth, draw) drawn far to near

    def part_depth(point) -> float:
        return float(camera.to_camera(point[None])[0, 2])

    for side in ("l", "r"):
        near = (side == "l") == left_is_near
        factor = 1.0 if near else 0.78

        def leg(side=side, factor=factor):
            canvas.line(j[f"hip_{side}"], j[f"knee_{side}"], 0.085 * H, _shade(pants, factor))
            canvas.line(j[f"knee_{side}"], j[f"ankle_{side}"], 0.065 * H, _shade(pants, factor))
            canvas.line(j[f"ankle_{side}"], j[f"toe_{side}"], 0.05 * H, SHOE)

        def arm(side=side, factor=factor):
            forearm = shirt if person.long_sleeves else person.skin
            canvas.line(j[f"shoulder_{side}"], j[f"elbow_{side}"], 0.058 * H, _shade(shirt, factor))
            canvas.line(j[f"elbow_{side}"], j[f"hand_{side}"], 0.045 * H, _shade(forearm, factor))
            canvas.disc(j[f"hand_{side}"], 0.026 * H, _shade(person.skin, factor))

        parts.append((part_depth(j[f"knee_{side}"]) + 0.001, leg))
        parts.append((part_depth(j[f"elbow_{side}"]), arm))

    def torso():
        half_w, half_d = 0.125 * H, 0.07 * H
        top = j["neck"] - up * 0.02 * H
        waist = j["pelvis"] + up * 0.03 * H
        ring = [left * sa * half_w + fwd * sb * half_d for sa in (-1, 1) for sb in (-1, 1)]
        canvas.solid(np.array([j["pelvis"] - up * 0.05 * H + r * 0.85 for r in ring] + [waist + r for r in ring]), pants)
        chest = np.array([top + r * 0.9 for r in ring] + [waist + r * 0.92 for r in ring])
        canvas.solid(chest, shirt)
        if person.pattern == "stripes":
            _stripes(canvas, canvas.hull_region(chest), shirt, top, waist)
        elif facing_camera and person.pattern in ("logo", "jacket"):
            front = fwd * (half_d * 0.95)
            if person.pattern == "logo":
                centre = top + (waist - top) * 0.35 + front
                halves = [0.045 * H, 0.04 * H, 0.001]
            else:
                centre = (top + waist) / 2 + front
                halves = [0.03 * H, (top - waist)[2] / 2, 0.001]
            corners = _box_points(centre, [left, up, fwd], halves)
            canvas.fill(canvas.hull_region(corners) & canvas.hull_region(chest), _contrast(shirt))
        canvas.line(j["neck"], j["neck"] + up * 0.05 * H, 0.05 * H, person.skin)

    parts.append((part_depth(j["pelvis"]), torso))

    def head():
        r = 0.064 * H
        face = canvas.disc_region(j["head"], r)
        canvas.fill(face, person.skin)
        # Seen from behind, hair covers almost the whole head; from the front, only its top.
        back_view = max(0.0, -float(np.dot(fwd, to_camera)) / float(np.linalg.norm(to_camera)))
        centre = j["head"] + (up * 0.32 * (1 - 0.7 * back_view) - fwd * 0.3) * r
        canvas.fill(canvas.disc_region(centre, (0.95 + 0.1 * back_view) * r) & face, person.hair)

    parts.append((part_depth(j["head"]) - 0.001, head))
    if person.bag != "none":
        if person.bag == "backpack":
            centre = j["pelvis"] + up * 0.19 * H - fwd * 0.11 * H
            corners = _box_points(centre, [left, up, fwd], [0.095 * H, 0.12 * H, 0.045 * H])
        else:
            centre = j["pelvis"] + up * 0.02 * H + left * 0.15 * H + fwd * 0.02 * H
            corners = _box_points(centre, [left, up, fwd], [0.025 * H, 0.07 * H, 0.09 * H])

        def bag(corners=corners, colour=person.bag_colour):
            canvas.solid(corners, colour)
            if person.bag == "shoulder":
                canvas.line(j["shoulder_r"] + up * 0.01 * H, corners.mean(axis=0), 0.012 * H, colour)

        parts.append((part_depth(centre), bag))
    for _, draw in sorted(parts, key=lambda p: -p[0]):
        draw()
    return Sprite(canvas.image, canvas.mask, canvas.origin, depth)


def _stripes(canvas: _Canvas, region: np.ndarray, shirt, top: np.ndarray, waist: np.ndarray) -> None:
    """Horizontal stripes: six light/dark bands between shoulders and waist, following the projection."""
    y_top = canvas.px(top)[0][1] / _ONE
    y_waist = canvas.px(waist)[0][1] / _ONE  # canvas rows, in pixels
    band = max(1.0, (y_waist - y_top) / 7)
    rows = np.arange(region.shape[0])[:, None]
    striped = (np.floor((rows - y_top) / band).astype(int) % 2 == 1) & (region > 0)
    canvas.image[striped] = _contrast(shirt)
