"""Ray, seen from the driver: connect or start a cluster, hold a pool of worker actors, run jobs.

Ray is imported here only, and only when a pool is opened, so the single-process path never
pays for it. A :class:`WorkerPool` starts ``workers`` actors (:class:`pipeline.scale.worker.SegmentWorker`),
each loading the models once, and hands them jobs one at a time from a queue:

- a job whose actor process dies (killed, out of memory, node lost) is queued again for another
  actor (a fresh one replaces the dead) up to ``max_retries`` times; the retry is counted;
- a job that raises (an undecodable file, a bad model) is not retried: it is reported as failed
  with the error's first line;
- Ctrl-C (or any error) on the driver kills every actor before it propagates.

>>> with WorkerPool(SegmentWorker, (config,), workers=2) as pool:  # doctest: +SKIP
...     pool.submit(Job("cam1#0", "track", (unit,)))
...     for outcome in pool.outcomes():
...         print(outcome.job.key, outcome.ok, outcome.retries)
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from pipeline.text import first_line
from reid.errors import CrosscamError

log = logging.getLogger(__name__)

RAY_EXTRA = "pip install -e '.[ray]' in crosscam's source tree"
POLL_S = 0.25  # how often the driver wakes to read progress while jobs run
CONNECT_TIMEOUT_S = 5.0  # how long a HOST:PORT cluster address may take to accept a connection


def import_ray():
    """``ray``, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise CrosscamError(f"--workers / --ray-address need Ray, which is not installed; {RAY_EXTRA}") from None
    return ray


def cluster_address(address: str | None) -> str | None:
    """The cluster a run joins: ``address`` (``--ray-address``), else ``$RAY_ADDRESS``; None: a Ray
    started on this machine for the run."""
    return address or os.environ.get("RAY_ADDRESS") or None


def check_reachable(address: str, given_as: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in one line when ``address`` is a ``HOST:PORT`` that accepts no TCP connection within ``timeout`` s.

    Ray itself would retry an unreachable address for minutes. Other forms (``auto``, ``local``,
    ``ray://...``) are left to Ray. ``given_as`` names where the address came from in the error.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not host or "://" in address or not port.isdigit():
        return
    try:
        connection = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except OSError as exc:
        raise CrosscamError(f"{given_as}: no Ray cluster answers at {address} ({exc.strerror or exc}); start "
                            "the cluster (`ray start --head` on that host) or fix the address") from None
    with connection:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("0", "false", "") and not _answers_http2(connection):
            raise CrosscamError(f"{given_as}: {address} accepts connections but is not a Ray cluster's GCS (it did not "
                                "answer as a gRPC server); give the head's GCS port (`ray start --head --port`, "
                                "6379 by default; the dashboard's 8265 is not it)")


def _answers_http2(connection: socket.socket) -> bool:
    """Whether the server on ``connection`` answers HTTP/2's client preface with a SETTINGS frame, as
    the GCS (a gRPC server) does; another service (a web server, a proxy) would make Ray retry
    for minutes."""
    try:
        connection.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
        head = b""
        while len(head) < 4:
            chunk = connection.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except OSError:
        return False
    return head[3] == 4  # the frame type byte: SETTINGS


def _quiet_token_notice() -> None:
    """Drop Ray's notice that the Ray it starts for this run uses token authentication (printed on
    every run, even with --quiet; nothing to do about it). Its warning that a cluster has *no*
    token authentication stays."""
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _TokenNoticeFilter) for f in logger.filters):
        logger.addFilter(_TokenNoticeFilter())


class _TokenNoticeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


@contextmanager
def _fd2_kept(keep: bool) -> Iterator[Callable[[], str]]:
    """With ``keep``, what is written to file descriptor 2 (Python's stderr and Ray's C++ core alike)
    while inside goes to a temporary file instead; the function yielded returns it afterwards."""
    if not keep:
        yield lambda: ""
        return
    sys.stderr.flush()
    saved = os.dup(2)
    kept: list[str] = []
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: "".join(kept)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept.append(sink.read().decode(errors="replace"))


