"""The track store: a FAISS index of per-track embeddings plus SQLite metadata, in one folder.

Layout of ``RUN_DIR/store/``::

    tracks.sqlite          cameras, videos, tracks (summaries + feature blobs), identities, meta
    index-<generation>.faiss   the FAISS index of track features, ids = ``tracks.id``

SQLite is the source of truth (features included); the FAISS file is derived from it. A write
applies its removals and additions to the last committed index (built anew from the table only
where it must be: no readable file, another kind or IVF size due, removals from HNSW), writes the
result under a temporary name, renames it to a new generation's file name, and
only then commits the SQLite transaction that points ``meta.index_file`` at it. A crash or
Ctrl-C at any point therefore leaves the previous database and the previous index file, which
is still what ``meta`` names; stray files of unfinished writes are removed by the next write.
Readers open the database read-only and load the file ``meta`` names, so any number of them can
run while one writer works (SQLite serialises writers with ``BEGIN IMMEDIATE``). A writer removes
the files of earlier generations inside its transaction, keeping the one readers may still be
opening (the last committed) until the next write; a reader that finds its file gone re-reads
``meta`` once. :func:`pipeline.run_folders.identities_held` serialises whole read-associate-write
updates of one run across processes. Identity ids and track keys (FAISS ids) are never handed out twice:
``meta.max_identity`` and ``meta.max_track_key`` keep the largest ever written, even after the
tracks that held them are replaced, so a key a query found keeps naming its track or none.

Vectors are L2-normalised and searched by inner product (= cosine similarity); the index kinds
are :mod:`pipeline.identity.faiss_index`'s.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import uuid
import weakref
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import faiss
import numpy as np

from pipeline.config import StoreConfig
from pipeline.identity import store_db as db
from pipeline.identity.exact_scan import exact_searcher
from pipeline.identity.faiss_index import (build_index, inner_index, ivf_cells, maybe_to_gpu, planned_kind, stored_kind,
                                          tune_search)
from pipeline.identity.search_batcher import SearchBatcher, SearchFn
from pipeline.text import counting_order
from pipeline.types import TrackSummary
from reid.errors import CrosscamError
from reid.vectors import l2_normalize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedderInfo:
    """What makes features comparable: the embedder's fingerprint, name and dimension."""

    fingerprint: str
    name: str
    dim: int


@dataclass(frozen=True)
class CameraRecord:
    """One camera of the run and the video it showed."""

    name: str
    time_offset_s: float
    common_clock: bool
    source: str
    fps: float | None
    frame_size: tuple[int, int] | None  # (width, height)
    frames_read: int | None
    summaries_digest: str


@dataclass(frozen=True)
class StoredTrack:
    """A track as the store holds it; times are on the common clock."""

    key: int  # the FAISS id
    camera: str
    track_id: int
    first_frame: int
    last_frame: int
    start_s: float
    end_s: float
    num_detections: int
    thumbnail: str | None  # relative to the run directory
    identity: int


@dataclass(frozen=True)
class CameraTracks:
    """Everything one camera contributes to a write: its record, tracks and their identities.

    ``tracks`` carry common-clock times and thumbnails relative to the run directory.
    """

    camera: CameraRecord
    tracks: Sequence[TrackSummary]
    identities: Sequence[int]


@dataclass(frozen=True)
class _CameraChange:
    """What one camera's replacement changed: track keys removed (R,) int64, keys added (A,) int64
    and their unit vectors (A, D) float32, and the identities of both."""

    removed: np.ndarray
    added_keys: np.ndarray
    added_vectors: np.ndarray
    identities: set[int]


