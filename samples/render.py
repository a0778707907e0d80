"""Render a camera's frames and ground truth: static background by ray casting, figures on top.

The background of each camera (floor tiles, walls with doors and posters, ceiling, the static
objects) is ray cast once per camera, 2x supersampled, with a per-pixel depth map. Each frame then
draws the people present, farthest first, hides their pixels behind nearer static objects with
that depth map, and applies the camera's look: contrast, colour cast with vignetting, gamma, lens
blur and sensor noise. The same pass yields the MOTChallenge ground-truth rows: the box around
each figure's whole silhouette clipped to the frame, and the share of its pixels actually seen.

See :class:`CameraRenderer` for an example.
"""

from __future__ import annotations

import cv2
import numpy as np

from samples.figure import Sprite, draw_figure
from samples.scene import HALL_WIDTH, WALL_HEIGHT, Scene

PX_PER_M = 50  # texture resolution
HALL_END_MARGIN = 6.0  # the end walls stand this far beyond the walked stretch
DONT_CARE_CLASS = 8
DOOR_HALF_WIDTH, DOOR_HEIGHT = 0.65, 2.2  # MOTChallenge "distractor": neither a miss nor a false positive when found


def _texture_rng(scene: Scene, salt: int) -> np.random.Generator:
    return np.random.default_rng([scene.options.seed, salt])


def floor_texture(scene: Scene) -> np.ndarray:
    """``(W*PX_PER_M, L*PX_PER_M, 3)`` uint8 floor: shaded tiles, grout, grain and a painted guide line."""
    rng = _texture_rng(scene, 1)
    width_px = int((scene.length + 2 * HALL_END_MARGIN) * PX_PER_M)
    height_px = int(HALL_WIDTH * PX_PER_M)
    base = np.array([(150, 160, 165), (120, 140, 160), (95, 110, 150), (140, 140, 135)][int(rng.integers(4))], float)
    tile = 0.6 * PX_PER_M
    cols, rows = int(width_px / tile) + 2, int(height_px / tile) + 2
    shades = rng.uniform(0.88, 1.1, (rows, cols, 1)) * base
    texture = cv2.resize(shades.astype(np.float32), (int(cols * tile), int(rows * tile)), interpolation=cv2.INTER_NEAREST)
    texture = texture[:height_px, :width_px]
    grout = np.zeros(texture.shape[:2], bool)
    grout[:, (np.arange(width_px) % int(tile)) < 2] = True
    grout[(np.arange(height_px) % int(tile)) < 2, :] = True
    texture[grout] *= 0.65
    texture += rng.normal(0, 4, texture.shape).astype(np.float32)
    line_y = int(rng.uniform(0.9, 1.1) * PX_PER_M)
    texture[line_y : line_y + 5, :] = (40, 190, 220)  # a yellow guide line near one wall
    for _ in range(int(scene.length / 4)):  # scuffs and stains
        cx, cy = int(rng.uniform(0, width_px)), int(rng.uniform(0, height_px))
        cv2.ellipse(texture, (cx, cy), (int(rng.uniform(10, 40)), int(rng.uniform(5, 20))), float(rng.uniform(0, 180)),
                    0, 360, tuple(float(v) for v in base * 0.8), -1)
    return np.clip(texture, 0, 255).astype(np.uint8)


