"""copart studio over HTTP: every endpoint against a real server on 127.0.0.1 (uvicorn in a thread
of this process, or the command itself in a subprocess), bad uploads, paths that try to leave
the studio's folders, the access token, and MP4 files written with their index first."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from copart.app import app
from copart.editing.swap import swap
from copart.loading import ModelChoice
from copart.media.read import probe
from copart.media.write import VideoWriter
from copart.models.checkpoint import load_model
from copart.studio.files import Roots
from copart.studio.server import make_app

from .studio_setup import CLIP_FRAMES, Served, make_folder

POST = {"X-Copart-Studio": "1"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, carphone, astronaut, fixture_checkpoint):
    return make_folder(tmp_path_factory.mktemp("studio"), carphone, astronaut, fixture_checkpoint)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, folder):
    """(base URL, Roots) of a studio over ``folder`` with a 2 MB upload limit."""
    workspace = tmp_path_factory.mktemp("workspace")
    roots = Roots(workspace, [folder])
    served = Served(make_app(roots, max_upload=2 * 2**20))
    yield served.url, roots
    served.close()


@pytest.fixture(scope="module")
def client(studio):
    with httpx.Client(base_url=studio[0], timeout=120) as c:
        yield c


def _settings(**changes):
    base = {"target": "folder1/talk.mp4", "source": "folder1/face.png", "model": "file:folder1/model.pth",
            "parts": [3, 4, 5], "hard": False, "source_mask": False, "face": "largest", "frame": 0}
    return {**base, **changes}


def _frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` sent as written (no client-side normalisation of '..' or '%2e')."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


# ---------------------------------------------------------------- the page and what it lists

def test_the_page_and_its_assets_are_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>copart studio</title>" in page.text and 'src="/static/studio.js"' in page.text
    assert "http" not in re.sub(r'xmlns="[^"]*"', "", page.text).replace("http-equiv", "")  # no CDN, nothing remote
    js = client.get("/static/studio.js")
    assert js.status_code == 200 and "EventSource" in js.text and js.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/studio.css").status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("index.html", "server.py", "nothing.js"):
        assert client.get(f"/static/{name}").status_code == 404


def test_state_lists_the_media_models_and_runs_of_the_given_folders(client, studio, folder):
    state = client.get("/api/state").json()
    assert state["folders"] == {"folder1": str(folder.resolve())}
    assert state["media"] == ["folder1/face.png", "folder1/talk.mp4"]  # the run's pictures are two levels down
    ids = [m["id"] for m in state["models"]]
    assert ids[0] == "file:folder1/model.pth"
    assert {"k:5", "k:10", "k:15"} <= set(ids)  # the published models copart knows, by --k
    assert "preset:taichi-256-sem" in ids
    assert all("offline" in m["note"] or "cache" in m["note"] for m in state["models"] if m["kind"] == "published")
    assert state["runs"] == ["folder1/run/log.jsonl"]
    assert state["max_upload_mb"] == 2.0


def test_info_tells_frames_rate_size_and_sound(client):
    info = client.get("/api/info", params={"file": "folder1/talk.mp4"}).json()
    assert info == {"file": "folder1/talk.mp4", "still": False, "frames": CLIP_FRAMES, "fps": 30.0,
                    "width": 176, "height": 144, "sound": True}
    photo = client.get("/api/info", params={"file": "folder1/face.png"}).json()
    assert photo["still"] and (photo["width"], photo["height"]) == (512, 512) and not photo["sound"]


def test_segmentation_of_a_frame_has_the_legend_the_faces_and_the_part_under_a_click(client, studio):
    answer = client.post("/api/segment", json={"file": "folder1/talk.mp4", "model": "file:folder1/model.pth",
                                               "frame": 5}, headers=POST).json()
    assert (answer["width"], answer["height"], answer["frame"], answer["k"]) == (176, 144, 5, 10)
    legend = {row["channel"]: row for row in answer["legend"]}
    assert sorted(legend) == list(range(11)) and legend[0]["kind"] == "background"
    assert legend[3]["names"] == ["hair"] and legend[2]["names"] == ["lips"] and legend[1]["names"] == []
    assert legend[0]["colour"] == "#000000" and len({r["colour"] for r in answer["legend"]}) == 11
    assert len(answer["faces"]) == 1  # Carphone's one face, found by the detector
    x0, y0, x1, y1 = answer["faces"][0]["box"]
    picture = client.get(f"/files/{answer['image']}")
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    seen = set()
    for y in range(0, 144, 12):
        for x in range(0, 176, 12):
            hit = client.post("/api/part", json={"file": "folder1/talk.mp4", "model": "file:folder1/model.pth",
                                                 "frame": 5, "x": x, "y": y}, headers=POST).json()
            inside = x0 <= x < x1 and y0 <= y < y1
            assert hit["face"] == (1 if inside else None)
            if not inside:
                assert hit["channel"] == 0  # outside the face's crop everything is background
            seen.add(hit["channel"])
    assert seen <= set(range(11)) and seen - {0}, seen  # parts inside the face
    again = client.post("/api/segment", json={"file": "folder1/talk.mp4", "model": "file:folder1/model.pth",
                                              "frame": 5}, headers=POST).json()
    assert again["cached"] and again["image"] == answer["image"]
    outside = client.post("/api/part", json={"file": "folder1/talk.mp4", "model": "file:folder1/model.pth",
                                             "frame": 5, "x": 500, "y": 5}, headers=POST)
    assert outside.status_code == 400 and "outside" in outside.json()["error"]


def test_several_faces_are_numbered_from_the_left_and_a_click_picks_one(client, studio, carphone):
    from . import two_faces

    clip = two_faces.build(carphone, "side", studio[1].workspace / "uploads" / "two.mp4", frames=12)
    answer = client.post("/api/segment", json={"file": "workspace/uploads/two.mp4", "model": "file:folder1/model.pth",
                                               "frame": 2}, headers=POST).json()
    faces = answer["faces"]
    assert [f["number"] for f in faces] == [1, 2]
    for face, name in zip(faces, ("A", "B")):  # face 1 is A (left), face 2 is B (right): where they really are
        x0, y0, x1, y1 = clip.boxes[name][2]
        fx0, fy0, fx1, fy1 = face["box"]
        assert fx0 <= (x0 + x1) / 2 <= fx1 and fy0 <= (y0 + y1) / 2 <= fy1, (name, face, clip.boxes[name][2])
    for face in faces:
        x0, y0, x1, y1 = face["box"]
        hit = client.post("/api/part", json={"file": "workspace/uploads/two.mp4", "model": "file:folder1/model.pth",
                                             "frame": 2, "x": (x0 + x1) / 2, "y": (y0 + y1) / 2}, headers=POST).json()
        assert hit["face"] == face["number"]
    preview = client.post("/api/preview", json=_settings(target="workspace/uploads/two.mp4", face="2"),
                          headers=POST).json()
    assert preview["frames"] == 8 and " --face 2 " in preview["command"]


def test_the_preview_is_the_swap_of_8_frames_and_the_command_line_does_the_same(client, studio, folder, tmp_path):
    settings = _settings(frame=6)
    answer = client.post("/api/preview", json=settings, headers=POST).json()
    assert answer["frames"] == 8 and not answer["cached"] and not answer["still"]
    preview = studio[1].resolve(answer["result"])
    frames = _frames(preview)
    assert len(frames) == 8
    with open(preview, "rb") as f:  # the index first: it plays while it loads
        data = f.read()
    assert data.find(b"moov") < data.find(b"mdat")
    # the same job, called directly: identical pictures
    direct = swap(folder / "talk.mp4", folder / "face.png", [3, 4, 5], ModelChoice(checkpoint=folder / "model.pth"),
                  output=tmp_path / "direct.mp4", start=6 / 30, max_frames=8)
    assert direct.stats.frames == 8
    assert all(np.array_equal(a, b) for a, b in zip(frames, _frames(tmp_path / "direct.mp4")))
    # the command line the page shows, run (on 8 frames from the same one) gives the same pictures too
    command = answer["command"]
    assert command == (f"copart swap --parts 3,4,5 --checkpoint {folder.resolve() / 'model.pth'} "
                       f"{folder.resolve() / 'talk.mp4'} {folder.resolve() / 'face.png'}")
    words = command.split()[2:] + ["--start", str(6 / 30), "--max-frames", "8", "-o", str(tmp_path / "cli.mp4")]
    result = CliRunner().invoke(app, ["swap", *words])
    assert result.exit_code == 0, result.output
    assert all(np.array_equal(a, b) for a, b in zip(frames, _frames(tmp_path / "cli.mp4")))
    started = time.perf_counter()
    cached = client.post("/api/preview", json=settings, headers=POST).json()
    assert cached["cached"] and cached["result"] == answer["result"] and time.perf_counter() - started < 2
    hard = client.post("/api/command", json=_settings(hard=True, source_mask=True, face="all"), headers=POST).json()
    assert " --hard --source-mask --face all " in hard["command"]


def test_a_preview_of_an_image_target_is_an_image(client, studio):
    answer = client.post("/api/preview", json=_settings(target="folder1/face.png"), headers=POST).json()
    assert answer["still"] and answer["result"].endswith(".png")
    assert client.get(f"/files/{answer['result']}").headers["content-type"] == "image/png"


def test_bad_settings_are_one_sentence(client):
    cases = [
        (_settings(parts=[]), 400, "Choose at least one part"),
        (_settings(parts=[11]), 400, "Part number 11 is out of range"),
        (_settings(model="file:folder1/nothing.pth"), 404, "No such file"),
        (_settings(model="magic"), 400, "Unknown model"),
        (_settings(face="/etc/passwd"), 400, "face must be largest, all or a face number"),
        (_settings(target="/etc/passwd"), 404, "No such file"),
    ]
    for settings, status, text in cases:
        answer = client.post("/api/preview", json=settings, headers=POST)
        assert answer.status_code == status and text in answer.json()["error"], (settings, answer.text)
        assert "Traceback" not in answer.text
    assert client.post("/api/preview", content=b"{", headers={**POST, "content-type": "application/json"}
                       ).status_code == 400
    assert client.post("/api/preview", content=b"x=1", headers=POST).status_code == 415


def _events(client, timeout=120):
    """The render's server-sent events until it stops running."""
    out = []
    with client.stream("GET", "/api/render/events", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def test_a_render_reports_progress_as_events_and_its_result_downloads_with_sound(client, studio):
    started = client.post("/api/render/start", json=_settings(parts=[2]), headers=POST).json()
    assert started["state"] == "running"
    t0 = time.perf_counter()
    assert client.get("/api/state").status_code == 200  # the server answers while it renders
    assert time.perf_counter() - t0 < 5
    again = client.post("/api/render/start", json=_settings(parts=[3]), headers=POST)
    assert again.status_code == 409 and "already running" in again.json()["error"]
    events = _events(client)
    assert events[-1]["state"] == "done", events[-1]
    done = [e["done"] for e in events if e["state"] == "running"]
    assert done == sorted(done) and events[-1]["done"] == CLIP_FRAMES
    assert any(e.get("fps") for e in events if e["state"] == "running" and e["done"])
    assert any(e.get("left") is not None for e in events if e["state"] == "running" and e["done"])
    assert events[-1]["command"].endswith(f"-o {studio[1].resolve(events[-1]['result'])}")
    download = client.get(f"/files/{events[-1]['result']}", params={"download": "1"})
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    path = studio[1].workspace / "got.mp4"
    path.write_bytes(download.content)
    info = probe(path)
    assert info["frames"] == CLIP_FRAMES and info["audio"] and info["audio"][0]["codec"] == "aac"
    cached = client.post("/api/render/start", json=_settings(parts=[2]), headers=POST).json()
    assert cached["state"] == "done" and cached["cached"] and cached["result"] == events[-1]["result"]


def test_a_render_is_cancelled_and_leaves_nothing(client, studio):
    before = set((studio[1].workspace / "renders").iterdir())
    started = client.post("/api/render/start", json=_settings(parts=[1, 7]), headers=POST).json()
    assert started["state"] == "running"
    cancelled = client.post("/api/render/cancel", json={}, headers=POST).json()
    assert cancelled["state"] == "cancelled" and "nothing was written" in cancelled["message"]
    assert client.get("/api/render").json()["state"] == "cancelled"
    assert set((studio[1].workspace / "renders").iterdir()) == before  # no file, no temporary file


def test_names_typed_on_the_legend_are_saved_as_copart_parts_name_saves_them(client, studio, folder):
    answer = client.post("/api/names", json={"model": "file:folder1/model.pth", "names": {"beard": [7, 8]},
                                             "filename": "named"}, headers=POST)
    assert answer.status_code == 200, answer.text
    saved = studio[1].resolve(answer.json()["file"])
    assert saved == studio[1].workspace / "models" / "named.pth"
    loaded = load_model(saved)
    assert loaded.part_names == {"hair": [3, 4, 5], "lips": [2], "beard": [7, 8]}
    original = load_model(folder / "model.pth")
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(),
                                                 original.model.state_dict().values()))
    assert answer.json()["model"] in [m["id"] for m in client.get("/api/state").json()["models"]]
    again = client.post("/api/names", json={"model": "file:folder1/model.pth", "names": {"x": [1]},
                                            "filename": "named"}, headers=POST)
    assert again.status_code == 409 and "already exists" in again.json()["error"]
    for names, filename, text in (({"beard": [12]}, "b", "must map to channel numbers in 0..10"), ({"7": [7]}, "c", "must be a word"),
                                  ({"x": [1]}, "../up", "not a plain file name"), ({}, "d", "at least one")):
        bad = client.post("/api/names", json={"model": "file:folder1/model.pth", "names": names,
                                              "filename": filename}, headers=POST)
        assert bad.status_code == 400 and text in bad.json()["error"], bad.text


