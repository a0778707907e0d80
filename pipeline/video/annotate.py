"""Draw the rows of a tracks file onto a source's frames, as a video: the one re-renderer.

The chain draws ``annotated.mp4`` as frames go by (the only way for a stream). When a finished
camera's ids change afterwards (fragments re-linked and renumbered, ``pipeline.video.relabel``) or
are replaced by global identities (``annotated_global.mp4``, ``pipeline.identity.identities``), the video
is drawn again from the re-read source with :func:`render_tracks_video`: the rows of the tracks
file, each id through an optional id map, over a frame range of the source. Interpolated rows
are drawn dashed, as in the chain.

>>> from pipeline.video.tracks_file import read_camera_tracks
>>> with open_source("cam1.mp4", "cam1", SourceConfig()) as source:  # doctest: +SKIP
...     render_tracks_video(source, read_camera_tracks("run/cam1"), "run/cam1/annotated.mp4")
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from pipeline.types import FrameResult, TrackObservation, kept_frames
from pipeline.video.sinks import AnnotatedVideoWriter, IdKind
from pipeline.video.sources import FrameSource
from pipeline.video.tracks_file import TrackRows
from reid.progress import progress_bar


def render_tracks_video(source: FrameSource, rows: TrackRows, out: str | Path, id_map: Mapping[int, int] | None = None,
                        frames: tuple[int, int | None] = (0, None), codec: str = "mp4v", trail_length: int = 0,
                        progress: bool = False, desc: str = "render", ids: IdKind = "tracks") -> int:
    """Write ``out``: every frame of ``source`` with index in ``[frames[0], frames[1])`` (``None``:
    to the end), with the ``rows`` of that frame drawn in their id's colour.

    ``id_map`` ``{track id: drawn id}`` relabels the rows; rows whose id it lacks or drops
    (:data:`pipeline.video.relabel.DROPPED`) are not drawn; ``ids`` says which ids they are in the
    caption (``"identities"`` for ``annotated_global.mp4``).
    The video's rate is the source's over its stride. Returns the number of frames written. A
    drawing stopped (Ctrl-C, an error) leaves ``out`` as it was: no video cut short in its place.
    """
    start, stop = frames
    by_frame = rows.by_frame()
    fps = source.fps / source.cfg.stride
    total = source.frames_expected
    if stop is not None and total is not None:  # an interrupted camera's frames end where it stopped
        total = min(total, kept_frames(source.frames.start, stop, source.cfg.stride))  # the frames iterated
    video = AnnotatedVideoWriter(out, fps, source.frame_size, codec, trail_length, ids)
    try:
        for frame in progress_bar(source, desc=desc, unit="frame", disable=not progress, total=total):
            if stop is not None and frame.index >= stop:
                break
            if frame.index < start:
                continue
            observations = []
            for row in by_frame.get(frame.index, np.zeros(0, np.int64)):
                track_id = int(rows.track_id[row])
                drawn = track_id if id_map is None else id_map.get(track_id)
                if drawn:  # None: not in the map; 0: dropped
                    observations.append(TrackObservation(int(drawn), rows.xyxy[row], float(rows.confidence[row]), None,
                                                         bool(rows.interpolated[row])))
            video.write(FrameResult(frame, tracks=sorted(observations, key=lambda o: o.track_id)))
    except BaseException:
        video.discard()
        raise
    video.close()
    return video.frames_written
