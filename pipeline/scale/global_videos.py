"""``annotated_global.mp4`` drawn by a Ray run's workers, segment by segment, instead of by the driver.

After association every camera whose identities changed gets its video drawn again with the
identities' ids: the whole source decoded and encoded once more. In one process that is about as
many frames again as tracking decoded; on a cluster the driver alone would draw them all (about
1.8 ms a frame here, so 20 cameras x 8 h would take the driver longer than the cluster took to
track them). So a Ray run hands each camera's units to the workers, as it does for
``annotated.mp4``, and joins the pieces without re-encoding (:func:`pipeline.scale.concat.concat_mp4`).
"""

from __future__ import annotations

import logging

from pipeline.identity.identities import GlobalVideo
from pipeline.scale.cluster import Job, WorkerPool
from pipeline.scale.concat import PieceSpool
from pipeline.scale.units import WorkUnit
from reid.progress import progress_bar

log = logging.getLogger(__name__)


def render_on_workers(pool: WorkerPool, jobs: list[GlobalVideo], units: dict[str, list[WorkUnit]],
                      progress: bool) -> set[str]:
    """Draw each of ``jobs`` (whole cameras) over its camera's ``units`` on the pool's workers and
    join the pieces into its ``annotated_global.mp4``; returns the cameras written. A camera whose
    piece fails (its source unreadable from a worker) is left unwritten with a warning, as
    :func:`pipeline.identity.identities.render_global_video` leaves it.

    A camera's rows are read, and its pieces queued, only once fewer pieces than workers wait in
    the queue, and pieces wait on disk (:class:`pipeline.scale.concat.PieceSpool`): the driver holds
    about one camera's rows and no video, however many cameras the run has."""
    upcoming = iter(enumerate(jobs))
    spools: dict[str, PieceSpool] = {}
    written: set[str] = set()

    def queue_more() -> None:
        while pool.queued() < pool.workers and (nxt := next(upcoming, None)) is not None:
            index, job = nxt
            rows = job.rows()
            spools[job.camera] = PieceSpool(job.out, len(units[job.camera]))
            for unit in units[job.camera]:
                pool.submit(Job(f"{job.camera}:global{unit.segment}", "render",
                                (unit, unit.owned_rows(rows), job.identity_of), (index, unit.segment),
                                f"{job.camera}: drawing global ids, {unit.label}"))

    bar = progress_bar(total=sum(len(units[job.camera]) for job in jobs), desc="global ids", unit="segment",
                       disable=not progress)
    try:
        queue_more()
        for outcome in pool.outcomes():
            bar.update()
            camera, _, step = outcome.job.key.partition(":")
            if camera in spools:  # else a piece of a camera that failed meanwhile
                if not outcome.ok:
                    log.warning("%s: annotated_global.mp4 not written (%s)", camera, outcome.error)
                    spools.pop(camera).discard()
                    pool.cancel(lambda job: job.key.partition(":")[0] == camera)
                elif spools[camera].add(int(step.removeprefix("global")), outcome.result):
                    spools.pop(camera).join()
                    written.add(camera)
            queue_more()
    finally:
        bar.close()
        for spool in spools.values():
            spool.discard()
    return written
