from pathlib import Path

import pytest
import yaml

from pipeline.config import DEFAULT_CONFIG, PipelineConfig, load_pipeline_config
from reid.config import BotModelConfig, EmbedderConfig, load_config
from reid.errors import CrosscamError


def test_base_yaml_matches_model_defaults():
    # configs/base.yaml documents the defaults; it must not drift from the pydantic models.
    from_file = yaml.safe_load(DEFAULT_CONFIG.read_text())
    assert PipelineConfig.model_validate(from_file) == PipelineConfig()
    # ... and it names every key (validation alone fills a missing one with its default)
    defaults = PipelineConfig().model_dump()
    assert {(s, k) for s, keys in from_file.items() for k in keys} == {(s, k) for s, keys in defaults.items() for k in keys}


def test_base_file_and_overrides(tmp_path: Path):
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {DEFAULT_CONFIG}\ntracker:\n  max_age: 45\n")
    cfg = load_pipeline_config(child, ["reid.flip=true", "detector.confidence=0.25"])
    assert cfg.tracker.max_age == 45
    assert cfg.tracker.n_init == 2  # kept from the base file
    assert cfg.reid.flip is True
    assert cfg.detector.confidence == 0.25


def test_unknown_key_names_key_and_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tracker:\n  max_agee: 5\n")
    with pytest.raises(CrosscamError, match=r"bad.yaml: unknown config key 'tracker.max_agee' \(did you mean tracker.max_age\?\)"):
        load_pipeline_config(bad)


def test_a_wrong_override_is_blamed_not_the_file():
    with pytest.raises(CrosscamError) as info:
        load_pipeline_config(None, ["tracker.nokey=1"])
    message = str(info.value)
    assert message.startswith("--set tracker.nokey=1: unknown config key 'tracker.nokey'; the keys here are tracker.max_age, ")
    assert "fix the file" not in message


def test_out_of_range_value_is_one_line():
    with pytest.raises(CrosscamError) as info:
        load_pipeline_config(None, ["detector.confidence=1.5"])
    assert "detector.confidence" in str(info.value) and "\n" not in str(info.value)


def test_bad_override_syntax():
    with pytest.raises(CrosscamError, match="KEY=VALUE"):
        load_config(PipelineConfig, None, ["tracker.max_age"])


def test_the_readmes_config_paths_work_from_any_folder(tmp_path: Path, monkeypatch):
    """`--config configs/demo.yaml` was "not found" outside the checkout; a file of the user's own comes first."""
    shipped = load_pipeline_config(DEFAULT_CONFIG.parent / "demo.yaml")
    monkeypatch.chdir(tmp_path)
    assert load_pipeline_config("configs/demo.yaml") == shipped == load_pipeline_config("demo.yaml")
    (tmp_path / "demo.yaml").write_text("association:\n  threshold: 0.5\n")
    assert load_pipeline_config("demo.yaml").association.threshold == 0.5
    with pytest.raises(CrosscamError, match=r"config file not found \(nor among crosscam's own, .*configs\)"):
        load_pipeline_config("configs/nope.yaml")


def test_missing_and_invalid_files(tmp_path: Path):
    with pytest.raises(CrosscamError, match="config file not found"):
        load_pipeline_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(CrosscamError, match="not valid YAML"):
        load_pipeline_config(broken)


def test_a_cycle_of_base_files_is_one_line_naming_the_cycle(tmp_path: Path):
    (tmp_path / "c1.yaml").write_text("base: c2.yaml\n")
    (tmp_path / "c2.yaml").write_text("base: ./c1.yaml\n")  # another spelling of the same file
    with pytest.raises(CrosscamError) as info:
        load_pipeline_config(tmp_path / "c1.yaml")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'c2.yaml'}: base: ./c1.yaml makes a cycle") and "\n" not in message
    assert f"({tmp_path / 'c1.yaml'} -> {tmp_path / 'c2.yaml'} -> {tmp_path / 'c1.yaml'})" in message


