import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

from pipeline.config import StoreConfig
from pipeline.identity.faiss_index import build_index, stored_kind, tune_search
from pipeline.identity.store import CameraRecord, CameraTracks, EmbedderInfo, TrackStore
from pipeline.identity.store_db import DB_NAME
from reid.errors import CrosscamError

from identity_runs import summary, unit

DIM = 16
INFO = EmbedderInfo("ab" * 32, "test-embedder", DIM)
REPO = Path(__file__).resolve().parents[1]


def camera(name: str, digest: str = "d") -> CameraRecord:
    return CameraRecord(name, 0.0, False, f"/videos/{name}.mp4", 10.0, (640, 480), 100, digest)


def tracks_for(name: str, n: int, seed: int):
    rng = np.random.default_rng(seed)
    return [summary(name, i + 1, 10.0 * i, 10.0 * i + 5, rng.standard_normal(DIM)) for i in range(n)]


def write_camera(store: TrackStore, name: str, n: int, seed: int, first_identity: int = 1):
    tracks = tracks_for(name, n, seed)
    store.write([CameraTracks(camera(name), tracks, list(range(first_identity, first_identity + n)))])
    return tracks


def test_round_trip(tmp_path: Path):
    store = TrackStore.create(tmp_path / "store", INFO)
    hall = write_camera(store, "hall", 5, seed=0)
    door = write_camera(store, "door", 3, seed=1, first_identity=3)  # identities 3, 4 shared with hall
    again = TrackStore.open(tmp_path / "store", INFO)
    assert [c.name for c in again.cameras()] == ["door", "hall"]
    assert again.cameras()[1] == camera("hall")
    assert len(again) == 8
    assert again.identities() == [1, 2, 3, 4, 5]
    stored = again.track("door", 2)
    assert (stored.camera, stored.identity, stored.start_s, stored.thumbnail) == ("door", 4, 10.0, "thumbs/2.jpg")
    np.testing.assert_allclose(again.features([stored.key])[0], door[1].feature, atol=1e-6)
    np.testing.assert_allclose(again.representatives(stored.key), door[1].representatives)
    sims, keys = again.search(hall[3].feature[None], k=2)
    assert again.track_by_key(int(keys[0, 0])).track_id == 4 and sims[0, 0] == pytest.approx(1.0, abs=1e-5)
    summaries, identities = again.summaries()
    assert len(summaries) == 8 and identities.count(3) == 2


def _open_database_files(folder: Path) -> int:
    """Descriptors of this process open on ``folder``'s database file."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if str((fds / fd.name).resolve()).endswith(str(folder / DB_NAME)))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files through /proc")
def test_a_store_closes_its_files_when_closed(tmp_path: Path):
    """A library caller could not release a store's database (before deleting a run, say): it stayed
    open until Python's cycle collector ran."""
    write_camera(TrackStore.create(tmp_path / "store", INFO), "hall", 3, seed=0)
    with TrackStore.open(tmp_path / "store", INFO) as store:
        store.search(np.ones((1, DIM), np.float32), k=1)
        assert len(store) == 3 and _open_database_files(tmp_path / "store") == 1
    assert _open_database_files(tmp_path / "store") == 0
    assert len(store) == 3 and store.search(np.ones((1, DIM), np.float32), k=1)[1].shape == (1, 1)  # reads again
    store.close()
    assert _open_database_files(tmp_path / "store") == 0


def test_rewriting_a_camera_replaces_only_its_tracks(tmp_path: Path):
    store = TrackStore.create(tmp_path / "store", INFO)
    write_camera(store, "hall", 5, seed=0)
    write_camera(store, "door", 3, seed=1, first_identity=10)
    write_camera(store, "hall", 2, seed=2, first_identity=20)
    assert len(store.tracks(camera="hall")) == 2 and len(store.tracks(camera="door")) == 3
    assert store.identities() == [10, 11, 12, 20, 21]
    # Older generations are removed; the previous one stays until the next write (a reader may be opening it).
    assert sorted(p.name for p in (tmp_path / "store").glob("index-*.faiss")) == ["index-2.faiss", "index-3.faiss"]


