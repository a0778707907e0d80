"""The weights registry and downloads, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import http.server
import re
import socket
import threading
from pathlib import Path

import pytest

from reid import zoo
from reid.errors import CrosscamError

FASTREID_RELEASE = "https://github.com/JDAI-CV/fast-reid/releases/download/v0.1.1/"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest output clean
        pass


@pytest.fixture
def http_folder(tmp_path):
    """(folder, base_url): files put in ``folder`` are served over HTTP on loopback."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/model.pth"


def no_partial_files(folder: Path) -> bool:
    return not any(p.name.endswith(".part") for p in folder.iterdir())


def test_registry_lists_the_whole_fastreid_person_zoo_loadable():
    registry = zoo.load_registry()
    fastreid = {name: e for name, e in registry.items() if e.format == "fastreid-v0.1"}
    backbones = ("R50", "R50-ibn", "S50", "R101-ibn")
    expected = {f"{d}_{m}_{b}" for d in ("market", "duke", "msmt") for m in ("bot", "agw", "sbs") for b in backbones}
    assert set(fastreid) == expected | {"market_mgn_R50-ibn", "duke_mgn_R50-ibn"}  # no MSMT17 MGN file is published
    for name, entry in fastreid.items():
        assert entry.url == FASTREID_RELEASE + entry.file and entry.file == f"{name}.pth"
        assert entry.loadable and entry.architecture == name.split("_", 1)[1]
        size = [384, 128] if entry.architecture.startswith(("sbs", "mgn")) else [256, 128]
        assert entry.preprocessing["input_size"] == size and zoo.model_overrides(entry) == {"input_size": tuple(size)}
        assert set(entry.published) == {"rank1", "mAP", "mINP"} and 0 < entry.published["mINP"] < entry.published["mAP"] < entry.published["rank1"] < 100
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
    assert registry["market_bot_R50"].published == {"rank1": 94.4, "mAP": 86.1, "mINP": 59.4}
    assert registry["market_sbs_R101-ibn"].published == {"rank1": 96.3, "mAP": 90.3, "mINP": 70.0}


def test_mobilenet_entry_points_into_the_installed_wheel_with_its_real_hash():
    entry = zoo.get_entry("mobilenetv2_imagenet")
    path = entry.local_path()
    assert path.is_file() and entry.url is None and entry.loadable
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    assert zoo.ensure_weights(entry) == path
    with pytest.raises(CrosscamError, match="has no URL for it .*stays as it is") as err:  # said 'is missing'
        zoo.download_entry(entry, progress=False, force=True)
    assert "missing" not in str(err.value) and path.is_file()


def test_weights_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path))
    assert zoo.get_entry("duke_bot_R50").local_path() == tmp_path / "duke_bot_R50.pth"
    monkeypatch.delenv(zoo.WEIGHTS_DIR_ENV)
    assert zoo.weights_dir() == Path(zoo.__file__).resolve().parents[1] / "weights"


def test_an_existing_file_is_used_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path))
    (tmp_path / "msmt_bot_R50.pth").write_bytes(b"already here")
    assert zoo.ensure_weights(zoo.get_entry("msmt_bot_R50")) == tmp_path / "msmt_bot_R50.pth"


def test_unknown_and_unloadable_names_are_one_line_errors():
    with pytest.raises(CrosscamError, match="no_such_model: not a known weights name"):
        zoo.get_entry("no_such_model")
    future = zoo.WeightsEntry(name="market_xyz_R50", architecture="xyz_R50", format="fastreid-v0.1", file="x.pth",
                              loadable=False, note="an architecture crosscam does not build")
    with pytest.raises(CrosscamError, match="market_xyz_R50: architecture xyz_R50 cannot be loaded by crosscam yet") as err:
        zoo.ensure_weights(future)
    assert "names can: `crosscam weights list`" in str(err.value) and "\n" not in str(err.value)  # where to see what loads
    for typo in ("market_bot_R5", "market_bot_r50"):
        with pytest.raises(CrosscamError, match=rf"{typo}: not a known weights name; did you mean the registry name "
                                                r"market_bot_R50\?; see"):
            zoo.get_entry(typo)


def test_download_streams_verifies_and_renames(http_folder, tmp_path):
    folder, base = http_folder
    payload = bytes(range(256)) * 5000
    (folder / "model.pth").write_bytes(payload)
    dest = tmp_path / "weights" / "model.pth"
    got = zoo.download_file(base + "model.pth", dest, hashlib.sha256(payload).hexdigest(), progress=False)
    assert got == dest and dest.read_bytes() == payload and no_partial_files(dest.parent)


def test_sha256_mismatch_leaves_nothing_behind(http_folder, tmp_path):
    folder, base = http_folder
    (folder / "model.pth").write_bytes(b"tampered")
    dest = tmp_path / "model.pth"
    with pytest.raises(CrosscamError, match="does not match the registry's") as err:
        zoo.download_file(base + "model.pth", dest, "0" * 64, progress=False)
    assert not dest.exists() and no_partial_files(tmp_path) and "\n" not in str(err.value)


@pytest.mark.parametrize("missing_on_server", [True, False])
def test_unreachable_url_says_where_to_place_the_file(http_folder, tmp_path, missing_on_server):
    _, base = http_folder
    url = base + "absent.pth" if missing_on_server else closed_port_url()
    dest = tmp_path / "model.pth"
    with pytest.raises(CrosscamError, match="download failed") as err:
        zoo.download_file(url, dest, None, progress=False, timeout=5)
    assert f"place it at {dest}" in str(err.value) and not dest.exists() and no_partial_files(tmp_path)


def test_download_entry_lands_in_the_weights_dir(http_folder, tmp_path, monkeypatch):
    folder, base = http_folder
    (folder / "tiny.pth").write_bytes(b"weights")
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(tmp_path / "wd"))
    entry = zoo.WeightsEntry(name="tiny", architecture="bot_R50", format="fastreid-v0.1", file="tiny.pth", loadable=True, url=base + "tiny.pth")
    assert zoo.download_entry(entry, progress=False) == tmp_path / "wd" / "tiny.pth"
    assert (tmp_path / "wd" / "tiny.pth").read_bytes() == b"weights"
    (tmp_path / "wd" / "tiny.pth").write_bytes(b"trunc")  # a corrupt file on disk: kept unless forced
    assert zoo.download_entry(entry, progress=False) == tmp_path / "wd" / "tiny.pth"
    assert (tmp_path / "wd" / "tiny.pth").read_bytes() == b"trunc"
    zoo.download_entry(entry, progress=False, force=True)
    assert (tmp_path / "wd" / "tiny.pth").read_bytes() == b"weights"
