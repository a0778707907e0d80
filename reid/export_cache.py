"""Exported ONNX graphs of torch models, kept on disk so a model is exported (and parity-checked) once.

The ``auto`` runtime runs a torch checkpoint through onnxruntime, which means tracing it to ONNX
and checking the graph against torch: seconds per load (about 8 s for MobileNetV2 on a busy
2-core machine), paid by every command and every worker of a Ray run. The checked graph is kept
under a key that covers everything the graph is made of: the weights (names, shapes, dtypes and
bytes), the module structure (``repr``), the source files of the model's classes, the input size,
the opset and the torch and onnx versions. Any change makes a new key, so a cached graph is
never stale; a file that cannot be opened is exported again.

The folder is ``$CROSSCAM_CACHE_DIR/onnx`` or ``~/.cache/crosscam/onnx``; deleting it is always
safe. Processes exporting the same model at once (workers on one node) take turns on a lock
file, so the second finds the first's graph.

>>> path, dim = cached_export(model, (256, 128), export)  # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import os
from pathlib import Path
from typing import Callable

import onnx
import torch
from torch import nn

CACHE_ENV = "CROSSCAM_CACHE_DIR"
FORMAT = 1  # bump when the way graphs are exported changes without any key input changing


def cache_dir() -> Path:
    """Where exported graphs are kept (created on first use)."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "crosscam"
    return Path(root) / "onnx"


def model_key(model: nn.Module, input_size: tuple[int, int], opset: int) -> str:
    """Hex sha256 of everything the exported graph depends on (see the module docstring)."""
    digest = hashlib.sha256()
    for part in (f"format {FORMAT}", torch.__version__, onnx.__version__, f"opset {opset}", f"input {input_size}",
                 repr(model)):
        digest.update(part.encode())
    for source in sorted({inspect.getsourcefile(type(m)) or "" for m in model.modules()}):
        if source:
            digest.update(Path(source).read_bytes())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cached_export(model: nn.Module, input_size: tuple[int, int], opset: int,
                  export: Callable[[Path], int]) -> tuple[Path, int]:
    """The cached graph of ``model`` and its feature size D; on a miss ``export(path)`` writes
    (and checks) the graph at ``path`` and returns D. Written to a temporary name and renamed."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    key = model_key(model, input_size, opset)
    path, dim_file = folder / f"{key}.onnx", folder / f"{key}.dim"
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file() and dim_file.is_file():
            return path, int(dim_file.read_text())
        temporary = folder / f".{key}.{os.getpid()}.tmp.onnx"
        try:
            dim = export(temporary)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        dim_file.write_text(str(dim))
        return path, dim


def forget(path: Path) -> None:
    """Drop a cached graph (one that turned out unreadable)."""
    path.unlink(missing_ok=True)
    path.with_suffix(".dim").unlink(missing_ok=True)