def test_track_keys_are_never_reused_after_a_camera_is_replaced(tmp_path: Path):
    store = TrackStore.create(tmp_path / "store", INFO)
    write_camera(store, "hall", 3, seed=0)
    write_camera(store, "door", 2, seed=1, first_identity=10)
    old_keys = {t.key for t in store.tracks()}
    # Replacing the camera holding the largest keys, twice: SQLite alone would hand those keys out again.
    write_camera(store, "door", 2, seed=2, first_identity=10)
    write_camera(store, "door", 1, seed=3, first_identity=10)
    door_keys = {t.key for t in store.tracks(camera="door")}
    assert door_keys and not door_keys & old_keys and min(door_keys) > max(old_keys) + 2
    # Emptying the camera with the top keys still keeps them out of later writes.
    write_camera(store, "door", 0, seed=4)
    write_camera(store, "door", 1, seed=5, first_identity=10)
    assert min(t.key for t in store.tracks(camera="door")) > max(door_keys)
    # A key found by a search before the rewrite no longer resolves to anybody.
    for key in old_keys - {t.key for t in store.tracks(camera="hall")}:
        with pytest.raises(KeyError):
            store.track_by_key(key)


def test_a_store_written_before_the_high_water_marks_keeps_its_top_ids_and_keys_out_of_reach(tmp_path: Path):
    store = TrackStore.create(tmp_path / "store", INFO)
    write_camera(store, "hall", 3, seed=0)
    write_camera(store, "door", 2, seed=1, first_identity=10)  # the top identities (10, 11) and keys
    top_key = max(t.key for t in store.tracks())
    with sqlite3.connect(tmp_path / "store" / DB_NAME) as conn:  # as an older crosscam left it
        conn.execute("DELETE FROM meta WHERE key IN ('max_identity', 'max_track_key')")
    # door's people turn out to be hall's: ids 10 and 11 and door's keys leave the tables.
    store.write([CameraTracks(camera("door"), tracks_for("door", 2, seed=2), [1, 2])])
    assert store.max_identity() == 11
    write_camera(store, "door", 1, seed=3, first_identity=5)
    assert min(t.key for t in store.tracks(camera="door")) > top_key


def test_other_embedder_or_dimension_is_a_one_line_error_and_changes_nothing(tmp_path: Path):
    folder = tmp_path / "store"
    write_camera(TrackStore.create(folder, INFO), "hall", 3, seed=0)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for other in (EmbedderInfo("cd" * 32, "other", DIM), EmbedderInfo(INFO.fingerprint, "test-embedder", 32)):
        with pytest.raises(CrosscamError, match="store was built with embedder test-embedder") as info:
            TrackStore.create(folder, other)
        assert "\n" not in str(info.value)
    with pytest.raises(CrosscamError, match="features of test-embedder"):
        TrackStore.open(folder).search(np.ones((1, 32), np.float32), k=1)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_missing_and_empty_store_errors(tmp_path: Path):
    with pytest.raises(CrosscamError, match="no track store here"):
        TrackStore.open(tmp_path / "nothing")
    empty = TrackStore.create(tmp_path / "store", INFO)
    with pytest.raises(CrosscamError, match="empty"):
        empty.search(np.ones((1, DIM), np.float32), k=1)
    with pytest.raises(CrosscamError, match="unknown camera 'hall'"):
        empty.track("hall", 1)


