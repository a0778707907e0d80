import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli.main import cli_command, main, package_version

REPO = Path(__file__).resolve().parents[1]


def test_version_flag(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"crosscam {package_version()}"


def test_console_script_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "Usage" in out
    assert "Exit status: 0 done; 1 an unexpected error (a traceback); 2 a usage or input error" in " ".join(out.split())


@pytest.mark.parametrize("argv", [[], ["samples"], ["weights"]])
def test_a_bare_command_prints_its_help_once(argv):
    """It was printed twice."""
    done = subprocess.run([sys.executable, "-m", "pipeline.cli.main", *argv], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stdout == "" and done.stderr.count("Usage: crosscam") == 1  # stdout was a script's: it got the help


def test_help_shows_no_type_beside_flags_and_names_values(capsys):
    """typer 0.29 printed ``<bool>`` beside every flag (``--json <bool>``, as if it took a value) and
    ``<list[str]>`` for --set; every command's help is checked."""
    command = cli_command()
    paths = [[]]
    for name, sub in command.commands.items():
        paths.append([name])
        paths += [[name, subname] for subname in getattr(sub, "commands", {})]
    for path in paths:
        assert main([*path, "--help"]) == 0
        out = capsys.readouterr().out
        assert "--help" in out and "<bool>" not in out, path
        assert "\u2026" not in out, path  # nothing cut off at 80 columns ("--gpus-per-work…", "configs/base.yam…")
    main(["track", "--help"])
    out = capsys.readouterr().out
    assert "KEY=VALUE" in out and "--set  <list" not in out


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["track"], "Missing argument 'VIDEO'"),
    (["query", "run", "--track", "cam1:1", "--min-score", "2"], "'--min-score': Input should be less than or equal to 1"),
    (["track", "a.mp4", "--out", "r", "--no-such-option"], "No such option: --no-such-option"),
])
def test_usage_errors_are_one_line(capsys, argv, words):
    """Usage errors (a missing argument, a value out of range, an unknown option) are one `error:`
    line naming the command's help, like every other error (typer draws a box of several)."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]
    assert lines[0].endswith(f"see `crosscam {argv[0]} --help`")


@pytest.mark.parametrize("name", ["notes.txt", "notes.mp4"])
def test_a_file_that_is_no_video_gives_only_crosscams_error_line(tmp_path, name):
    """No OpenCV warning ("global cap.cpp ... VIDEOIO(FFMPEG)") nor FFmpeg log ("moov atom not found")
    before the one-line error, for a user who has not set OpenCV's log levels."""
    notes = tmp_path / name
    notes.write_text("meeting notes, not a video\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL")}
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "track", str(notes), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], proc.stderr


def test_the_program_ignores_stops_once_its_command_has_finished():
    """A Ctrl-C after the success lines, while the interpreter shut down, made a finished run exit 130."""
    probe = ("import signal, sys; sys.argv = ['crosscam', '--version']; from pipeline.cli.main import main; "
             "status = main(); print(status, signal.getsignal(signal.SIGINT) is signal.SIG_IGN, "
             "signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out[-3:] == ["0", "True", "True"]  # after --version's own line


def test_warnings_on_stderr_say_they_are_warnings(tmp_path):
    """A command's log warnings were bare lines on stderr, beside `error:` ones: a script could not tell."""
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "one.jpg"), np.full((64, 48, 3), 90, np.uint8))
    done = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "track", str(tmp_path / "one.jpg"), "--config",
                           "configs/demo.yaml", "--out", str(tmp_path / "run"), "--no-identities", "--quiet",
                           "--set", "output.video=false"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.startswith(f"warning: {tmp_path / 'one.jpg'}: one image, tracked as a camera of one frame")


def test_a_deleted_working_folder_is_one_line(tmp_path):
    """A shell left in a camera folder that a retrack replaced: the next command gave a traceback."""
    gone = tmp_path / "cam1"
    gone.mkdir()
    done = subprocess.run([sys.executable, "-c", f"import os, sys; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r}); "
                           f"sys.path.insert(0, {str(REPO)!r}); from pipeline.cli.main import main; "
                           "sys.exit(main(['associate', '/nonexistent']))"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: the current folder no longer exists"), done.stderr
    assert "Traceback" not in done.stderr