def wall_texture(scene: Scene, side: int) -> np.ndarray:
    """``(WALL_HEIGHT*PX_PER_M, L*PX_PER_M, 3)`` uint8 side wall, row 0 at the top: paint, dado,
    skirting, doors (where the scene has them), posters and windows."""
    rng = _texture_rng(scene, 2 + side)
    width_px = int((scene.length + 2 * HALL_END_MARGIN) * PX_PER_M)
    height_px = int(WALL_HEIGHT * PX_PER_M)

    def row(z: float) -> int:
        return int((WALL_HEIGHT - z) * PX_PER_M)

    def col(x: float) -> int:
        return int((x + HALL_END_MARGIN) * PX_PER_M)

    paint = np.array([(200, 210, 215), (180, 200, 190), (205, 195, 180), (170, 185, 200)][int(rng.integers(4))], float)
    texture = np.empty((height_px, width_px, 3), np.float32)
    texture[:] = paint
    texture[row(1.0) :] = paint * rng.uniform(0.55, 0.75)
    texture[row(0.12) :] = (60, 60, 65)
    x = rng.uniform(1, 4)
    while x < scene.length + HALL_END_MARGIN - 2:
        kind = rng.choice(["poster", "window", "panel"])
        if kind == "poster":
            w, h, z = rng.uniform(0.6, 1.0), rng.uniform(0.8, 1.2), rng.uniform(1.3, 1.6)
            colour = rng.uniform(30, 230, 3)
            texture[row(z + h) : row(z), col(x) : col(x + w)] = colour
            texture[row(z + h * 0.7) : row(z + h * 0.5), col(x + 0.1) : col(x + w - 0.1)] = 255 - colour
        elif kind == "window":
            w = rng.uniform(1.2, 2.0)
            texture[row(3.6) : row(2.2), col(x) : col(x + w)] = (215, 200, 170)
            texture[row(3.6) : row(2.2), col(x + w / 2) : col(x + w / 2) + 3] = (90, 90, 90)
        else:
            texture[row(2.4) : row(1.1), col(x) : col(x + 0.15)] = paint * 0.8
        x += rng.uniform(2.5, 5.0)
    for door_x, door_side in scene.doors:
        if door_side == side:
            frame = DOOR_HALF_WIDTH + 0.1
            texture[row(DOOR_HEIGHT + 0.1) : row(0.0), col(door_x - frame) : col(door_x + frame)] = (45, 60, 85)
            texture[row(DOOR_HEIGHT) : row(0.0), col(door_x - DOOR_HALF_WIDTH) : col(door_x + DOOR_HALF_WIDTH)] = (25, 30, 40)
    texture += rng.normal(0, 3, texture.shape).astype(np.float32)
    return np.clip(texture, 0, 255).astype(np.uint8)


