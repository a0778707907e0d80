"""The cameras file: puts every camera on one clock and says how people move between cameras.

Recorded videos rarely start at the same moment. A YAML file names each camera, its video and
when that video starts, either as a wall-clock time or as an offset in seconds on a common
clock; optional transit rules say which cameras connect and how long the walk takes::

    cameras:
      - name: hall
        video: videos/hall.mp4          # optional, for the reader (the camera is named by --camera or the stem)
        start: "2024-05-01 08:00:05"    # when frame 0 was recorded (ISO 8601) ...
      - name: door
        offset_s: 42.5                  # ... or seconds after the common clock's zero
    transitions:                        # optional
      only_listed: true                 # camera pairs without a rule cannot follow each other
      rules:
        - cameras: [hall, door]
          min_s: 2                      # fastest walk between the two views
          max_s: 120                    # slowest

With ``start`` times the common clock's zero is the earliest start; give every start with a time
zone (``+02:00``) or none. ``offset_s`` must be finite. A rule needs ``min_s <= max_s`` (seconds),
and one rule per camera pair, which applies in both directions. Without a cameras file each
camera's times are seconds from its own video's start, and reports say so.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from pipeline.identity.association import TransitConstraints, TransitRule
from reid.config import near_keys
from reid.errors import CrosscamError


class CameraClock(BaseModel):
    """One camera: its name, optional video path, and when its video starts."""

    model_config = {"extra": "forbid"}

    name: str
    video: str | None = None
    start: datetime | None = None
    offset_s: float | None = None

    @model_validator(mode="after")
    def _one_way_to_say_when(self) -> "CameraClock":
        if (self.start is None) == (self.offset_s is None):
            raise ValueError(f"camera {self.name!r}: give exactly one of 'start' or 'offset_s'")
        if self.offset_s is not None and not math.isfinite(self.offset_s):
            raise ValueError(f"camera {self.name!r}: offset_s is {self.offset_s}; give a finite number of seconds")
        return self


class TransitRuleSpec(BaseModel):
    model_config = {"extra": "forbid"}

    cameras: tuple[str, str]
    min_s: float = -math.inf  # seconds
    max_s: float = math.inf  # seconds

    @model_validator(mode="after")
    def _bounds_in_order(self) -> "TransitRuleSpec":
        if not self.min_s <= self.max_s:  # also refuses nan
            raise ValueError(
                f"rule for cameras {self.cameras[0]} and {self.cameras[1]} has min_s {self.min_s} and max_s "
                f"{self.max_s}, which allow no walk between them; give min_s <= max_s (seconds)"
            )
        return self


class TransitionsSpec(BaseModel):
    model_config = {"extra": "forbid"}

    only_listed: bool = False
    rules: list[TransitRuleSpec] = Field(default_factory=list)


class CamerasFile(BaseModel):
    """A parsed cameras file.

    >>> spec = CamerasFile.model_validate({"cameras": [
    ...     {"name": "a", "start": "2024-05-01 08:00:00"}, {"name": "b", "start": "2024-05-01 08:00:30"}]})
    >>> spec.offsets()
    {'a': 0.0, 'b': 30.0}
    """

    model_config = {"extra": "forbid"}

    cameras: list[CameraClock]
    transitions: TransitionsSpec = TransitionsSpec()

    @model_validator(mode="after")
    def _consistent(self) -> "CamerasFile":
        names = [c.name for c in self.cameras]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"camera names must be unique ({', '.join(twice)} given more than once)")
        kinds = {c.start is None for c in self.cameras}
        if len(kinds) > 1:
            raise ValueError("use 'start' for every camera or 'offset_s' for every camera, not both")
        zoned = [c.name for c in self.cameras if c.start is not None and c.start.utcoffset() is not None]
        naive = [c.name for c in self.cameras if c.start is not None and c.start.utcoffset() is None]
        if zoned and naive:
            raise ValueError(
                f"start time of camera(s) {', '.join(zoned)} has a time zone but that of {', '.join(naive)} has none; "
                "give every start time with a zone (e.g. +02:00) or none"
            )
        pairs: set[frozenset[str]] = set()
        for rule in self.transitions.rules:
            if rule.cameras[0] == rule.cameras[1]:
                raise ValueError(f"transition rule from camera {rule.cameras[0]} to itself; a rule names two cameras")
            unknown = set(rule.cameras) - set(names)
            if unknown:
                raise ValueError(f"transitions: a rule names camera(s) {', '.join(sorted(unknown))}, which the file does not "
                                 f"list ({', '.join(names)})")
            pair = frozenset(rule.cameras)
            if pair in pairs:
                raise ValueError(
                    f"two transition rules for cameras {' and '.join(rule.cameras)}; "
                    "keep one (a rule applies in both directions)"
                )
            pairs.add(pair)
        return self

    def clock_origin(self) -> datetime | None:
        """When the common clock reads 0 s: the earliest start, where the file gives start times."""
        return min(c.start for c in self.cameras) if self.cameras and self.cameras[0].start is not None else None

    def offsets(self) -> dict[str, float]:
        """Seconds to add to each camera's video time to reach the common clock."""
        zero = self.clock_origin()
        if zero is not None:
            return {c.name: (c.start - zero).total_seconds() for c in self.cameras}
        return {c.name: float(c.offset_s) for c in self.cameras}

    def transit(self) -> TransitConstraints:
        rules = [TransitRule(tuple(r.cameras), r.min_s, r.max_s) for r in self.transitions.rules]
        return TransitConstraints(rules, only_listed=self.transitions.only_listed)


def load_cameras_file(path: str | Path) -> CamerasFile:
    """Read and validate a cameras YAML file; every problem is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        what = "a folder, not a cameras file" if path.is_dir() else "cameras file not found"
        raise CrosscamError(f"{path}: {what}; pass an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0]
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CrosscamError(f"{path}: not valid YAML{where} ({first}); fix the file") from None
    try:
        return CamerasFile.model_validate(data if isinstance(data, dict) else {})
    except ValidationError as exc:  # a misspelt key first: it explains a "Field required" beside it (camera: for cameras:)
        err = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":  # a misspelt key
            msg = f"unknown key; {near_keys(CamerasFile, err['loc'])}"
        where = f"{'.'.join(str(p) for p in err['loc'])}: " if err["loc"] else ""  # a check across the file says where itself
        raise CrosscamError(f"{path}: {where}{msg}; see 'Camera clocks' in README.md for the format") from None


def camera_offsets(
    cameras: list[str], spec: CamerasFile | None, source: str = "cameras file"
) -> tuple[dict[str, float], bool]:
    """Offsets onto the common clock for ``cameras`` and whether that clock is common.

    Without a cameras file every offset is 0 and the clock is each video's own.
    """
    if spec is None:
        return {name: 0.0 for name in cameras}, False
    offsets = spec.offsets()
    missing = [name for name in cameras if name not in offsets]
    if missing:
        strangers = [name for name in offsets if name not in cameras]  # a misspelt entry is one of these
        named = (f" ({', '.join(strangers)} in it {'is no camera' if len(strangers) == 1 else 'are no cameras'} of this run: "
                 "misspelt?)") if strangers else ""
        raise CrosscamError(
            f"{source}: no entry for camera(s) {', '.join(missing)}{named}; add them with a start or offset_s "
            "(a camera is named by --camera, else its video's file stem; an entry's video: is only a note)"
        )
    return {name: offsets[name] for name in cameras}, True
