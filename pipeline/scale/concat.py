"""Join MP4 files of one codec and frame size into one, without decoding: packets are copied with
their timestamps shifted, so joining costs file I/O only (the driver's share stays small).

Pieces that arrive one by one from the workers wait on disk in a :class:`PieceSpool`, not in the
driver's memory: an 8-hour camera's video is gigabytes.

>>> concat_mp4([part1_bytes, part2_bytes], "annotated.mp4")  # doctest: +SKIP
250
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import av

from pipeline.types import partial_path


def concat_mp4(parts: list[bytes | Path], out: str | Path) -> int:
    """Write the video streams of ``parts`` (MP4 files as bytes or paths, in order) one after the
    other to ``out`` (written to a temporary name, then renamed). Returns the number of frames
    written; empty parts (no frames) are skipped. Raises ``ValueError`` when no part holds a frame."""
    out = Path(out)
    tmp = partial_path(out)
    frames, offset = 0, 0
    inputs = []
    try:
        for part in parts:
            if _has_bytes(part):
                inputs.append(av.open(io.BytesIO(part) if isinstance(part, bytes) else str(part)))
        streams = [(container, container.streams.video[0]) for container in inputs if container.streams.video]
        streams = [(c, s) for c, s in streams if s.frames != 0]
        if not streams:
            raise ValueError("concat_mp4: no frames in any part")
        with av.open(str(tmp), "w", format="mp4") as output:
            target = output.add_stream_from_template(streams[0][1])
            for container, stream in streams:
                end = offset
                for packet in container.demux(stream):
                    if packet.dts is None:  # the demuxer's end-of-stream marker
                        continue
                    duration = packet.duration or 0
                    packet.pts += offset
                    packet.dts += offset
                    end = max(end, packet.pts + duration)
                    packet.stream = target
                    output.mux(packet)
                    frames += 1
                offset = end
        os.replace(tmp, out)
    except BaseException:  # a failure or a stop: no half-written video left beside the outputs
        tmp.unlink(missing_ok=True)
        raise
    finally:
        for container in inputs:
            container.close()
    return frames


def _has_bytes(part: bytes | Path) -> bool:
    return bool(part) if isinstance(part, bytes) else Path(part).stat().st_size > 0


class PieceSpool:
    """The ``count`` pieces of the MP4 ``out``, arriving in any order, each kept in a hidden file
    beside ``out`` until all are there (:meth:`add`), then joined into ``out`` (:meth:`join`).

    >>> spool = PieceSpool(Path("runs/mall/hall/annotated.mp4"), 3)  # doctest: +SKIP
    >>> spool.add(2, piece_bytes)                                      # doctest: +SKIP
    False
    """

    def __init__(self, out: Path, count: int):
        self.out, self.count = Path(out), count
        self._pieces: dict[int, Path] = {}

    def add(self, index: int, data: bytes) -> bool:
        """Keep piece ``index`` (0-based) on disk; True once every piece is there."""
        path = self.out.with_name(f".{self.out.stem}.piece{index}{self.out.suffix}")
        self._pieces[index] = path  # before writing: a stop during the write must not hide the file from discard
        path.write_bytes(data)
        return len(self._pieces) == self.count

    def join(self) -> int:
        """Write ``out`` from the pieces in order and delete them; returns the frames written."""
        try:
            return concat_mp4([self._pieces[k] for k in range(self.count)], self.out)
        finally:
            self.discard()

    def discard(self) -> None:
        """Delete the pieces kept so far (a camera that failed or was stopped)."""
        for path in self._pieces.values():
            path.unlink(missing_ok=True)
        self._pieces.clear()