def test_a_camera_without_tracks_is_not_called_unknown(tmp_path: Path):
    store = TrackStore.create(tmp_path / "store", INFO)
    write_camera(store, "hall", 0, seed=0)  # nobody walked through the hall
    with pytest.raises(CrosscamError) as info:
        store.track("hall", 1)
    assert str(info.value) == ("--track hall:1: camera 'hall' has no tracks in the store (nobody was tracked in it); "
                               "no camera of this run has any")
    write_camera(store, "door", 2, seed=1)
    with pytest.raises(CrosscamError) as info:
        store.track("hall", 1)
    assert str(info.value) == ("--track hall:1: camera 'hall' has no tracks in the store (nobody was tracked in it); "
                               "pick a track of door instead")
    with pytest.raises(CrosscamError, match="^--track yard:1: unknown camera 'yard'; cameras in the store: door, hall$"):
        store.track("yard", 1)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_index_kinds_find_the_nearest_track(kind: str):
    rng = np.random.default_rng(3)
    vectors = unit(rng.standard_normal((2000, DIM)))
    keys = np.arange(100, 2100, dtype=np.int64)
    config = StoreConfig(index=kind, ivf_nprobe=64, hnsw_ef_search=128)
    index = build_index(vectors, keys, config)
    tune_search(index, config)
    _, found = index.search(vectors[:50], 1)
    assert np.mean(found[:, 0] == keys[:50]) >= 0.95
    assert stored_kind(index) == kind


