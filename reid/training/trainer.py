"""The training loop of ``crosscam train``: BoT recipe on any Market-1501-layout folder.

Writes into ``out_dir``:

- ``config.yaml``: the resolved :class:`~reid.training.config.TrainConfig`;
- ``log.csv``: one row per epoch (lr, losses, train accuracy, img/s, seconds, ``ema_decay``, and
  rank-1 / mAP / mINP on the epochs that were evaluated); a row with ``ema_decay`` set has the
  metrics of the EMA weights, not of the trained ones;
- ``last.pth``: model + optimizer + AMP scaler + position (+ ``ema`` weights and ``ema_updates``
  with ``solver.ema_decay``), rewritten after every epoch (``resume=True`` continues from it);
- ``model.pth``: the weights alone (fast-reid key layout + a ``crosscam`` entry; the EMA weights
  with ``solver.ema_decay``), every ``checkpoint_period`` epochs and at the end; ResNet-50 files
  load with ``Embedder.from_weights``, every backbone exports with ``crosscam export``;
- ``metrics.json``: the last evaluation.

EMA (``solver.ema_decay``, :mod:`reid.training.ema`): updated after every optimizer step on the
model's device; it changes nothing in the training itself. Resuming a ``last.pth`` without EMA
weights with ``ema_decay`` set is refused (the average cannot be rebuilt); resuming an EMA run
with ``ema_decay`` unset drops the average.

Backbone freeze (``solver.freeze_iters``, :mod:`reid.training.freeze`): for the first N global
iterations only the head trains; the backbone takes no gradient and runs in eval mode. A resumed
run freezes up to N as well (the state follows the restored iteration count).

Seeds: the PK batches of an epoch depend on ``(seed, epoch)`` and torch's generator (augmentation,
initialisation) is re-seeded per epoch, so a resumed run sees the same batches and augmentations.

>>> trainer = Trainer(TrainConfig(), "../shared/data/cuhk03-market", "runs/bot_r50")  # doctest: +SKIP
>>> trainer.run()["mAP"]  # doctest: +SKIP
0.7
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from reid.benchmark import dataset_features, dataset_file_key
from reid.checkpoint import read_checkpoint, to_crosscam_names
from reid.data.market import MarketDataset
from reid.embedder import Embedder, TorchFeatures, resolve_device
from reid.errors import CrosscamError
from reid.evaluation.distance import pairwise_distance
from reid.evaluation.ranking import evaluate_ranking, same_person_pairs
from reid.progress import progress_bar
from reid.training.checkpoint_io import describe_model, key_generation, save_checkpoint, to_fastreid_state_dict
from reid.training.config import InputSection, TrainConfig
from reid.training.data import TrainImages, train_files_key
from reid.training.ema import ModelEma
from reid.training.freeze import BackboneFreeze
from reid.training.losses import bot_loss
from reid.training.models import build_train_model, imagenet_weights_file
from reid.training.sampler import PKSampler
from reid.training.schedule import build_optimizer, learning_rate, set_learning_rate
from reid.training.transforms import ColorJitter, TrainAugment

logger = logging.getLogger(__name__)

PENDING_ROW = "pending_epoch.json"  # an epoch saved in last.pth whose evaluation and log row are not written yet
_POSTFIX_EVERY = 20  # iterations between progress-bar loss readings (each one waits for the GPU)

LOG_COLUMNS = [
    "epoch", "iteration", "lr", "loss", "ce", "triplet", "train_acc", "images_per_s", "epoch_s",
    "ema_decay", "rank1", "rank5", "mAP", "mINP",
]


class Trainer:
    """Train a ReID model on ``data_root``'s ``bounding_box_train``; evaluate on its query/gallery.

    >>> from reid.training import load_train_config
    >>> cfg = load_train_config("configs/reid/mobilenetv2_cpu.yaml")  # doctest: +SKIP
    >>> Trainer(cfg, "../shared/data/cuhk03-market", "runs/mnv2").run()  # doctest: +SKIP
    """

    def __init__(self, cfg: TrainConfig, data_root: str | Path, out_dir: str | Path, resume: bool = False, progress: bool = True):
        self.cfg = cfg
        self.data_root = Path(data_root)
        self.out_dir = Path(out_dir)
        self.resume = resume
        self.progress = progress
        self.device = torch.device(resolve_device(cfg.device, "--set device="))  # train has no --device
        self.use_amp = cfg.solver.amp and self.device.type == "cuda"

    def run(self) -> dict[str, Any]:
        """Train every remaining epoch; returns the last evaluation (rank1, mAP, ...) and file paths."""
        threads = torch.get_num_threads()
        if self.cfg.threads is not None:
            torch.set_num_threads(self.cfg.threads)
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        dataset = MarketDataset(self.data_root)
        _check_evaluable(dataset)  # before training, not after it
        if cfg.model.backbone == "onnx" and cfg.model.onnx and not Path(cfg.model.onnx).is_file():  # before loading images
            raise CrosscamError(f"model.onnx {cfg.model.onnx}: no such ONNX file (a relative path is read from "
                                f"{Path.cwd()}); give the model to fine-tune with --set model.onnx=PATH")
        if cfg.model.pretrained and not self.resume and cfg.model.backbone != "onnx":
            imagenet_weights_file(cfg.model.backbone)  # missing: said before the images load (a minute for Market-1501)
        if self.resume and not (self.out_dir / "last.pth").is_file():  # said before the images load, too
            raise CrosscamError(f"{self.out_dir / 'last.pth'}: nothing to resume; run without --resume to start a new "
                                f"training in {self.out_dir}")
        self.data_key = train_files_key(dataset)  # --resume: the same images
        self.eval_key = _eval_files_key(dataset)  # --resume: said when the evaluation's images changed
        images = TrainImages.load(dataset.root, cfg.input.size, self.progress)
        if self.device.type == "cuda":
            images = images.to(self.device)  # 0.7 GB for CUHK03 at 256x128: batches are cut and augmented on the GPU
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels once
        model = build_train_model(cfg.model, images.num_classes, imagenet=not self.resume)
        model = model.to(self.device, memory_format=torch.channels_last)
        meta = describe_model(cfg.model, cfg.input.size, images.num_classes, model.feat_dim)
        optimizer = build_optimizer(model, cfg.solver)
        ema = ModelEma(model, cfg.solver.ema_decay) if cfg.solver.ema_decay is not None else None
        freeze = BackboneFreeze(model, cfg.solver.freeze_iters)  # after the optimizer: it holds the backbone
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        sampler = PKSampler(images.pids, cfg.sampler.ids_per_batch, cfg.sampler.instances, cfg.seed)
        augment = TrainAugment(cfg.input.size, cfg.input.flip_prob, cfg.input.padding, cfg.input.erasing_prob, _color_jitter(cfg.input))
        iters_per_epoch = cfg.solver.iters_per_epoch or max(1, len(images) // sampler.batch_size)

        self.out_dir.mkdir(parents=True, exist_ok=True)
        start_epoch, iteration = self._restore(model, optimizer, scaler, ema, meta) if self.resume else (0, 0)
        final = ema.module if ema is not None else model  # what is evaluated and saved as model.pth
        log = EpochLog(self.out_dir / "log.csv", append=self.resume)
        metrics: dict[str, Any] = {}
        finished = self._pending_row(start_epoch) if self.resume else None
        if finished is not None:  # stopped while that epoch was evaluated: evaluate and log it now
            metrics = self._finish_epoch(finished, final, dataset, log)
        elif start_epoch >= cfg.solver.epochs:
            raise CrosscamError(f"{self.out_dir / 'last.pth'}: already trained {start_epoch} epoch{'s' * (start_epoch != 1)}; "
                                "raise solver.epochs to train further")
        _write_text(self.out_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        for epoch in range(start_epoch, cfg.solver.epochs):
            torch.manual_seed(cfg.seed * 100_003 + epoch)
            row, iteration = self._train_epoch(
                model, optimizer, scaler, ema, freeze, images, sampler, augment, epoch, iteration, iters_per_epoch
            )
            row["ema_decay"] = cfg.solver.ema_decay
            last_epoch = epoch + 1 == cfg.solver.epochs
            # saved before evaluating: an evaluation that fails (an unreadable gallery image) keeps the epoch
            state = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch + 1, "iteration": iteration}
            if ema is not None:
                state.update(ema=to_fastreid_state_dict(ema.module, meta["stem"]), ema_updates=ema.updates)
            save_checkpoint(self.out_dir / "last.pth", model, meta, config=cfg.model_dump(mode="json"), data=self.data_key,
                            eval_data=self.eval_key, **state)
            if last_epoch or (epoch + 1) % cfg.checkpoint_period == 0:
                save_checkpoint(self.out_dir / "model.pth", final, meta)
            _write_text(self.out_dir / PENDING_ROW, json.dumps(row))  # until its evaluation and log row are written
            metrics = self._finish_epoch(row, final, dataset, log) or metrics
        return {**metrics, "model": str((self.out_dir / "model.pth").resolve()), "log": str(Path(log.path).resolve())}

    def _finish_epoch(self, row: dict[str, Any], final: torch.nn.Module, dataset: MarketDataset, log: "EpochLog") -> dict[str, Any]:
        """Evaluate the epoch of ``row`` where due (the last one, or every ``eval.period``), write
        ``metrics.json``, log the row and drop the pending row; the metrics ({} when not evaluated)."""
        epoch, metrics = int(row["epoch"]), {}
        if epoch == self.cfg.solver.epochs or (self.cfg.eval.period > 0 and epoch % self.cfg.eval.period == 0):
            metrics = self.evaluate(final, dataset, epoch - 1)
            row.update({key: metrics[key] for key in ("rank1", "rank5", "mAP", "mINP")})
            _write_text(self.out_dir / "metrics.json", json.dumps(metrics, indent=2))
        log.append(row)
        (self.out_dir / PENDING_ROW).unlink(missing_ok=True)
        return metrics

    def _pending_row(self, saved_epoch: int) -> dict[str, Any] | None:
        """The log row of the epoch ``last.pth`` holds, when a stop came before it was evaluated and logged."""
        path = self.out_dir / PENDING_ROW
        row = json.loads(path.read_text()) if path.is_file() else None
        if row is None or int(row["epoch"]) != saved_epoch:
            return None
        logged = read_log(self.out_dir / "log.csv")  # a stop after the row was logged, before its note went
        return None if logged and int(logged[-1]["epoch"]) == saved_epoch else row

    def _train_epoch(self, model, optimizer, scaler, ema, freeze, images, sampler, augment, epoch, iteration, iters_per_epoch):
        cfg = self.cfg
        model.train()
        # Sums stay on the device: reading them every step would stall a GPU on each iteration.
        sums = torch.zeros(4, device=self.device)  # loss, ce, triplet (image-weighted), correct
        seen = 0
        start = time.perf_counter()
        batches = sampler.epoch_batches(epoch, iters_per_epoch)
        bar = progress_bar(batches, desc=f"epoch {epoch + 1}/{cfg.solver.epochs}", unit="it", disable=not self.progress)
        for step, indices in enumerate(bar):
            lr = learning_rate(cfg.solver, iteration, epoch, iters_per_epoch)
            set_learning_rate(optimizer, lr)
            freeze.update(iteration)  # backbone frozen (no grad, eval mode) while iteration < solver.freeze_iters
            pixels, labels = images.batch(indices)
            pixels = augment(pixels).to(self.device, memory_format=torch.channels_last)
            labels = labels.to(self.device)
            autocast = torch.autocast(self.device.type, dtype=torch.float16) if self.use_amp else contextlib.nullcontext()
            with autocast:
                outputs = model(pixels)
            losses = bot_loss(outputs, labels, cfg.loss, model.classifier.weight)  # in fp32: the loss functions upcast
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["total"]).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model)
            iteration += 1
            n = len(labels)
            with torch.no_grad():
                correct = (losses["scores"].argmax(1) == labels).sum()
                sums += torch.stack([losses["total"] * n, losses["ce"] * n, losses["triplet"] * n, correct.float()])
            seen += n
            if step % _POSTFIX_EVERY == 0 or step == len(batches) - 1:  # and the epoch's last
                bar.set_postfix(loss=f"{float(losses['total'].detach()):.3f}", lr=f"{lr:.2e}")
        loss, ce, triplet, correct = (sums / max(seen, 1)).tolist()
        seconds = time.perf_counter() - start
        row = {
            "epoch": epoch + 1,
            "iteration": iteration,
            "lr": learning_rate(cfg.solver, iteration - 1, epoch, iters_per_epoch),
            "loss": loss,
            "ce": ce,
            "triplet": triplet,
            "train_acc": correct,
            "images_per_s": seen / seconds,
            "epoch_s": seconds,
        }
        return row, iteration

    def evaluate(self, model: torch.nn.Module, dataset: MarketDataset, epoch: int) -> dict[str, Any]:
        """Rank-1/5/10, mAP, mINP of ``model`` (the trained one or its EMA) on ``dataset``'s query/gallery (fast-reid protocol)."""
        start = time.perf_counter()
        features = TorchFeatures(model, str(self.device))  # puts the model in eval mode
        embedder = Embedder(
            features,
            dim=model.feat_dim,
            input_size=tuple(self.cfg.input.size),
            name=f"training epoch {epoch + 1}",
            fingerprint=f"training-epoch-{epoch + 1}",
            batch_size=self.cfg.eval.batch_size,
        )
        query, gallery, _ = dataset_features(dataset, embedder, cache_dir=None, progress=self.progress)
        distmat = pairwise_distance(query, gallery, self.cfg.eval.metric)
        ranking = evaluate_ranking(distmat, dataset.pids("query"), dataset.pids("gallery"), dataset.camids("query"), dataset.camids("gallery"))
        model.train()
        summary = {key: value if isinstance(value, int) else float(value) for key, value in ranking.summary().items()}
        # preprocess: OpenCV resizing, as tracking embeds (`crosscam benchmark` defaults to fast-reid's PIL loader)
        return {"epoch": epoch + 1, **summary, "preprocess": embedder.preprocess, "metric": self.cfg.eval.metric,
                "eval_seconds": time.perf_counter() - start}  # as benchmark --json names it

    def _restore(self, model, optimizer, scaler, ema, meta) -> tuple[int, int]:
        path = self.out_dir / "last.pth"  # there: checked before the images loaded
        state = read_checkpoint(path)
        saved = state.get("crosscam", {})
        if saved != meta:
            differ = [f"{key} {saved.get(key)} -> {meta.get(key)}" for key in sorted(set(saved) | set(meta))
                      if saved.get(key) != meta.get(key)]
            raise CrosscamError(
                f"{path}: was trained with a different model or data ({'; '.join(differ)}; num_classes counts the "
                "training identities); resume with the same config and data, or use a new --out"
            )
        if state.get("eval_data") not in (None, self.eval_key):  # the scores in log.csv so far are of other images
            logger.warning("%s/query or bounding_box_test changed since %s was saved: log.csv's earlier "
                           "evaluations scored other images", self.data_root, path)
        data = state.get("data")  # (a last.pth of an older crosscam has none)
        if data is not None and data != self.data_key:
            raise CrosscamError(
                f"{path}: was trained on other images ({data['images']} then, {self.data_key['images']} in "
                f"{self.data_root} now, or the same number with other names or sizes); resume with the same --data, "
                "or use a new --out"
            )
        model.load_state_dict(_crosscam_weights(state["model"], meta), strict=True)
        if ema is not None:
            if "ema" not in state:
                raise CrosscamError(
                    f"{path}: was trained without solver.ema_decay, so it holds no EMA to continue; "
                    "resume without solver.ema_decay, or start a new --out"
                )
            ema.load_state_dict(_crosscam_weights(state["ema"], meta), int(state["ema_updates"]))
        changed = _changed_settings(state["config"], self.cfg.model_dump(mode="json")) if state.get("config") else []
        if changed:
            raise CrosscamError(
                f"{path}: was trained with other settings ({'; '.join(changed[:3])}); --resume continues a training as "
                f"it was (only {', '.join(RESUME_MAY_CHANGE)} may change): use its settings or a new --out"
            )
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:  # e.g. parameter groups of an older crosscam
            raise CrosscamError(f"{path}: its optimizer state does not fit this training ({exc}); start a new --out") from None
        scaler.load_state_dict(state["scaler"])
        return int(state["epoch"]), int(state["iteration"])


