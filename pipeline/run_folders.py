"""A run directory's camera folders over time, for the video side (tracking into them) and the
identity side (putting new outputs in place as the store takes them) alike.

- Who may write a camera: one command at a time holds it (:func:`claim_camera`, an flock on
  ``RUN_DIR/.CAMERA.lock``), so two commands tracking the same camera into one run never both
  write its folder.
- Tracking again beside the earlier outputs: a camera with tracks from before (complete or stopped)
  is tracked into ``.CAMERA.retrack`` (:func:`working_folder`), which replaces its folder only once complete
  (:func:`publish`); a stopped or failed run is dropped (:func:`keep_earlier`). Complete new
  outputs of a run whose association did not finish wait there (:func:`waiting_retracks`) until
  an association puts them in place together with the store.
- One association of the run at a time (:func:`identities_held`, an flock on ``RUN_DIR/.associating``):
  from reading the cameras' outputs through the store to the outputs drawn from it, and every
  folder put in place.
- Files written whole or not at all (:func:`write_json_atomic`), folders made with one-line errors.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

from pipeline.types import DB_NAME, STORE_DIR, read_run_record
from reid.errors import CrosscamError
from reid.paths import written_atomically

try:
    import fcntl
except ImportError:  # Windows: no flock; two commands tracking one camera, or associating, are then not kept apart
    fcntl = None

log = logging.getLogger(__name__)

# what tracking and association write in a camera folder (besides its unfinished files and pieces:
# foreign_entries); anything else there is the user's, and stays
CAMERA_OUTPUTS = frozenset({"run.json", "tracks.txt", "tracks.json", "track_features.npz", "thumbs", "annotated.mp4",
                            "tracks_global.txt", "annotated_global.mp4"})
RETRACK_SUFFIX = ".retrack"  # .CAMERA.retrack: a camera tracked again, beside its earlier outputs
# flock'ed for the whole of one association of the run (identities_held); not ending in ".lock", which
# is each camera's (a camera named "identities" would share a ".identities.lock")
IDENTITIES_LOCK = ".associating"


def make_folder(folder: Path, fix: str = "give another --out") -> None:
    """``mkdir -p folder``, with a failure (a read-only or special file system, a file in the way) as
    one line ending in ``fix``."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CrosscamError(f"{folder}: cannot make this folder ({exc.strerror}); {fix}") from None


