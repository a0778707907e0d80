"""Lay out a scene from its options: cameras along the hall, doors, static objects, walkers' paths and looks.

Everything is drawn from one seed, so :func:`build_scene` with the same options gives the same scene.

>>> scene = build_scene(SceneOptions(cameras=2, people=3, seconds=2, seed=1))
>>> [c.name for c in scene.cameras], len(scene.people)
(['cam1', 'cam2'], 3)
"""

from __future__ import annotations

import math

import numpy as np

from samples.scene import (
    BAG_COLOURS,
    BAGS,
    HAIR_COLOURS,
    HALL_WIDTH,
    PANTS_COLOURS,
    PATTERNS,
    SHIRT_COLOURS,
    SKIN_TONES,
    WALK_MARGIN,
    WALL_HEIGHT,
    Camera,
    Obstacle,
    Person,
    Scene,
    SceneOptions,
)


def build_scene(options: SceneOptions) -> Scene:
    """Draw the whole scene from ``options.seed``."""
    rng = np.random.default_rng(options.seed)
    cameras, overlapping = _place_cameras(options, rng)
    length = cameras[-1].x_range[1] + 4.0
    doors = _place_doors(length, rng)
    obstacles = _place_obstacles(options, length, doors, cameras, rng)
    people = _make_people(options, length, doors, obstacles, cameras, rng)
    return Scene(options, length, cameras, obstacles, doors, people, overlapping)


def _visible_x_range(camera: Camera) -> tuple[float, float]:
    """The x extent of hall floor (between the walk margins) that lands inside the image."""
    xs, ys = np.meshgrid(
        np.arange(camera.center[0] - 40, camera.center[0] + 40, 0.2), np.linspace(WALK_MARGIN, HALL_WIDTH - WALK_MARGIN, 9)
    )
    points = np.column_stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)])
    uv, depth = camera.project(points)
    w, h = camera.size
    inside = (depth > 0.5) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    if not inside.any():
        raise ValueError(f"{camera.name} sees no floor")
    return float(points[inside, 0].min()), float(points[inside, 0].max())


def _place_cameras(options: SceneOptions, rng: np.random.Generator) -> tuple[list[Camera], list[tuple[str, str]]]:
    """Cameras left to right along the hall; adjacent pairs overlap or leave a transit gap."""
    n_pairs = options.cameras - 1
    n_overlap = int(round(options.overlap * n_pairs))
    overlaps = np.zeros(n_pairs, bool)
    overlaps[rng.permutation(n_pairs)[:n_overlap]] = True
    cameras: list[Camera] = []
    pairs = []
    next_start = 2.0
    lighting = np.clip(options.lighting, 0.0, 1.0)
    for i in range(options.cameras):
        side = int(rng.integers(2))
        yaw = (90.0 if side == 0 else -90.0) + rng.uniform(-25, 25)
        height = rng.uniform(3.0, 4.3)
        y = 0.15 if side == 0 else HALL_WIDTH - 0.15
        cam = Camera.looking(
            f"cam{i + 1}", (0.0, y, height), yaw, rng.uniform(24, 38), rng.uniform(55, 75), (options.width, options.height)
        )
        lo, _ = _visible_x_range(cam)
        cam.center = cam.center + np.array([next_start - lo, 0.0, 0.0])
        cam.x_range = _visible_x_range(cam)
        # A strong cast: each channel scaled independently, so a grey shirt turns bluish in one
        # camera and yellowish in another.
        cam.gains_bgr = tuple(float(g) for g in np.exp(rng.normal(0, 0.22 * lighting, 3)) * np.exp(rng.normal(0, 0.15 * lighting)))
        cam.gamma = float(np.exp(rng.normal(0, 0.18 * lighting)))
        cam.contrast = float(np.exp(rng.normal(0, 0.15 * lighting)))
        cam.noise_sigma = float(options.noise * rng.uniform(0.6, 1.4))
        cam.blur_sigma = float(options.blur * rng.uniform(0.3, 1.0))
        cameras.append(cam)
        if i < n_pairs:
            if overlaps[i]:
                next_start = cam.x_range[1] - options.overlap_m
                pairs.append((cam.name, f"cam{i + 2}"))
            else:
                next_start = cam.x_range[1] + options.gap_m
    return cameras, pairs


