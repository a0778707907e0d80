"""fast-reid's own training configs (``_BASE_`` chains, upper-case keys) as ``crosscam train`` configs:
the translation, fast-reid's defaults where a file is silent, the one-line refusals, and the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.cli.main import main
from reid.errors import CrosscamError
from reid.training import load_train_config
from reid.training.fastreid_config import is_fastreid_config, read_fastreid_config

REPO = Path(__file__).resolve().parents[1]

# fast-reid's configs/Base-bagtricks.yml and configs/Market1501/bagtricks_R50.yml (fast-reid 1.x), verbatim.
BASE_BAGTRICKS = """\
MODEL:
  META_ARCHITECTURE: Baseline

  BACKBONE:
    NAME: build_resnet_backbone
    NORM: BN
    DEPTH: 50x
    LAST_STRIDE: 1
    FEAT_DIM: 2048
    WITH_IBN: False
    PRETRAIN: True

  HEADS:
    NAME: EmbeddingHead
    NORM: BN
    WITH_BNNECK: True
    POOL_LAYER: GlobalAvgPool
    NECK_FEAT: before
    CLS_LAYER: Linear

  LOSSES:
    NAME: ("CrossEntropyLoss", "TripletLoss",)

    CE:
      EPSILON: 0.1
      SCALE: 1.

    TRI:
      MARGIN: 0.3
      HARD_MINING: True
      NORM_FEAT: False
      SCALE: 1.

INPUT:
  SIZE_TRAIN: [ 256, 128 ]
  SIZE_TEST: [ 256, 128 ]

  REA:
    ENABLED: True
    PROB: 0.5

  FLIP:
    ENABLED: True

  PADDING:
    ENABLED: True

DATALOADER:
  SAMPLER_TRAIN: NaiveIdentitySampler
  NUM_INSTANCE: 4
  NUM_WORKERS: 8

SOLVER:
  AMP:
    ENABLED: True
  OPT: Adam
  MAX_EPOCH: 120
  BASE_LR: 0.00035
  WEIGHT_DECAY: 0.0005
  IMS_PER_BATCH: 64

  SCHED: MultiStepLR
  STEPS: [ 40, 90 ]
  GAMMA: 0.1

  WARMUP_FACTOR: 0.1
  WARMUP_ITERS: 2000

  CHECKPOINT_PERIOD: 30

TEST:
  EVAL_PERIOD: 30
  IMS_PER_BATCH: 128

CUDNN_BENCHMARK: True
"""
MARKET_BAGTRICKS_R50 = """\
_BASE_: "../Base-bagtricks.yml"

DATASETS:
  NAMES: ("Market1501",)
  TESTS: ("Market1501",)

OUTPUT_DIR: "logs/market1501/bagtricks_R50"
"""


def fastreid_configs(root: Path, dataset_file: str = MARKET_BAGTRICKS_R50, base: str = BASE_BAGTRICKS) -> Path:
    """fast-reid's layout under ``root``: configs/Base-bagtricks.yml and configs/Market1501/mine.yml; returns the latter."""
    (root / "configs" / "Market1501").mkdir(parents=True)
    (root / "configs" / "Base-bagtricks.yml").write_text(base)
    path = root / "configs" / "Market1501" / "mine.yml"
    path.write_text(dataset_file)
    return path


def test_bagtricks_r50_is_crosscams_bot_r50_recipe(tmp_path):
    """fast-reid's own BoT R50 files and configs/reid/bot_r50.yaml (which names the keys it mirrors) must agree."""
    path = fastreid_configs(tmp_path)
    assert is_fastreid_config(path) and not is_fastreid_config(REPO / "configs/reid/bot_r50.yaml")
    mapped = load_train_config(path)  # recognised by its content
    assert mapped.model_dump() == load_train_config(REPO / "configs/reid/bot_r50.yaml").model_dump()