def test_a_training_run_shows_its_losses_by_step_and_its_latest_pictures(client, studio, folder):
    run = client.get("/api/run", params={"log": "folder1/run/log.jsonl"}).json()
    assert run["records"] == 5  # the line being written is left out
    assert run["series"]["perceptual"] == [[s, 10.0 / s] for s in range(1, 6)]
    assert set(run["series"]) == {"perceptual", "equivariance_shift"}
    assert run["pictures"] == ["folder1/run/train-vis/00000001.png", "folder1/run/train-vis/00000005.png"]
    with open(folder / "run" / "log.jsonl", "a") as log:  # the run goes on: the next look sees it
        log.write('\n{"step": 7, "perceptual": 1.0, "equivariance_shift": 0.1, "pairs_per_s": 3}\n')
    assert client.get("/api/run", params={"log": "folder1/run/log.jsonl"}).json()["series"]["perceptual"][-1] == [7, 1.0]
    assert client.get("/api/run", params={"log": "folder1/talk.mp4"}).status_code == 400


# ---------------------------------------------------------------- uploads

def _upload(client, name, body, kind="media"):
    return client.post("/api/upload", params={"name": name, "kind": kind}, content=body, headers=POST)


def _uploads(studio):
    return sorted(p.name for p in (studio[1].workspace / "uploads").iterdir())


