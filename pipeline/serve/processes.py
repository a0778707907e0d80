"""``crosscam serve``: one server process, or with ``--workers N`` N of them answering on one
listening socket.

A query's Python work (reading the store, scoring, building the answer) holds the GIL, so one
process serves on about one core however many requests wait: on 2 cores and 100k tracks (IVF
index), eight concurrent track queries ran at 110 answers/s in one process and 166/s in two. Each process opens
the run itself (its own store connection, FAISS index in memory, frame decoders); the kernel
hands each new connection to one of them. uvicorn's supervisor starts them, replaces one that
dies, and stops them all on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import socket
from pathlib import Path

from pipeline.config import StoreConfig
from pipeline.identity.exact_scan import bf16_scan_applies
from pipeline.identity.layout import STORE_DIR
from pipeline.identity.store import TrackStore
from pipeline.identity.store_db import DB_NAME

ENV_RUN, ENV_TOKEN, ENV_CONFIG = "CROSSCAM_SERVE_RUN", "CROSSCAM_SERVE_TOKEN", "CROSSCAM_SERVE_CONFIG"
ENV_SET = "CROSSCAM_SERVE_SET"  # the --set overrides, a JSON list
MAX_DEFAULT_WORKERS = 4  # each process holds the store's index (about 2 KB per track with 512-d features)
# An exact index this large, scanned by FAISS in fp32, is bound by its scans, which one process
# already shares between concurrent queries and spreads over every core (100k tracks, 8 concurrent
# track queries: p95 164 ms in one process, 157 in two). Scanned in bf16 (store.bf16_scan on a CPU
# with bf16 units) the Python work is the bound again: 126 ms in one process, 86 in two.
ONE_PROCESS_EXACT_TRACKS = 50_000


def default_workers(run_dir: Path, config: StoreConfig) -> int:
    """Server processes when ``--workers`` is not given: the CPUs (at most ``MAX_DEFAULT_WORKERS``),
    or one for a store searched by FAISS's fp32 exact scan of ``ONE_PROCESS_EXACT_TRACKS`` tracks
    or more."""
    if (Path(run_dir) / STORE_DIR / DB_NAME).is_file():
        store = TrackStore.open(Path(run_dir) / STORE_DIR, config=config)
        stored = len(store)
        if stored >= ONE_PROCESS_EXACT_TRACKS and store.scans_exactly() and not bf16_scan_applies(stored, config.bf16_scan):
            return 1
    return max(1, min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1))


def serve_one_process(sock: socket.socket, app) -> int | None:
    """Serve ``app`` on ``sock`` in this process until Ctrl-C or SIGTERM; the signal that stopped
    it, None if it stopped otherwise. Requests in flight get at most 3 s to finish (a page left
    open keeps connections alive)."""
    import uvicorn

    class Server(uvicorn.Server):  # uvicorn's, remembering the signal that stopped it
        stopped_by: int | None = None

        def handle_exit(self, sig: int, frame) -> None:
            self.stopped_by = self.stopped_by or sig
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=3))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the signal once it has shut down
        pass
    return server.stopped_by


def serve_processes(sock: socket.socket, workers: int, run_dir: Path, token: str | None,
                    config: Path | None, overrides: list[str] = ()) -> int | None:
    """Serve ``run_dir`` on ``sock`` from ``workers`` processes until Ctrl-C or SIGTERM; the signal
    that stopped them (``signal.SIGINT`` or ``SIGTERM``), None if they stopped otherwise.

    Each process builds its app with :func:`pipeline.serve.app.app_from_environment` from the
    variables set here, and searches FAISS on its share of the CPUs (``OMP_NUM_THREADS``, unless
    set already)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    os.environ.update({ENV_RUN: str(Path(run_dir).resolve()), ENV_TOKEN: token or "",
                       ENV_CONFIG: str(Path(config).resolve()) if config else "", ENV_SET: json.dumps(list(overrides))})
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    settings = uvicorn.Config("pipeline.serve.app:app_from_environment", factory=True, workers=workers,
                              log_level="warning", lifespan="off", timeout_graceful_shutdown=3)

    class Supervisor(Multiprocess):  # uvicorn's, remembering the signal that stopped it
        stopped_by: int | None = None

        def handle_int(self) -> None:
            self.stopped_by = self.stopped_by or signal.SIGINT
            super().handle_int()

        def handle_term(self) -> None:
            self.stopped_by = self.stopped_by or signal.SIGTERM
            super().handle_term()

    # uvicorn 0.30-0.3x take the processes' target; later ones build each process's server themselves
    target = {"target": uvicorn.Server(settings).run} if "target" in inspect.signature(Multiprocess).parameters else {}
    supervisor = Supervisor(settings, sockets=[sock], **target)
    supervisor.run()
    return supervisor.stopped_by
