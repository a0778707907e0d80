"""Datasets in the Market-1501 folder layout.

A root holds ``bounding_box_train``, ``query`` and ``bounding_box_test`` (the gallery), each
full of ``PPPP_cCsS_FFFFFF_NN.jpg`` crops: person id PPPP, camera C, sequence S, frame F.
As in Market-1501's protocol (and fast-reid's reader), person id -1 marks junk images, which
are dropped; person id 0 marks distractors, which stay in the gallery (they can only be wrong
matches). Any dataset converted to this layout works (CUHK03, DukeMTMC-reID, ...).

MSMT17 as it is distributed reads too: ``list_query.txt`` / ``list_gallery.txt`` / ``list_train.txt``
beside ``test/`` and ``train/`` (V1; V2: ``mask_test_v2/``, ``mask_train_v2/``), each line
``PPPP/PPPP_NNN_CC_....jpg PID`` with the camera CC in the name's third field, as fast-reid and
torchreid read it.

>>> dataset = MarketDataset("../shared/data/cuhk03-market")  # doctest: +SKIP
>>> len(dataset.query), len(dataset.gallery), dataset.query[0].pid, dataset.query[0].camid  # doctest: +SKIP
(200, 738, 1001, 1)
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reid.errors import CrosscamError
from reid.image_files import read_image_file

log = logging.getLogger(__name__)

SPLITS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_NAME = re.compile(r"^(-?\d+)_c(\d+)")
_JUNK_PID = -1


@dataclass(frozen=True)
class MarketImage:
    """One crop: its path, person id (0 = distractor) and camera id (the C of ``cC``)."""

    path: Path
    pid: int
    camid: int


class MarketDataset:
    """The three splits of a Market-1501-layout dataset, junk images already dropped.

    ``root`` may be the dataset folder itself or its parent when the parent holds exactly one
    folder with the layout (e.g. ``data/`` containing ``Market-1501-v15.09.15/``). Splits are
    read lazily; the train split is optional (only ``query`` and the gallery must exist).

    >>> dataset = MarketDataset("../shared/data/cuhk03-market")  # doctest: +SKIP
    >>> dataset.pids("query")[:3]  # doctest: +SKIP
    array([1001, 1001, 1002])
    """

    def __init__(self, root: str | Path):
        self.root = find_market_root(Path(root))
        self._cache: dict[str, list[MarketImage]] = {}

    def __repr__(self) -> str:
        return f"MarketDataset({str(self.root)!r})"

    def split(self, name: str) -> list[MarketImage]:
        """Images of ``train``, ``query`` or ``gallery``, sorted by file name (MSMT17: in its list's order)."""
        if name not in SPLITS:
            raise CrosscamError(f"split {name!r}: unknown; use one of {', '.join(SPLITS)}")
        if name not in self._cache:
            lists = msmt_lists(self.root)
            self._cache[name] = read_list(*lists[name]) if lists else read_split(self.root / SPLITS[name])
        return self._cache[name]

    @property
    def train(self) -> list[MarketImage]:
        return self.split("train")

    @property
    def query(self) -> list[MarketImage]:
        return self.split("query")

    @property
    def gallery(self) -> list[MarketImage]:
        return self.split("gallery")

    def pids(self, split: str) -> np.ndarray:
        """(N,) int64 person ids of a split."""
        return np.array([image.pid for image in self.split(split)], dtype=np.int64)

    def camids(self, split: str) -> np.ndarray:
        """(N,) int64 camera ids of a split."""
        return np.array([image.camid for image in self.split(split)], dtype=np.int64)

    def paths(self, split: str) -> list[Path]:
        return [image.path for image in self.split(split)]


def find_market_root(root: Path) -> Path:
    """``root`` if it has the layout, else its only child folder that does; else a clear error."""
    if not root.is_dir():
        what = "a file, not a dataset folder" if root.exists() else "dataset folder not found"
        raise CrosscamError(f"{root}: {what}; pass a Market-1501-layout root (with query/ and bounding_box_test/)")
    if _has_layout(root):
        return root
    children = sorted(child for child in root.iterdir() if child.is_dir() and _has_layout(child))
    if len(children) == 1:
        return children[0]
    if len(children) > 1:
        names = ", ".join(child.name for child in children)
        raise CrosscamError(f"{root}: holds several Market-1501-layout datasets ({names}); pass one of them")
    raise CrosscamError(
        f"{root}: not a Market-1501-layout dataset (no {SPLITS['query']}/ and {SPLITS['gallery']}/, nor MSMT17's "
        "list_query.txt and list_gallery.txt, here or in a sub-folder); pass the folder that contains them"
    )


def _has_layout(folder: Path) -> bool:
    return ((folder / SPLITS["query"]).is_dir() and (folder / SPLITS["gallery"]).is_dir()) or msmt_lists(folder) is not None


def msmt_lists(folder: Path) -> dict[str, tuple[Path, Path]] | None:
    """MSMT17's splits as ``{split: (list file, image folder)}``, or None when ``folder`` is not an MSMT17 root."""
    if not ((folder / "list_query.txt").is_file() and (folder / "list_gallery.txt").is_file()):
        return None
    test = next((folder / name for name in ("test", "mask_test_v2") if (folder / name).is_dir()), folder / "test")
    train = next((folder / name for name in ("train", "mask_train_v2") if (folder / name).is_dir()), folder / "train")
    return {"query": (folder / "list_query.txt", test), "gallery": (folder / "list_gallery.txt", test),
            "train": (folder / "list_train.txt", train)}


def read_list(list_file: Path, images: Path) -> list[MarketImage]:
    """An MSMT17 list (``relative/path.jpg PID`` per line; the camera is the name's third ``_`` field)."""
    if not list_file.is_file():
        raise CrosscamError(f"{list_file}: split list not found; an MSMT17 root needs it")
    found = []
    for number, line in enumerate(list_file.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            relative, pid = line.split()
            camid = int(Path(relative).name.split("_")[2])
            if int(pid) != _JUNK_PID:  # junk, as in the Market layout
                found.append(MarketImage(path=images / relative, pid=int(pid), camid=camid))
        except (ValueError, IndexError):
            raise CrosscamError(f"{list_file}:{number}: expected 'PPPP/PPPP_NNN_CC_....jpg PID', got {line.strip()[:80]!r}"
                                ) from None
    if not found:
        raise CrosscamError(f"{list_file}: no images listed; check the dataset was extracted fully")
    missing = next((image.path for image in found if not image.path.is_file()), None)
    if missing is not None:
        raise CrosscamError(f"{list_file}: lists {missing}, which is not there; check {images} was extracted fully")
    return found


def read_split(folder: Path) -> list[MarketImage]:
    """Parse every image name of ``folder``; junk (pid -1) is dropped, distractors (pid 0) kept."""
    if not folder.is_dir():
        raise CrosscamError(f"{folder}: split folder not found; a Market-1501-layout root needs it")
    images, bad = [], []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        match = _NAME.match(path.name)
        if match is None:
            bad.append(path.name)
            continue
        pid, camid = int(match.group(1)), int(match.group(2))
        if pid != _JUNK_PID:
            images.append(MarketImage(path=path, pid=pid, camid=camid))
    if bad:
        shown = ", ".join(bad[:3]) + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else "")
        raise CrosscamError(
            f"{folder}: {len(bad)} image names do not follow PPPP_cCsS_FFFFFF_NN.jpg, e.g. {shown}; rename or remove them"
        )
    if not images:
        raise CrosscamError(f"{folder}: no person images in this split (only junk ones, id -1, or none); check the dataset was extracted fully")
    return images


def read_dataset_image(path: Path) -> np.ndarray:
    """A dataset image as (H, W, 3) uint8 BGR; one that cannot be decoded is a one-line error, and a
    cut-off JPEG (decoded partly, the rest filled in) is said by name."""
    image, cut = read_image_file(path)
    if image is None:
        raise CrosscamError(f"{path}: cannot decode this image; replace or remove the file")
    if cut:
        log.warning("%s: does not end with a JPEG end-of-image marker, so it may be cut off; used as decoded "
                    "(the missing part filled in): replace the file for exact results", path)
    return image
