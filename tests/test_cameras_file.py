"""The cameras file is refused with one line naming the file when it cannot mean what it says."""

import math
from pathlib import Path

import pytest

from pipeline.identity.cameras import load_cameras_file
from reid.errors import CrosscamError


def refused(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cameras.yaml"
    path.write_text(text)
    with pytest.raises(CrosscamError) as info:
        load_cameras_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def test_a_valid_file_loads_with_zoned_starts_and_rules_both_ways(tmp_path: Path):
    path = tmp_path / "cameras.yaml"
    path.write_text(
        "cameras:\n"
        "  - {name: hall, start: '2024-05-01T08:00:05+02:00'}\n"
        "  - {name: door, start: '2024-05-01T07:01:10+01:00'}\n"
        "transitions:\n"
        "  rules:\n"
        "    - {cameras: [hall, door], min_s: 2, max_s: 2}\n"
    )
    spec = load_cameras_file(path)
    assert spec.offsets() == {"hall": 0.0, "door": 65.0}  # the same instant in two zones
    transit = spec.transit()
    assert transit.allows("door", "hall", 2.0) and not transit.allows("hall", "door", 3.0)


def test_start_times_with_and_without_a_zone_are_refused(tmp_path: Path):
    message = refused(
        tmp_path,
        "cameras:\n"
        "  - {name: hall, start: '2024-05-01T08:00:05+02:00'}\n"
        "  - {name: door, start: '2024-05-01 08:01:10'}\n",
    )
    assert "camera(s) hall has a time zone" in message and "door" in message
    assert "give every start time with a zone" in message


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_a_non_finite_offset_is_refused(tmp_path: Path, value: str):
    message = refused(tmp_path, f"cameras:\n  - {{name: hall, offset_s: {value}}}\n")
    assert "camera 'hall': offset_s is" in message and "give a finite number of seconds" in message


@pytest.mark.parametrize("bounds", ["min_s: 60, max_s: 2", "min_s: .nan"])
def test_a_rule_whose_min_exceeds_its_max_is_refused(tmp_path: Path, bounds: str):
    message = refused(
        tmp_path,
        "cameras:\n  - {name: hall, offset_s: 0}\n  - {name: door, offset_s: 5}\n"
        f"transitions:\n  rules:\n    - {{cameras: [hall, door], {bounds}}}\n",
    )
    assert "transitions.rules.0: rule for cameras hall and door" in message and "give min_s <= max_s" in message


def test_two_rules_for_one_pair_are_refused(tmp_path: Path):
    message = refused(
        tmp_path,
        "cameras:\n  - {name: hall, offset_s: 0}\n  - {name: door, offset_s: 5}\n"
        "transitions:\n  rules:\n"
        "    - {cameras: [hall, door], min_s: 0, max_s: 60}\n"
        "    - {cameras: [door, hall], min_s: 0, max_s: 600}\n",
    )
    assert "two transition rules for cameras door and hall" in message and "keep one" in message


def test_a_rule_from_a_camera_to_itself_is_refused(tmp_path: Path):
    message = refused(tmp_path, "cameras:\n  - {name: hall, offset_s: 0}\n"
                                "transitions:\n  rules:\n    - {cameras: [hall, hall], min_s: 0, max_s: 60}\n")
    assert "transition rule from camera hall to itself" in message


def test_default_rule_bounds_stay_open(tmp_path: Path):
    path = tmp_path / "cameras.yaml"
    path.write_text("cameras:\n  - {name: hall, offset_s: 0}\n  - {name: door, offset_s: -3.5}\n"
                    "transitions:\n  rules: [{cameras: [hall, door]}]\n")
    spec = load_cameras_file(path)
    assert spec.offsets() == {"hall": 0.0, "door": -3.5}
    rule = spec.transit().rules[0]
    assert (rule.min_s, rule.max_s) == (-math.inf, math.inf)


def test_a_camera_named_twice_is_named(tmp_path: Path):
    message = refused(tmp_path, "cameras:\n  - {name: hall, offset_s: 0}\n  - {name: door, offset_s: 1}\n"
                                "  - {name: hall, offset_s: 2}\n")
    assert "camera names must be unique (hall given more than once)" in message
