"""Image files read with what OpenCV does not say: whether a JPEG was cut off before its end.

OpenCV's ``imread`` decodes a JPEG cut off midway partly and fills in the rest, with no sign of it
but libjpeg's "Premature end of JPEG file" on stderr (``imdecode`` of the same bytes gives nothing
at all); the file's first and last two bytes tell.

>>> import tempfile; from pathlib import Path
>>> path = Path(tempfile.mkdtemp()) / "a.jpg"
>>> _ = cv2.imwrite(str(path), np.full((8, 4, 3), 90, np.uint8))
>>> image, cut = read_image_file(path)
>>> image.shape, cut
((8, 4, 3), False)
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


def read_image_file(path: str | Path) -> tuple[np.ndarray | None, bool]:
    """``path`` decoded by ``cv2.imread`` as ``(H, W, 3) uint8`` BGR (EXIF orientation applied), or None
    when it cannot be decoded; and whether it is a JPEG that ends without its end-of-image marker."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None, False
    with open(path, "rb") as handle:  # 4 bytes, from the page cache imread just filled
        head = handle.read(len(JPEG_START))
        handle.seek(-len(JPEG_END), os.SEEK_END)
        return image, head == JPEG_START and handle.read() != JPEG_END
