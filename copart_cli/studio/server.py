"""The studio's HTTP side (Starlette, served by uvicorn): the page, its assets, the JSON API
over :mod:`copart.studio.work`, the files of the studio's folders, and the guard in front of
it all.

The guard: bound to loopback without ``--host``, a request must name a loopback host (so that
a web page elsewhere cannot reach the studio through a name that resolves to 127.0.0.1); with
``--host``, every request must carry the access token (``?token=`` once, then a cookie; or the
``X-Copart-Token`` header). Every POST must carry the ``X-Copart-Studio`` header, which a form
or an image on another site cannot send without the browser asking first (and the studio
answers no such question), and uploads stop at the size limit.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import secrets
import socket
import threading
import webbrowser
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from copart import __version__
from copart.models.errors import CopartError
from copart.models.files import atomic_path

from . import work
from .files import Refused, Roots, plain_name

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"studio.js": "text/javascript; charset=utf-8", "studio.css": "text/css; charset=utf-8"}
COOKIE = "copart_studio_token"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "[::1]", "::1"}
MAX_UPLOAD_MB = 512
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"content-security-policy",
                     (b"default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                      b"style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"))]


def new_token() -> str:
    return secrets.token_urlsafe(24)


class Guard:
    """ASGI middleware: the host check or the token, and the POST header (see the module)."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.token is None:
            host = headers.get("host", "")
            name = host.split("]")[0] + "]" if host.startswith("[") else host.rsplit(":", 1)[0]
            if name.lower() not in LOOPBACK_NAMES:
                return await _refuse(send, 403, "This studio answers requests for 127.0.0.1 or localhost only.")
        else:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            cookie = SimpleCookie()
            try:
                cookie.load(headers.get("cookie", ""))
            except Exception:  # noqa: BLE001 - a malformed cookie is no token
                cookie = SimpleCookie()
            given = [headers.get("x-copart-token"), (query.get("token") or [None])[0],
                     cookie[COOKIE].value if COOKIE in cookie else None]
            if not any(g and hmac.compare_digest(g.encode(), self.token.encode()) for g in given):
                return await _refuse(send, 403, "This studio needs its access token: open the address with "
                                                "?token=... that copart studio printed.")
            if scope["method"] == "GET" and scope["path"] == "/" and query.get("token"):
                # the token once in the address, then in a cookie the page's requests carry
                await send({"type": "http.response.start", "status": 303, "headers": [
                    (b"location", b"/"), (b"cache-control", b"no-store"),
                    (b"set-cookie", f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode())]})
                return await send({"type": "http.response.body", "body": b""})
        if scope["method"] not in ("GET", "HEAD", "POST"):
            return await _refuse(send, 405, "The studio answers GET and POST only.")
        if scope["method"] == "POST" and headers.get("x-copart-studio") != "1":
            return await _refuse(send, 403, "POST requests to the studio come from its own page only "
                                            "(the X-Copart-Studio header is missing).")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=list(message.get("headers", [])) + SECURITY_HEADERS)
            await send(message)

        return await self.app(scope, receive, send_with_headers)


async def _refuse(send, status: int, text: str) -> None:
    body = json.dumps({"error": text}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                + SECURITY_HEADERS})
    await send({"type": "http.response.body", "body": body})


class Studio:
    """The state behind the routes: folders, caches, the render worker."""

    def __init__(self, roots: Roots, max_upload: int):
        self.roots = roots
        self.max_upload = max_upload
        self.models = work.ModelCache()
        self.segmentations = work.Segmentations(roots, self.models)
        self.previews = work.Previews(roots)
        self.renderer = work.Renderer(roots)
        self.upload_lock = threading.Lock()
        self.uploading: set[Path] = set()  # names of the uploads under way


def _error(exc: Exception) -> JSONResponse:
    if isinstance(exc, Refused):
        return JSONResponse({"error": str(exc)}, exc.status)
    if isinstance(exc, CopartError):
        return JSONResponse({"error": str(exc)}, 400)
    return JSONResponse({"error": f"The studio failed unexpectedly ({type(exc).__name__}: {exc}); "
                                  f"run copart studio with COPART_DEBUG=1 to see why."}, 500)


def _route(handler):
    """A handler whose Refused, CopartError or any other exception becomes one JSON sentence."""
    async def wrapped(request: Request):
        try:
            return await handler(request)
        except Exception as exc:
            if os.environ.get("COPART_DEBUG") and not isinstance(exc, (Refused, CopartError)):
                raise
            return _error(exc)
    return wrapped