def test_a_dataset_file_overrides_its_base_and_fastreid_defaults_fill_the_rest(tmp_path):
    base = """\
MODEL:
  BACKBONE: {DEPTH: 34x, LAST_STRIDE: 2, PRETRAIN: False}
  HEADS: {WITH_BNNECK: True, POOL_LAYER: GeneralizedMeanPooling}
  LOSSES:
    NAME: ("CrossEntropyLoss",)
    CE: {EPSILON: 0.1}
DATALOADER: {SAMPLER_TRAIN: NaiveIdentitySampler, NUM_INSTANCE: 8}
SOLVER: {BASE_LR: 0.00035, MAX_EPOCH: 60}
"""
    child = """\
_BASE_: ../Base-bagtricks.yml
MODEL:
  FREEZE_LAYERS: [backbone]
  HEADS: {CLS_LAYER: CircleSoftmax, SCALE: 64, MARGIN: 0.35}
INPUT:
  SIZE_TRAIN: [384, 128]
  SIZE_TEST: [384, 128]
  CJ: {ENABLED: True, PROB: 0.3}
SOLVER: {MAX_EPOCH: 30, IMS_PER_BATCH: 32, FREEZE_ITERS: 500}
"""
    recipe = read_fastreid_config(fastreid_configs(tmp_path, child, base))
    cfg = recipe.train_config()
    # from the dataset file, over the base's values
    assert cfg.solver.epochs == 30 and cfg.input.size == (384, 128) and cfg.solver.freeze_iters == 500
    assert (cfg.loss.classifier, cfg.loss.cls_scale, cfg.loss.cls_margin) == ("circle", 64, 0.35)
    assert cfg.input.cj_prob == 0.3 and cfg.input.cj_brightness == 0.15  # CJ.BRIGHTNESS: fast-reid's default
    # from the base file
    assert (cfg.model.backbone, cfg.model.last_stride, cfg.model.pretrained, cfg.model.pooling) == ("resnet34", 2, False, "gem")
    assert (cfg.sampler.ids_per_batch, cfg.sampler.instances) == (4, 8)  # 32 images / NUM_INSTANCE 8
    assert cfg.loss.ce_epsilon == 0.1 and cfg.loss.triplet_weight == 0  # no TripletLoss in LOSSES.NAME
    # fast-reid's defaults (not crosscam's) where both files are silent
    assert (cfg.input.flip_prob, cfg.input.padding, cfg.input.erasing_prob) == (0, 0, 0)  # FLIP/PADDING/REA off
    assert cfg.solver.steps == [30, 55] and cfg.solver.warmup_iters == 1000 and cfg.solver.amp is False
    assert (cfg.eval.period, cfg.eval.batch_size, cfg.checkpoint_period) == (20, 64, 20)
    summary = "\n".join(recipe.summary(cfg))
    files_part, defaults_part = summary.split("fast-reid's defaults (the files leave them out):")
    assert files_part.startswith(f"fast-reid config {recipe.path} (with _BASE_ ") and "solver.epochs=30 (SOLVER.MAX_EPOCH)" in files_part
    assert "solver.steps=[30, 55] (SOLVER.STEPS)" in defaults_part and "solver.steps" not in files_part
    assert recipe.train_config(["solver.epochs=5"]).solver.epochs == 5  # --set: crosscam's keys, applied last
    # the summary says what trains: a --set value, marked (it said the file's 30)
    changed = recipe.summary(recipe.train_config(["solver.epochs=5"]), ["solver.epochs=5"])
    assert any("solver.epochs=5 (--set)" in line for line in changed) and not any("epochs=30" in line for line in changed)


@pytest.mark.parametrize("child, base_change, words", [
    ("MODEL:\n  BACKBONE:\n    WITH_IBN: True\n", None,
     "{child}: MODEL.BACKBONE.WITH_IBN True: crosscam trains no IBN-a ResNet; set it to False"),
    ("MODEL:\n  BACKBONE:\n    DEPTH: 101x\n", None, "{child}: MODEL.BACKBONE.DEPTH 101x: crosscam trains ResNet-18/34/50"),
    ("MODEL:\n  BACKBONE:\n    NAME: build_resnest_backbone\n", None, "{child}: MODEL.BACKBONE.NAME build_resnest_backbone: crosscam trains ResNets"),
    ("MODEL:\n  META_ARCHITECTURE: MGN\n", None, "{child}: MODEL.META_ARCHITECTURE MGN: crosscam trains the Baseline (BoT)"),
    ("MODEL:\n  HEADS:\n    POOL_LAYER: GeneralizedMeanPoolingP\n", None, "MODEL.HEADS.POOL_LAYER GeneralizedMeanPoolingP: crosscam pools with"),
    ("MODEL:\n  LOSSES:\n    NAME: ('CrossEntropyLoss', 'CircleLoss')\n", None, "MODEL.LOSSES.NAME [CrossEntropyLoss, CircleLoss]: crosscam trains with"),
    ("SOLVER:\n  SCHED: CosineAnnealingLR\n", None, "SOLVER.SCHED CosineAnnealingLR: crosscam's schedule is MultiStepLR"),
    ("DATASETS:\n  NAMES: ('Market1501', 'DukeMTMC')\n", None, "DATASETS.NAMES [Market1501, DukeMTMC]: crosscam trains on one --data folder"),
    ("SOLVER:\n  MAX_ITER: 18000\n", None, "{child}: SOLVER.MAX_ITER: not a key of fast-reid 1.x's config"),
    ("", ("    WITH_IBN: False\n", "    WITH_IBN: False\n    WITH_NL: True\n"),  # set by the base: the base is named, and whose _BASE_ it is
     "{base} (_BASE_ of {child}): MODEL.BACKBONE.WITH_NL True: crosscam trains no non-local blocks"),
    ("", ("    WITH_BNNECK: True\n", ""),  # left out: fast-reid's default (False) is what is refused
     "{child} (fast-reid's default; the file does not set it): MODEL.HEADS.WITH_BNNECK False: crosscam's head always has a BNNeck"),
])
def test_what_crosscam_cannot_train_is_refused_in_one_line_naming_key_value_and_file(tmp_path, child, base_change, words):
    base = BASE_BAGTRICKS.replace(*base_change) if base_change else BASE_BAGTRICKS
    path = fastreid_configs(tmp_path, "_BASE_: ../Base-bagtricks.yml\n" + child, base)
    expected = words.format(child=path, base=path.parent / "../Base-bagtricks.yml")
    with pytest.raises(CrosscamError, match=re.escape(expected)) as info:
        load_train_config(path)
    assert "\n" not in str(info.value) and "; " in str(info.value)  # what is wrong; what to do