@pytest.mark.parametrize("kind, exact", [("flat", True), ("ivf", False), ("hnsw", False)])
def test_a_store_says_whether_its_search_scans_every_track(tmp_path: Path, kind: str, exact: bool):
    """The written index's kind is kept in the store (a server picks its process count by it)."""
    store = TrackStore.create(tmp_path / "store", INFO, StoreConfig(index=kind))
    write_camera(store, "hall", 500, seed=0)
    reader = TrackStore.open(tmp_path / "store", INFO)  # default config: the stored kind decides, not the config
    assert reader.scans_exactly() is exact
    with sqlite3.connect(tmp_path / "store" / DB_NAME) as conn:  # a store written before the kind was kept
        conn.execute("DELETE FROM meta WHERE key = 'index_kind'")
    assert TrackStore.open(tmp_path / "store", INFO).scans_exactly() is exact


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import pipeline.identity.store as store_module
    from pipeline.identity.store import CameraRecord, CameraTracks, EmbedderInfo, TrackStore
    sys.path.insert(0, {tests!r})
    from identity_runs import summary

    folder, phase = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(7)
    tracks = [summary("door", i + 1, i, i + 1, rng.standard_normal(16)) for i in range(300)]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if phase == "index":  # killed while the new index file is half written
        real_write = store_module.faiss.write_index
        def half_write(index, path):
            real_write(index, path)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            die()
        store_module.faiss.write_index = half_write
    elif phase == "commit":  # killed after the new index is in place, before the commit
        store_module._publish = die
    elif phase == "wait":  # holds the write open until the parent says go
        real_publish = store_module._publish
        def wait_then_publish(conn):
            open(os.path.join(folder, "..", "writing"), "w").close()
            while not os.path.exists(os.path.join(folder, "..", "go")):
                pass
            real_publish(conn)
        store_module._publish = wait_then_publish
    store = TrackStore.open(folder, EmbedderInfo({fingerprint!r}, "test-embedder", 16))
    cam = CameraRecord("door", 0.0, False, "/videos/door.mp4", 10.0, (640, 480), 300, "new")
    store.write([CameraTracks(cam, tracks, list(range(100, 400)))])
    print("finished")
    """
).format(tests=str(Path(__file__).parent), fingerprint=INFO.fingerprint)


def run_child(folder: Path, phase: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(folder), phase], cwd=REPO,
                            stdout=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("phase", ["index", "commit"])
def test_a_write_killed_midway_leaves_the_previous_state(tmp_path: Path, phase: str):
    folder = tmp_path / "store"
    hall = write_camera(TrackStore.create(folder, INFO), "hall", 4, seed=0)
    child = run_child(folder, phase)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == -9 and "finished" not in out  # really killed, midway
    store = TrackStore.open(folder, INFO)
    assert [c.name for c in store.cameras()] == ["hall"] and len(store) == 4
    sims, keys = store.search(hall[2].feature[None], k=1)
    assert store.track_by_key(int(keys[0, 0])).track_id == 3 and sims[0, 0] == pytest.approx(1.0, abs=1e-5)
    write_camera(store, "door", 2, seed=5, first_identity=50)  # the next write works and cleans up
    assert len(store) == 6
    # No stray file of the killed write is left: only the previous generation's index and the new one.
    assert sorted(p.name for p in folder.iterdir() if p.name != "tracks.sqlite") == ["index-1.faiss", "index-2.faiss"]


def test_readers_see_the_old_state_while_a_writer_works(tmp_path: Path):
    folder = tmp_path / "store"
    write_camera(TrackStore.create(folder, INFO), "hall", 4, seed=0)
    child = run_child(folder, "wait")
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "writing").exists():
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        reader = TrackStore.open(folder, INFO)  # the new index file exists, not yet committed
        assert len(reader) == 4 and [c.name for c in reader.cameras()] == ["hall"]
        assert reader.search(np.ones((1, DIM), np.float32), k=10)[1].shape == (1, 4)  # the 4 it holds, no more
    finally:
        (tmp_path / "go").touch()
        out, _ = child.communicate(timeout=120)
    assert "finished" in out
    assert len(TrackStore.open(folder, INFO)) == 304
    assert len(reader) == 304  # its open connection saw the commit (and never held the writer up)


def test_a_reader_keeps_its_connection_and_reopens_a_replaced_database(tmp_path: Path):
    store = TrackStore.create(tmp_path / "store", INFO)
    write_camera(store, "hall", 4, seed=0)
    reader = TrackStore.open(tmp_path / "store", INFO)
    assert len(reader) == 4 and len(reader) == 4
    first = reader._readers.conn
    assert reader.generation() == 1 and reader._readers.conn is first  # one connection, kept between reads
    other = TrackStore.create(tmp_path / "other", INFO)
    write_camera(other, "door", 7, seed=1)
    (tmp_path / "other" / DB_NAME).replace(tmp_path / "store" / DB_NAME)  # a new file under the same name
    assert len(reader) == 7 and [c.name for c in reader.cameras()] == ["door"]
    assert reader._readers.conn is not first
    with pytest.raises(sqlite3.ProgrammingError):
        first.execute("SELECT 1")  # the old one was closed


def test_an_ivf_store_with_too_few_tracks_to_train_uses_a_flat_index():
    config = StoreConfig(index="ivf")
    for n in (0, 3):
        index = build_index(np.eye(n, 16, dtype=np.float32), np.arange(n, dtype=np.int64), config)
        assert index.ntotal == n and "IVF" not in type(faiss.downcast_index(index.index)).__name__
        assert stored_kind(index) == "flat"


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_missing_or_unreadable_index_file_is_searched_from_the_table_with_a_warning(tmp_path: Path, caplog, damage: str):
    folder = tmp_path / "store"
    hall = write_camera(TrackStore.create(folder, INFO), "hall", 4, seed=0)
    for path in folder.glob("index-*.faiss"):
        path.unlink() if damage == "missing" else path.write_bytes(path.read_bytes()[:100])
    store = TrackStore.open(folder, INFO)
    sims, keys = store.search(hall[2].feature[None], k=1)  # a crash (truncated) or an error (missing) before
    assert store.track_by_key(int(keys[0, 0])).track_id == 3 and sims[0, 0] == pytest.approx(1.0, abs=1e-5)
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert ("is missing" if damage == "missing" else "does not match the checksum") in warning and "built in memory" in warning


def test_damage_faiss_can_read_is_not_carried_into_later_indexes(tmp_path: Path, monkeypatch):
    folder = tmp_path / "store"
    store = TrackStore.create(folder, INFO)
    write_camera(store, "hall", 6, seed=0)
    path = next(folder.glob("index-*.faiss"))
    data = bytearray(path.read_bytes())
    data[-200:-100] = bytes(100)  # zeros over stored vectors: still a readable index
    path.write_bytes(bytes(data))
    assert faiss.read_index(str(path)).ntotal == 6
    builds = counting_builds(monkeypatch)
    write_camera(store, "door", 2, seed=1, first_identity=10)
    assert builds == [8]  # built from the table, not updated in place
    assert_index_holds_the_table(store, folder)


def test_an_association_holds_the_run_and_another_waits_saying_so(tmp_path: Path, caplog):
    """The lock moved from the store's update to the whole association (two at once drew one
    camera's annotated_global.mp4 through one temporary file: a traceback)."""
    import threading

    from pipeline.run_folders import identities_held

    probe = ("import fcntl, sys; f = open(sys.argv[1], 'a')\n"
             "try:\n    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
             "except BlockingIOError:\n    print('held')")
    (tmp_path / "run").mkdir()
    lock = str(tmp_path / "run" / ".associating")
    order = []
    with identities_held(tmp_path / "run"):
        held = subprocess.run([sys.executable, "-c", probe, lock], capture_output=True, text=True).stdout.strip()
        def second():
            with identities_held(tmp_path / "run"):
                order.append("second")

        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.5)
        order.append("first done")
    waiter.join(timeout=30)
    free = subprocess.run([sys.executable, "-c", probe, lock], capture_output=True, text=True).stdout.strip()
    assert held == "held" and order == ["first done", "second"]
    assert "another crosscam command is associating this run; waiting for it to finish" in caplog.text
    assert free == "free"
    from pipeline.run_folders import claim_camera, release

    claim = claim_camera(tmp_path / "run", "identities")  # a camera's lock is not the run's (it shared a file: a hang)
    with identities_held(tmp_path / "run"):
        pass
    release([claim])
    with identities_held(tmp_path / "nope"):  # no run there: nothing made (the caller says so)
        pass
    assert not (tmp_path / "nope").exists()