def _place_doors(length: float, rng: np.random.Generator) -> list[tuple[float, int]]:
    """A side door every 8-14 m on either wall: people enter and leave the hall there too."""
    doors = []
    x = rng.uniform(4, 9)
    while x < length - 3:
        doors.append((float(x), int(rng.integers(2))))
        x += rng.uniform(8, 14)
    return doors


_OBSTACLE_KINDS = {
    # kind: (size x, y, z in metres, BGR colour)
    "pillar": ((0.6, 0.6, WALL_HEIGHT), (150, 155, 160)),
    "planter": ((1.2, 0.7, 1.0), (60, 85, 110)),
    "bench": ((1.8, 0.5, 0.5), (50, 80, 120)),
    "kiosk": ((1.4, 1.0, 1.9), (120, 60, 40)),
    "sign": ((0.9, 0.12, 1.6), (40, 160, 200)),
    "bin": ((0.45, 0.45, 0.95), (70, 75, 70)),
}


def _place_obstacles(
    options: SceneOptions, length: float, doors, cameras: list[Camera], rng: np.random.Generator
) -> list[Obstacle]:
    """Static objects on the floor, clear of doors, of each other (people walk around them) and of the
    cameras (an object right under a camera would fill its view).

    Each camera first gets a few in its view on its own side of the walkway, where they hide parts of
    the people walking behind them; the rest stand anywhere in the hall.
    """
    level = float(np.clip(options.occlusion, 0, 1))
    kinds = list(_OBSTACLE_KINDS)
    obstacles: list[Obstacle] = []

    def try_add(x: float, y: float, camera: Camera | None) -> bool:
        # Near a camera only the smaller objects: a kiosk there would hide most of the view.
        choices = kinds if camera is None else [k for k in kinds if k != "kiosk"]
        kind = choices[int(rng.integers(len(choices)))]
        size, colour = _OBSTACLE_KINDS[kind]
        if kind in ("sign", "bench") and rng.random() < 0.3:
            size = (size[1], size[0], size[2])
        y = float(np.clip(y, 0.4 + size[1] / 2, HALL_WIDTH - 0.4 - size[1] / 2))
        if any(abs(x - dx) < 1.6 for dx, _ in doors):
            return False
        if any(math.hypot(x - c.center[0], y - c.center[1]) < 4.5 for c in cameras):
            return False
        if any(abs(x - o.center[0]) < (size[0] + o.size[0]) / 2 + 1.0 and abs(y - o.center[1]) < 1.8 for o in obstacles):
            return False
        if camera is not None and not _seen(np.array([[x, y]]), [camera])[0]:
            return False
        obstacles.append(Obstacle(kind, (float(x), y), size, colour))
        return True

    for camera in cameras:
        wanted, placed = int(round(3 * level)), 0
        for _ in range(40 * wanted):
            if placed >= wanted:
                break
            from_wall = rng.uniform(2.2, 3.4)
            y = from_wall if camera.center[1] < HALL_WIDTH / 2 else HALL_WIDTH - from_wall
            placed += try_add(rng.uniform(*camera.x_range), y, camera)
    general = int(round(level * length / 3.5))
    target = len(obstacles) + general
    for _ in range(50 * (general + 1)):
        if len(obstacles) >= target:
            break
        try_add(rng.uniform(1.5, length - 1.5), rng.uniform(0.4, HALL_WIDTH - 0.4), None)
    return obstacles


def _walkable(path: np.ndarray, obstacles: list[Obstacle], clearance: float = 0.45) -> np.ndarray:
    """Resample a waypoint path every 25 cm, round its corners and push it around obstacles.

    Returns ``(P, 2)`` dense floor points. Points inside an obstacle's footprint (grown by
    ``clearance``) move sideways to the roomier side; smoothing turns the pushes into gentle curves.
    """
    dense = np.vstack([_resample(path), path[-1:]])
    kernel = np.ones(9) / 9
    for _ in range(6):
        pushed = False
        for o in obstacles:
            half = np.array(o.size[:2]) / 2 + clearance
            inside = (np.abs(dense - np.array(o.center)) < half).all(axis=1)
            if not inside.any():
                continue
            pushed = True
            below, above = o.center[1] - half[1] - 0.05, o.center[1] + half[1] + 0.05
            room_below, room_above = below - 0.35, HALL_WIDTH - 0.35 - above
            y = dense[inside, 1]
            go_below = (np.abs(y - below) <= np.abs(y - above)) if min(room_below, room_above) > 0.5 else np.full(
                len(y), room_below > room_above
            )
            dense[inside, 1] = np.where(go_below, below, above)
        if not pushed:
            break
        # Smooth the inner points only: the ends stay at their doors / hall ends.
        padded = np.pad(dense[:, 1], 4, mode="edge")
        dense[4:-4, 1] = np.convolve(padded, kernel, mode="valid")[4:-4]
    dense[:, 1] = np.clip(dense[:, 1], 0.35, HALL_WIDTH - 0.35)
    dense[[0, -1]] = path[[0, -1]]  # doors lie outside the walls
    return dense