async def _json(request: Request) -> dict:
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise Refused("Send the request as JSON (Content-Type: application/json).", 415)
    body = await request.body()
    if len(body) > 1_000_000:
        raise Refused("The request is too large.", 413)
    try:
        data = json.loads(body)
    except ValueError:
        raise Refused("The request is not valid JSON.") from None
    if not isinstance(data, dict):
        raise Refused("The request must be a JSON object.")
    return data


def _studio(request: Request) -> Studio:
    return request.app.state.studio


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                        headers={"cache-control": "no-store"})


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        return JSONResponse({"error": "No such file."}, 404)
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"cache-control": "no-store"})


async def state(request: Request) -> Response:
    st = _studio(request)

    def gather():
        roots = st.roots
        return {"version": __version__,
                "folders": {name: str(path) for name, path in roots.folders().items()},
                "workspace": str(roots.workspace),
                "media": roots.files(work.MEDIA_SUFFIXES),
                "models": work.models(roots),
                "runs": roots.run_folders(),
                "max_upload_mb": round(st.max_upload / 2**20, 1),
                "preview_frames": work.PREVIEW_FRAMES}
    return JSONResponse(await run_in_threadpool(gather))


async def info(request: Request) -> Response:
    st = _studio(request)
    return JSONResponse(await run_in_threadpool(work.media_info, st.roots, request.query_params.get("file", "")))


def _int(data: dict, name: str, default: int = 0) -> int:
    try:
        return int(data.get(name, default))
    except (TypeError, ValueError):
        raise Refused(f"{name} must be a whole number.") from None


async def segment(request: Request) -> Response:
    st, data = _studio(request), await _json(request)
    answer = await run_in_threadpool(st.segmentations.segment, str(data.get("file", "")), str(data.get("model", "")),
                                     max(0, _int(data, "frame")), bool(data.get("hard")))
    return JSONResponse({k: v for k, v in answer.items()})


async def part(request: Request) -> Response:
    st, data = _studio(request), await _json(request)
    try:
        x, y = float(data.get("x")), float(data.get("y"))
    except (TypeError, ValueError):
        raise Refused("x and y must be numbers (pixels of the picture).") from None
    answer = await run_in_threadpool(st.segmentations.part_at, str(data.get("file", "")), str(data.get("model", "")),
                                     max(0, _int(data, "frame")), bool(data.get("hard")), x, y)
    return JSONResponse(answer)


async def command(request: Request) -> Response:
    st, data = _studio(request), await _json(request)
    settings = work.Settings.from_json(data)
    return JSONResponse({"command": await run_in_threadpool(work.command_line, st.roots, settings)})


async def preview(request: Request) -> Response:
    st, data = _studio(request), await _json(request)
    return JSONResponse(await run_in_threadpool(st.previews.preview, work.Settings.from_json(data)))


async def render_start(request: Request) -> Response:
    st, data = _studio(request), await _json(request)
    return JSONResponse(await run_in_threadpool(st.renderer.start, work.Settings.from_json(data)))


async def render_cancel(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(_studio(request).renderer.cancel))


async def render_status(request: Request) -> Response:
    return JSONResponse(_studio(request).renderer.status())


async def render_events(request: Request) -> Response:
    """Server-sent events: the render's status whenever it changes, until it stops running."""
    renderer = _studio(request).renderer

    async def events():
        last = None
        while True:
            now = renderer.status()
            if now != last:
                yield f"data: {json.dumps(now)}\n\n"
                last = now
            if now["state"] != "running":
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.2)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-store"})


async def upload(request: Request) -> Response:
    """The request's body stored as workspace/uploads/NAME (never over an existing file), after
    the size limit and a check that it is what ``kind`` says (media or model)."""
    st = _studio(request)
    name = plain_name(request.query_params.get("name", ""))
    kind = request.query_params.get("kind", "media")
    if kind not in ("media", "model"):
        raise Refused("kind must be media or model.")
    limit = st.max_upload
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refused(f"{name} is larger than the studio's upload limit of {limit / 2**20:.1f} MB.", 413)
    folder = st.roots.workspace / "uploads"
    with st.upload_lock:  # the name is reserved until the upload is in place or refused
        final = _free_name(folder, name, st.uploading)
        st.uploading.add(final)
    try:
        with atomic_path(final) as tmp:  # copart's one atomic write: the upload appears whole or not at all
            size = 0
            with open(tmp, "wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise Refused(f"{name} is larger than the studio's upload limit of {limit / 2**20:.1f} MB.",
                                      413)
                    out.write(chunk)
            if size == 0:
                raise Refused(f"{name} is empty.")
            await run_in_threadpool(_checked, tmp, kind, name)
    finally:
        with st.upload_lock:
            st.uploading.discard(final)
    ref = st.roots.ref(final)
    return JSONResponse({"file": ref, "name": final.name, "kind": kind,
                         **({"model": f"file:{ref}"} if kind == "model" else {})})


