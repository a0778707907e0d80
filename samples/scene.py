"""The synthetic scene: a long hall on a ground plane, its cameras, its static objects and its people.

World units are metres: ``x`` along the hall (0 .. ``length``), ``y`` across it (0 .. ``width``),
``z`` up from the floor. Cameras are pinholes mounted on the side walls, looking across the hall
at their own yaw, pitch, height and field of view; adjacent cameras either share part of the
hall (overlap) or leave an unseen stretch between them (a transit gap). People walk polyline
paths over the floor, entering and leaving through the hall's ends and side doors.

The layout (where cameras, objects, doors and paths go) is drawn in :mod:`samples.layout`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

HALL_WIDTH = 8.0
WALL_HEIGHT = 4.5
WALK_MARGIN = 2.2  # people keep this far from the side walls (below the wall cameras' views)

# (name, BGR) of everyday clothing colours; look-alikes share an entry, others draw freely.
SHIRT_COLOURS = {
    "navy": (90, 45, 25), "white": (225, 225, 222), "black": (35, 35, 38), "grey": (130, 130, 128),
    "red": (40, 40, 190), "maroon": (45, 30, 110), "green": (60, 130, 50), "olive": (50, 110, 110),
    "blue": (170, 95, 40), "sky": (220, 180, 120), "yellow": (50, 200, 230), "beige": (160, 195, 215),
    "pink": (170, 140, 230), "orange": (40, 120, 230), "purple": (120, 50, 100), "teal": (130, 130, 30),
}
PANTS_COLOURS = {
    "jeans": (110, 70, 45), "black": (30, 30, 32), "grey": (100, 100, 100), "khaki": (120, 165, 185),
    "brown": (40, 65, 95), "light-jeans": (175, 140, 110), "olive": (55, 90, 85), "white": (210, 212, 214),
}
SKIN_TONES = [(150, 180, 225), (120, 160, 210), (95, 135, 185), (70, 100, 145), (50, 70, 100)]
HAIR_COLOURS = [(20, 20, 25), (25, 40, 60), (40, 70, 110), (90, 160, 200), (150, 150, 150)]
PATTERNS = ["plain", "stripes", "logo", "jacket"]
BAGS = ["none", "backpack", "shoulder"]
BAG_COLOURS = [(30, 30, 30), (40, 55, 80), (70, 60, 50), (30, 30, 100)]


@dataclass
class SceneOptions:
    """Every knob of a generated scene; the defaults are the demo's size (3 cameras, 10 people, 25 s).

    ``overlap`` is the share of adjacent camera pairs whose views overlap (the others are separated
    by a ``gap_m`` transit gap); ``lookalikes`` the number of pairs of people dressed alike;
    ``occlusion`` (0..1) how many static objects stand in the hall and how many people walk in
    pairs; ``lighting`` (0..1) how far each camera's colour cast, brightness and contrast spread;
    ``noise`` the sensor noise in grey levels; ``blur`` the largest lens blur (Gaussian sigma, px).
    People seen with less than ``min_visibility`` of their figure, or shorter than ``min_height``
    pixels, are written as don't-care rows (flag 0, class 8 "distractor") in the ground truth.

    >>> SceneOptions(cameras=4, occlusion=0.9).num_frames  # 25 s at 10 fps
    250
    """

    cameras: int = 3
    people: int = 10
    seconds: float = 25.0
    fps: float = 10.0
    seed: int = 0
    width: int = 640
    height: int = 360
    overlap: float = 0.5
    overlap_m: float = 3.0
    gap_m: float = 4.0
    lookalikes: int = 2
    occlusion: float = 0.5
    lighting: float = 0.8
    noise: float = 4.0
    blur: float = 0.8
    pauses: float = 0.15
    min_visibility: float = 0.2
    min_height: int = 24

    @property
    def num_frames(self) -> int:
        return max(1, int(round(self.seconds * self.fps)))


@dataclass
class Camera:
    """A pinhole camera: ``K`` (3, 3) intrinsics, ``R`` (3, 3) world-to-camera rotation (rows: right,
    down, forward), ``center`` (3,) position in metres; photometric settings applied to its frames.

    >>> cam = Camera.looking("cam", (0, 0, 3), yaw_deg=90, pitch_deg=30, hfov_deg=70, size=(640, 360))
    >>> uv, depth = cam.project(np.array([[0.0, 5.0, 0.0]]))
    >>> bool(depth[0] > 0 and 0 <= uv[0, 0] < 640)
    True
    """

    name: str
    K: np.ndarray
    R: np.ndarray
    center: np.ndarray
    size: tuple[int, int]  # (width, height) pixels
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    gains_bgr: tuple[float, float, float] = (1.0, 1.0, 1.0)  # colour cast, multiplies each channel
    gamma: float = 1.0
    contrast: float = 1.0
    noise_sigma: float = 0.0
    blur_sigma: float = 0.0
    x_range: tuple[float, float] = (0.0, 0.0)  # the stretch of hall floor it sees, metres

    @classmethod
    def looking(cls, name, center, yaw_deg, pitch_deg, hfov_deg, size) -> "Camera":
        yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
        forward = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), -math.sin(pitch)])
        right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
        down = np.cross(forward, right)
        w, h = size
        f = (w / 2) / math.tan(math.radians(hfov_deg) / 2)
        K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
        return cls(name, K, np.stack([right, down, forward]), np.asarray(center, float), tuple(size), yaw_deg, pitch_deg)

    @property
    def focal(self) -> float:
        return float(self.K[0, 0])

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points ``(N, 3)`` to camera coordinates ``(N, 3)`` (x right, y down, z forward)."""
        return (points - self.center) @ self.R.T

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points ``(N, 3)`` to pixels ``(N, 2)`` float and depths ``(N,)`` metres along the axis."""
        cam = self.to_camera(points)
        depth = cam[:, 2]
        uv = cam[:, :2] / np.maximum(depth, 1e-6)[:, None] * self.K[[0, 1], [0, 1]] + self.K[:2, 2]
        return uv, depth

    def ground_homography(self) -> np.ndarray:
        """``(3, 3)`` map from floor points ``(x, y, 1)`` to homogeneous pixels."""
        return self.K @ np.column_stack([self.R[:, 0], self.R[:, 1], -self.R @ self.center])

    def pixel_rays(self, scale: int = 1) -> np.ndarray:
        """Unit world directions ``(H*scale, W*scale, 3)`` through the pixel centres (supersampled by ``scale``)."""
        w, h = self.size
        u = (np.arange(w * scale) + 0.5) / scale
        v = (np.arange(h * scale) + 0.5) / scale
        uu, vv = np.meshgrid(u, v)
        cam = np.stack([(uu - self.K[0, 2]) / self.K[0, 0], (vv - self.K[1, 2]) / self.K[1, 1], np.ones_like(uu)], -1)
        world = cam @ self.R
        return world / np.linalg.norm(world, axis=-1, keepdims=True)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "size": list(self.size),
            "center_m": self.center.round(3).tolist(),
            "yaw_deg": round(self.yaw_deg, 2),
            "pitch_deg": round(self.pitch_deg, 2),
            "K": self.K.round(3).tolist(),
            "R": self.R.round(6).tolist(),
            "ground_to_image": self.ground_homography().round(6).tolist(),
            "x_range_m": [round(v, 2) for v in self.x_range],
            "gains_bgr": [round(g, 3) for g in self.gains_bgr],
            "gamma": round(self.gamma, 3),
            "contrast": round(self.contrast, 3),
            "noise_sigma": round(self.noise_sigma, 2),
            "blur_sigma": round(self.blur_sigma, 2),
        }


@dataclass
class Obstacle:
    """A static box on the floor: ``center`` (x, y) and ``size`` (x, y, z) in metres, BGR colour.

    >>> Obstacle("bench", (3.0, 2.0), (1.8, 0.5, 0.5), (50, 80, 120)).bounds()[1].round(2).tolist()
    [3.9, 2.25, 0.5]
    """

    kind: str
    center: tuple[float, float]
    size: tuple[float, float, float]
    colour: tuple[int, int, int]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([self.center[0] - self.size[0] / 2, self.center[1] - self.size[1] / 2, 0.0])
        return lo, lo + np.array(self.size)


@dataclass
class Person:
    """One pedestrian: looks (colours BGR, pattern, bag, height) and where they walk, when.

    ``path`` is ``(P, 2)`` floor points in metres, walked at ``speed`` m/s from ``start_s``, standing
    still for ``pause_s`` seconds at ``pause_at_m`` metres along it (0 for no pause).

    >>> p = Person(1, 1.7, "red", "jeans", (150, 180, 225), (20, 20, 25), "plain", "none", False,
    ...            np.array([[0.0, 4.0], [10.0, 4.0]]), speed=1.0, start_s=2.0)
    >>> p.place(1.0) is None, p.place(5.0)[0].tolist()
    (True, [3.0, 4.0])
    """

    id: int
    height: float
    shirt: str
    pants: str
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    pattern: str
    bag: str
    long_sleeves: bool
    path: np.ndarray
    speed: float
    start_s: float
    pause_at_m: float = 0.0
    pause_s: float = 0.0
    lookalike_of: int | None = None
    walks_with: int | None = None
    stride_phase: float = 0.0
    bag_colour: tuple[int, int, int] = BAG_COLOURS[0]
    _cumulative: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._cumulative = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(self.path, axis=0), axis=1))])

    @property
    def path_length(self) -> float:
        return float(self._cumulative[-1])

    def walked(self, t: float) -> float | None:
        """Metres walked at time ``t`` seconds, or ``None`` before the start / after the end."""
        moving = t - self.start_s
        if moving < 0:
            return None
        if self.pause_s > 0 and moving * self.speed > self.pause_at_m:
            moving = max(self.pause_at_m / self.speed, moving - self.pause_s)
        s = moving * self.speed
        return None if s > self.path_length else s

    def place(self, t: float) -> tuple[np.ndarray, np.ndarray, float] | None:
        """Floor position ``(2,)``, unit heading ``(2,)`` and metres walked at ``t``; ``None`` when absent."""
        s = self.walked(t)
        if s is None:
            return None
        i = int(np.clip(np.searchsorted(self._cumulative, s, side="right") - 1, 0, len(self.path) - 2))
        seg = self.path[i + 1] - self.path[i]
        length = max(float(np.linalg.norm(seg)), 1e-9)
        position = self.path[i] + seg * (s - self._cumulative[i]) / length
        return position, seg / length, s

    def describe(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        out["path"] = self.path.round(3).tolist()
        out["height"] = round(self.height, 3)
        out["speed"] = round(self.speed, 3)
        out["start_s"] = round(self.start_s, 3)
        out["pause_at_m"] = round(self.pause_at_m, 3)
        out["pause_s"] = round(self.pause_s, 3)
        out["stride_phase"] = round(self.stride_phase, 3)
        return out


@dataclass
class Scene:
    """The hall, its cameras, objects, doors (x positions on each side wall) and people.

    >>> from samples import build_scene
    >>> sorted(build_scene(SceneOptions(cameras=2, people=2, lookalikes=1)).describe())[:3]
    ['cameras', 'doors', 'fps']
    """

    options: SceneOptions
    length: float
    cameras: list[Camera]
    obstacles: list[Obstacle]
    doors: list[tuple[float, int]]  # (x centre, wall: 0 for y=0, 1 for y=width)
    people: list[Person]
    overlapping_pairs: list[tuple[str, str]]

    def describe(self) -> dict:
        o = self.options
        return {
            "generator": "crosscam samples",
            "options": asdict(o),
            "fps": o.fps,
            "num_frames": o.num_frames,
            "frame_size": [o.width, o.height],
            "hall": {"length_m": round(self.length, 2), "width_m": HALL_WIDTH, "wall_height_m": WALL_HEIGHT},
            "doors": [{"x_m": round(x, 2), "wall_y_m": 0.0 if side == 0 else HALL_WIDTH} for x, side in self.doors],
            "obstacles": [
                {"kind": b.kind, "center_m": [round(v, 3) for v in b.center], "size_m": list(b.size)} for b in self.obstacles
            ],
            "cameras": [c.describe() for c in self.cameras],
            "overlapping_pairs": [list(p) for p in self.overlapping_pairs],
            "people": [p.describe() for p in self.people],
        }