class TrackStore:
    """Per-track embeddings (FAISS) and their metadata (SQLite) of one run.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp()) / "store"
    >>> store = TrackStore.create(folder, EmbedderInfo("abc123", "demo", 4))
    >>> f = np.eye(4, dtype=np.float32)
    >>> cam = CameraRecord("hall", 0.0, False, "/v/hall.mp4", 10.0, (640, 480), 100, "d1")
    >>> store.write([CameraTracks(cam, [TrackSummary("hall", 1, 0, 9, 0.0, 0.9, 10, f[2], f[2:3])], [1])])
    >>> sims, keys = TrackStore.open(folder).search(f[2:3], k=1)
    >>> float(sims[0, 0]), store.track_by_key(int(keys[0, 0])).track_id
    (1.0, 1)
    """

    def __init__(self, folder: Path, embedder: EmbedderInfo, config: StoreConfig) -> None:
        self.folder = folder
        self.embedder = embedder
        self.config = config
        self._index: faiss.Index | None = None
        self._index_file: str | None = None
        self._index_search: SearchFn | None = None  # the loaded index's search (see exact_searcher)
        self._index_lock = threading.Lock()  # one store object may serve queries from many threads
        search = weakref.WeakMethod(self._search_index)  # no cycle: a store let go closes its files at once
        self._batcher = SearchBatcher(lambda rows, k: search()(rows, k))
        self._readers = threading.local()  # per thread: its open read-only connection (see _reading)

    def close(self) -> None:
        """Close this thread's connection to the database and let go of the loaded index (other
        threads' connections close when the store object goes). Reading again opens them anew."""
        conn, stamp = getattr(self._readers, "conn", None), getattr(self._readers, "stamp", None)
        self._readers.conn = self._readers.stamp = None
        if conn is not None and stamp[0] == os.getpid():  # a forked child leaves its parent's alone
            conn.close()
        with self._index_lock:
            self._index = self._index_file = self._index_search = None

    def __enter__(self) -> "TrackStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def create(
        cls, folder: str | Path, embedder: EmbedderInfo, config: StoreConfig | None = None
    ) -> "TrackStore":
        """Open the store in ``folder``, creating it for ``embedder`` if it does not exist yet."""
        folder = Path(folder)
        if (folder / db.DB_NAME).is_file():
            return cls.open(folder, embedder, config)
        tmp = folder / f"{db.DB_NAME}.tmp-{os.getpid()}"
        with db.write_access(folder):
            folder.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)
            try:
                cls._write_empty(tmp, embedder)
            except BaseException:  # Ctrl-C: no half-made file left
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, folder / db.DB_NAME)  # a store exists completely or not at all
        return cls(folder, embedder, config or StoreConfig())

    @staticmethod
    def _write_empty(path: Path, embedder: EmbedderInfo) -> None:
        """An empty store's database for ``embedder`` at ``path``."""
        with closing(sqlite3.connect(path)) as conn:
            conn.executescript(db.SCHEMA)
            meta = {
                "schema_version": str(db.SCHEMA_VERSION),
                "embedder_fingerprint": embedder.fingerprint,
                "embedder_name": embedder.name,
                "dim": str(embedder.dim),
                "generation": "0",
                "index_file": "",
                "uid": uuid.uuid4().hex,
            }
            conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            conn.commit()

    @classmethod
    def open(
        cls,
        folder: str | Path,
        expected: EmbedderInfo | None = None,
        config: StoreConfig | None = None,
    ) -> "TrackStore":
        """Open an existing store; with ``expected``, refuse one built by another embedder."""
        folder = Path(folder)
        if not (folder / db.DB_NAME).is_file():
            raise CrosscamError(
                f"{folder}: no track store here; run `crosscam track ... --out RUN_DIR` first"
            )
        db.recover_after_crash(folder)
        try:
            with closing(db.connect(folder, readonly=True)) as conn:
                meta = dict(conn.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as exc:
            if "locked" in str(exc):  # another process holds it past the timeout: not damage
                raise
            if db.is_damage(exc):
                raise db.damaged(folder, exc) from None
            raise CrosscamError(f"{folder / db.DB_NAME}: cannot read the track store ({exc}); check the file's "
                                "permissions and the disk") from None
        if int(meta.get("schema_version", -1)) != db.SCHEMA_VERSION:
            raise CrosscamError(
                f"{folder / db.DB_NAME}: store schema version {meta.get('schema_version')} is not "
                f"{db.SCHEMA_VERSION}; rebuild it with this crosscam version (crosscam track --out NEW_DIR)"
            )
        stored = EmbedderInfo(meta["embedder_fingerprint"], meta["embedder_name"], int(meta["dim"]))
        if expected is not None and (
            expected.fingerprint != stored.fingerprint or expected.dim != stored.dim
        ):
            raise CrosscamError(
                f"{folder}: store was built with embedder {stored.name} (fingerprint "
                f"{stored.fingerprint[:12]}, dim {stored.dim}), not {expected.name} (fingerprint "
                f"{expected.fingerprint[:12]}, dim {expected.dim}); track with that --reid, or move "
                f"{folder} aside to build the identities afresh with `crosscam associate {folder.parent}`"
            )
        return cls(folder, stored, config or StoreConfig())

    # -- reading -------------------------------------------------------------------------
    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One read transaction (every read in it sees one state of the store) on this thread's
        read-only connection. The connection stays open between reads, so SQLite keeps its parsed
        schema and, while no write lands, its page cache (a served track query reads 7 times; over
        100k tracks a new connection each time cost it 2 of its 32 ms); it is opened again when the
        database file was replaced, and in a forked child."""
        path = self.folder / db.DB_NAME
        try:
            stat = path.stat()
            stamp = (os.getpid(), stat.st_dev, stat.st_ino)
        except FileNotFoundError:
            stamp = None  # connect below says what is missing
        reader = self._readers
        if stamp is None or getattr(reader, "stamp", None) != stamp:
            old, old_stamp = getattr(reader, "conn", None), getattr(reader, "stamp", None)
            reader.conn = reader.stamp = None
            if old is not None and old_stamp[0] == os.getpid():  # a forked child leaves its parent's alone
                old.close()
            reader.conn, reader.stamp = db.connect(self.folder, readonly=True), stamp
        conn = reader.conn
        conn.execute("BEGIN")
        try:
            yield conn
        except sqlite3.OperationalError as exc:
            if not db.is_busy(exc):
                raise
            raise db.busy(self.folder) from None  # another command's write outlasted the wait
        except sqlite3.DatabaseError as exc:  # damage past the header, found as the rows are read
            if not db.is_damage(exc):
                raise
            raise db.damaged(self.folder, exc) from None
        finally:
            conn.rollback()  # ends the read transaction: a writer may commit again

    def check_intact(self) -> None:
        """Read every page of the database (SQLite's quick check): damage anywhere in it is one
        line now, not an error after a camera was tracked for it."""
        with self._reading() as conn:
            found = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if found != ["ok"]:
            raise db.damaged(self.folder, found[0])

    def check_writable(self) -> None:
        """Refuse now (one line) a store that cannot be written: read-only files, folder or file
        system. A write inside a transaction that is rolled back: nothing changes."""
        try:
            with db.write_access(self.folder), closing(db.connect(self.folder, readonly=False, timeout=0)) as conn:
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(f"PRAGMA user_version = {version}")
                finally:
                    conn.rollback()
        except sqlite3.OperationalError as exc:
            if not db.is_busy(exc):
                raise
            # another command is writing it now: it is writable, and this one does not wait

    def __len__(self) -> int:
        with self._reading() as conn:
            return conn.execute("SELECT COUNT(*) FROM tracks").fetchone()[0]

    def cameras(self) -> list[CameraRecord]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT c.name, c.time_offset_s, c.common_clock, v.source, v.fps, v.frame_width,"
                " v.frame_height, v.frames_read, v.summaries_digest"
                " FROM cameras c JOIN videos v ON v.camera = c.name ORDER BY c.name"
            ).fetchall()
        return sorted((
            CameraRecord(
                name, offset, bool(common), source, fps,
                (w, h) if w is not None else None, frames, digest,
            )
            for name, offset, common, source, fps, w, h, frames, digest in rows
        ), key=lambda record: counting_order(record.name))  # cam2 before cam10

    def tracks(self, camera: str | None = None, identity: int | None = None) -> list[StoredTrack]:
        """Stored tracks, optionally of one camera and/or one identity, by (camera, track id)."""
        where, args = [], []
        if camera is not None:
            where.append("camera = ?")
            args.append(camera)
        if identity is not None:
            where.append("identity = ?")
            args.append(identity)
        sql = f"SELECT {_TRACK_COLUMNS} FROM tracks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._reading() as conn:
            rows = conn.execute(sql + " ORDER BY camera, track_id", args).fetchall()
        return [StoredTrack(*row) for row in rows]

    def track(self, camera: str, track_id: int) -> StoredTrack:
        """One track by camera name and per-camera id; a one-line error if there is none."""
        with self._reading() as conn:  # (camera, track_id) is indexed: no scan
            row = conn.execute(f"SELECT {_TRACK_COLUMNS} FROM tracks WHERE camera = ? AND track_id = ?",
                               (camera, int(track_id))).fetchone()
        if row is not None:
            return StoredTrack(*row)
        found = self.tracks(camera=camera)
        if not found:
            raise CrosscamError(f"--track {camera}:{track_id}: {self._why_no_tracks(camera)}")
        raise CrosscamError(
            f"--track {camera}:{track_id}: camera {camera!r} has no track {track_id}; "
            f"its tracks are {found[0].track_id}..{found[-1].track_id} (see {camera}/tracks.txt)"
        )

    def _why_no_tracks(self, camera: str) -> str:
        """Why ``camera`` has no stored track: not a camera of the store, or nobody was tracked in it."""
        known = [c.name for c in self.cameras()]
        if camera not in known:
            return f"unknown camera {camera!r}; cameras in the store: {', '.join(known) or 'none'}"
        with self._reading() as conn:
            tracked = sorted((row[0] for row in conn.execute("SELECT DISTINCT camera FROM tracks")), key=counting_order)
        what_to_do = f"pick a track of {', '.join(tracked)} instead" if tracked else "no camera of this run has any"
        return f"camera {camera!r} has no tracks in the store (nobody was tracked in it); {what_to_do}"

    def track_by_key(self, key: int) -> StoredTrack:
        return self.tracks_by_keys([key])[0]

    def tracks_by_keys(self, keys: Sequence[int]) -> list[StoredTrack]:
        """The tracks of ``keys`` (FAISS ids), in that order, read in one transaction; KeyError for
        a key that is not stored."""
        rows = {row[0]: StoredTrack(*row) for row in self._rows_by_key(_TRACK_COLUMNS, keys)}  # row[0]: id
        return [rows[k] if k in rows else _missing(k) for k in keys]

    def identities_of(self, keys: Sequence[int]) -> list[int]:
        """The identities of the tracks ``keys`` (FAISS ids), each once, sorted; keys not stored are
        left out."""
        return sorted({row[0] for row in self._rows_where_in("DISTINCT identity", "id", keys)})

    def match_features(self, keys: Sequence[int]) -> list[np.ndarray]:
        """Per key, the track's aggregate feature then its representatives, (1 + R, D) float32."""
        rows = {key: (feature, reps) for key, feature, reps in self._rows_by_key("id, feature, representatives", keys)}
        return [
            np.frombuffer(rows[k][0] + rows[k][1], np.float32).reshape(-1, self.embedder.dim)
            if k in rows else _missing(k)
            for k in keys
        ]

    def identity_tracks(self, identities: Sequence[int]) -> dict[int, list[tuple[StoredTrack, np.ndarray]]]:
        """Per identity, its tracks by (camera, track id), each with its (1 + R, D) float32 match
        features (aggregate then representatives), all read in one transaction; an unknown
        identity maps to an empty list."""
        found: dict[int, list[tuple[StoredTrack, np.ndarray]]] = {int(i): [] for i in identities}
        for *columns, feature, reps in self._rows_where_in(f"{_TRACK_COLUMNS}, feature, representatives",
                                                           "identity", found):
            track = StoredTrack(*columns)
            both = np.frombuffer(feature + reps, np.float32).reshape(-1, self.embedder.dim)
            found[track.identity].append((track, both))
        for members in found.values():
            members.sort(key=lambda member: (member[0].camera, member[0].track_id))
        return found

    def _rows_by_key(self, columns: str, keys: Sequence[int]) -> list[tuple]:
        return self._rows_where_in(columns, "id", keys)

    def _rows_where_in(self, columns: str, column: str, values: Iterable[int]) -> list[tuple]:
        """``SELECT columns FROM tracks WHERE column IN values``, in chunks (SQLite caps the number
        of parameters), all in one read transaction so every row comes from one state of the store."""
        unique = list(dict.fromkeys(int(v) for v in values))
        rows: list[tuple] = []
        with self._reading() as conn:
            for lo in range(0, len(unique), _KEYS_PER_QUERY):
                chunk = unique[lo : lo + _KEYS_PER_QUERY]
                marks = ",".join("?" * len(chunk))
                rows += conn.execute(f"SELECT {columns} FROM tracks WHERE {column} IN ({marks})", chunk).fetchall()
        return rows

    def identities(self) -> list[int]:
        with self._reading() as conn:
            return [r[0] for r in conn.execute("SELECT id FROM identities ORDER BY id")]

    def features(self, keys: Sequence[int]) -> np.ndarray:
        """Aggregate features of the given track keys, (len(keys), D) float32, in that order."""
        if not keys:
            return np.zeros((0, self.embedder.dim), np.float32)
        return np.stack([both[0] for both in self.match_features(keys)])

    def representatives(self, key: int) -> np.ndarray:
        """A track's representative features, (R, D) float32."""
        return self.match_features([key])[0][1:]

    def summaries(self) -> tuple[list[TrackSummary], list[int]]:
        """Every stored track as a TrackSummary (common-clock times) and its identity id."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT camera, track_id, first_frame, last_frame, start_s, end_s, num_detections,"
                " thumbnail, identity, feature, representatives FROM tracks ORDER BY camera, track_id"
            ).fetchall()
        d = self.embedder.dim
        summaries = [
            TrackSummary(
                cam, tid, ff, lf, s, e, n,
                np.frombuffer(feat, np.float32), np.frombuffer(reps, np.float32).reshape(-1, d), thumb,
            )
            for cam, tid, ff, lf, s, e, n, thumb, _, feat, reps in rows
        ]
        return summaries, [row[8] for row in rows]

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarities (Q, k') float32 and track keys (Q, k') int64 (-1: no more tracks), with
        k' = ``k`` or the number of stored tracks where fewer (a huge ``--top-k`` asks for no more)."""
        vectors = np.ascontiguousarray(vectors, np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.embedder.dim:
            raise CrosscamError(
                f"query features have shape {vectors.shape}, the store holds {self.embedder.dim}-d "
                f"features of {self.embedder.name}; embed the query with the store's embedder"
            )
        return self._batcher(l2_normalize(vectors), k)  # threads searching at once share one scan

    def _search_index(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with self._index_lock:
            index = self._load_index_unlocked()
            search = self._index_search
        if index.ntotal == 0:
            raise CrosscamError(f"{self.folder}: the track store is empty; track some video into it first")
        tune_search(index, self.config)
        assert search is not None
        return search(rows, min(k, index.ntotal))

    def scans_exactly(self) -> bool:
        """Whether a search reads every stored vector (the stored index is exact: flat)."""
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'index_kind'").fetchone()
        return (row[0] if row else stored_kind(self._load_index())) == "flat"  # no row: written before it was kept

    def generation(self) -> int:
        """The number of the last committed write (0: never written); every write adds one, so two
        equal readings around a series of reads mean they all saw one state of the store."""
        with self._reading() as conn:
            return int(db.meta_value(conn, "generation"))

    def _load_index(self) -> faiss.Index:
        with self._index_lock:
            return self._load_index_unlocked()

    def _load_index_unlocked(self) -> faiss.Index:
        for attempt in range(2):
            with self._reading() as conn:
                name, crc = db.committed_index(conn)
            if self._index is not None and name == self._index_file:
                return self._index
            if not name:  # never written: an empty index of the right dimension
                index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.embedder.dim))
            elif (self.folder / name).is_file():
                index = self._read_index_file(name, crc)
            elif attempt == 0:
                continue  # two writes landed since meta was read: read it again
            else:
                index = self._index_in_memory(name, "is missing")
            self._index, self._index_file = maybe_to_gpu(index, self.config), name
            self._index_search = exact_searcher(self._index, self.config.bf16_scan)
            return self._index
        raise AssertionError("unreachable")

    def _read_index_file(self, name: str, crc: str | None) -> faiss.Index:
        """The index file ``name``, checked against ``crc`` (None: a store written before it was kept)."""
        try:
            if crc is not None and db.file_crc32(self.folder / name) != crc:
                return self._index_in_memory(name, "does not match the checksum it was written with")
            return faiss.read_index(str(self.folder / name))
        except (OSError, RuntimeError) as exc:
            return self._index_in_memory(name, f"cannot be read ({str(exc).strip().splitlines()[-1][:120]})")

    def index_is_intact(self) -> bool:
        """Whether the committed index file is there with the checksum it was written with (a store
        never written: True; one written before checksums were kept: False, so it is written again)."""
        with self._reading() as conn:
            name, crc = db.committed_index(conn)
        try:
            return not name or (crc is not None and db.file_crc32(self.folder / name) == crc)
        except OSError:
            return False

    def _index_in_memory(self, name: str, what: str) -> faiss.Index:
        """The index built from the table (the source of truth) when its file ``name`` ``what``."""
        log.warning("%s %s; searching an index built in memory from %s instead (the next write into this "
                    "run writes the file again)", self.folder / name, what, db.DB_NAME)
        with self._reading() as conn:
            return self._built_from_table(conn)

    def max_identity(self) -> int:
        """The largest identity id ever written to this store (0 when none was)."""
        with self._reading() as conn:
            return db.largest_identity(conn)

    def uid(self) -> str | None:
        """A name made when the store was created: a store deleted and made again restarts its
        generations but not this (None for a store made before crosscam kept one)."""
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'uid'").fetchone()
        return row[0] if row else None

    # -- writing -------------------------------------------------------------------------
    def setting(self, key: str) -> str | None:
        """A setting the last write kept (:meth:`write`'s ``settings``); None where none was kept."""
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (f"setting.{key}",)).fetchone()
        return row[0] if row else None

    def write(self, updates: Sequence[CameraTracks], settings: Mapping[str, str] | None = None) -> None:
        """Replace the named cameras' tracks and rebuild identities and the index, atomically.

        Either the whole update is visible afterwards or (after a crash) none of it is.
        ``settings`` (name -> text: what the identities came from, the clock's origin) are kept with
        it, for :meth:`setting`.
        """
        with db.write_access(self.folder), closing(db.connect(self.folder, readonly=False)) as conn:
            conn.execute("BEGIN IMMEDIATE")  # one writer at a time; readers keep going
            try:
                before = db.largest_identity(conn)  # counts the ids of the rows about to be replaced
                changes = [self._replace_camera(conn, update) for update in updates]
                db.refresh_identities(conn, set().union(*(change.identities for change in changes)))
                generation = int(db.meta_value(conn, "generation")) + 1
                committed, crc = db.committed_index(conn)
                index_file = f"index-{generation}.faiss"
                self._write_index(conn, committed, crc, changes, index_file)
                high_water = max(before, db.largest_identity(conn))
                conn.executemany(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    [("generation", str(generation)), ("index_file", index_file), ("max_identity", str(high_water))]
                    + [(f"setting.{key}", value) for key, value in (settings or {}).items()],
                )
                # No other writer can be midway now (we hold the write lock): every other index
                # file but the committed one, which readers may be opening, is stale.
                self._remove_stale_files(keep={committed, index_file})
                _publish(conn)
            except BaseException:
                conn.rollback()
                raise

    def _replace_camera(self, conn: sqlite3.Connection, update: CameraTracks) -> _CameraChange:
        cam = update.camera
        if len(update.tracks) != len(update.identities):
            raise ValueError("one identity per track is needed")
        # Track keys (FAISS ids) are never reused: a query that searched the index just before this
        # write must not find its keys naming other tracks afterwards. New keys start above every
        # key this store ever held (meta.max_track_key), including the rows deleted here.
        first_key = db.high_water(conn, "id", "max_track_key") + 1
        removed = conn.execute("SELECT id, identity FROM tracks WHERE camera = ?", (cam.name,)).fetchall()
        conn.execute("DELETE FROM tracks WHERE camera = ?", (cam.name,))
        conn.execute(
            "INSERT OR REPLACE INTO cameras VALUES (?, ?, ?)",
            (cam.name, cam.time_offset_s, int(cam.common_clock)),
        )
        width, height = cam.frame_size or (None, None)
        conn.execute(
            "INSERT OR REPLACE INTO videos VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cam.name, cam.source, cam.fps, width, height, cam.frames_read, cam.summaries_digest),
        )
        rows, units = [], np.empty((len(update.tracks), self.embedder.dim), np.float32)
        for key, (t, identity) in enumerate(zip(update.tracks, update.identities), start=first_key):
            feature = np.asarray(t.feature, np.float32)
            if feature.shape != (self.embedder.dim,):
                raise CrosscamError(
                    f"camera {cam.name}: track {t.track_id} has a {feature.shape} feature, the store "
                    f"holds {self.embedder.dim}-d features of {self.embedder.name}; re-run with the same --reid"
                )
            units[key - first_key] = l2_normalize(feature[None])[0]
            rows.append(
                (
                    key, cam.name, t.track_id, t.first_frame, t.last_frame, t.start_s, t.end_s,
                    t.num_detections, t.thumbnail, int(identity),
                    units[key - first_key].tobytes(),
                    np.asarray(t.representatives, np.float32).tobytes(),
                )
            )
        conn.executemany(
            "INSERT INTO tracks (id, camera, track_id, first_frame, last_frame, start_s, end_s,"
            " num_detections, thumbnail, identity, feature, representatives)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('max_track_key', ?)", (str(first_key - 1 + len(rows)),))
        return _CameraChange(
            np.array([key for key, _ in removed], np.int64), np.arange(first_key, first_key + len(rows), dtype=np.int64),
            units, {identity for _, identity in removed} | {int(i) for i in update.identities},
        )

    def _write_index(self, conn: sqlite3.Connection, committed: str, crc: str | None,
                     changes: Sequence[_CameraChange], index_file: str) -> None:
        """Write the index of the tracks table as ``index_file``: the ``committed`` index file (written
        with checksum ``crc``) with ``changes`` applied where that keeps it the index :func:`build_index`
        would choose, else a new build."""
        count = conn.execute("SELECT COUNT(*) FROM tracks").fetchone()[0]
        index = self._updated_index(committed, crc, changes, count)
        if index is None:
            index = self._built_from_table(conn)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('index_kind', ?)", (stored_kind(index),))
        tmp = self.folder / f"{index_file}.tmp-{os.getpid()}"
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('index_crc32', ?)", (db.file_crc32(tmp),))
        os.replace(tmp, self.folder / index_file)
        directory = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename is durable before the commit that names the file
        finally:
            os.close(directory)

    def _built_from_table(self, conn: sqlite3.Connection) -> faiss.Index:
        """The index :func:`build_index` makes of every track's feature in the table."""
        rows = conn.execute("SELECT id, feature FROM tracks ORDER BY id").fetchall()
        keys = np.array([r[0] for r in rows], np.int64)
        vectors = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(-1, self.embedder.dim)
        return build_index(vectors, keys, self.config)

    def _updated_index(self, committed: str, crc: str | None, changes: Sequence[_CameraChange],
                       count: int) -> faiss.Index | None:
        """The ``committed`` index file with ``changes`` applied (``count`` vectors after them), or
        None where it must be built anew: no committed file that reads and has the checksum it was
        written with (``crc``; damage FAISS can read would otherwise live on), a kind or HNSW degree other
        than the configuration gives for ``count`` vectors, IVF cells more than sqrt(2) off the
        number ``count`` vectors would get (retrained about when the store doubles or halves), or
        tracks to remove from HNSW (faiss cannot remove from its graph)."""
        path = self.folder / committed
        try:
            intact = bool(committed) and crc is not None and db.file_crc32(path) == crc
            index = faiss.read_index(str(path)) if intact else None
        except (OSError, RuntimeError):  # missing or unreadable: the new build repairs it
            return None
        kind = stored_kind(index) if index is not None else None
        if kind != planned_kind(count, self.config):
            return None
        if kind == "ivf":
            ratio = faiss.extract_index_ivf(index).nlist / ivf_cells(count, self.config)
            if not 0.5**0.5 <= ratio <= 2**0.5:
                return None
        if kind == "hnsw":
            if any(len(change.removed) for change in changes) or inner_index(index).hnsw.nb_neighbors(1) != self.config.hnsw_m:
                return None
        for change in changes:
            if len(change.removed) and index.remove_ids(change.removed) != len(change.removed):
                return None  # the file did not hold the tracks the table did: build it from the table
            if len(change.added_keys):
                index.add_with_ids(change.added_vectors, change.added_keys)
        return index if index.ntotal == count else None

    def _remove_stale_files(self, keep: set[str]) -> None:
        for path in self.folder.iterdir():
            stale_index = path.name.startswith("index-") and path.name not in keep
            if stale_index or ".tmp-" in path.name:
                path.unlink(missing_ok=True)


def _missing(key: int):
    raise KeyError(key)


_KEYS_PER_QUERY = 500  # track keys per SELECT ... IN (...): well under SQLite's parameter limit
_TRACK_COLUMNS = (
    "id, camera, track_id, first_frame, last_frame, start_s, end_s, num_detections, thumbnail, identity"
)


def _publish(conn: sqlite3.Connection) -> None:
    """Commit a write: from here on readers see the new tracks and the new index file."""
    conn.commit()