def _checked(tmp: Path, kind: str, name: str) -> None:
    try:
        work.check_upload(tmp, kind)
    except Refused as exc:
        raise Refused(str(exc).replace(tmp.name, name), exc.status) from None


def _free_name(folder: Path, name: str, taken=frozenset()) -> Path:
    """``folder/name``, or ``stem-2.ext``, ... where that exists (or another upload has it on the
    way): an upload never replaces a file."""
    path = folder / name
    stem, suffix = (name.split(".", 1) + [""])[:2]
    i = 2
    while path.exists() or path in taken:
        path = folder / (f"{stem}-{i}.{suffix}" if suffix else f"{stem}-{i}")
        i += 1
    return path


async def names(request: Request) -> Response:
    st, data = _studio(request), await _json(request)
    answer = await run_in_threadpool(work.save_names, st.roots, st.models, str(data.get("model", "")),
                                     data.get("names"), str(data.get("filename", "")))
    return JSONResponse(answer)


async def training_run(request: Request) -> Response:
    st = _studio(request)
    return JSONResponse(await run_in_threadpool(work.training_run, st.roots, request.query_params.get("log", "")))


async def files(request: Request) -> Response:
    st = _studio(request)
    path = st.roots.resolve(request.path_params["ref"])
    headers = {"cache-control": "no-store"}
    if request.query_params.get("download"):
        return FileResponse(path, filename=path.name, headers=headers)
    return FileResponse(path, headers=headers)


async def not_found(request: Request, exc) -> Response:
    return JSONResponse({"error": "Not found."}, 404)


def make_app(roots: Roots, token: str | None = None, max_upload: int = MAX_UPLOAD_MB * 2**20):
    """The studio as an ASGI application over ``roots``; ``token``: required on every request."""
    routes = [
        Route("/", index),
        Route("/static/{name}", asset),
        Route("/api/state", _route(state)),
        Route("/api/info", _route(info)),
        Route("/api/segment", _route(segment), methods=["POST"]),
        Route("/api/part", _route(part), methods=["POST"]),
        Route("/api/command", _route(command), methods=["POST"]),
        Route("/api/preview", _route(preview), methods=["POST"]),
        Route("/api/render", _route(render_status)),
        Route("/api/render/start", _route(render_start), methods=["POST"]),
        Route("/api/render/cancel", _route(render_cancel), methods=["POST"]),
        Route("/api/render/events", _route(render_events)),
        Route("/api/upload", _route(upload), methods=["POST"]),
        Route("/api/names", _route(names), methods=["POST"]),
        Route("/api/run", _route(training_run)),
        Route("/files/{ref:path}", _route(files)),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.studio = Studio(roots, max_upload)
    return Guard(app, token)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: any free port); one sentence if it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise CopartError(f"--host {host} is not an address of this machine.") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise CopartError(f"Cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port.") from None
    sock.listen(64)
    return sock


def has_display() -> bool:
    """Whether a browser window can be opened here (Linux needs an X or Wayland display)."""
    if os.name == "nt" or os.uname().sysname == "Darwin":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def serve(roots: Roots, host: str, port: int, token: str | None, open_browser: bool,
          say: Callable[[str], None], max_upload: int = MAX_UPLOAD_MB * 2**20) -> None:
    """Serve the studio until Ctrl-C."""
    import uvicorn

    sock = bind(host, port)
    actual = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{actual}/" + (f"?token={token}" if token else "")
    app = make_app(roots, token, max_upload)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    say(f"copart studio at {url}  (workspace {roots.workspace}; Ctrl-C stops it)")
    if open_browser:
        def opener():
            while not server.started and not server.should_exit:
                threading.Event().wait(0.1)
            if server.started:
                webbrowser.open(url)
        threading.Thread(target=opener, daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        app.app.state.studio.renderer.cancel()  # a render still running stops (and leaves nothing) first
        sock.close()