def test_an_upload_lands_in_the_workspace_and_never_replaces_a_file(client, studio, folder):
    data = (folder / "talk.mp4").read_bytes()
    first = _upload(client, "my clip.mp4", data).json()
    second = _upload(client, "my clip.mp4", data).json()
    assert (first["file"], second["file"]) == ("workspace/uploads/my clip.mp4", "workspace/uploads/my clip-2.mp4")
    assert studio[1].resolve(first["file"]).read_bytes() == data
    assert "workspace/uploads/my clip.mp4" in client.get("/api/state").json()["media"]
    model = _upload(client, "mine.pth", (folder / "model.pth").read_bytes(), kind="model").json()
    assert model["model"] == "file:workspace/uploads/mine.pth"


def test_bad_uploads_are_refused_and_leave_nothing(client, studio, tmp_path):
    before = _uploads(studio)

    class Code:  # any object whose unpickling would run code
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"model": Code()}, tmp_path / "evil.pth")
    cases = [
        ("notes.mp4", b"this is not a video", "media", 400, "is not a video or image copart can read"),
        ("big.mp4", b"\0" * (2 * 2**20 + 1), "media", 413, "larger than the studio's upload limit of 2.0 MB"),
        ("../../evil.mp4", b"x", "media", 400, "is not a plain file name"),
        ("a/b.mp4", b"x", "media", 400, "is not a plain file name"),
        ("..", b"x", "media", 400, "is not a plain file name"),
        (".hidden.mp4", b"x", "media", 400, "is not a plain file name"),
        ("notes.txt", b"hello", "media", 400, "is not a video or image file"),
        ("evil.pth", (tmp_path / "evil.pth").read_bytes(), "model", 400, "runs no code from a file"),
        ("empty.mp4", b"", "media", 400, "is empty"),
        ("face.png", b"x", "script", 400, "kind must be media or model"),
    ]
    for name, body, kind, status, text in cases:
        answer = _upload(client, name, body, kind)
        assert answer.status_code == status and text in answer.json()["error"], (name, answer.text)
        assert str(studio[1].workspace) not in answer.json()["error"]  # names the upload, not the temporary file
    assert _uploads(studio) == before  # nothing kept, no temporary file left