RESUME_MAY_CHANGE = ("solver.epochs", "eval", "threads", "device", "checkpoint_period")  # not what is learnt


def _changed_settings(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """``"key: saved -> current"`` for each setting that differs, outside :data:`RESUME_MAY_CHANGE`."""
    changed = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        if name in RESUME_MAY_CHANGE:
            continue
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += _changed_settings(old, new, f"{name}.")
        elif old != new:
            changed.append(f"{name}: {old} -> {new}")
    return changed


def _crosscam_weights(stored: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A checkpoint's fast-reid-named weights under the training model's names."""
    weights = {k: v for k, v in stored.items() if k not in ("pixel_mean", "pixel_std")}
    return to_crosscam_names(weights, key_generation(meta["stem"]))


class EpochLog:
    """``log.csv`` with :data:`LOG_COLUMNS`; each row is flushed as soon as it is written.

    Appending to a log of other columns (an older crosscam) first rewrites it with these columns.
    """

    def __init__(self, path: Path, append: bool = False):
        self.path = path
        rows: list[dict[str, str]] = []
        if append and path.is_file():
            with path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                rows = list(reader)
            if reader.fieldnames == LOG_COLUMNS:
                return
        with path.open("w", newline="") as handle:
            csv.writer(handle).writerow(LOG_COLUMNS)
        for row in rows:
            self.append(row)

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as handle:
            csv.writer(handle).writerow([_format(row.get(column)) for column in LOG_COLUMNS])


def read_log(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``log.csv`` as dicts of floats (missing evaluation cells become NaN)."""
    with open(path, newline="") as handle:
        return [{key: float(value) if value != "" else float("nan") for key, value in row.items()} for row in csv.DictReader(handle)]


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def _color_jitter(section: InputSection) -> ColorJitter | None:
    """The configured colour jitter (``input.cj_*``), or None when ``input.cj_prob`` is 0."""
    if section.cj_prob == 0:
        return None
    return ColorJitter(section.cj_prob, section.cj_brightness, section.cj_contrast, section.cj_saturation, section.cj_hue)


def _check_evaluable(dataset: MarketDataset) -> None:
    """Refuse query/gallery splits that no evaluation could score: some query must have a gallery
    image of its person from another camera (read from the file names; nothing is decoded)."""
    q_pids, g_pids = dataset.pids("query"), dataset.pids("gallery")
    _, _, is_pos = same_person_pairs(q_pids, g_pids, dataset.camids("query"), dataset.camids("gallery"))
    if not is_pos.any():
        raise CrosscamError(
            f"{dataset.root}: no query has a gallery image of its person from another camera, so no evaluation "
            "could score the model; check the query/ and bounding_box_test/ folders"
        )


def _eval_files_key(dataset: MarketDataset) -> str:
    """A sha256 of the query and gallery files' names and sizes."""
    return hashlib.sha256(json.dumps(dataset_file_key(dataset)).encode()).hexdigest()