def test_batched_lookups_keep_the_order_asked_for(tmp_path: Path, monkeypatch):
    store = TrackStore.create(tmp_path / "store", INFO)
    hall = write_camera(store, "hall", 7, seed=0)
    monkeypatch.setattr("pipeline.identity.store._KEYS_PER_QUERY", 3)  # several chunks
    keys = [t.key for t in store.tracks()]
    asked = [keys[5], keys[0], keys[5], keys[3], keys[6]]
    assert [t.key for t in store.tracks_by_keys(asked)] == asked
    both = store.match_features(asked)
    for key, stacked in zip(asked, both):
        track = store.track_by_key(key)
        np.testing.assert_allclose(stacked[0], unit(hall[track.track_id - 1].feature), atol=1e-6)
        np.testing.assert_allclose(stacked[1:], hall[track.track_id - 1].representatives)
    with pytest.raises(KeyError):
        store.tracks_by_keys([keys[0], 10_000])


def test_identity_tracks_reads_each_identitys_tracks_with_their_match_features(tmp_path: Path, monkeypatch):
    store = TrackStore.create(tmp_path / "store", INFO)
    write_camera(store, "hall", 5, seed=0)
    write_camera(store, "door", 3, seed=1, first_identity=3)  # identities 3, 4, 5 in both cameras
    monkeypatch.setattr("pipeline.identity.store._KEYS_PER_QUERY", 2)  # several chunks
    members = store.identity_tracks([4, 1, 4, 99])
    assert list(members) == [4, 1, 99] and members[99] == []
    for identity in (1, 4):
        assert [t for t, _ in members[identity]] == store.tracks(identity=identity)
        expected = store.match_features([t.key for t, _ in members[identity]])
        for (_, both), features in zip(members[identity], expected):
            np.testing.assert_array_equal(both, features)
    assert [t.camera for t, _ in members[4]] == ["door", "hall"]