def test_a_large_upload_is_cut_off_while_it_streams(studio):
    """Without a Content-Length (chunked), the limit stops the upload as the bytes arrive."""
    def chunks():
        for _ in range(40):
            yield b"\0" * 100_000

    with httpx.Client(base_url=studio[0]) as c:
        answer = c.post("/api/upload", params={"name": "stream.mp4"}, content=chunks(), headers=POST)
    assert answer.status_code == 413
    assert "stream.mp4" not in _uploads(studio)


# ---------------------------------------------------------------- paths from the browser

TRAVERSALS = [
    "/../../etc/passwd",
    "/files/../../etc/passwd",
    "/files/workspace/../../../../../../etc/passwd",
    "/files/folder1/../../../../../../etc/passwd",
    "/files/%2e%2e/%2e%2e/etc/passwd",
    "/files/workspace/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/files/workspace/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/files/workspace/%252e%252e/%252e%252e/etc/passwd",
    "/files//etc/passwd",
    "/files/workspace//etc/passwd",
    "/files/workspace/%2fetc%2fpasswd",
    "/files/folder1/link/passwd",
    "/files/folder1/passwd-link",
    "/static/..%2f..%2fserver.py",
    "/static/%2e%2e/server.py",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/api/info?file=../../etc/passwd",
    "/api/info?file=workspace/../../../../etc/passwd",
    "/api/info?file=/etc/passwd",
    "/api/run?log=folder1/../../../../etc/passwd",
]