CAMERA_FOLDER_FIX = "move what is there, or give this input another --camera"  # make_folder's advice for a camera's folder


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file, so readers never see half of it (and a
    full disk leaves none beside it)."""
    with written_atomically(path) as handle:
        handle.write(json.dumps(data, indent=1).encode())


def claim_camera(out_dir: Path, name: str) -> IO:
    """This process's exclusive hold on camera ``name`` of the run ``out_dir`` (an flock on
    ``.NAME.lock`` there, removed on :func:`release`) until released: a second command tracking
    the same camera into the same run is refused in one line, where both wrote its folder (and one
    deleted the other's ``.NAME.retrack``). Other cameras of the run are tracked side by side."""
    make_folder(out_dir)

    def refuse(handle: IO) -> None:
        handle.close()
        raise _camera_busy(out_dir, name)

    return _lock_exclusively(out_dir / f".{name}.lock", refuse, f"two commands tracking camera {name} at once")


def _lock_exclusively(path: Path, when_held: Callable[[IO], None], unguarded: str) -> IO:
    """``path`` opened (created) and flock'ed exclusively. Where another process holds it,
    ``when_held(handle)`` refuses (raises) or waits (a blocking flock). A lock file its holder
    removed on release while this one opened it is opened anew, so two never hold two files of one
    name. Where the file system has no locks, a warning that ``unguarded`` are not kept apart."""
    while True:
        try:
            handle = open(path, "a")
        except OSError as exc:  # read-only folder or file system
            raise CrosscamError(f"{path.parent}: cannot write in it ({exc.strerror}); make it writable, or work on "
                                "a copy of the run") from None
        if fcntl is None:  # Windows: no flock
            return handle
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                when_held(handle)
        except OSError as exc:  # a file system without locks (some FUSE and network mounts)
            log.warning("%s: cannot be locked (%s); %s are not kept apart", path, exc.strerror, unguarded)
            return handle
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()


def check_camera_free(out_dir: Path, name: str) -> None:
    """Refuse now (before models load) a camera another command holds, or whose outputs from a run
    whose association did not finish still wait (:func:`waiting_retracks`: tracking it again would
    drop them); creates nothing. The hold itself is taken by :func:`claim_camera`, which checks
    again."""
    if camera_held(out_dir, name):  # first: a command tracking the camera now has its outputs beside it too
        raise _camera_busy(out_dir, name)
    check_nothing_waiting(out_dir / name)


def camera_held(out_dir: Path, name: str) -> bool | None:
    """Whether a command holds camera ``name`` of the run ``out_dir`` now (:func:`claim_camera`);
    None where that cannot be told (no locks here). Creates nothing."""
    if fcntl is None:
        return None
    try:
        handle = open(out_dir / f".{name}.lock", "rb")
    except OSError:  # no lock file: nobody holds it
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:  # no locks on this file system: claim_camera says so
            return None
    return False


def check_nothing_waiting(folder: Path) -> None:
    """Refuse to track camera ``folder`` again while its complete outputs from a run stopped before
    its association wait beside it: tracking it would drop them."""
    waiting = folder.with_name(f".{folder.name}{RETRACK_SUFFIX}")
    if read_run_record(waiting).get("status") == "complete":
        raise CrosscamError(f"camera {folder.name}: its complete new outputs, not associated yet, "
                            f"wait in {waiting}; `crosscam associate {folder.parent}` puts them in place (or delete "
                            "that folder to drop them), then track it again")


@contextmanager
def identities_held(run_dir: Path) -> Iterator[None]:
    """Hold the run's identities for one association, across processes (an flock on
    ``RUN_DIR/.associating``, removed when done): from reading the cameras' outputs (and the
    outputs waiting for it) through the store's update to the global tracks, videos and report
    drawn from it. Two at once numbered new identities from one snapshot, and drew one camera's
    annotated_global.mp4 through one temporary file. A command that has to wait says so."""
    if fcntl is None or not run_dir.is_dir():  # no run there: the caller says so
        yield
        return
    path, said = run_dir / IDENTITIES_LOCK, False

    def wait(handle: IO) -> None:
        nonlocal said
        if not said:
            log.warning("%s: another crosscam command is associating this run; waiting for it to finish", run_dir)
            said = True
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)

    lock = _lock_exclusively(path, wait, "two commands associating this run at once")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held: a command opening it now locks anew
        lock.close()


def running_todo(run_dir: Path, camera: str) -> str:
    """What to do about a camera whose run.json says running: wait for the command tracking it, or,
    where none holds it, track it again (its command was killed, or stopped by a full disk)."""
    held = camera_held(run_dir, camera)
    if held:
        return "a crosscam command is tracking it now: wait for it to finish"
    if held is None:  # no locks here to tell
        return ("wait for the crosscam command tracking it, or, if none is, track it again (its run was stopped "
                "outright: killed, or a full disk)")
    return "no crosscam command is tracking it: its run was stopped outright (killed, or a full disk); track it again"


def _camera_busy(out_dir: Path, name: str) -> CrosscamError:
    return CrosscamError(f"camera {name}: another crosscam command is tracking it into {out_dir} now; wait for it "
                         "to finish, or give this input another --camera")


def claim_cameras(out_dir: Path, names: Sequence[str]) -> list[IO]:
    """:func:`claim_camera` for every name, all or none."""
    claims: list[IO] = []
    try:
        for name in names:
            claims.append(claim_camera(out_dir, name))
    except BaseException:
        release(claims)
        raise
    return claims


def release(claims: Sequence[IO | None]) -> None:
    """Let other commands track these cameras again (their lock files go)."""
    for claim in claims:
        if claim is not None:
            Path(claim.name).unlink(missing_ok=True)  # while still held: a command opening it now claims anew
            claim.close()


def check_run_directory(out_dir: Path) -> None:
    """Refuse an ``--out`` inside a camera's folder or a run's store (its outputs would go into
    another run's parts, where no command reads them and a retrack of that camera deletes them)."""
    out_dir = Path(os.path.abspath(out_dir))  # "runs/a/cam1/.." is runs/a
    for folder in (out_dir, *out_dir.parents):
        if _is_crosscams_camera(folder):
            raise CrosscamError(f"--out {out_dir}: inside camera folder {folder} of the run {folder.parent}; give a "
                                f"run directory of its own (or {folder.parent} to add cameras to that run)")
        if folder.name == STORE_DIR and (folder / DB_NAME).is_file():
            raise CrosscamError(f"--out {out_dir}: inside the track store {folder} of the run {folder.parent}; give "
                                f"a run directory of its own (or {folder.parent} to add cameras to that run)")