def committed_index(folder: Path) -> faiss.Index:
    with sqlite3.connect(folder / DB_NAME) as conn:
        name = conn.execute("SELECT value FROM meta WHERE key = 'index_file'").fetchone()[0]
    return faiss.read_index(str(folder / name))


def counting_builds(monkeypatch) -> list[int]:
    """Each build_index call of the store appends its number of vectors."""
    import pipeline.identity.store as store_module

    calls, real = [], store_module.build_index
    monkeypatch.setattr(store_module, "build_index", lambda vectors, keys, config: calls.append(len(keys)) or real(vectors, keys, config))
    return calls


def assert_index_holds_the_table(store: TrackStore, folder: Path) -> faiss.Index:
    index = committed_index(folder)
    tracks = store.tracks()
    assert index.ntotal == len(tracks)
    features = store.features([t.key for t in tracks])
    sims, keys = index.search(features, 1)
    assert keys[:, 0].tolist() == [t.key for t in tracks]  # every stored feature finds its own track
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)
    return index


def test_writes_update_the_committed_flat_index_instead_of_building_it_again(tmp_path: Path, monkeypatch):
    folder = tmp_path / "store"
    store = TrackStore.create(folder, INFO)
    write_camera(store, "hall", 5, seed=0)
    write_camera(store, "door", 3, seed=1, first_identity=10)
    builds = counting_builds(monkeypatch)
    write_camera(store, "hall", 2, seed=2, first_identity=20)  # replaced: 5 tracks out, 2 in
    write_camera(store, "gate", 4, seed=3, first_identity=30)
    write_camera(store, "door", 0, seed=4)
    assert builds == []
    index = assert_index_holds_the_table(store, folder)
    # The same vectors in the same order as a build from the table: flat searches answer alike.
    keys = np.array(sorted(t.key for t in store.tracks()), np.int64)
    built = build_index(store.features(list(keys)), keys, StoreConfig())
    queries = np.random.default_rng(5).standard_normal((20, DIM)).astype(np.float32)
    for got, expected in zip(index.search(queries, 6), built.search(queries, 6)):
        np.testing.assert_array_equal(got, expected)


def test_a_missing_committed_index_is_built_again_from_the_table_by_the_next_write(tmp_path: Path, monkeypatch):
    folder = tmp_path / "store"
    store = TrackStore.create(folder, INFO)
    write_camera(store, "hall", 5, seed=0)
    for path in folder.glob("index-*.faiss"):
        path.write_bytes(b"not an index")
    builds = counting_builds(monkeypatch)
    write_camera(store, "door", 3, seed=1, first_identity=10)
    assert builds == [8]
    assert_index_holds_the_table(store, folder)


def test_an_ivf_index_keeps_its_cells_until_the_store_doubles(tmp_path: Path, monkeypatch):
    folder = tmp_path / "store"
    store = TrackStore.create(folder, INFO, StoreConfig(index="ivf"))
    write_camera(store, "hall", 400, seed=0)  # 10 cells (400 / 39)
    first = committed_index(folder)  # (kept: the IVF part below is a view into it)
    first_ivf = faiss.extract_index_ivf(first)
    centroids = first_ivf.quantizer.reconstruct_n(0, first_ivf.nlist)
    builds = counting_builds(monkeypatch)
    write_camera(store, "door", 150, seed=1, first_identity=1000)  # 550 tracks: 14 cells is within sqrt(2)
    index = assert_index_holds_the_table(store, folder)
    kept = faiss.extract_index_ivf(index)
    assert builds == [] and kept.nlist == 10
    np.testing.assert_array_equal(kept.quantizer.reconstruct_n(0, kept.nlist), centroids)
    write_camera(store, "gate", 300, seed=2, first_identity=2000)  # 850 tracks: 21 cells, trained anew
    assert builds == [850]
    assert faiss.extract_index_ivf(assert_index_holds_the_table(store, folder)).nlist == 21


