"""The web app of ``crosscam serve``: a JSON API over ``pipeline.identity.query`` and the store, the page, and the run's files.

Every query endpoint answers with ``QueryResult.to_json()``, the object ``crosscam query --json``
prints for the same question. Errors are ``{"error": "one line"}`` with a 4xx status (5xx only
for a store rewritten during every read attempt). With a token every request must carry it: an
``Authorization: Bearer TOKEN`` header, a ``token=`` query parameter (which also sets a cookie, so
the page's images and requests carry it, and the page takes the token out of its address) or
that cookie.

>>> from fastapi.testclient import TestClient  # doctest: +SKIP
>>> TestClient(create_app(Path("runs/mall"))).get("/api/query/track", params={"camera": "hall", "track": 3}).json()["identity"]  # doctest: +SKIP
7
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
from fastapi import FastAPI, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from PIL import Image
from pydantic import Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.config import PipelineConfig
from pipeline.identity.query import parse_box, query_identity, query_image, query_track
from pipeline.identity.store_db import StoreDamaged
from pipeline.serve.run_view import ApiError, RunView, hex_colour
from pipeline.text import counting_order
from reid.errors import CrosscamError

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # an uploaded image; the request may add this much multipart overhead:
MULTIPART_SLACK = 64 * 1024
MAX_UPLOAD_PIXELS = 40_000_000  # an 8K frame is 33 M; a small file can declare far more (20000x20000: 1.2 GB decoded)
TOKEN_COOKIE = "crosscam_token"  # + _PORT: browsers keep cookies per host, not per port
MAX_ID = 2**63 - 1  # ids and frame indexes are SQLite integers: larger ones are not in any run
STATIC = resources.files("pipeline.serve") / "static"


def create_app(run_dir: str | Path, token: str | None = None, config: PipelineConfig | None = None,
               loopback_only: bool = False) -> FastAPI:
    """The app serving ``run_dir``; ``token``: required on every request when given; else with
    ``loopback_only`` (a server on 127.0.0.1 without a token) only requests addressed to this
    machine's loopback names are answered: a web page that points its own host name at 127.0.0.1
    (DNS rebinding) is refused."""
    view = RunView(Path(run_dir), config)
    app = FastAPI(
        title="crosscam serve",
        summary="Which cameras did this person appear in, and when? The answers of `crosscam query --json`, over HTTP.",
        version="1",
        docs_url=None,  # FastAPI's /docs loads Swagger UI from a CDN; ours renders /openapi.json offline
        redoc_url=None,
    )
    app.state.view = view
    _install_errors(app)
    if token:
        _install_token(app, token)
    elif loopback_only:
        _install_host_check(app)
    _add_api(app, view)
    _add_pages(app, view)
    return app


def app_from_environment() -> FastAPI:
    """The app of one ``crosscam serve --workers N`` process: run, token, config file and ``--set``s from the
    variables :func:`pipeline.serve.processes.serve_processes` set."""
    from pipeline.config import load_pipeline_config
    from pipeline.serve.processes import ENV_CONFIG, ENV_RUN, ENV_SET, ENV_TOKEN

    config = os.environ.get(ENV_CONFIG) or None
    overrides = json.loads(os.environ.get(ENV_SET) or "[]")
    token = os.environ.get(ENV_TOKEN) or None
    # without a token the server listens on a loopback address (`crosscam serve` refuses others)
    return create_app(os.environ[ENV_RUN], token, load_pipeline_config(config, overrides), loopback_only=token is None)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError):
        return _error(exc.status, str(exc))

    @app.exception_handler(CrosscamError)
    async def crosscam_error(_: Request, exc: CrosscamError):
        if isinstance(exc, StoreDamaged):  # the run's fault, not the request's
            return _error(500, str(exc))
        return _error(400, str(exc).removeprefix("--"))  # `crosscam query`'s --box is the API's box

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = str(first.get("loc", ("request",))[-1])  # the parameter, not where it was sent
        return _error(422, f"{where}: {first.get('msg', 'invalid')}; see /docs")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = f"{request.url.path}: not found; see /docs" if exc.status_code == 404 else exc.detail
        return _error(exc.status_code, message)


def _install_token(app: FastAPI, token: str) -> None:
    @app.middleware("http")
    async def require_token(request: Request, call_next):
        given = request.query_params.get("token")
        supplied = [given, request.headers.get("authorization", "").removeprefix("Bearer ").strip(),
                    request.cookies.get(_token_cookie(request))]
        # any of them right will do: a stale ?token= in a bookmark does not undo a valid cookie
        if not any(s and hmac.compare_digest(s.encode(), token.encode()) for s in supplied):
            return _error(401, "this server needs its token: open the URL `crosscam serve` printed "
                               "(?token=...) or send Authorization: Bearer TOKEN")
        response = await call_next(request)
        if given and hmac.compare_digest(given.encode(), token.encode()):
            response.set_cookie(_token_cookie(request), token, httponly=True, samesite="strict")
        return response


def _token_cookie(request: Request) -> str:
    """The token's cookie name for the port the request was sent to: two servers of one host
    (a cookie is the host's, whatever the port) would otherwise overwrite each other's token."""
    return f"{TOKEN_COOKIE}_{request.url.port or 80}"


def _install_host_check(app: FastAPI) -> None:
    @app.middleware("http")
    async def require_loopback_host(request: Request, call_next):
        host = request.headers.get("host", "")
        if not _is_loopback_name(_host_name(host)):
            return _error(403, f"host {host!r}: this server answers requests to 127.0.0.1 or localhost only; "
                               "open the address `crosscam serve` printed")
        return await call_next(request)


def _is_loopback_name(name: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``[::1]``): what ``--host`` may be without a token."""
    try:
        return name.lower() == "localhost" or ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """The name in a Host header: ``127.0.0.1:8000`` -> ``127.0.0.1``, ``[::1]:8000`` -> ``[::1]``."""
    return host[: host.find("]") + 1] if host.startswith("[") else host.partition(":")[0]


def _add_api(app: FastAPI, view: RunView) -> None:
    top_k_q = Query(5, ge=1, le=100, description="Identities to return, best first (--top-k).")
    min_score_q = Query(-1.0, ge=-1.0, le=1.0, allow_inf_nan=False, description="Drop appearances (and identities) below this cosine "
                                                           "similarity (--min-score).")

    @app.get("/api/status", tags=["run"])
    def status() -> dict:
        """The run: its folder, title, cameras, the store's generation (null without a store) and
        database file (``store_id``: a store made again restarts its generations), the
        date and time its clock starts at (``clock_origin``, null unless the cameras file gave start
        times), and the upload limits; the page polls it to notice a new camera or a re-association."""
        return {"run_dir": str(view.run_dir), "title": view.title(), "cameras": view.camera_names(),
                "generation": view.generation(), "store_id": view.store_id(), "clock_origin": view.clock_origin(),
                "max_upload_bytes": MAX_UPLOAD_BYTES, "max_upload_pixels": MAX_UPLOAD_PIXELS}

    @app.get("/api/cameras", tags=["run"])
    def cameras() -> list[dict]:
        """Every camera: status, fps, frame size, frame count, clock offset (seconds added to the
        video's time to reach the run's clock), whether the clock is common, tracks in the store,
        whether its crops went through a colour table (``colour_normalised``)."""
        return view.cameras()

    @app.get("/api/identities", tags=["identities"])
    def identities(
        camera: list[str] = Query(None, description="Only identities seen by one of these cameras."),
        start_s: float = Query(None, allow_inf_nan=False, description="Only identities seen at or after this time (run's clock)."),
        end_s: float = Query(None, allow_inf_nan=False, description="Only identities seen at or before this time."),
        offset: int = Query(0, ge=0), limit: int = Query(200, ge=1, le=5000),
    ) -> dict:
        """The run's identities, most cameras first; those that look like background or fragments
        (``likely_person`` false) last. Each: id, colour, cameras, first/last time, tracks, the
        best thumbnail per camera (absolute path, as in query answers)."""
        if start_s is not None and end_s is not None and start_s > end_s:
            raise ApiError(422, f"start_s {start_s:g} is after end_s {end_s:g}: swap them")
        known = set(view.camera_names()) | {c for o in view.overviews() for c in o.cameras}
        for name in camera or []:
            if name not in known:
                raise ApiError(404, f"camera {name!r}: not a camera of this run; its cameras: {', '.join(sorted(known, key=counting_order))}")
        shown = [
            o for o in view.overviews()
            if (not camera or set(camera) & set(o.cameras))
            and (start_s is None or o.last_s >= start_s) and (end_s is None or o.first_s <= end_s)
        ]
        return {"total": len(shown), "offset": offset, "identities": [_overview_json(view, o) for o in shown[offset:offset + limit]]}

    @app.get("/api/colors", tags=["identities"])
    def colors(identity: list[Annotated[int, Field(ge=-MAX_ID, le=MAX_ID)]] = Query(..., description="Identity ids.")) -> dict[str, str]:
        """Each identity's colour, ``#rrggbb``: the one ``annotated_global.mp4`` and the page's boxes use."""
        return {str(i): hex_colour(i) for i in identity}

    @app.get("/api/identities/{identity}", tags=["queries"])
    def identity(identity: int = PathParam(..., ge=-MAX_ID, le=MAX_ID), top_k: int = top_k_q,
                 min_score: float = min_score_q) -> dict:
        """``crosscam query RUN --identity ID --json``."""
        def read(store):
            if not store.tracks(identity=identity):
                raise ApiError(404, f"identity {identity}: no such identity in this run")
            return query_identity(view.run_dir, identity, top_k, min_score, view.config, store=store)
        return view.consistent(read).to_json()

    @app.get("/api/query/track", tags=["queries"])
    def by_track(camera: str, track: int = Query(..., ge=-MAX_ID, le=MAX_ID), top_k: int = top_k_q,
                 min_score: float = min_score_q) -> dict:
        """``crosscam query RUN --track CAMERA:TRACK --json``."""
        def read(store):
            try:
                store.track(camera, track)
            except CrosscamError as exc:
                raise ApiError(404, str(exc).removeprefix("--track ")) from None
            return query_track(view.run_dir, camera, track, top_k, min_score, view.config, store=store)
        return view.consistent(read).to_json()

    @app.post("/api/query/image", tags=["queries"], openapi_extra=_IMAGE_FORM)
    async def by_image(request: Request, top_k: int = top_k_q, min_score: float = min_score_q) -> dict:
        """``crosscam query RUN --image IMAGE [--box x1,y1,x2,y2] [--camera NAME] --json``: a
        multipart form with ``image`` (a JPEG/PNG, at most 10 MB) or ``frame`` (a frame index of
        ``camera``: that frame as the run decoded it), optional ``box`` and ``camera``."""
        form = await _read_form(request)
        camera = form.get("camera") or None
        box = parse_box(form["box"]) if form.get("box") else None
        if camera is not None:
            view.camera_folder(camera)
        with tempfile.TemporaryDirectory(prefix="crosscam-serve-") as tmp:
            path, label = await run_in_threadpool(_query_image_file, view, form, camera, Path(tmp))
            result = await run_in_threadpool(
                view.consistent,
                lambda store: query_image(view.run_dir, path, box, top_k, min_score, view.config, camera, store=store),
            )
        answer = result.to_json()
        answer["query"] = f"image {label}"  # the upload's name, not the temporary file's
        return answer

    @app.get("/api/frames/{camera}/{index}", tags=["frames"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    def frame(camera: str, index: int = PathParam(..., ge=0, le=MAX_ID),
              width: int = Query(None, ge=16, le=8192, description="Shrink to this width.")):
        """Frame ``index`` (0-based, ``tracks.txt`` frame - 1) of the camera's video as JPEG. Header
        ``X-Video-Time-S``: its time from the video's first frame (add the camera's offset)."""
        data, seconds = view.frame_jpeg(camera, index, width)
        return Response(data, media_type="image/jpeg",
                        headers={"X-Video-Time-S": f"{seconds:.6f}", "Cache-Control": "private, max-age=300"})

    @app.get("/api/tracks/{camera}", tags=["frames"])
    def tracks(camera: str, frame: int = Query(..., ge=0, le=MAX_ID, description="First frame, 0-based."),
               count: int = Query(1, ge=1, le=MAX_ID, description="Frames from `frame` on (at most 2000).")) -> dict:
        """The boxes of ``count`` frames from ``frame`` on, by frame index: track id, identity,
        ``box`` x1,y1,x2,y2 pixels, confidence, identity colour (as ``annotated_global.mp4``)."""
        boxes = view.boxes(camera, frame, count)
        return {"camera": camera, "frame": frame, "count": count, "generation": view.generation(),
                "frames": {str(k): v for k, v in boxes.items()}}


def _overview_json(view: RunView, o) -> dict:
    return {
        "identity": o.identity,
        "color": hex_colour(o.identity),
        "cameras": o.cameras,
        "first_s": o.first_s,
        "last_s": o.last_s,
        "tracks": [{"camera": t.camera, "track_id": t.track_id, "start_s": t.start_s, "end_s": t.end_s,
                    "start_frame": t.first_frame, "end_frame": t.last_frame}
                   for t in sorted(o.tracks, key=lambda t: (t.start_s, counting_order(t.camera), t.track_id))],  # in time order
        "likely_person": o.likely_person,
        "thumbnails": [{"camera": t.camera, "track_id": t.track_id,
                        "thumbnail": str(view.run_dir / t.thumbnail) if t.thumbnail else None} for t in o.best_tracks()],
    }


async def _read_form(request: Request) -> dict:
    """The multipart form of an image query, refusing bodies over the upload limit (413) as they arrive."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_UPLOAD_BYTES + MULTIPART_SLACK:
        raise ApiError(413, f"upload of {int(length) / 1e6:.1f} MB: images up to {MAX_UPLOAD_BYTES // 2**20} MB are accepted")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPLOAD_BYTES + MULTIPART_SLACK:
            raise ApiError(413, f"upload over {MAX_UPLOAD_BYTES // 2**20} MB: send a smaller image")
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except Exception as exc:  # python-multipart/starlette raise several types for a malformed body
        raise ApiError(400, f"not a multipart form ({' '.join(str(exc).split())[:80]}); send image=@FILE") from None
    fields = {}
    try:
        for key, value in form.multi_items():
            fields[key] = await value.read() if hasattr(value, "read") else value
            if hasattr(value, "filename"):
                fields["filename"] = value.filename or "upload"
    finally:
        await form.close()  # an upload over 1 MB was spooled to a temporary file
    return fields


def _query_image_file(view: RunView, form: dict, camera: str | None, tmp: Path) -> tuple[Path, str]:
    """Write the image to query into ``tmp`` (outside the run): the upload, or the camera's frame."""
    if isinstance(form.get("image"), bytes):
        data = form["image"]
        if len(data) > MAX_UPLOAD_BYTES:
            raise ApiError(413, f"image of {len(data) / 1e6:.1f} MB: images up to {MAX_UPLOAD_BYTES // 2**20} MB are accepted")
        _check_pixels(data, form.get("filename", ""))
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if image is None:
            raise ApiError(415, f"image {form.get('filename', '')!r}: not an image crosscam can read; send a JPEG or PNG")
        name = Path(form.get("filename") or "upload").name
    elif form.get("frame") is not None:
        if camera is None:
            raise ApiError(400, "frame: needs camera, the camera the frame index belongs to")
        try:
            index = int(form["frame"])
        except ValueError:
            raise ApiError(400, f"frame {form['frame']!r}: expected a 0-based frame index") from None
        image = view.frame_image(camera, index)
        name = f"{camera} frame {index}"
    else:
        raise ApiError(400, "give image (a JPEG/PNG file) or camera and frame")
    path = tmp / "query.png"
    cv2.imwrite(str(path), image)  # lossless: the pixels decoded above
    return path, name


def _check_pixels(data: bytes, filename: str) -> None:
    """413 for an image whose header declares more than ``MAX_UPLOAD_PIXELS`` (read without
    decoding); 415 for data whose header PIL cannot read (OpenCV would decode some such formats,
    up to 2^30 pixels, without a size check first)."""
    too_many = (f"images up to {MAX_UPLOAD_PIXELS // 1_000_000} megapixels are accepted: send a smaller one")
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except Image.DecompressionBombError:  # PIL's own limit, far above ours: the header said more
        raise ApiError(413, f"image {filename!r}: over {Image.MAX_IMAGE_PIXELS * 2 // 1_000_000} megapixels; {too_many}") from None
    except Exception:  # noqa: BLE001 - PIL raises several types for data it does not know
        raise ApiError(415, f"image {filename!r}: not an image crosscam can read; send a JPEG or PNG") from None
    if width * height > MAX_UPLOAD_PIXELS:
        raise ApiError(413, f"image {filename!r}: {width}x{height} pixels; {too_many}")


def _add_pages(app: FastAPI, view: RunView) -> None:
    @app.get("/", include_in_schema=False)
    def index():
        return _static_response("index.html")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return _static_response("docs.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        return _static_response(name)

    @app.get("/files/{path:path}", tags=["run"], response_class=FileResponse)
    def files(path: str):
        """A file inside the run directory (thumbnails, report.html); anything else is a 404."""
        return FileResponse(inside(view.run_dir, path), headers={"Cache-Control": "no-cache"})


def inside(root: Path, relative: str) -> Path:
    """``root / relative`` when it resolves (symlinks followed) to a file inside ``root``; else a 404."""
    if "\0" in relative:  # no file name holds one (and resolving it raises)
        raise ApiError(404, f"{relative!r}: no such file in the run directory")
    if not relative.strip("/"):
        raise ApiError(404, "/files/: name a file of the run directory, e.g. /files/report.html")
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root.resolve()) or not candidate.is_file():
        raise ApiError(404, f"{relative}: no such file in the run directory")
    return candidate


def _static_response(name: str) -> Response:
    kinds = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
    entry = STATIC / name
    if "/" in name or "\\" in name or Path(name).suffix not in kinds or not entry.is_file():
        raise ApiError(404, f"/static/{name}: not found")
    return Response(entry.read_bytes(), media_type=kinds[Path(name).suffix], headers={"Cache-Control": "no-cache"})


_IMAGE_FORM = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "string", "format": "binary", "description": "A person crop or a frame (JPEG/PNG, <= 10 MB)."},
                        "frame": {"type": "integer", "description": "Instead of image: a 0-based frame index of `camera`."},
                        "box": {"type": "string", "description": "x1,y1,x2,y2 pixels of the person in the image (--box)."},
                        "camera": {"type": "string", "description": "The camera the image comes from: its colour table is applied (--camera)."},
                    },
                }
            }
        },
        "required": True,
    }
}
