"""reid.download against a loopback server that answers like Google Drive: a confirmation page
whose form leads to the file, and a quota page that must never be saved as the file."""

from __future__ import annotations

import hashlib
import http.server
import threading
import urllib.parse

import pytest

from reid.download import download_file
from reid.errors import CrosscamError

PAYLOAD = bytes(range(256)) * 4000
CONFIRM_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<p>Google Drive can't scan this file for viruses.</p>
<form id="download-form" action="/download" method="get">
<input type="submit" value="Download anyway"/>
<input type="hidden" name="id" value="abc"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-1">
</form></body></html>"""
QUOTA_PAGE = """<html><head><title>Google Drive -
  Quota exceeded</title></head><body>Too many users have viewed or downloaded this file recently.</body></html>"""


class DriveLike(http.server.BaseHTTPRequestHandler):
    """/uc?id=abc: the confirmation page; /download with its fields: the file; /quota: a quota page."""

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/download" and query == {"id": "abc", "export": "download", "confirm": "t", "uuid": "u-1"}:
            self._answer(PAYLOAD, "application/octet-stream")
        elif url.path in ("/uc", "/download"):  # without the form's fields Drive asks again
            self._answer(CONFIRM_PAGE.encode(), "text/html; charset=utf-8")
        elif url.path == "/quota":
            self._answer(QUOTA_PAGE.encode(), "text/html")
        else:
            self.send_error(404)

    def _answer(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def drive():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DriveLike)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_confirmation_page_is_followed_to_the_file(drive, tmp_path):
    dest = tmp_path / "osnet_x0_25_msmt17.pt"
    got = download_file(f"{drive}/uc?id=abc", dest, hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert got == dest and dest.read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]  # no temporary file left


def test_a_quota_page_is_refused_in_one_line_and_nothing_is_written(drive, tmp_path):
    dest = tmp_path / "osnet_x0_25_msmt17.pt"
    with pytest.raises(CrosscamError, match="the server sent a web page, not the file") as err:
        download_file(f"{drive}/quota", dest, None, progress=False)
    message = str(err.value)
    assert "'Google Drive - Quota exceeded'" in message and f"place it at {dest}" in message and "\n" not in message
    assert not any(tmp_path.iterdir())


def test_a_confirmation_that_leads_to_another_page_is_not_followed_forever(drive, tmp_path, monkeypatch):
    monkeypatch.setattr(DriveLike, "do_GET", lambda self: self._answer(CONFIRM_PAGE.encode(), "text/html"))
    with pytest.raises(CrosscamError, match="'Google Drive - Virus scan warning'"):
        download_file(f"{drive}/uc?id=abc", tmp_path / "model.pt", None, progress=False)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("action, expected", [
    ("/download", "http://drive.test/download?confirm=t&id=a"),
    ("/download?old=1#top", "http://drive.test/download?confirm=t&id=a"),  # a browser replaces the query, drops the fragment
    ("https://other.test/d", "https://other.test/d?confirm=t&id=a"),
    ("file:///etc/passwd", None),
    ("javascript:alert(1)", None),
])
def test_a_confirmation_form_is_submitted_as_a_browser_would_and_only_over_http(action, expected):
    from reid.download import WebPage

    page = WebPage.read(f'<form action="{action}"><input name="confirm" value="t"><input name="id" value="a"></form>'
                        '<input name="outside" value="x">'.encode(), None)
    assert page.confirmation_url("http://drive.test/uc?id=a") == expected


def test_pages_in_unknown_charsets_or_broken_markup_are_still_read():
    from reid.download import WebPage

    assert WebPage.read(b"<title>Quota</title>", "bogus-charset").title == "Quota"
    assert WebPage.read(b"<title>Q</title><![ x", "utf-8").title == "Q"  # html.parser asserts on this one