def test_hnsw_adds_in_place_and_is_built_again_to_remove_or_to_change_its_degree(tmp_path: Path, monkeypatch):
    folder = tmp_path / "store"
    store = TrackStore.create(folder, INFO, StoreConfig(index="hnsw", hnsw_m=8))
    write_camera(store, "hall", 30, seed=0)
    builds = counting_builds(monkeypatch)
    write_camera(store, "door", 20, seed=1, first_identity=100)
    assert builds == []
    write_camera(store, "hall", 10, seed=2, first_identity=200)  # removes hall's 30: faiss's HNSW cannot
    assert builds == [30]
    assert stored_kind(assert_index_holds_the_table(store, folder)) == "hnsw"
    store = TrackStore.open(folder, INFO, StoreConfig(index="hnsw", hnsw_m=16))
    write_camera(store, "gate", 5, seed=3, first_identity=300)
    assert builds == [30, 35]
    assert faiss.downcast_index(committed_index(folder).index).hnsw.nb_neighbors(1) == 16


def test_another_configured_kind_is_built_by_the_next_write(tmp_path: Path, monkeypatch):
    folder = tmp_path / "store"
    write_camera(TrackStore.create(folder, INFO), "hall", 50, seed=0)
    assert stored_kind(committed_index(folder)) == "flat"
    builds = counting_builds(monkeypatch)
    write_camera(TrackStore.open(folder, INFO, StoreConfig(index="hnsw")), "door", 5, seed=1, first_identity=100)
    store = TrackStore.open(folder, INFO)
    assert builds == [55] and stored_kind(assert_index_holds_the_table(store, folder)) == "hnsw"
    assert len(store) == 55


def test_each_write_recounts_the_identities_it_touches_as_a_full_count_would(tmp_path: Path):
    folder = tmp_path / "store"
    store = TrackStore.create(folder, INFO)
    write_camera(store, "hall", 6, seed=0)  # identities 1-6
    write_camera(store, "door", 4, seed=1, first_identity=4)  # 4-7: 4, 5, 6 in two cameras
    write_camera(store, "gate", 3, seed=2, first_identity=9)
    write_camera(store, "hall", 2, seed=3, first_identity=5)  # 1-3 leave; 5, 6 recounted
    write_camera(store, "gate", 0, seed=4)  # 9-11 leave
    with sqlite3.connect(folder / DB_NAME) as conn:
        kept = conn.execute("SELECT * FROM identities ORDER BY id").fetchall()
        counted = conn.execute("SELECT identity, COUNT(*), COUNT(DISTINCT camera), MIN(start_s), MAX(end_s)"
                               " FROM tracks GROUP BY identity ORDER BY identity").fetchall()
    assert kept == counted and [row[:3] for row in kept] == [(4, 1, 1), (5, 2, 2), (6, 2, 2), (7, 1, 1)]