def test_a_missing_base_blames_the_file_that_names_it(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    child.write_text("base: ../absent.yaml\n")
    with pytest.raises(CrosscamError) as info:
        load_pipeline_config(child)
    message = str(info.value)
    assert message.startswith(f"{child}: base: ../absent.yaml not found (looked for {tmp_path.resolve() / 'absent.yaml'} and in ")
    assert "--config" not in message
    child.write_text("base: [a.yaml]\n")
    with pytest.raises(CrosscamError, match=r"child.yaml: base: \['a.yaml'\] is not a file name"):
        load_pipeline_config(child)


@pytest.mark.parametrize("override", ["scale.segment_s=.inf", "tracker.link_max_gap_s=nan", "detector.confidence=-.inf"])
def test_infinite_or_nan_settings_are_refused_in_one_line(override):
    # `--segment-s inf` passed typer's min=0 and crashed segment planning with OverflowError after Ray started.
    with pytest.raises(CrosscamError, match="finite number") as caught:
        load_pipeline_config(DEFAULT_CONFIG, [override])
    assert "unknown config key" not in str(caught.value) and "the keys here" not in str(caught.value)  # a bad value


def test_base_yaml_named_by_a_users_own_file_is_crosscams(tmp_path: Path):
    """configs/base.yaml's header says to start a file with `base: base.yaml`: it works from any folder."""
    (tmp_path / "mine.yaml").write_text("base: base.yaml\ntracker:\n  max_age: 7\n")
    cfg = load_pipeline_config(tmp_path / "mine.yaml")
    assert cfg.tracker.max_age == 7 and cfg.reid == PipelineConfig().reid


def test_files_that_are_not_yaml_text_are_one_line(tmp_path: Path):
    (tmp_path / "utf16.yaml").write_bytes("tracker:\n  max_age: 5\n".encode("utf-16"))
    with pytest.raises(CrosscamError, match=r"utf16.yaml: not a UTF-8 text file; save the config as UTF-8 YAML$"):
        load_pipeline_config(tmp_path / "utf16.yaml")
    (tmp_path / "indent.yaml").write_text("tracker:\n  max_age: 5\n    n_init: 2\n")
    with pytest.raises(CrosscamError, match=r"indent.yaml: not valid YAML at line 3 \("):
        load_pipeline_config(tmp_path / "indent.yaml")
    with pytest.raises(CrosscamError, match="a folder; pass a YAML file to --config"):
        load_pipeline_config(tmp_path)


def test_the_override_at_fault_is_named(tmp_path: Path):
    with pytest.raises(CrosscamError, match=r"^--set tracker.max_age=-1: config key 'tracker.max_age'"):
        load_pipeline_config(None, ["tracker.max_age=5", "tracker.max_age=-1"])  # the last one is applied
    with pytest.raises(CrosscamError, match=r"^--set nosection.key=1: unknown config key 'nosection'; the keys here are source, "):
        load_pipeline_config(None, ["nosection.key=1"])
    with pytest.raises(CrosscamError, match=r"^--set tracker.max_ag=3: unknown config key 'tracker.max_ag'; did you mean tracker.max_age\?$"):
        load_pipeline_config(None, ["tracker.max_ag=3"])  # said 'Extra inputs are not permitted
    (tmp_path / "model.yaml").write_text("depth: 50\n")
    with pytest.raises(CrosscamError, match=r"^--set backbone=resnest / --set ibn=true: backbone resnest is ResNeSt-50 without IBN"):
        load_config(BotModelConfig, tmp_path / "model.yaml", ["backbone=resnest", "ibn=true"])  # valid apart
    (tmp_path / "wrong.yaml").write_text("depth: 50\nbackbone: resnest\nibn: true\n")
    with pytest.raises(CrosscamError, match=r"^.*wrong.yaml: backbone resnest is ResNeSt-50 without IBN"):
        load_config(BotModelConfig, tmp_path / "wrong.yaml", ["input_size=[384, 128]"])  # the file's own fault


def test_a_misspelt_section_in_a_file_gets_a_suggestion(tmp_path: Path):
    (tmp_path / "bad.yaml").write_text("asociation:\n  threshold: 0.5\n")
    with pytest.raises(CrosscamError, match=r"bad.yaml: unknown config key 'asociation' \(did you mean association\?\); fix the file$"):
        load_pipeline_config(tmp_path / "bad.yaml")  # (and no --set to blame)


def test_a_config_for_another_command_says_so():
    with pytest.raises(CrosscamError, match=r"unknown config key 'source' \(the top-level keys are weights, device, .*: a config "
                                            r"for another command\?\)"):
        load_config(EmbedderConfig, DEFAULT_CONFIG)


def test_a_value_set_in_python_is_checked_as_one_from_yaml():
    """A library caller setting a field directly got no check (batch_size 0 crashed deep in the chain)."""
    from pydantic import ValidationError

    cfg = PipelineConfig()
    for section, key, value in (("detector", "batch_size", 0), ("tracker", "max_age", "not-an-int"),
                                ("scale", "segment_s", float("inf"))):
        with pytest.raises(ValidationError):
            setattr(getattr(cfg, section), key, value)
    cfg.tracker.max_age = 45
    assert cfg.tracker.max_age == 45
    cfg.reid.weights = Path("w") / "osnet.onnx"  # a path setting takes a Path as before, kept as text
    cfg.detector.model = Path("yolov8n.onnx")
    assert (cfg.reid.weights, cfg.detector.model) == (str(Path("w") / "osnet.onnx"), "yolov8n.onnx")


def test_one_string_where_a_list_is_expected_is_said():
    """A library caller's load_pipeline_config(None, "detector.model=motion") read it letter by letter."""
    with pytest.raises(CrosscamError, match=r"overrides 'detector.model=motion': give a list of KEY=VALUE strings"):
        load_pipeline_config(None, "detector.model=motion")
    from pipeline.video.run import track_videos

    with pytest.raises(CrosscamError, match=r"specs 'cam1.mp4': give a list of inputs, e.g. \['cam1.mp4'\]"):
        track_videos("cam1.mp4", "runs/x", PipelineConfig())
