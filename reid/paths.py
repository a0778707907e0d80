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

import errno
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


def check_writable_here(path: Path) -> None:
    """Raise the ``OSError`` that writing ``path`` meets (a read-only folder; no space left, also
    when under 1 MiB is free), removing what it wrote: OpenCV says only that its writer did not open."""
    try:
        with open(path, "wb") as probe:
            probe.write(bytes(64 * 1024))
    except PermissionError as exc:
        raise CrosscamError(f"{path.parent}: cannot write in it ({exc.strerror}); make it writable, or write "
                            "elsewhere") from None
    finally:
        path.unlink(missing_ok=True)
    disk = os.statvfs(path.parent)
    if disk.f_bavail * disk.f_frsize < 1 << 20:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path.parent))


def check_video_written(path: Path, frames: int, shown: Path | None = None) -> None:
    """Refuse (one line) a video at ``path`` holding fewer than ``frames`` readable frames: OpenCV's
    writer fails silently when the disk fills up or a file size limit is reached, leaving an MP4
    without its index. ``shown``: the name to say (the final one of a temporary file)."""
    import cv2

    if frames <= 0:
        return
    capture = cv2.VideoCapture(str(path))
    readable = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    if readable < frames:
        raise CrosscamError(f"{shown or path}: written incompletely ({readable} of {frames} frames readable): the disk "
                            "filled up or a file size limit (ulimit -f) was reached; free space and run it again; what "
                            "was written before is kept")