def test_a_reader_checks_the_index_files_checksum_and_an_empty_write_repairs_it(tmp_path: Path, caplog):
    folder = tmp_path / "store"
    store = TrackStore.create(folder, INFO)
    assert store.index_is_intact()  # never written: nothing to check
    hall = write_camera(store, "hall", 6, seed=0)
    assert store.index_is_intact()
    path = next(folder.glob("index-*.faiss"))
    data = bytearray(path.read_bytes())
    data[-200:-100] = bytes(100)  # same size, still readable: only the checksum tells
    path.write_bytes(bytes(data))
    assert not store.index_is_intact()
    reader = TrackStore.open(folder, INFO)
    sims, keys = reader.search(hall[4].feature[None], k=1)
    assert reader.track_by_key(int(keys[0, 0])).track_id == 5 and sims[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert "does not match the checksum it was written with" in caplog.text
    store.write([])  # what `crosscam associate` does for a run with nothing new and a damaged index
    assert store.index_is_intact() and store.generation() == 2
    assert_index_holds_the_table(store, folder)


def test_a_stop_while_the_store_is_made_leaves_no_file(tmp_path, monkeypatch):
    """Ctrl-C as the first association made the store left tracks.sqlite.tmp-PID."""
    def stopped(path, embedder):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(TrackStore, "_write_empty", staticmethod(stopped))
    with pytest.raises(KeyboardInterrupt):
        TrackStore.create(tmp_path / "store", EmbedderInfo("ab" * 32, "synthetic", 4))
    assert list((tmp_path / "store").iterdir()) == []


def test_a_store_that_cannot_be_written_is_one_line(tmp_path: Path, monkeypatch):
    """A read-only store gave a 43-line sqlite3 traceback (a read-only update lock: PermissionError).
    The checks run as root here, which writes through file modes: SQLite's own read-only mode and a
    refused open stand in for them."""
    import pipeline.identity.store_db as store_db

    store = TrackStore.create(tmp_path / "store", INFO)
    write_camera(store, "hall", 3, seed=0)
    before = (tmp_path / "store" / DB_NAME).read_bytes()
    real_connect = store_db.connect
    monkeypatch.setattr(store_db, "connect", lambda folder, readonly: real_connect(folder, True))
    with pytest.raises(CrosscamError, match=r"store: cannot write the track store \(attempt to write a readonly database\)"):
        write_camera(store, "door", 2, seed=1)
    monkeypatch.setattr(store_db, "connect", real_connect)
    assert (tmp_path / "store" / DB_NAME).read_bytes() == before

    import pipeline.run_folders as run_folders

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    (tmp_path / "run").mkdir()
    monkeypatch.setattr(run_folders, "open", refused, raising=False)
    with pytest.raises(CrosscamError, match=r"run: cannot write in it \(Permission denied\); make it writable"):
        with run_folders.identities_held(tmp_path / "run"):
            pass


def test_damage_inside_the_database_is_one_line_and_found_before_tracking(tmp_path: Path):
    """Damage past the header passed the open: a camera was tracked in full, then a sqlite3 traceback
    (and `associate` said nothing, `query` gave a traceback)."""
    import os

    store = TrackStore.create(tmp_path / "store", INFO)
    write_camera(store, "hall", 300, seed=0)
    with open(tmp_path / "store" / DB_NAME, "r+b") as db:
        db.seek(4096 * 5)
        db.write(os.urandom(4096 * 5))
    damaged = TrackStore.open(tmp_path / "store", INFO)  # the header still reads
    with pytest.raises(CrosscamError, match="tracks.sqlite: not a readable track store .*move .*store aside") as info:
        damaged.check_intact()
    assert "\n" not in str(info.value)
    with pytest.raises(CrosscamError, match="not a readable track store"):
        damaged.summaries()


def test_only_damage_is_called_damage():
    """A constraint or a bad parameter (IntegrityError, InterfaceError) read "not a readable track
    store ... move it aside and rebuild", and rebuilding failed the same way."""
    import pipeline.identity.store_db as store_db

    assert store_db.is_damage(sqlite3.DatabaseError("database disk image is malformed"))
    for other in (sqlite3.IntegrityError("UNIQUE constraint failed"), sqlite3.InterfaceError("bad parameter"),
                  sqlite3.OperationalError("database is locked")):
        assert not store_db.is_damage(other)


def test_a_store_another_command_is_writing_counts_as_writable_at_once(tmp_path: Path):
    """The check before tracking took SQLite's write lock: beside an association writing the store it
    waited 30 s, then failed with a traceback."""
    write_camera(TrackStore.create(tmp_path / "store", INFO), "hall", 3, seed=0)
    store = TrackStore.open(tmp_path / "store", INFO)
    writer = sqlite3.connect(tmp_path / "store" / DB_NAME, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # as a large update holds it (SQLite spills to the file past ~2 MB)
    try:
        started = time.perf_counter()
        store.check_writable()
        assert time.perf_counter() - started < 5
    finally:
        writer.rollback()
        writer.close()
