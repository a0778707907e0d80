"""What the ``crosscam serve`` tests share: one demo run per session, a real server process, a real browser.

The demo is ``crosscam demo --seconds 8 --seed 1`` (seed 0's first 8 s show nobody in two
cameras; seed 1's show 7 identities that are, so "every camera they appeared in" has something
to show). It is made once per test session (a module global: every serve test module imports
this one module) and never written to afterwards by the tests that read it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from pipeline.cli.main import main

DEMO_ARGS = ["--seconds", "8", "--seed", "1", "--set", "output.video=false"]
CHROME_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1500,1000",
]
_demo: dict[str, Path] = {}


def demo_run(tmp_path_factory) -> Path:
    """The session's demo run directory (``OUT/run``), made on first use."""
    if "run" not in _demo:
        out = tmp_path_factory.mktemp("serve-demo")
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "demo", "--out", str(out), *DEMO_ARGS,
                               "--json", "--quiet"], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        _demo["run"] = out / "run"
    return _demo["run"]


def cli_json(capsys, *args) -> dict:
    """``crosscam ARGS --json`` run in this process; its stdout parsed."""
    capsys.readouterr()
    assert main([*map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def tree_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, mtime ns), to show a server wrote nothing there."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@contextmanager
def serving(run_dir: Path, *extra: str) -> Iterator[str]:
    """``crosscam serve RUN_DIR --port 0 EXTRA`` as a real process; yields its printed URL and
    stops it by pid (SIGINT, as Ctrl-C, then SIGKILL), also when the test fails; after a passing
    block it must have shut down on the SIGINT itself."""
    with serving_process(run_dir, *extra) as (url, _):
        yield url


@contextmanager
def serving_process(run_dir: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """:func:`serving`, yielding the URL and the server's process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli.main", "serve", str(run_dir), "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("crosscam serve: http://"), (line, proc.stderr.read() if proc.poll() is not None else "")
        yield line.split()[2], proc
    except BaseException:
        stop(proc.pid, proc)
        raise
    stop(proc.pid, proc)
    # 130: it ended on the Ctrl-C, as `crosscam track` does; -9 would be our SIGKILL
    assert proc.returncode == 130, f"Ctrl-C did not stop the server ({proc.returncode}): {proc.stderr.read()[-500:]}"


def stop(pid: int, proc: subprocess.Popen | None = None) -> None:
    """End a process this test started, by its pid: SIGINT, then SIGKILL after 10 s."""
    try:
        os.kill(pid, signal.SIGINT)
        if proc is not None:
            proc.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


def chromium_paths() -> tuple[str, str]:
    """Debian's chromium and chromedriver; skips (one line) where they are missing and cannot be installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    reason = "Chromium not installed and not root" if os.geteuid() != 0 else "Chromium not installed"
    pytest.skip(f"{reason}: apt-get install chromium chromium-driver (.ci/run does)")


@contextmanager
def browser() -> Iterator[object]:
    """A headless Chromium driven by Selenium, with a fresh profile; chromedriver and every
    browser process it started are ended by pid afterwards, also when the test fails."""
    import psutil
    from selenium import webdriver

    binary, driver_path = chromium_paths()
    profile = tempfile.mkdtemp(prefix="crosscam-chromium-")
    options = webdriver.ChromeOptions()
    for flag in [*CHROME_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(driver_path)
    driver = webdriver.Chrome(options=options, service=service)
    pids = [service.process.pid] + [p.pid for p in psutil.Process(service.process.pid).children(recursive=True)]
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(profile, ignore_errors=True)
