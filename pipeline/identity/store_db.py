"""The track store's SQLite file: its schema, connections, and the one-line errors for a store that
is damaged, busy or cannot be written (:mod:`pipeline.identity.store` builds the store on it).

A read-only connection never rolls back a killed write's journal: :func:`recover_after_crash`
does it with a writable one before a reader opens the file. Writers set ``synchronous = FULL``.
"""

from __future__ import annotations

import sqlite3
import zlib
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.types import DB_NAME
from reid.errors import CrosscamError

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE cameras (
    name TEXT PRIMARY KEY,
    time_offset_s REAL NOT NULL,      -- added to the video's own times to reach the common clock
    common_clock INTEGER NOT NULL     -- 1: offset given by a cameras file / option
);
CREATE TABLE videos (
    camera TEXT PRIMARY KEY REFERENCES cameras(name),
    source TEXT NOT NULL,
    fps REAL,
    frame_width INTEGER,
    frame_height INTEGER,
    frames_read INTEGER,
    summaries_digest TEXT NOT NULL    -- detects a camera whose tracks changed since the last write
);
CREATE TABLE tracks (
    id INTEGER PRIMARY KEY,           -- the FAISS id
    camera TEXT NOT NULL REFERENCES cameras(name),
    track_id INTEGER NOT NULL,
    first_frame INTEGER NOT NULL,
    last_frame INTEGER NOT NULL,
    start_s REAL NOT NULL,            -- common clock
    end_s REAL NOT NULL,
    num_detections INTEGER NOT NULL,
    thumbnail TEXT,                   -- relative to the run directory
    identity INTEGER NOT NULL,
    feature BLOB NOT NULL,            -- (D,) float32
    representatives BLOB NOT NULL,    -- (R, D) float32
    UNIQUE (camera, track_id)
);
CREATE INDEX tracks_by_identity ON tracks(identity);
CREATE TABLE identities (
    id INTEGER PRIMARY KEY,
    num_tracks INTEGER NOT NULL,
    num_cameras INTEGER NOT NULL,
    first_s REAL NOT NULL,
    last_s REAL NOT NULL
);
"""


def high_water(conn: sqlite3.Connection, column: str, meta_key: str) -> int:
    """The largest ``tracks.<column>`` this store holds or ever recorded in ``meta.<meta_key>``; 0 for none.

    The meta row is missing in stores written before that high-water mark existed; the column's
    current maximum then stands alone.
    """
    (current,) = conn.execute(f"SELECT COALESCE(MAX({column}), 0) FROM tracks").fetchone()
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (meta_key,)).fetchone()
    return max(int(current), int(row[0]) if row else 0)


def largest_identity(conn: sqlite3.Connection) -> int:
    """The largest identity id this store holds or ever recorded (``meta.max_identity``); 0 for none."""
    return high_water(conn, "identity", "max_identity")


def recover_after_crash(folder: Path) -> None:
    """Roll back a write that was killed midway (read-only connections cannot)."""
    if (folder / f"{DB_NAME}-journal").exists():
        with closing(connect(folder, readonly=False)) as conn:
            conn.execute("SELECT COUNT(*) FROM meta").fetchone()


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite said the file is damaged or not a database (it raises exactly DatabaseError
    for those; its subclasses are a locked or vanished file, a constraint, a bad parameter)."""
    return type(exc) is sqlite3.DatabaseError


BUSY_TIMEOUT_S = 30  # seconds a command waits for another one's write to the store


class StoreDamaged(CrosscamError):
    """The store's database is damaged or not a database: the run's state, not the caller's input."""


def damaged(folder: Path, what) -> StoreDamaged:
    return StoreDamaged(f"{folder / DB_NAME}: not a readable track store ({str(what)[:80]}); move {folder} aside and "
                         f"run `crosscam associate {folder.parent}` to build it again from the cameras' outputs")


@contextmanager
def write_access(folder: Path) -> Iterator[None]:
    """A store that cannot be written (read-only files or folder) said in one line, not a traceback."""
    try:
        yield
    except PermissionError as exc:
        raise CrosscamError(f"{folder}: cannot write the track store ({exc.strerror}: {exc.filename}); make it "
                            "writable, or work on a copy of the run") from None
    except sqlite3.OperationalError as exc:
        if "readonly" not in str(exc) and "unable to open database file" not in str(exc):  # the latter: its journal
            raise
        raise CrosscamError(f"{folder}: cannot write the track store ({exc}); make it writable, or work on a copy "
                            "of the run") from None
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        raise damaged(folder, exc) from None  # found as the update reads the rows


def connect(folder: Path, readonly: bool, timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A connection to the store's database; ``timeout``: seconds to wait for another command's write."""
    path = folder / DB_NAME
    if readonly:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout)
    else:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        conn.execute("PRAGMA synchronous = FULL")
    return conn


def is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def busy(folder: Path) -> CrosscamError:
    return CrosscamError(f"{folder}: another crosscam command has been writing the track store for over "
                         f"{BUSY_TIMEOUT_S:g} s; try again when it finishes")


def file_crc32(path: Path) -> str:
    """The CRC-32 of the file at ``path`` (read in 16 MB blocks), as 8 hex digits."""
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


def committed_index(conn: sqlite3.Connection) -> tuple[str, str | None]:
    """The committed index file's name ('' before the first write) and CRC-32 (None if not kept)."""
    crc = conn.execute("SELECT value FROM meta WHERE key = 'index_crc32'").fetchone()
    return meta_value(conn, "index_file"), crc[0] if crc else None


def meta_value(conn: sqlite3.Connection, key: str) -> str:
    return conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]


def refresh_identities(conn: sqlite3.Connection, identities: set[int]) -> None:
    """Recount the rows of ``identities`` in the identities table from their tracks (a row goes
    when no track holds its id any more); the other rows stay as they are."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS touched (id INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM temp.touched")
    conn.executemany("INSERT INTO temp.touched VALUES (?)", ((i,) for i in identities))
    conn.execute("DELETE FROM identities WHERE id IN (SELECT id FROM temp.touched)")
    conn.execute(
        "INSERT INTO identities SELECT identity, COUNT(*), COUNT(DISTINCT camera), MIN(start_s),"
        " MAX(end_s) FROM tracks WHERE identity IN (SELECT id FROM temp.touched) GROUP BY identity"
    )