def test_every_setting_crosscam_cannot_train_is_named_at_once(tmp_path):
    """An SBS file took five runs, each naming the next key."""
    path = fastreid_configs(tmp_path, "_BASE_: ../Base-bagtricks.yml\nMODEL:\n  BACKBONE:\n    WITH_NL: True\n"
                                      "SOLVER:\n  SCHED: CosineAnnealingLR\n  OPT: SGD\n")
    with pytest.raises(CrosscamError) as info:
        load_train_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: MODEL.BACKBONE.WITH_NL True: ") and "\n" not in message
    assert "| SOLVER.OPT SGD: crosscam trains with Adam" in message and "| SOLVER.SCHED CosineAnnealingLR" in message
    assert "(3 settings crosscam cannot train; edit the file: --set takes crosscam's keys)" in message


def test_a_crosscam_file_with_a_stray_capital_key_is_read_as_crosscams(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("solver:\n  epochs: 3\nNOTE: tried on CUHK03\n")
    with pytest.raises(CrosscamError, match="unknown config key 'NOTE'"):
        load_train_config(path)
    path.write_text("_BASE_: crosscam.yaml\nSOLVER:\n  BASE_LR: 0.1\n")
    (tmp_path / "crosscam.yaml").write_text("solver:\n  epochs: 3\n")
    with pytest.raises(CrosscamError, match="solver.epochs: not a fast-reid config key"):
        load_train_config(path)


def test_a_value_crosscam_rejects_names_the_fastreid_key_and_a_missing_base_names_the_file(tmp_path):
    path = fastreid_configs(tmp_path, MARKET_BAGTRICKS_R50 + "INPUT:\n  SIZE_TRAIN: [16, 8]\n  SIZE_TEST: [16, 8]\n")
    with pytest.raises(CrosscamError, match=re.escape(f"{path}: config key 'input.size.0' (INPUT.SIZE_TRAIN): Input should be greater")):
        load_train_config(path)
    with pytest.raises(CrosscamError, match=re.escape("--set input.size=[8,4]: config key 'input.size.0': Input should be")):
        load_train_config(path, ["input.size=[8,4]"])  # the --set is blamed, not the fast-reid key
    path.write_text('_BASE_: "../Base-absent.yml"\n')
    with pytest.raises(CrosscamError, match=re.escape(f"{path}: _BASE_: ../Base-absent.yml not found (looked for ")):
        load_train_config(path)


def test_train_says_which_settings_came_from_the_fastreid_file(tmp_path, monkeypatch, capsys):
    seen = []

    class Recorded:
        def __init__(self, cfg, data, out, resume=False, progress=True):
            seen.append(cfg)

        def run(self):
            return {"model": "m", "log": "l"}

    monkeypatch.setattr("reid.training.Trainer", Recorded)
    path = fastreid_configs(tmp_path)
    args = ["train", "--config", str(path), "--data", str(tmp_path / "market"), "--out", str(tmp_path / "run"), "--set", "solver.epochs=2"]
    assert main([*args, "--json"]) == 0
    err = capsys.readouterr().err
    assert f"fast-reid config {path}" in err and "solver.base_lr=0.00035 (SOLVER.BASE_LR)" in err
    assert "OUTPUT_DIR (crosscam writes to --out)" in err and "DATASETS.NAMES (crosscam trains on --data)" in err
    assert seen[0].solver.epochs == 2 and seen[0].model.backbone == "resnet50"


def test_a_misspelt_section_of_a_fastreid_file_is_said_as_fastreids(tmp_path):
    """A base file without _BASE_ and one misspelt section was read as crosscam's ("unknown config key 'MODEL'")."""
    path = tmp_path / "Base-bagtricks.yml"
    path.write_text(BASE_BAGTRICKS.replace("SOLVER:", "SOLVERR:", 1))
    assert is_fastreid_config(path)
    with pytest.raises(CrosscamError, match=re.escape(f"{path}: SOLVERR: not a section of fast-reid's config; did you mean SOLVER?")):
        load_train_config(path)


def test_the_summary_marks_a_section_set_as_a_whole(tmp_path):
    recipe = read_fastreid_config(fastreid_configs(tmp_path))
    overrides = ["input={size: [128, 64]}"]
    lines = recipe.summary(recipe.train_config(overrides), overrides)
    assert any("input.size=[128, 64] (--set)" in line for line in lines)
    said = []
    load_train_config(recipe.path, (o for o in overrides), said=said.append)  # a generator: read once, used twice
    assert any("input.size=[128, 64] (--set)" in line for line in said)