def check_camera_input(folder: Path, uri: str, named: bool) -> None:
    """Refuse, before models load, to track ``uri`` into camera ``folder`` where that would lose what
    is not this camera's run: a folder crosscam did not make holding files by its outputs' names
    (they would be overwritten), or a camera tracked from another input that is still there when its
    name came from the file name (``named`` false: two sites' ``video.mp4`` would be one camera, the
    first one's tracks gone; a video moved since is taken as the same camera's). A name given with
    ``--camera`` says the replacement is meant (warned by :func:`warn_if_another_source`)."""
    if folder.is_dir() and not _is_crosscams_camera(folder):
        clashing = sorted(set(_entries(folder)) & CAMERA_OUTPUTS)
        if clashing:
            raise CrosscamError(f"{folder}: holds {', '.join(clashing)}, which crosscam did not write (no run.json of "
                                "its own) and tracking would overwrite; move them out, or give this input another --camera")
    earlier = _other_source(folder, uri)
    if earlier and not named:
        raise CrosscamError(f"camera {folder.name} (named from {uri}) was tracked from {earlier}; give this input its "
                            f"own --camera NAME, or --camera {folder.name} to track it in that camera's place")


def warn_if_another_source(folder: Path, uri: str) -> None:
    """Warn when the camera ``folder`` holds a run of another video than ``uri``: tracking ``uri``
    under its name replaces that camera's tracks (a name reused by mistake loses the other camera);
    and when another camera of the run was tracked from ``uri``: everyone in it would be seen
    twice, by two cameras at the same moments (a camera renamed by mistake)."""
    earlier = _other_source(folder, uri)
    if earlier:
        log.warning("camera %s was tracked from %s; this run of %s replaces its tracks (give another --camera to "
                    "keep both)", folder.name, earlier, uri)
    others = folder.parent.iterdir() if folder.parent.is_dir() else ()
    for other in sorted(p for p in others if p != folder and not p.name.startswith(".")):
        source = read_run_record(other).get("source")
        if source and _same_source(str(source), uri):
            log.warning("camera %s of this run was tracked from %s too: its people will be in both cameras at the "
                        "same moments (give --camera %s to track it again under its name)", other.name, uri, other.name)


_OUTPUT_STEMS = frozenset(name.split(".")[0] for name in CAMERA_OUTPUTS)  # run, tracks, annotated_global ...
# the other files crosscam leaves in a camera folder: pipeline.types.write_track_summaries' pair half
# written, pipeline.identity.identities' stamp of the drawn annotated_global.mp4
_OWN_FILES = frozenset({"track_features.tmp.npz", "tracks.json.tmp", ".annotated_global.stamp"})
_OWN_PATTERNS = (
    (re.compile(r"(\w+)\.partial(\.\w+)?"), _OUTPUT_STEMS),  # pipeline.types.partial_path: tracks.partial.txt
    (re.compile(r"\.(.+)\.\w+\.part"), CAMERA_OUTPUTS),  # reid.paths.written_atomically: .run.json.k2x9.part
    (re.compile(r"\.(\w+)\.piece\d+\.\w+"), _OUTPUT_STEMS),  # a Ray camera's video pieces: .annotated.piece3.mp4
)


def foreign_entries(folder: Path) -> list[str]:
    """The names in camera ``folder`` crosscam did not write: not one of :data:`CAMERA_OUTPUTS`, nor
    an unfinished file or piece of one by the names crosscam gives them."""
    def crosscams(name: str) -> bool:
        return name in CAMERA_OUTPUTS or name in _OWN_FILES or any(
            (found := pattern.fullmatch(name)) is not None and found[1] in names for pattern, names in _OWN_PATTERNS)

    return [name for name in _entries(folder) if not crosscams(name)]


def _entries(folder: Path) -> list[str]:
    try:
        return sorted(entry.name for entry in folder.iterdir())
    except OSError:
        return []


def _same_source(a: str, b: str) -> bool:
    """Whether two inputs name one source: the same URL, or paths to one file or folder (a
    MOTChallenge ``SEQ`` and its ``SEQ/img1`` alike)."""
    def frames(path: str) -> Path:
        resolved = Path(path).resolve()
        return resolved / "img1" if (resolved / "img1").is_dir() else resolved

    return a == b or ("://" not in a and "://" not in b and frames(a) == frames(b))


