"""`crosscam serve` keeps to its run directory and its host: path traversal (plain, encoded,
symlinks), a token on a non-local host, oversized uploads, nothing written into the run."""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from pipeline.cli.main import main
from serve_runs import demo_run, serving, tree_state

UPLOAD_LIMIT = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A copy of the demo run with links planted in it: one out of the run, one inside it."""
    copy = tmp_path_factory.mktemp("security") / "run"
    shutil.copytree(demo_run(tmp_path_factory), copy)
    secret = copy.parent / "secret.txt"
    secret.write_text("outside the run")
    os.symlink(secret, copy / "leak.txt")
    os.symlink(copy.parent, copy / "parent")
    os.symlink(copy / "cam2" / "thumbs" / "1.jpg", copy / "inside.jpg")
    return copy


@pytest.fixture(scope="module")
def url(run):
    before = tree_state(run)
    with serving(run) as address:
        yield address
    assert tree_state(run) == before, "the server wrote into the run directory"


def raw_get(url: str, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    """GET with the path sent exactly as given (HTTP clients would resolve ``..`` first)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("path", [
    "/files/../secret.txt", "/files/../../../../etc/passwd", "/files/%2e%2e/secret.txt", "/files/..%2fsecret.txt",
    "/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/files//etc/passwd", "/files/%2fetc%2fpasswd", "/files/leak.txt",
    "/files/parent/secret.txt", "/files/cam2/../../secret.txt", "/static/..%2fapp.py", "/static/%2e%2e%2f__init__.py",
    "/files/cam2", "/files/nothing.jpg",
])
def test_nothing_outside_the_run_is_served(url, path):
    status, body = raw_get(url, path)
    assert status == 404 and b"outside the run" not in body and b"root:" not in body


def test_files_inside_the_run_are_served(url, run):
    status, body = raw_get(url, "/files/cam2/thumbs/1.jpg")
    assert status == 200 and body == (run / "cam2" / "thumbs" / "1.jpg").read_bytes()
    assert raw_get(url, "/files/inside.jpg")[1] == body  # a link that stays inside the run
    assert raw_get(url, "/files/report.html")[0] == 200


def test_uploads_over_10_mb_are_refused_also_without_a_length(url):
    big = b"\xff\xd8" + bytes(UPLOAD_LIMIT + 1024)
    with httpx.Client(base_url=url, timeout=60) as client:
        response = client.post("/api/query/image", files={"image": ("big.jpg", big, "image/jpeg")})
        assert response.status_code == 413 and "10 MB" in response.json()["error"]

        def chunks():
            body = b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n\r\n" + big + b"\r\n--x--\r\n"
            for i in range(0, len(body), 1 << 20):
                yield body[i:i + (1 << 20)]

        chunked = client.post("/api/query/image", content=chunks(),
                              headers={"content-type": "multipart/form-data; boundary=x"})
        assert chunked.status_code == 413 and "\n" not in chunked.json()["error"]


def test_a_nul_byte_in_a_path_is_a_404(url):
    for path in ("/files/%00", "/files/cam1/run.json%00.png"):
        status, body = raw_get(url, path)
        assert status == 404 and "no such file" in json.loads(body)["error"]  # was a plain-text 500


def test_only_loopback_host_names_are_answered_without_a_token(url, run):
    """A page that points its own name at 127.0.0.1 (DNS rebinding) sends that name as Host; one
    server process (--workers 1) answered every name."""
    port = urlsplit(url).port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost", f"127.0.0.2:{port}"):
        assert raw_get(url, "/api/status", {"Host": host})[0] == 200, host
    for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.attacker.example", "", f"10.0.0.1:{port}"):
        status, body = raw_get(url, "/api/status", {"Host": host})
        assert status == 403 and "127.0.0.1 or localhost only" in json.loads(body)["error"], host
    with serving(run, "--workers", "1") as single:
        assert raw_get(single, "/api/status")[0] == 200
        status, body = raw_get(single, "/api/status", {"Host": "attacker.example"})
        assert status == 403 and "127.0.0.1 or localhost only" in json.loads(body)["error"]


def test_an_image_of_too_many_pixels_is_refused_before_decoding(url):
    """A 64-megapixel PNG is a few kB: decoded it would take 190 MB (20000 x 20000: 1.2 GB)."""
    data = io.BytesIO()
    Image.new("1", (8000, 8000)).save(data, format="PNG")
    assert len(data.getvalue()) < 100_000
    with httpx.Client(base_url=url, timeout=60) as client:
        response = client.post("/api/query/image", files={"image": ("bomb.png", data.getvalue(), "image/png")})
    assert response.status_code == 413 and "8000x8000 pixels" in response.json()["error"]
    # 20000 x 20000: over PIL's own limit, whose error skipped the check, and OpenCV decoded 1.2 GB
    header = b"\x00\x00\x4e\x20" * 2 + bytes([8, 0, 0, 0, 0])
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b"")
    with httpx.Client(base_url=url, timeout=60) as client:
        response = client.post("/api/query/image", files={"image": ("bomb.png", png, "image/png")})
    assert response.status_code == 413 and "megapixels" in response.json()["error"]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")


def test_a_non_local_host_needs_a_token(run, capsys):
    assert main(["serve", str(run), "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --host 0.0.0.0:") and "--token" in err and "\n" not in err


def test_with_a_token_every_request_carries_it(run):
    with serving(run, "--host", "0.0.0.0", "--token", "s3cret") as printed:
        assert printed.endswith("/?token=s3cret")
        assert urlsplit(printed).hostname == socket.gethostname().lower()  # what other machines can use, not 0.0.0.0
        port = urlsplit(printed).port
        local = f"http://127.0.0.1:{port}"
        for path in ("/", "/api/status", "/api/frames/cam2/3", "/files/cam2/thumbs/1.jpg", "/docs", "/openapi.json"):
            response = httpx.get(local + path, timeout=60)  # a loaded machine may take seconds for the first
            assert response.status_code == 401 and "token" in response.json()["error"]
        assert httpx.get(local + "/api/status", headers={"Authorization": "Bearer wrong"}, timeout=60).status_code == 401
        assert httpx.get(local + "/api/status", headers={"Authorization": "Bearer s3cret"}, timeout=60).status_code == 200
        with httpx.Client(base_url=local, timeout=60) as browser_like:
            first = browser_like.get("/?token=s3cret")
            assert first.status_code == 200 and f"crosscam_token_{port}" in first.cookies  # per port: per server
            assert browser_like.get("/api/frames/cam2/3").status_code == 200  # the page's images carry the cookie
            assert browser_like.get("/?token=stale").status_code == 200  # a wrong ?token= does not undo the cookie


def test_a_port_in_use_is_one_line(run, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        assert main(["serve", str(run), "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --port") and "\n" not in err
