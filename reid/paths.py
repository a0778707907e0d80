"""Output paths checked before any work starts: one-line errors instead of an OSError halfway.

>>> import tempfile; from pathlib import Path
>>> root = Path(tempfile.mkdtemp())
>>> output_folder(root / "new" / "run", "--out") == root / "new" / "run"
True
>>> _ = (root / "f").write_text("x")
>>> try:
...     output_file(root / "f" / "m.onnx", "--out")
... except CrosscamError as exc:
...     print(str(exc).endswith("f is a file, not a folder; give another path"))
True
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from reid.errors import CrosscamError


def output_folder(path: str | Path, option: str) -> Path:
    """``path`` as a folder to write into: one that exists or can be made under the first existing
    folder above it, which must be writable. Nothing is created."""
    if str(path).strip() == "":
        raise CrosscamError(f"{option}: empty; give a folder to write into")
    path = Path(path)
    _writable_parent(path, option)  # walks up from ``path`` itself: an existing file is refused
    return path


def output_file(path: str | Path, option: str, example: str = "out") -> Path:
    """``path`` as a file to write: not a folder (a folder's error suggests ``path/example``), ending
    in ``example``'s suffix when it has one, in a folder that exists or can be made."""
    path = Path(path)
    if path.is_dir():
        raise CrosscamError(f"{option} {path}: a folder; give the file to write, e.g. {path / example}")
    suffix = Path(example).suffix
    if suffix and path.suffix.lower() != suffix:
        raise CrosscamError(f"{option} {path}: the file name must end in {suffix}")
    _writable_parent(path.parent, option, shown=path)
    return path


def _writable_parent(folder: Path, option: str, shown: Path | None = None) -> None:
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise CrosscamError(f"{option} {shown or folder}: {existing} is a file, not a folder; give another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CrosscamError(f"{option} {shown or folder}: cannot write in {existing}; give another path")
    try:  # permissions are not all: a read-only mount, /proc, a full disk refuse only when tried
        os.rmdir(tempfile.mkdtemp(prefix=".crosscam-probe-", dir=existing))
    except OSError as exc:
        raise CrosscamError(f"{option} {shown or folder}: cannot write in {existing} ({exc.strerror}); "
                            "give another path") from None


@contextmanager
def written_atomically(dest: Path) -> Iterator[BinaryIO]:
    """A binary file for ``dest``'s new content: a temporary file beside it, renamed over ``dest``
    when the block ends and removed when it raises, so ``dest`` is never half-written. It gets the
    mode ``open()`` gives a new file (0o666 less the umask), not ``tempfile.mkstemp``'s 0o600."""
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            mask = os.umask(0)
            os.umask(mask)
            os.fchmod(handle.fileno(), 0o666 & ~mask)
            yield handle
        os.replace(name, dest)
    finally:
        Path(name).unlink(missing_ok=True)
