"""Join MP4 files of one codec and frame size into one, without decoding: packets are copied with
their timestamps shifted, so joining costs file I/O only (the driver's share stays small).

>>> concat_mp4([part1_bytes, part2_bytes], "annotated.mp4")  # doctest: +SKIP
250
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import av


def concat_mp4(parts: list[bytes], out: str | Path) -> int:
    """Write the video streams of ``parts`` (MP4 files as bytes, in order) one after the other to
    ``out`` (written to a temporary name, then renamed). Returns the number of frames written;
    empty parts (no frames) are skipped. Raises ``ValueError`` when no part holds a frame."""
    out = Path(out)
    tmp = out.with_name(f"{out.stem}.partial{out.suffix}")
    frames, offset = 0, 0
    inputs = [av.open(io.BytesIO(part)) for part in parts if part]
    try:
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
    finally:
        for container in inputs:
            container.close()
    os.replace(tmp, out)
    return frames