def test_no_path_from_the_browser_reaches_outside_the_studios_folders(studio, folder):
    os.symlink("/etc", folder / "link")  # links inside a given folder that point out of it
    os.symlink("/etc/passwd", folder / "passwd-link")
    try:
        secret = Path("/etc/passwd").read_bytes()[:20]
        for path in TRAVERSALS:
            status, body = _raw_get(studio[0], path)
            assert status in (400, 404), (path, status)
            assert secret not in body and b"root:" not in body, path
            assert b"server.py" not in body and b"def make_app" not in body, path
        listed = httpx.get(f"{studio[0]}/api/state").json()
        assert all("link" not in ref for ref in listed["media"])
        for name in ("file", "target", "source"):
            answer = httpx.post(f"{studio[0]}/api/segment", json={name: "folder1/passwd-link", "file":
                                "folder1/passwd-link", "model": "file:folder1/model.pth"}, headers=POST)
            assert answer.status_code == 404 and b"root:" not in answer.content
    finally:
        (folder / "link").unlink()
        (folder / "passwd-link").unlink()


def test_a_request_for_another_host_or_a_post_from_elsewhere_is_refused(studio):
    status_host = httpx.get(f"{studio[0]}/api/state", headers={"Host": "evil.example:80"})
    assert status_host.status_code == 403 and "127.0.0.1 or localhost" in status_host.json()["error"]
    no_header = httpx.post(f"{studio[0]}/api/preview", json=_settings())
    assert no_header.status_code == 403 and "X-Copart-Studio" in no_header.json()["error"]
    assert httpx.request("PUT", f"{studio[0]}/api/upload", content=b"x", headers=POST).status_code == 405