class CameraRenderer:
    """Renders one camera of a scene frame by frame; ground truth comes with each frame.

    >>> from samples import SceneOptions, build_scene
    >>> renderer = CameraRenderer(build_scene(SceneOptions(cameras=1, people=3, width=160, height=90)), 0)
    >>> image, rows = renderer.render(120)
    >>> all(len(row) == 9 for row in rows)
    True
    """

    def __init__(self, scene: Scene, camera_index: int, textures: dict | None = None):
        self.scene = scene
        self.camera = scene.cameras[camera_index]
        self.index = camera_index
        textures = textures or make_textures(scene)
        self.background, self.depth = self._ray_cast(textures)
        w, h = self.camera.size
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        self.vignette = np.repeat(np.round(255 * (1.0 - 0.18 * r2))[..., None], 3, axis=2).astype(np.uint8)
        self.tone_lut = _tone_curve(self.camera)
        self.noise_rng = np.random.default_rng([scene.options.seed, 100 + camera_index])
        self.noise_bank = _noise_bank(self.noise_rng, (h, w, 3), self.camera.noise_sigma)

    def _ray_cast(self, textures: dict, scale: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """The static scene as the camera sees it: ``(H, W, 3)`` uint8 and depth ``(H, W)`` float32 metres."""
        cam = self.camera
        rays = cam.pixel_rays(scale)
        origin = cam.center
        x_lo, x_hi = -HALL_END_MARGIN, self.scene.length + HALL_END_MARGIN
        with np.errstate(divide="ignore", invalid="ignore"):
            t_best = np.full(rays.shape[:2], np.inf)
            colour = np.zeros(rays.shape, np.float32)
            doorways = []

            def plane(axis: int, value: float):
                t = (value - origin[axis]) / rays[..., axis]
                t[~(t > 0)] = np.inf
                return t, origin + t[..., None] * rays

            def take(t, hit_colour):
                closer = t < t_best
                t_best[closer] = t[closer]
                colour[closer] = hit_colour[closer] if hit_colour.ndim == 3 else hit_colour

            t, hit = plane(2, 0.0)
            take(t, _lookup(textures["floor"], (hit[..., 0] - x_lo) * PX_PER_M, hit[..., 1] * PX_PER_M))
            t, hit = plane(2, WALL_HEIGHT)
            take(t, np.array((175, 178, 180), np.float32))
            for side, y in ((0, 0.0), (1, HALL_WIDTH)):
                t, hit = plane(1, y)
                take(t, _lookup(textures[f"wall{side}"], (hit[..., 0] - x_lo) * PX_PER_M, (WALL_HEIGHT - hit[..., 2]) * PX_PER_M))
                for door_x, door_side in self.scene.doors:
                    if door_side == side:
                        in_door = (np.abs(hit[..., 0] - door_x) < DOOR_HALF_WIDTH) & (hit[..., 2] < DOOR_HEIGHT)
                        doorways.append((in_door, t))
            for x in (x_lo, x_hi):
                t, _ = plane(0, x)
                take(t, np.array((120, 130, 140), np.float32))
            for obstacle in self.scene.obstacles:
                lo, hi = obstacle.bounds()
                region = _screen_region(cam, lo, hi, scale)
                if region is None:
                    continue
                t = np.full(rays.shape[:2], np.inf)
                shade = np.ones(rays.shape[:2], np.float32)
                t[region], shade[region] = _box_hit(origin, rays[region], lo, hi)
                take(t, shade[..., None] * np.array(obstacle.colour, np.float32))
            # Doorways are openings: someone stepping through one is seen, not hidden by the wall.
            for in_door, t in doorways:
                t_best[in_door & (t == t_best)] += 4.0
        depth = (t_best * (rays @ cam.R[2])).astype(np.float32)
        w, h = cam.size
        image = cv2.resize(np.clip(colour, 0, 255), (w, h), interpolation=cv2.INTER_AREA).astype(np.uint8)
        # Nearest surface wins at object edges: a figure is hidden wherever any sub-sample is nearer.
        depth = -cv2.resize(cv2.erode(-depth, np.ones((scale, scale), np.uint8)), (w, h), interpolation=cv2.INTER_NEAREST)
        depth = cv2.erode(depth, np.ones((2, 2), np.uint8))
        return image, depth

    def sprites(self, frame_index: int) -> list[tuple[int, Sprite]]:
        """(person id, sprite) of everyone the camera can see a part of at this frame, far first."""
        t = frame_index / self.scene.options.fps
        w, h = self.camera.size
        out = []
        for person in self.scene.people:
            place = person.place(t)
            if place is None:
                continue
            position, heading, walked = place
            uv, depth = self.camera.project(np.array([[position[0], position[1], person.height / 2]]))
            if depth[0] < 0.4 or not (-w < uv[0, 0] < 2 * w and -h < uv[0, 1] < 2 * h):
                continue
            moving = person.walked(t - 0.05) != walked
            sprite = draw_figure(self.camera, person, position, heading, walked, moving)
            if sprite is not None:
                out.append((person.id, sprite))
        out.sort(key=lambda item: -item[1].depth)
        return out

    def render(self, frame_index: int, look: bool = True) -> tuple[np.ndarray, list[list[float]]]:
        """Frame ``(H, W, 3)`` uint8 BGR and its gt rows ``[frame, id, x, y, w, h, flag, class, visibility]``.

        ``look=False`` skips the camera's photometric look (cast, gamma, blur, noise), for tests.
        """
        image = self.background.copy()
        owner = np.zeros(image.shape[:2], np.int32)  # person id per pixel, 0 for the static scene
        drawn = self.sprites(frame_index)
        for pid, sprite in drawn:
            sub, frame_sl = _overlap(sprite, image.shape)
            if sub is None:
                continue
            seen = sprite.mask[sub] & (sprite.depth < self.depth[frame_sl])
            alpha = sprite.alpha[sub][seen][:, None].astype(np.float32) / 255.0
            # The sprite is premultiplied: its anti-aliased edges blend into what is behind.
            behind = image[frame_sl][seen].astype(np.float32)
            image[frame_sl][seen] = np.clip(sprite.image[sub][seen] + behind * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
            owner[frame_sl][seen] = pid
        rows = [row for pid, sprite in drawn if (row := self._gt_row(frame_index, pid, sprite, owner)) is not None]
        return (self._look(image) if look else image), rows

    def _gt_row(self, frame_index: int, pid: int, sprite: Sprite, owner: np.ndarray) -> list[float] | None:
        sub, frame_sl = _overlap(sprite, owner.shape)
        if sub is None:
            return None
        visible = int((owner[frame_sl] == pid).sum())
        if visible == 0:
            return None
        ys, xs = np.nonzero(sprite.mask)
        x0, y0 = sprite.origin
        w, h = self.camera.size
        left, top = max(0, x0 + xs.min()), max(0, y0 + ys.min())
        right, bottom = min(w, x0 + xs.max() + 1), min(h, y0 + ys.max() + 1)
        visibility = visible / int(sprite.mask.sum())
        o = self.scene.options
        care = visibility >= o.min_visibility and (bottom - top) >= o.min_height
        flag, cls = (1, 1) if care else (0, DONT_CARE_CLASS)
        return [frame_index + 1, pid, left, top, right - left, bottom - top, flag, cls, round(visibility, 3)]

    def _look(self, image: np.ndarray) -> np.ndarray:
        """The camera's look: vignetting, then contrast, colour cast and gamma (one lookup table per
        channel), lens blur, and sensor noise drawn from a bank of noise frames (flipped at random)."""
        out = cv2.LUT(cv2.multiply(image, self.vignette, scale=1 / 255), self.tone_lut)
        if self.camera.blur_sigma > 0.2:
            out = cv2.GaussianBlur(out, (0, 0), self.camera.blur_sigma)
        if self.noise_bank:
            brighter, darker = self.noise_bank[int(self.noise_rng.integers(len(self.noise_bank)))]
            flip = int(self.noise_rng.integers(-1, 2))
            out = cv2.subtract(cv2.add(out, cv2.flip(brighter, flip)), cv2.flip(darker, flip))
        return out


def _tone_curve(camera) -> np.ndarray:
    """``(1, 256, 3)`` uint8 lookup table: contrast about mid grey, per-channel gain, then gamma."""
    levels = np.arange(256, dtype=np.float64)[:, None]
    linear = np.clip(((levels - 128.0) * camera.contrast + 128.0) * np.array(camera.gains_bgr), 0, 255)
    return np.clip((linear / 255.0) ** camera.gamma * 255.0 + 0.5, 0, 255).astype(np.uint8)[None]


def _noise_bank(rng: np.random.Generator, shape, sigma: float, size: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    """``size`` Gaussian noise frames split into their positive and negative parts (uint8 each), so
    adding noise is two saturating uint8 operations per frame."""
    bank = []
    for _ in range(size if sigma > 0 else 0):
        noise = np.round(rng.standard_normal(shape, dtype=np.float32) * sigma)
        bank.append((np.clip(noise, 0, 255).astype(np.uint8), np.clip(-noise, 0, 255).astype(np.uint8)))
    return bank


def make_textures(scene: Scene) -> dict[str, np.ndarray]:
    """The floor and both side walls' textures, shared by all cameras of a scene."""
    return {"floor": floor_texture(scene), "wall0": wall_texture(scene, 0), "wall1": wall_texture(scene, 1)}


def _lookup(texture: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear texture colours at texel coordinates ``u`` (column) and ``v`` (row), float32; outside is grey."""
    u = np.nan_to_num(u, nan=-1, posinf=-1, neginf=-1).astype(np.float32)
    v = np.nan_to_num(v, nan=-1, posinf=-1, neginf=-1).astype(np.float32)
    return cv2.remap(texture, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)


def _box_hit(origin: np.ndarray, rays: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slab test: distance to an axis-aligned box ``(H, W)`` (inf on a miss) and a face shade per pixel."""
    t1 = (lo - origin) / rays
    t2 = (hi - origin) / rays
    t_near = np.minimum(t1, t2)
    enter = t_near.max(axis=-1)
    leave = np.maximum(t1, t2).min(axis=-1)
    hit = (enter <= leave) & (enter > 0)
    face = t_near.argmax(axis=-1)  # 0: an x face, 1: a y face, 2: the top
    shade = np.array([0.85, 0.7, 1.1], np.float32)[face]
    return np.where(hit, enter, np.inf), shade


def _screen_region(camera, lo: np.ndarray, hi: np.ndarray, scale: int) -> tuple[slice, slice] | None:
    """Slices of the ``scale``-times supersampled image that can show the box ``lo``..``hi``
    (the whole image when the box reaches behind the camera; ``None`` when it is out of view)."""
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    uv, depth = camera.project(corners)
    w, h = camera.size[0] * scale, camera.size[1] * scale
    if (depth <= 0.05).any():
        return slice(0, h), slice(0, w)
    x0, y0 = np.floor(uv.min(axis=0) * scale).astype(int) - 2
    x1, y1 = np.ceil(uv.max(axis=0) * scale).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _overlap(sprite: Sprite, shape) -> tuple[tuple[slice, slice] | None, tuple[slice, slice] | None]:
    """Slices of the sprite and of the frame where they overlap (``(None, None)`` when they do not)."""
    x0, y0 = sprite.origin
    sh, sw = sprite.mask.shape
    h, w = shape[:2]
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(w, x0 + sw), min(h, y0 + sh)
    if fx0 >= fx1 or fy0 >= fy1:
        return None, None
    return (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0)), (slice(fy0, fy1), slice(fx0, fx1))
