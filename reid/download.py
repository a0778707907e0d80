"""Downloading one file: streamed to a temporary file beside the target, sha256 checked, renamed into place.

A server may answer with a web page instead of the file: Google Drive (where torchreid's and
BoxMOT's OSNet files live) asks to confirm a file too large for its virus scan, or says the file's
download quota is exceeded. A confirmation form is followed once (its action and hidden fields, as
a browser would submit them); any other page is refused in one line naming the page's title, and
nothing is written: a page saved under a checkpoint's name would only fail later as a corrupt file.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import BinaryIO

from reid.errors import CrosscamError
from reid.paths import written_atomically
from reid.progress import progress_bar

MAX_PAGE_BYTES = 1 << 20  # a web page read to look for a confirmation form


def download_file(url: str, dest: Path, sha256: str | None = None, progress: bool = True, timeout: float = 30.0,
                  weights_dir_env: str = "CROSSCAM_WEIGHTS_DIR") -> Path:
    """Stream ``url`` to ``dest`` via a temporary file in the same folder; verify ``sha256`` if given.

    Offline or unreachable, or a web page in place of the file: a one-line error naming ``dest``
    so the user can place the file there.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CrosscamError(f"{dest.parent}: cannot create the weights folder ({exc.strerror}); set {weights_dir_env}") from None
    with written_atomically(dest) as out:
        digest = _stream(url, out, dest, progress, timeout)
        if sha256 is not None and digest != sha256.lower():
            raise CrosscamError(
                f"{url}: sha256 {digest} does not match the registry's {sha256}; the download is corrupt or changed, "
                f"nothing was written to {dest}"
            )
    return dest


def _stream(url: str, out: BinaryIO, dest: Path, progress: bool, timeout: float, confirmed: bool = False) -> str:
    """Copy ``url``'s body to the open file ``out`` with a progress bar on stderr; return its sha256 hex.
    A confirmation page is followed once (``confirmed``: this is that second request)."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.headers.get_content_type() == "text/html":
                page = WebPage.read(response.read(MAX_PAGE_BYTES), response.headers.get_content_charset())
                follow = page.confirmation_url(response.geturl())
                if follow is not None and not confirmed:
                    return _stream(follow, out, dest, progress, timeout, confirmed=True)
                raise CrosscamError(
                    f"{url}: the server sent a web page, not the file ({page.title or 'no title'!r}; Google Drive sends "
                    f"one when a file's download quota is exceeded); open the URL in a browser, download the file and "
                    f"place it at {dest}"
                )
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress_bar(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}", disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise CrosscamError(
            f"{url}: download failed ({reason}); download it elsewhere and place it at {dest}"
        ) from None
    return digest.hexdigest()


class WebPage(HTMLParser):
    """A web page's title and its download-confirmation form (``<form id="download-form">`` or any
    form with a hidden ``confirm`` field), read with the standard library's HTML parser."""

    def __init__(self) -> None:
        super().__init__()
        self.title = ""
        self._in_title = False
        self._forms: list[tuple[dict[str, str], dict[str, str]]] = []  # (form attributes, its input fields)
        self._in_form = False

    @classmethod
    def read(cls, body: bytes, charset: str | None) -> "WebPage":
        """The page of ``body`` (``charset`` as the server said; unknown or none: UTF-8). Markup the
        parser gives up on leaves what was read before it."""
        try:
            text = body.decode(charset or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know
            text = body.decode("utf-8", errors="replace")
        page = cls()
        try:
            page.feed(text)
            page.close()
        except Exception:  # noqa: BLE001 (html.parser asserts on some broken markup; the page stays as read)
            pass
        return page

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "title":
            self._in_title = True
        elif tag == "form":
            self._forms.append((values, {}))
            self._in_form = True
        elif tag == "input" and self._in_form and values.get("name"):
            self._forms[-1][1][values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "form":
            self._in_form = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title = " ".join((self.title + data).split())

    def confirmation_url(self, page_url: str) -> str | None:
        """The http(s) URL the page's confirmation form submits to, as a browser would (GET: its fields
        replace the action's query), or None."""
        for form, fields in self._forms:
            if (form.get("id") == "download-form" or "confirm" in fields) and form.get("method", "get").lower() == "get":
                action = urllib.parse.urlsplit(urllib.parse.urljoin(page_url, form.get("action") or page_url))
                if action.scheme in ("http", "https") and action.netloc:
                    return urllib.parse.urlunsplit(action._replace(query=urllib.parse.urlencode(fields), fragment=""))
        return None