def test_with_a_token_every_request_without_it_is_refused(tmp_path, folder):
    served = Served(make_app(Roots(tmp_path / "ws", [folder]), token="s3cret-token"))
    try:
        base = served.url
        for path in ("/", "/static/studio.js", "/api/state", "/files/folder1/face.png", "/api/render/events"):
            for params in ({}, {"token": "wrong"}):
                answer = httpx.get(base + path, params=params)
                assert answer.status_code == 403 and "access token" in answer.json()["error"], path
        assert httpx.post(f"{base}/api/preview", json=_settings(), headers=POST).status_code == 403
        opened = httpx.get(f"{base}/", params={"token": "s3cret-token"})
        assert opened.status_code == 303 and opened.headers["location"] == "/"
        assert "HttpOnly" in opened.headers["set-cookie"] and "SameSite=Strict" in opened.headers["set-cookie"]
        with httpx.Client(base_url=base, cookies=opened.cookies) as c:  # as the browser goes on
            assert c.get("/").status_code == 200 and c.get("/api/state").status_code == 200
            assert c.get("/files/folder1/face.png").status_code == 200
        assert httpx.get(f"{base}/api/state", headers={"X-Copart-Token": "s3cret-token",
                                                       "Host": "studio.lan:8765"}).status_code == 200
    finally:
        served.close()