def _other_source(folder: Path, uri: str) -> str | None:
    """The input camera ``folder`` was tracked from when it is another than ``uri`` and still
    there (a URL, or a path that exists: a video moved or renamed since is the same camera's)."""
    earlier = read_run_record(folder).get("source")
    if not earlier or _same_source(str(earlier), uri):
        return None
    return str(earlier) if "://" in str(earlier) or Path(str(earlier)).exists() else None


def _is_crosscams_camera(folder: Path) -> bool:
    """Whether ``folder`` holds a ``run.json`` crosscam wrote for a camera (not a project's own)."""
    return read_run_record(folder).get("camera") is not None


def working_folder(folder: Path) -> Path:
    """Where a camera is tracked into: ``folder``, or beside it (``.CAMERA.retrack``) when it holds
    a complete earlier run, or a stopped one the run's identities took (its ``tracks_global.txt``:
    the store holds its tracks), which :func:`publish` then replaces and :func:`keep_earlier` keeps."""
    check_nothing_waiting(folder)  # again, under this command's claim
    if read_run_record(folder).get("status") != "complete" and not (folder / "tracks_global.txt").is_file():
        return folder
    work = folder.with_name(f".{folder.name}{RETRACK_SUFFIX}")
    shutil.rmtree(work, ignore_errors=True)  # left by a process killed outright (complete ones waiting: refused above)
    return work


def publish(folder: Path, work: Path) -> None:
    """A complete run in ``work`` becomes the camera's ``folder`` (nothing to do when they are one,
    or when ``work`` is in place already)."""
    if work != folder and work.exists():
        if folder.exists():
            replace_folder(folder, work)
        else:  # the earlier outputs were deleted meanwhile
            os.replace(work, folder)


def publish_between_associations(folder: Path, work: Path) -> None:
    """:func:`publish` outside an association, between other commands' associations (which read
    and draw into the camera folders): under :func:`identities_held`."""
    with identities_held(folder.parent):
        publish(folder, work)


def keep_earlier(folder: Path, work: Path) -> None:
    """A run into ``work`` stopped (Ctrl-C, an error): drop it, keeping ``folder``'s earlier one."""
    if work != folder and work.exists():
        shutil.rmtree(work, ignore_errors=True)
        earlier = read_run_record(folder).get("status")
        log.warning("%s: stopped; its earlier %s outputs are kept", folder.name,
                    "complete" if earlier == "complete" else f"({earlier or 'unfinished'})")


def wait_for_association(folder: Path, work: Path) -> None:
    if work != folder and work.exists():
        log.warning("%s: tracked again completely; its new outputs wait in %s until `crosscam associate %s` puts "
                    "them in place with the identities", folder.name, work.name, folder.parent)


def waiting_retracks(run_dir: Path) -> dict[str, Path]:
    """The cameras of ``run_dir`` tracked again completely whose new outputs wait beside their
    folder (a run whose association did not finish), by name: ``{camera: .CAMERA.retrack}``."""
    found = {}
    for work in sorted(run_dir.glob(f".*{RETRACK_SUFFIX}")) if run_dir.is_dir() else ():
        name = work.name[1:-len(RETRACK_SUFFIX)]
        if name and read_run_record(work).get("status") == "complete":  # its folder may be gone meanwhile
            found[name] = work
    return found


def replace_folder(folder: Path, new: Path) -> None:
    """Put ``new`` where ``folder`` is, by renames in one directory (the old one deleted last); the
    entries of ``folder`` crosscam did not write (a user's notes, the camera's own video) move into
    ``new`` first."""
    old = folder.with_name(f".{folder.name}.old")
    _remove(old)
    for name in foreign_entries(folder):
        _remove(new / name)  # a copy to another disk that an earlier try left unfinished (the original is still there)
        shutil.move(folder / name, new / name)  # a rename, or a copy where the folder links to another disk
    here = _working_directory_within(folder)  # `crosscam track cam1.mp4 --out ..` from the camera's folder
    os.replace(folder, old)
    os.replace(new, folder)
    if here is not None:  # it was renamed away: work in the same place of the new folder (relative names still hold)
        os.chdir(folder / here if (folder / here).is_dir() else folder)
    _remove(old)


def _remove(path: Path) -> None:
    """Delete ``path``, a folder, a file or a symbolic link (not what it links to), if it is there."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _working_directory_within(folder: Path) -> Path | None:
    """This process's working directory relative to ``folder`` when it is inside it, else None."""
    try:
        return Path.cwd().relative_to(folder.resolve())
    except (OSError, ValueError):  # no working directory any more, or elsewhere
        return None