def _token_hint() -> str:
    """What to try when joining a cluster failed and this machine has a Ray token: ``ray start`` turns
    token authentication on when ``~/.ray/auth_token`` exists, but a client joining by address
    sends the token only with ``RAY_AUTH_MODE=token``."""
    if os.environ.get("RAY_AUTH_MODE") or not (Path.home() / ".ray" / "auth_token").is_file():
        return ""
    return "; a cluster started here with ~/.ray/auth_token asks for it: set RAY_AUTH_MODE=token"


@dataclass(frozen=True)
class Job:
    """One call of ``method`` on a worker actor with ``args``; ``key`` names it for retries, ``label``
    (default: the key) in messages. Queued jobs start in ``priority`` order (smallest first, then
    in the order they came), except that an actor that has just finished job ``follows`` takes
    this one next (a segment after the one it continues)."""

    key: str
    method: str
    args: tuple
    priority: tuple = ()
    label: str = ""
    follows: str | None = None


@dataclass
class Outcome:
    """What became of a :class:`Job`: its ``result``, or ``error`` (first line) when it raised."""

    job: Job
    result: Any = None
    error: str | None = None
    retries: int = 0
    seconds: float = 0.0
    lost_workers: list[str] = field(default_factory=list)  # workers that died while running it

    @property
    def ok(self) -> bool:
        return self.error is None


class ProgressCounter:
    """A tiny actor the workers add processed frames to, per job key (reset when a job restarts)."""

    def __init__(self):
        self.frames: dict[str, int] = {}

    def add(self, key: str, frames: int) -> None:
        self.frames[key] = self.frames.get(key, 0) + frames

    def reset(self, key: str) -> None:
        self.frames.pop(key, None)

    def total(self) -> int:
        return sum(self.frames.values())