# ---------------------------------------------------------------- the command

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> set[str]:
    """The local addresses on which something listens on ``port`` (from /proc/net/tcp, tcp6)."""
    found = set()
    for name in ("tcp", "tcp6"):
        path = Path(f"/proc/net/{name}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":  # LISTEN
                if name == "tcp":
                    found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                else:
                    found.add(address)
    return found


def _start(args, tmp_path):
    port = _free_port()
    env = {**os.environ, "COPART_HOME": str(tmp_path / "home"), "DISPLAY": ""}
    process = subprocess.Popen([sys.executable, "-m", "copart", "studio", "--no-browser", "--port", str(port), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, port
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"copart studio did not start: {process.communicate()}")


def _stop(process) -> tuple[str, str]:
    process.terminate()
    return process.communicate(timeout=30)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the listening sockets from /proc/net/tcp")
def test_copart_studio_answers_on_127_0_0_1_only(tmp_path, folder):
    process, port = _start(["--workspace", str(tmp_path / "ws"), str(folder)], tmp_path)
    try:
        assert _listening(port) == {"127.0.0.1"}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/")
        page = conn.getresponse()
        assert page.status == 200 and b"copart studio" in page.read()
        conn.request("GET", "/api/state")
        assert json.loads(conn.getresponse().read())["media"] == ["folder1/face.png", "folder1/talk.mp4"]
    finally:
        out, _ = _stop(process)
    assert f"copart studio at http://127.0.0.1:{port}/" in out and "token" not in out
    assert (tmp_path / "ws" / "uploads").is_dir()


def test_ctrl_c_during_a_render_stops_it_and_leaves_nothing(tmp_path, folder):
    import signal

    process, port = _start(["--workspace", str(tmp_path / "ws"), str(folder)], tmp_path)
    try:
        started = httpx.post(f"http://127.0.0.1:{port}/api/render/start", json=_settings(parts=[4, 6]), headers=POST,
                             timeout=60).json()
        assert started["state"] == "running"
        deadline = time.monotonic() + 60
        while httpx.get(f"http://127.0.0.1:{port}/api/render").json().get("done", 0) < 1:
            assert time.monotonic() < deadline, "the render did not start"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, (process.returncode, err)  # the render stopped first: no abort (-6)
    assert err.strip().endswith("The studio stopped; nothing half-written is left.")
    assert "terminate called" not in err and "Traceback" not in err
    assert list((tmp_path / "ws" / "renders").iterdir()) == []  # no half-written video


def test_copart_studio_with_host_prints_a_warning_and_a_token_it_requires(tmp_path, folder):
    process, port = _start(["--host", "127.0.0.1", "--workspace", str(tmp_path / "ws")], tmp_path)
    try:
        time.sleep(0.5)
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 403
        assert httpx.get(f"http://127.0.0.1:{port}/api/state").status_code == 403
    finally:
        out, err = _stop(process)
    assert "Warning: with --host 127.0.0.1 the studio answers every machine" in err
    token = re.search(r"\?token=([\w-]+)", out).group(1)
    assert len(token) >= 24
    process, port2 = _start(["--host", "127.0.0.1", "--workspace", str(tmp_path / "ws")], tmp_path)
    try:
        time.sleep(0.5)
        assert httpx.get(f"http://127.0.0.1:{port2}/", params={"token": token}).status_code == 403  # a new token
    finally:
        out, _ = _stop(process)
    token = re.search(r"\?token=([\w-]+)", out).group(1)
    assert len(token) >= 24


def test_copart_studio_says_one_sentence_for_bad_arguments(tmp_path, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(app, ["studio", "--no-browser", str(tmp_path / "missing")])
    assert result.exit_code != 0 and "is not a folder" in str(result.exception) + result.output
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        from copart.app import main

        with pytest.raises(SystemExit) as exit_:
            main(["studio", "--no-browser", "--port", str(busy.getsockname()[1]),
                  "--workspace", str(tmp_path / "ws")])
        assert exit_.value.code != 0
    finally:
        busy.close()
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    result = runner.invoke(app, ["studio", "--no-browser"])
    assert result.exit_code != 0
    assert "pip install 'copart[studio]'" in str(result.exception)


def test_a_port_in_use_is_one_sentence(tmp_path, capsys):
    from copart.app import main

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        with pytest.raises(SystemExit):
            main(["studio", "--no-browser", "--port", str(busy.getsockname()[1]), "--workspace", str(tmp_path)])
    finally:
        busy.close()
    err = capsys.readouterr().err
    assert "Cannot listen on 127.0.0.1:" in err and "choose another --port" in err and "Traceback" not in err


# ---------------------------------------------------------------- MP4 with the index first

def _top_level_atoms(path: Path) -> list[str]:
    names, data, at = [], path.read_bytes(), 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        name = data[at + 4:at + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[at + 8:at + 16], "big")
        names.append(name)
        if size < 8:
            break
        at += size
    return names


def test_copart_writes_mp4_with_its_index_before_the_frames(tmp_path, carphone, fixture_checkpoint, astronaut):
    out = tmp_path / "plain.mp4"
    with VideoWriter(out, 64, 48, 25, None) as writer:
        for i in range(10):
            writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    atoms = _top_level_atoms(out)
    assert "moov" in atoms and "mdat" in atoms and atoms.index("moov") < atoms.index("mdat"), atoms
    assert probe(out)["frames"] == 10
    swapped = tmp_path / "swapped.mp4"  # and so every MP4 copart writes, e.g. a swap with sound
    result = CliRunner().invoke(app, ["swap", "--checkpoint", str(fixture_checkpoint), "--parts", "2", "--no-crop",
                                      "--max-frames", "5", str(carphone), str(astronaut), "-o", str(swapped)])
    assert result.exit_code == 0, result.output
    atoms = _top_level_atoms(swapped)
    assert atoms.index("moov") < atoms.index("mdat"), atoms