def _make_people(options: SceneOptions, length: float, doors, obstacles, cameras, rng: np.random.Generator) -> list[Person]:
    people: list[Person] = []
    shirts, pants = list(SHIRT_COLOURS), list(PANTS_COLOURS)
    pair_share = 0.5 * np.clip(options.occlusion, 0, 1)
    pid = 1
    while len(people) < options.people:
        companion = people[-1] if people and people[-1].walks_with is None and rng.random() < pair_share else None
        if companion is not None:
            path = _walkable(companion.path + _side_step(companion.path, 0.65), obstacles)
            person = _dress(pid, rng, shirts, pants, path=path, speed=companion.speed, start_s=companion.start_s)
            person.walks_with = companion.id
            person.pause_at_m, person.pause_s = companion.pause_at_m, companion.pause_s
        else:
            path = _walkable(_path_through_views(length, doors, cameras, rng), obstacles)
            speed = float(rng.uniform(0.9, 1.5))
            start = _start_time(path, speed, cameras, options.seconds, rng)
            person = _dress(pid, rng, shirts, pants, path=path, speed=speed, start_s=start)
            if rng.random() < options.pauses:
                person.pause_at_m = float(rng.uniform(0.3, 0.7) * person.path_length)
                person.pause_s = float(rng.uniform(1.0, 4.0))
        people.append(person)
        pid += 1
    _make_lookalikes(people, options.lookalikes, rng)
    return people


def _start_time(path: np.ndarray, speed: float, cameras: list[Camera], seconds: float, rng) -> float:
    """A start time that puts the walker near the middle of the camera-covered part of their path at
    a random moment of the clip, so people spread over the duration and cross several views."""
    covered = _seen(path, cameras)
    along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    idx = np.flatnonzero(covered)
    first, last = (along[idx[0]], along[idx[-1]]) if len(idx) else (0.0, along[-1])
    s = (first + last) / 2 + rng.uniform(-0.25, 0.25) * (last - first)
    return float(rng.uniform(0.15, 0.85) * seconds - s / speed)