class WorkerPool:
    """Worker actors built by ``worker_class(*worker_args, threads=T, progress=counter)`` on a Ray cluster.

    ``address``: None starts Ray on this machine (or joins ``$RAY_ADDRESS`` when set), else the
    cluster to join. Sizes left None are derived from the cluster once joined: ``workers`` one per
    ``threads_per_worker`` CPUs (one per CPU), ``threads_per_worker`` the cluster's CPUs / workers,
    ``gpus_per_worker`` its GPUs / workers (at most 1; 0 without GPUs). Each actor asks Ray for
    ``threads_per_worker`` CPUs and ``gpus_per_worker`` GPUs (fractions share a GPU). The pool
    shuts down a Ray it started itself.
    """

    def __init__(self, worker_class: type, worker_args: tuple, workers: int | None = None, address: str | None = None,
                 threads_per_worker: int | None = None, gpus_per_worker: float | None = None, max_retries: int = 3):
        if workers is not None and workers < 1:
            raise CrosscamError(f"--workers {workers}: give at least 1")
        self.worker_class = worker_class
        self.worker_args = worker_args
        self.workers = workers
        self.address = address
        self.threads_per_worker = threads_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.max_retries = max_retries
        self._ray = None
        self._started_ray = False
        self._actors: list = []
        self._side: list = []  # small actors of the driver's (side_actor), killed with the workers
        self._progress = None
        self._remote_class = None
        self._queue: list[tuple[tuple, int, Job]] = []  # a heap of (priority, arrival, job)
        self._arrivals = itertools.count()
        self._frames_done = 0  # the progress counter's last answer
        self._retries: dict[str, int] = {}  # job key -> times its worker died under it
        self._lost: dict[str, list[str]] = {}  # job key -> how those workers died

    def __enter__(self) -> "WorkerPool":
        ray = self._ray = import_ray()
        if not ray.is_initialized():
            address = cluster_address(self.address)
            if address:
                check_reachable(address, "--ray-address" if self.address else "RAY_ADDRESS")
            if not address:
                _quiet_token_notice()
            failed = None
            # Ray's core logs each failed attempt to join (one a second for 20 s) on stderr: kept back
            # and read for the cause, which the exception does not name
            with _fd2_kept(bool(address)) as said:
                try:
                    # "local": a Ray of this run's own, never a `ray start` cluster Ray would find on this machine
                    ray.init(address=address or "local", include_dashboard=False, logging_level=logging.WARNING,
                             log_to_driver=True)
                except (OSError, ValueError, RuntimeError) as exc:
                    failed = exc
            if failed is None:
                sys.stderr.write(said())  # joined: whatever Ray said is shown after all
            else:
                given = "--ray-address" if self.address else "RAY_ADDRESS"  # the option, else the environment
                where = f"{given} {address}: cannot join the Ray cluster" if address else "cannot start Ray here"
                if "InvalidAuthToken" in said() or "Unauthenticated" in said():
                    raise CrosscamError(f"{where}: it asks for its token, which Ray sends only with "
                                        "RAY_AUTH_MODE=token (and the cluster's ~/.ray/auth_token, or RAY_AUTH_TOKEN)")
                raise CrosscamError(f"{where} ({first_line(failed)[:160]}); check the address, that the cluster runs, "
                                    f"and RAY_TMPDIR{_token_hint() if address else ''}")
            self._started_ray = True
        try:
            self._size()
            self._progress = ray.remote(num_cpus=0)(ProgressCounter).remote()
            self._remote_class = ray.remote(self.worker_class)
            self._actors = [self._new_actor() for _ in range(self.workers)]
            self._ready()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Kill every actor and shut down a Ray this pool started (idempotent)."""
        ray = self._ray
        if ray is None:
            return
        for actor in self._actors + self._side + ([self._progress] if self._progress is not None else []):
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already dead or the cluster is gone: nothing to free
                pass
        self._actors, self._side, self._progress = [], [], None
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._ray = None

    def _size(self) -> None:
        total = self._ray.cluster_resources()
        cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
        if self.workers is None:
            self.workers = max(1, int(cpus // (self.threads_per_worker or 1)))
        if self.threads_per_worker is None:
            self.threads_per_worker = max(1, int(cpus // self.workers))
        if self.gpus_per_worker is None:
            self.gpus_per_worker = min(1.0, gpus / self.workers) if gpus > 0 else 0.0
        need = self.workers * self.threads_per_worker
        if need > cpus + 1e-9:
            fewer = (f"use --workers {int(cpus)} or fewer" if self.threads_per_worker == 1
                     else "use fewer --workers or a smaller scale.threads_per_worker")
            raise CrosscamError(
                f"--workers {self.workers} with {self.threads_per_worker} thread(s) each need {need} CPUs but the "
                f"Ray cluster has {cpus:g}; {fewer}, or add nodes to the cluster")
        if self.workers * self.gpus_per_worker > gpus + 1e-9:
            raise CrosscamError(
                f"--gpus-per-worker {self.gpus_per_worker:g} x {self.workers} workers need "
                f"{self.workers * self.gpus_per_worker:g} GPUs but the Ray cluster has {gpus:g}; lower it")

    def _new_actor(self):
        options = {"num_cpus": self.threads_per_worker, "num_gpus": self.gpus_per_worker, "max_restarts": 0}
        return self._remote_class.options(**options).remote(*self.worker_args, threads=self.threads_per_worker,
                                                             progress=self._progress)

    def _ready(self) -> None:
        """Wait until every actor has loaded its models; a model that fails to load fails here, once."""
        ray = self._ray
        try:
            ray.get([a.ready.remote() for a in self._actors])
        except ray.exceptions.RayTaskError as exc:
            raise CrosscamError(first_line(exc.cause if exc.cause is not None else exc)) from None

    def side_actor(self, cls: type):
        """A handle to a new ``cls()`` actor that takes no CPU (shared state for the workers)."""
        actor = self._ray.remote(num_cpus=0)(cls).remote()
        self._side.append(actor)
        return actor

    def frames_done(self) -> int:
        """Frames the workers have reported so far (jobs being retried count from zero again); the
        last count once the progress counter is gone."""
        total = self._ask_progress("total")
        if total is not None:
            self._frames_done = total
        return self._frames_done

    def _ask_progress(self, method: str, *args):
        """``method(*args)`` of the progress counter, or None without one. Its process dying (killed,
        its node lost) costs the progress count only, never the run."""
        if self._progress is None:
            return None
        try:
            return self._ray.get(getattr(self._progress, method).remote(*args))
        except self._ray.exceptions.RayError as exc:
            log.warning("the progress counter's process died (%s); the run goes on without a frame count",
                        type(exc).__name__)
            self._progress = None
            return None

    def submit(self, job: Job) -> None:
        """Queue ``job``."""
        heapq.heappush(self._queue, (job.priority, next(self._arrivals), job))

    def queued(self) -> int:
        """Jobs waiting in the queue (not yet running)."""
        return len(self._queue)

    def cancel(self, should_cancel: Callable[[Job], bool]) -> list[Job]:
        """Drop the queued (not yet running) jobs for which ``should_cancel(job)`` is true."""
        dropped = [item[2] for item in self._queue if should_cancel(item[2])]
        self._queue = [item for item in self._queue if not should_cancel(item[2])]
        heapq.heapify(self._queue)
        return dropped

    def outcomes(self, on_poll: Callable[[], None] | None = None) -> Iterator[Outcome]:
        """Run the queued jobs; yield each :class:`Outcome` as it finishes (not in queue order)
        until nothing is queued or running. Jobs submitted meanwhile run too.

        ``on_poll`` is called every :data:`POLL_S` while jobs run (the driver's progress bar).
        """
        ray = self._ray
        idle = list(self._actors)
        running: dict[Any, tuple[Any, Job, float]] = {}
        last: dict[int, str] = {}  # id(actor) -> the key of the job it ran last
        while self._queue or running:
            while self._queue and idle:
                actor = idle.pop(0)
                job = self._next_job(last.get(id(actor)))
                last[id(actor)] = job.key
                running[getattr(actor, job.method).remote(*job.args)] = (actor, job, time.perf_counter())
            done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            if on_poll is not None:
                on_poll()
            for ref in done:
                actor, job, started = running.pop(ref)
                outcome = self._collect(ref, actor, job, started, idle)
                if outcome is not None:
                    yield outcome

    def _next_job(self, previous: str | None) -> Job:
        """The queued job that follows ``previous`` (the key of the job the actor ran last), else
        the first in priority order; taken off the queue."""
        for i, item in enumerate(self._queue):
            if previous is not None and item[2].follows == previous:
                self._queue[i] = self._queue[-1]
                self._queue.pop()
                heapq.heapify(self._queue)
                return item[2]
        return heapq.heappop(self._queue)[2]

    def _collect(self, ref, actor, job: Job, started: float, idle: list) -> Outcome | None:
        """The outcome of a finished call, or None when its worker died and the job is queued again."""
        ray = self._ray
        try:
            result = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the job's own code raised: not retried
            idle.append(actor)
            cause = exc.cause if exc.cause is not None else exc
            return self._outcome(job, started, error=first_line(cause))
        except ray.exceptions.RayError as exc:  # the actor's process or node is gone
            self._replace(actor, idle)
            self._ask_progress("reset", job.key)
            self._retries[job.key] = self._retries.get(job.key, 0) + 1
            self._lost.setdefault(job.key, []).append(type(exc).__name__)
            if self._retries[job.key] > self.max_retries:
                self._retries[job.key] -= 1
                return self._outcome(job, started, error=f"its worker died {self.max_retries + 1} times "
                                                         f"({type(exc).__name__}); see the Ray logs")
            log.warning("%s: its worker died (%s); running it again (retry %d of %d)", job.label or job.key,
                        type(exc).__name__, self._retries[job.key], self.max_retries)
            self.submit(job)  # its priority puts it back where it was
            return None
        idle.append(actor)
        return self._outcome(job, started, result=result)

    def _outcome(self, job: Job, started: float, result: Any = None, error: str | None = None) -> Outcome:
        return Outcome(job, result=result, error=error, retries=self._retries.get(job.key, 0),
                       seconds=time.perf_counter() - started, lost_workers=list(self._lost.get(job.key, [])))

    def _replace(self, dead, idle: list) -> None:
        try:
            self._ray.kill(dead)
        except Exception:  # noqa: BLE001 - it is dead already
            pass
        fresh = self._new_actor()
        self._actors = [fresh if a is dead else a for a in self._actors]
        idle.append(fresh)


