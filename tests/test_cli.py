import subprocess
import sys

from pipeline.cli.main import main, package_version


def test_version_flag(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"crosscam {package_version()}"


def test_console_script_help_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "Usage" in out


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err