def _side_step(path: np.ndarray, offset: float) -> np.ndarray:
    """Offsets ``(P, 2)`` that move a dense path sideways by ``offset`` metres (left of the walking
    direction), tapering to nothing over the first and last 2 m so a companion uses the same door."""
    d = np.gradient(path, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    normal = np.column_stack([-d[:, 1], d[:, 0]])
    taper = np.minimum(1.0, np.minimum(np.arange(len(path)), np.arange(len(path))[::-1]) / 8.0)[:, None]
    return offset * normal * taper


def _path_through_views(length: float, doors, cameras: list[Camera], rng: np.random.Generator) -> np.ndarray:
    """A random path that spends at least 6 m inside the cameras' views (a walker nobody sees is wasted)."""
    for _ in range(30):
        path = _random_path(length, doors, rng)
        if _seen(_resample(path), cameras).sum() * _STEP >= 6.0:
            return path
    return path


def _seen(points: np.ndarray, cameras: list[Camera]) -> np.ndarray:
    """``(N,)`` bool: floor points where a walker's middle (0.9 m up) is inside some camera's image."""
    world = np.column_stack([points, np.full(len(points), 0.9)])
    seen = np.zeros(len(points), bool)
    for camera in cameras:
        uv, depth = camera.project(world)
        w, h = camera.size
        seen |= (depth > 0.5) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    return seen


def _resample(path: np.ndarray) -> np.ndarray:
    along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    samples = np.arange(0.0, along[-1], _STEP)
    return np.column_stack([np.interp(samples, along, path[:, 0]), np.interp(samples, along, path[:, 1])])


_STEP = 0.25


def _random_path(length: float, doors, rng: np.random.Generator) -> np.ndarray:
    """From an end of the hall or a side door to another, with lateral wander every 3-6 m."""
    ends = [("end", 0), ("end", 1)] + [("door", i) for i in range(len(doors))]

    def endpoint(choice):
        kind, index = choice
        if kind == "end":
            x = -4.0 if index == 0 else length + 4.0
            return np.array([x, rng.uniform(WALK_MARGIN + 0.3, HALL_WIDTH - WALK_MARGIN - 0.3)]), None
        x, side = doors[index]
        y = -0.6 if side == 0 else HALL_WIDTH + 0.6
        inside = WALK_MARGIN + 0.2 if side == 0 else HALL_WIDTH - WALK_MARGIN - 0.2
        return np.array([x, y]), np.array([x, inside])

    # Most people walk through the hall end to end, which crosses the most cameras.
    weights = np.array([3.0, 3.0] + [1.0] * len(doors))
    first = ends[rng.choice(len(ends), p=weights / weights.sum())]
    weights2 = weights.copy()
    weights2[ends.index(first)] = 0
    if first[0] == "end":
        weights2[1 - first[1]] *= 3  # from one end mostly to the other
    second = ends[rng.choice(len(ends), p=weights2 / weights2.sum())]
    a, a_in = endpoint(first)
    b, b_in = endpoint(second)
    inner = [p for p in (a_in,) if p is not None]
    tail = [p for p in (b_in,) if p is not None]
    start_x = (inner[0] if inner else a)[0]
    end_x = (tail[0] if tail else b)[0]
    n = max(1, int(abs(end_x - start_x) / rng.uniform(4.0, 7.0)))
    wander = []
    y = (inner[0] if inner else a)[1]
    for x in np.linspace(start_x, end_x, n + 2)[1:-1]:
        # People drift across the hall gradually, not in zig-zags.
        y = float(np.clip(y + rng.uniform(-1.5, 1.5), WALK_MARGIN, HALL_WIDTH - WALK_MARGIN))
        wander.append(np.array([x, y]))
    return np.array([a, *inner, *wander, *tail, b])


def _dress(pid: int, rng, shirts, pants, **walk) -> Person:
    return Person(
        id=pid,
        height=float(np.clip(rng.normal(1.72, 0.09), 1.5, 1.98)),
        shirt=shirts[int(rng.integers(len(shirts)))],
        pants=pants[int(rng.integers(len(pants)))],
        skin=SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
        hair=HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))],
        pattern=PATTERNS[int(rng.choice(len(PATTERNS), p=[0.5, 0.2, 0.15, 0.15]))],
        bag=BAGS[int(rng.choice(len(BAGS), p=[0.6, 0.25, 0.15]))],
        long_sleeves=bool(rng.random() < 0.5),
        stride_phase=float(rng.uniform(0, 2 * np.pi)),
        bag_colour=BAG_COLOURS[int(rng.integers(len(BAG_COLOURS)))],
        **walk,
    )


def _make_lookalikes(people: list[Person], pairs: int, rng: np.random.Generator) -> None:
    """Dress ``pairs`` pairs alike: same colours, sleeves and skin; one differs only in pattern, height or bag."""
    order = [int(i) for i in rng.permutation(len(people))]
    for k in range(min(pairs, len(people) // 2)):
        a, b = people[order[2 * k]], people[order[2 * k + 1]]
        b.shirt, b.pants, b.skin, b.hair, b.long_sleeves = a.shirt, a.pants, a.skin, a.hair, a.long_sleeves
        b.pattern, b.bag, b.bag_colour, b.height = a.pattern, a.bag, a.bag_colour, a.height
        difference = ["pattern", "height", "bag"][k % 3]
        if difference == "pattern":
            b.pattern = "stripes" if a.pattern != "stripes" else "plain"
        elif difference == "height":
            b.height = float(np.clip(a.height + rng.choice([-1, 1]) * rng.uniform(0.1, 0.15), 1.5, 1.98))
        else:
            b.bag = "backpack" if a.bag == "none" else "none"
        b.lookalike_of = a.id
