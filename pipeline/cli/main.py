"""The ``crosscam`` command: one typer app, each group of commands in its own module.

Each command module exposes ``register(app)``, which adds its commands to the app. User errors
(:class:`reid.errors.CrosscamError`) print as one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager, nullcontext, redirect_stdout
from importlib.metadata import PackageNotFoundError, version

import typer
from tqdm.contrib.logging import logging_redirect_tqdm

# Set before the command modules import cv2: OpenCV's warnings and its FFmpeg backend's log ("moov atom
# not found") would otherwise print before crosscam's own one-line error for a file it cannot decode.
# A user's own setting wins.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's AV_LOG_QUIET

from pipeline.cli import bench_cmds, demo_cmds, embed_cmds, metrics_cmds, query_cmds, samples_cmds, track_cmds, train_cmds  # noqa: E402
from pipeline.cli import serve_cmds  # noqa: E402
from pipeline.text import first_line  # noqa: E402
from reid.errors import CrosscamError  # noqa: E402

try:  # typer 0.2x carries its own click, and prints a bare command's help before raising NoArgsIsHelpError
    from typer._click.core import Context  # noqa: E402
    from typer._click.exceptions import NoArgsIsHelpError, UsageError  # noqa: E402

    _BARE_HELP_PRINTED = True
except ImportError:  # older typer uses click itself, which leaves printing it to the caller
    from click.core import Context  # noqa: E402
    from click.exceptions import NoArgsIsHelpError, UsageError  # noqa: E402

    _BARE_HELP_PRINTED = False

COMMAND_MODULES = [embed_cmds, bench_cmds, track_cmds, query_cmds, metrics_cmds, samples_cmds, train_cmds, demo_cmds]
COMMAND_MODULES.append(serve_cmds)

app = typer.Typer(
    name="crosscam",
    help="Multi-camera pedestrian tracking with cross-camera identities and fast-reid-exact ReID evaluation.",
    no_args_is_help=True,
    epilog="Exit status: 0 done; 1 an unexpected error (a traceback); 2 a usage or input error, a full disk or a path "
    "it may not write (one `error:` line on stderr; a bare command prints its help), or a failed camera of a Ray run; "
    "130 stopped by Ctrl-C, 143 by SIGTERM (what was finished is kept).",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # help text: a docstring's wrapped lines join into one paragraph
)


def package_version() -> str:
    try:
        return version("crosscam")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"crosscam {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """crosscam: videos from several cameras in, one identity per person across cameras out."""


for module in COMMAND_MODULES:
    module.register(app)


def _without_flag_types(command) -> None:
    """Blank the type typer's help shows beside each on/off flag (``--json <bool>``), in ``command``
    and its subcommands: a flag takes no value."""
    for param in [*command.params, command.get_help_option(Context(command))]:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _without_flag_types(sub)


def cli_command():
    """The click command behind ``crosscam`` (typer's, with the help cleaned up)."""
    command = typer.main.get_command(app)
    _without_flag_types(command)
    return command


class _LevelPrefix(logging.Formatter):
    """A log record as ``warning: MESSAGE``: stderr's lines say what they are, as ``error:`` ones do."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


@contextmanager
def _levels_said():
    """Warnings (and worse) on stderr with their level before them, while a command runs (tqdm's
    redirect, entered inside, keeps the format)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelPrefix())
    logging.root.addHandler(handler)
    try:
        yield
    finally:
        logging.root.removeHandler(handler)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, stopping a command the way Ctrl-C does."""


@contextmanager
def _sigterm_stops_like_ctrl_c(received: list[int]):
    """While the block runs, SIGTERM (sent by ``timeout``, ``docker stop``, systemd, batch
    schedulers) raises :class:`_Terminated`, so what was written stays valid and ``run.json`` says
    ``interrupted``, as after Ctrl-C (it killed the run mid-file: ``running``, no tracks.json). A
    second SIGTERM kills at once. Only where SIGTERM has its default action, in the main thread."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def stop(signum, frame):
        received.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise _Terminated()

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit status (0 ok, 2 user or usage error, 130 after Ctrl-C, 143
    after SIGTERM); every error is one ``error:`` line on stderr, usage errors (an option out of
    range, a missing argument) too."""
    terminated: list[int] = []
    status = _run(argv, terminated)
    if argv is None and threading.current_thread() is threading.main_thread():
        # the crosscam program, about to exit: a stop now (while the interpreter shuts torch, Ray and
        # their threads down) cannot undo what the command finished, so it no longer turns 0 into 130
        for stop in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop, signal.SIG_IGN)
    return 128 + signal.SIGTERM if terminated and status == 130 else status


def _run(argv: list[str] | None, terminated: list[int]) -> int:
    try:
        os.getcwd()
    except FileNotFoundError:  # a shell left in a camera folder that a retrack replaced
        typer.echo('error: the current folder no longer exists (a camera folder tracked again is a new folder); '
                   '`cd "$PWD"` enters the one at its path, then run the command again', err=True)
        return 2
    command = cli_command()
    args = sys.argv[1:] if argv is None else list(argv)
    # a bare command's help is a usage error's message (exit 2): stderr, as every other one (typer prints it on stdout)
    help_on_stderr = redirect_stdout(sys.stderr) if _names_a_group(command, args) else nullcontext()
    try:
        # warnings print above a progress bar, not into its line
        with _sigterm_stops_like_ctrl_c(terminated), _levels_said(), logging_redirect_tqdm(), help_on_stderr:
            status = command.main(args=args, prog_name="crosscam", standalone_mode=False)
    except CrosscamError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except NoArgsIsHelpError as exc:  # a bare command: its help, as --help (once: it was printed twice)
        if not _BARE_HELP_PRINTED:
            typer.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        return 2
    except UsageError as exc:
        where = f"; see `{exc.ctx.command_path} --help`" if exc.ctx else ""
        typer.echo(f"error: {' '.join(exc.format_message().split()).rstrip('.')}{where}", err=True)
        return 2
    except typer.Abort:  # Ctrl-C outside a command's own handling
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        said = out_of_space(exc) or not_permitted(exc)
        if said is None:
            raise
        typer.echo(f"error: {said}", err=True)
        return 2
    return status if isinstance(status, int) else 0


def _names_a_group(command, args: list[str]) -> bool:
    """Whether ``args`` name ``crosscam`` itself or one of its command groups and nothing more."""
    for arg in args:
        command = getattr(command, "commands", {}).get(arg)
        if command is None:
            return False
    return hasattr(command, "commands")


_KEPT = "what was written before is kept"
_FULL_WORDS = ("No space left on device", "Disk quota exceeded", "database or disk is full", "File too large")


def out_of_space(exc: BaseException) -> str | None:
    """One line for a command stopped by a full disk (or quota, or file size limit), wherever it
    was raised (a write, SQLite, FAISS, a PNG), or None for any other error. What the command
    wrote before is kept: its outputs go in place only when complete.

    >>> out_of_space(OSError(28, "No space left on device", "runs/x/cam1/run.json"))  # doctest: +ELLIPSIS
    'no space left on the device for runs/x/cam1/run.json: free space (or write elsewhere) and run it again; ...'
    >>> out_of_space(ValueError("bad")) is None
    True
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            where = f" for {seen.filename}" if seen.filename else ""
            if seen.errno == errno.EFBIG:
                return f"a file size limit (ulimit -f) reached{where}: raise it and run it again; {_KEPT}"
            return f"no space left on the device{where}: free space (or write elsewhere) and run it again; {_KEPT}"
        if "disk I/O error" in str(seen):  # SQLite's word for a write the file system refused
            return (f"the disk refused a write ({first_line(seen)[:80]}: a full disk, a file size limit (ulimit -f) or a "
                    f"failing disk); free space and run it again; {_KEPT}")
        if any(words in str(seen) for words in _FULL_WORDS):
            return f"no space left on the device ({first_line(seen)[:160]}): free space and run it again; {_KEPT}"
        seen = seen.__cause__ or seen.__context__
    return None


def not_permitted(exc: BaseException) -> str | None:
    """One line for a command stopped by a file or folder it may not read or write (its mode, a
    read-only file system, a folder where a file goes), wherever it was raised, or None.

    >>> not_permitted(PermissionError(13, "Permission denied", "runs/x/cam2/tracks_global.partial.txt"))
    'runs/x/cam2/tracks_global.partial.txt: Permission denied; check its permissions (or whether its disk is read-only) and run the command again'
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.filename and seen.errno in (errno.EACCES, errno.EPERM, errno.EROFS,
                                                                          errno.EISDIR):
            fix = ("a folder is where a file goes: move it" if seen.errno == errno.EISDIR else
                   "check its permissions (or whether its disk is read-only)")
            return f"{seen.filename}: {seen.strerror}; {fix} and run the command again"
        seen = seen.__cause__ or seen.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
