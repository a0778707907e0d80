"""A camera's lazy processing chain: frames -> detect -> [prefetch] -> embed -> [split] -> track -> [look back] -> write.

Each stage is an iterator transformer over :class:`pipeline.types.FrameResult`: it pulls items
from the stage before, fills in its field and yields them on. Nothing runs until the last
iterator is consumed, and no stage holds more than one batch of frames (``batch_size``), so
memory stays bounded whatever the length of the video. Every stage adds the seconds it spends in
its own work to a shared :class:`StageTimes`, which is how the benchmark splits the time.

>>> times = StageTimes()
>>> chain = build_chain(source, detector, embedder, PersonTracker(cfg.tracker), sinks,
...                     batch_size=8, min_box_size=8, times=times)  # doctest: +SKIP
>>> for result in chain:  # doctest: +SKIP
...     print(result.frame.index, [t.track_id for t in result.tracks])
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict, deque
from contextlib import contextmanager
from typing import Iterable, Iterator, Protocol, Sequence

from pipeline.colour import CameraColour
from pipeline.stops import stops_held
from pipeline.types import Detections, Frame, FrameResult
from pipeline.video.blob_split import split_by_predictions
from pipeline.video.detectors import Detector
from pipeline.video.embedding import embed_detections, size_filtered, split_by_confidence
from pipeline.video.refine.lookback import LookBack
from pipeline.video.tracking import PersonTracker


class StageTimes(defaultdict):
    """Seconds spent per stage name (``decode``, ``detect``, ``embed``, ``split``, ``track``, ``refine``, ``write``;
    ``finalise`` after the chain: re-linking and redrawing)."""

    def __init__(self):
        super().__init__(float)

    @contextmanager
    def measure(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self[stage] += time.perf_counter() - start


def _batches(items: Iterator[FrameResult], size: int, stride: int = 1) -> Iterator[list[FrameResult]]:
    """Runs of ``size`` results, cut where the kept-frame number (``frame.index // stride``) is a
    multiple of ``size``: a frame lands in the same batch whichever frame the chain started at,
    so two chains over overlapping frames batch the shared frames alike (the same crops reach the
    embedder together)."""
    batch: list[FrameResult] = []
    for item in items:
        if batch and (item.frame.index // stride) % size == 0:
            yield batch
            batch = []
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class SharedFrames(Protocol):
    """Frames another chain processes too (the overlap of two segments of one video, run on two
    workers): what one chain detected and embedded there, the other takes instead of computing it.

    Only a stateless detector's detections may be shared (``Detector.stateless``): a detector with
    memory (the motion detector's background) sees a frame differently in each chain.
    """

    reused: int  # frames taken from the other chains so far

    def wanted(self, index: int) -> bool:
        """Whether frame ``index`` (0-based source frame) is shared."""

    def lookup(self, indices: list[int]) -> dict[int, tuple[Detections, Detections | None]]:
        """The ``(detections with features, low-confidence detections)`` already published for
        any of ``indices``."""

    def publish(self, found: dict[int, tuple[Detections, Detections | None]]) -> None:
        """Offer this chain's results for shared frames to the other chains."""


def read_frames(frames: Iterable[Frame], times: StageTimes) -> Iterator[FrameResult]:
    """Wrap each decoded frame in a :class:`FrameResult`; time spent decoding counts as ``decode``."""
    iterator = iter(frames)
    while True:
        with times.measure("decode"):
            frame = next(iterator, None)
        if frame is None:
            return
        yield FrameResult(frame)


def detect_stage(results: Iterator[FrameResult], detector: Detector, batch_size: int,
                 times: StageTimes, stride: int = 1, shared: SharedFrames | None = None) -> Iterator[FrameResult]:
    """Set ``detections`` on each result, calling the detector on ``batch_size`` frames at a time.

    ``shared``: frames another chain has already detected and embedded take its results instead
    (their ``detections`` arrive with features, and the embed stage passes them on)."""
    for batch in _batches(results, batch_size, stride):
        wanted = [r.frame.index for r in batch if shared is not None and shared.wanted(r.frame.index)]
        reused = shared.lookup(wanted) if wanted else {}
        todo = [r for r in batch if r.frame.index not in reused]
        with times.measure("detect"):
            detections = detector.detect([r.frame for r in todo]) if todo else []
        for result, dets in zip(todo, detections):
            result.detections = dets
        for result in batch:
            if result.frame.index in reused:
                result.detections, result.low_detections = reused[result.frame.index]
        yield from batch


class _Failure:
    """An exception raised by the stages running in :func:`prefetch`'s thread, to re-raise in the consumer's."""

    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()


def prefetch(results: Iterator[FrameResult], depth: int) -> Iterator[FrameResult]:
    """Run the stages before this one in a background thread, at most ``depth`` frames ahead.

    The models release the GIL while they compute (onnxruntime, torch), so the detector works on
    the next frames while this thread embeds, tracks and writes the current ones. An error in
    the background stages is raised here; when this iterator ends or is closed (an error
    downstream, Ctrl-C), the thread stops after the item in hand. ``depth`` 0: no thread.
    """
    if depth <= 0:
        yield from results
        return
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in results:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:  # handed to the consumer, whatever it is
            put(_Failure(error))

    worker = threading.Thread(target=work, name="crosscam-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ahead.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()


def embed_stage(results: Iterator[FrameResult], embedder, batch_size: int, min_box_size: int,
                times: StageTimes, colour: CameraColour | None = None,
                low_below: float | None = None, stride: int = 1,
                shared: SharedFrames | None = None) -> Iterator[FrameResult]:
    """Replace ``detections`` by the clipped, size-filtered boxes with unit ``features``; the
    crops of ``batch_size`` frames go to the embedder together. ``colour`` (the camera's colour
    normalisation) is learned from the first batch's frames (the first one that is not blank) and
    applied to every frame's crops. ``low_below``: boxes under this confidence are not embedded
    but set aside as ``low_detections`` (clipped and size-filtered alike, without features).
    Detections that already have features (taken from ``shared``) pass unchanged; this stage's
    results for shared frames are published to ``shared``."""
    colour = colour or CameraColour()
    for batch in _batches(results, batch_size, stride):
        todo = [r for r in batch if r.detections.features is None]
        with times.measure("embed"):
            if colour.needs_fit:
                colour.fit([r.frame.image for r in batch])
            if low_below is not None:
                for r in todo:
                    r.detections, low = split_by_confidence(r.detections, low_below)
                    h, w = r.frame.image.shape[:2]
                    r.low_detections = size_filtered(low, w, h, min_box_size)
            pairs = [(colour.apply(r.frame.image), r.detections) for r in todo]
            embedded = embed_detections(embedder, pairs, min_box_size) if todo else []
        for result, dets in zip(todo, embedded):
            result.detections = dets
        if shared is not None:
            found = {r.frame.index: (r.detections, r.low_detections) for r in todo if shared.wanted(r.frame.index)}
            if found:
                shared.publish(found)
        yield from batch


def split_stage(results: Iterator[FrameResult], tracker: PersonTracker, times: StageTimes) -> Iterator[FrameResult]:
    """Split each detection that covers several tracks' predicted boxes into those boxes.

    It pulls one frame at a time, so the tracker has seen every earlier frame when this one's
    predictions are taken: the stage must sit right before :func:`track_stage`.
    """
    for result in results:
        with times.measure("split"):
            predicted = tracker.predictions()
            result.detections = split_by_predictions(result.detections, predicted.xyxy, predicted.features,
                                                     tracker.cfg.split_min_cover)
        yield result


def track_stage(results: Iterator[FrameResult], tracker: PersonTracker, times: StageTimes) -> Iterator[FrameResult]:
    """Set ``tracks`` to the confirmed tracks matched in each frame (frames in order), and
    ``backfill`` to the tentative boxes of the tracks confirmed in it."""
    needs_image = tracker.cfg.camera_motion != "none"
    for result in results:
        with times.measure("track"):
            result.tracks = tracker.update(result.detections, result.low_detections,
                                           result.frame.image if needs_image else None, result.frame.index)
            result.backfill = tracker.take_backfill()
        yield result


def write_stage(results: Iterator[FrameResult], sinks: Sequence, times: StageTimes,
                lookback: LookBack | None = None) -> Iterator[FrameResult]:
    """Pass each result through ``lookback`` (back-fill, interpolation; none: no delay), then
    hand the results it releases to every sink, in frame order, and yield them on.

    When the chain stops early (Ctrl-C, or the consumer closes it), the frames still held are
    written as they are before the exception goes on, so the sinks end with every processed frame.
    """
    lookback = lookback or LookBack(0)
    ready: deque[FrameResult] = deque()

    # A stop (Ctrl-C) is held while a frame moves from ``ready`` into the sinks and while the look-back
    # releases frames into ``ready``: arriving in between, it would lose a frame (a hole in every output).
    def write_next() -> FrameResult:
        with times.measure("write"), stops_held():  # a frame reaches every sink or none
            done = ready.popleft()
            for sink in sinks:
                sink.write(done)
        return done

    try:
        for result in results:
            with times.measure("refine"), stops_held():
                ready.extend(lookback.push(result))
            while ready:
                yield write_next()
        with stops_held():
            ready.extend(lookback.drain())
        while ready:
            yield write_next()
    except (KeyboardInterrupt, GeneratorExit):
        ready.extend(lookback.drain())
        while ready:
            write_next()
        raise


def build_chain(frames: Iterable[Frame], detector: Detector, embedder, tracker: PersonTracker, sinks: Sequence,
                batch_size: int, min_box_size: int, times: StageTimes, prefetch_frames: int = 0,
                colour: CameraColour | None = None, low_below: float | None = None,
                lookback: LookBack | None = None, stride: int = 1,
                shared: SharedFrames | None = None) -> Iterator[FrameResult]:
    """Compose the stages into one lazy iterator of finished :class:`FrameResult` items.

    ``prefetch_frames`` > 0 runs decoding and detection in a background thread that many frames ahead;
    ``colour`` is the camera's colour normalisation of the embedder's crops (none by default);
    ``low_below``: boxes under this confidence go to the tracker as low-confidence boxes, not
    embedded; ``lookback``: the buffer in front of the sinks (default: what the tracker's config asks for);
    ``stride``: the source's frame stride (batches start at the same kept frames in every chain);
    ``shared``: frames other chains also process (:class:`SharedFrames`), for a stateless detector only.
    """
    if shared is not None and not getattr(detector, "stateless", False):
        shared = None
    stages = [read_frames(frames, times)]
    stages.append(detect_stage(stages[-1], detector, batch_size, times, stride, shared))
    stages.append(prefetch(stages[-1], prefetch_frames))
    stages.append(embed_stage(stages[-1], embedder, batch_size, min_box_size, times, colour, low_below, stride,
                              shared))
    # Only a detector whose boxes can hold several people (``merges_people``: the motion
    # detector's blobs) is split; one box per person (YOLO, replay) is never someone else's.
    if tracker.cfg.split_merged and getattr(detector, "merges_people", False):
        stages.append(split_stage(stages[-1], tracker, times))
    stages.append(track_stage(stages[-1], tracker, times))
    stages.append(write_stage(stages[-1], sinks, times, lookback or LookBack.for_tracker(tracker.cfg)))
    return _closed_together(stages)


def _closed_together(stages: list[Iterator[FrameResult]]) -> Iterator[FrameResult]:
    """The last of ``stages``; when it ends, fails or is closed, every stage is closed, consumer
    first. An exception raised in one stage leaves the stages before it suspended (its traceback
    holds them): without this, a Ctrl-C during embedding left the prefetch thread reading the source
    while the caller closed it, and the two hung on the video's lock."""
    try:
        yield from stages[-1]
    finally:
        for stage in reversed(stages):
            stage.close()
