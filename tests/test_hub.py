"""Published models by name (copart.hub, ``copart models``), against servers on 127.0.0.1 that
these tests start: a plain mirror folder, an emulated Yandex public-resources API, and Google
Drive emulated by replacing gdown's two functions. Nothing here leaves the machine."""

import hashlib
import json
import shutil
import socket
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from copart import hub

VOX = "vox-10segments.pth.tar"
AUTHORS_YANDEX = "https://yadi.sk/d/2hTyhEcqo_5ruA"  # the catalog's "authors" folder
QUOTA_TEXT = ("Too many users have viewed or downloaded this file recently. Please try accessing the file "
              "again later. If the file you are trying to download is especially large or is shared with many "
              "people, it may take up to 24 hours to be able to view or download the file.")


# ---------------------------------------------------------------------------------------------
# Model files: random weights in the authors' layout (about 88 MB each), built once per module


def _authors_file(preset: str, path: Path) -> bytes:
    from copart import presets
    from copart.models import CoPartModel, ModelConfig

    m = CoPartModel(ModelConfig.from_dict(presets.load(preset)))
    torch.save({"segmentation_module": m.segmentation_module.state_dict(),
                "reconstruction_module": m.reconstruction_module.state_dict()}, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def vox(tmp_path_factory) -> bytes:
    return _authors_file("vox-256-sem-10segments", tmp_path_factory.mktemp("weights") / VOX)


@pytest.fixture(scope="module")
def taichi(tmp_path_factory) -> bytes:
    return _authors_file("taichi-256-sem", tmp_path_factory.mktemp("weights") / "taichi-xyz.pth.tar")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# The loopback server


@dataclass
class Seen:
    method: str
    path: str
    query: dict
    range: str | None


@dataclass
class State:
    """What the server serves, and what it was asked. ``files``: path -> bytes; ``modes``: path ->
    ("cut", K) to send the full Content-Length but close after K bytes, once; ("claim", TOTAL)
    to answer Range probes with Content-Range ``.../TOTAL`` whatever it holds. ``yandex``: the
    emulated API at /yandex, by its ``path`` query value (None: the folder listing)."""

    files: dict = field(default_factory=dict)
    modes: dict = field(default_factory=dict)
    yandex: dict = field(default_factory=dict)
    seen: list = field(default_factory=list)
    port: int = 0

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def mirror(self, name: str, data: bytes, sha: str | None = None) -> None:
        """A file in the mirror folder /models, with ``FILE.sha256`` when ``sha`` is given."""
        self.files[f"/models/{name}"] = data
        if sha is not None:
            self.files[f"/models/{name}.sha256"] = f"{sha}  {name}\n".encode()

    def yandex_file(self, name: str, data: bytes, **meta) -> None:
        """A file of the authors' Yandex folder: its metadata at the API and its bytes at /dl/NAME."""
        self.files[f"/dl/{name}"] = data
        self.yandex[f"/{name}"] = {"name": name, "type": "file", "size": len(data),
                                   "md5": hashlib.md5(data).hexdigest(), "sha256": sha256(data),
                                   "file": self.url(f"/dl/{name}"), **meta}

    def ranges(self, path: str) -> list:
        return [s.range for s in self.seen if s.path == path and s.range]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self._answer(head=True)

    def do_GET(self):
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        state: State = self.server.state
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        state.seen.append(Seen(self.command, url.path, query, self.headers.get("Range")))
        self.close_connection = True
        if url.path == "/yandex":
            meta = state.yandex.get(query.get("path"))
            if meta is None or query.get("public_key") != AUTHORS_YANDEX:
                return self._send(404, json.dumps({"error": "DiskNotFoundError"}).encode(), head)
            return self._send(200, json.dumps(meta).encode(), head, kind="application/json")
        data = state.files.get(url.path)
        if data is None:
            return self._send(404, b"not found\n", head)
        mode = state.modes.get(url.path, (None, None))
        total = mode[1] if mode[0] == "claim" else len(data)
        wanted = self.headers.get("Range")
        if not wanted:
            cut = self._cut(url.path, mode, len(data))
            return self._send(200, data, head, cut=cut, claimed=total if head else None)
        start, _, end = wanted.removeprefix("bytes=").partition("-")
        start, end = int(start), min(int(end) if end else total - 1, len(data) - 1)
        if start >= len(data):
            return self._send(416, b"", head, extra={"Content-Range": f"bytes */{total}"})
        self._send(206, data[start:end + 1], head, cut=self._cut(url.path, mode, end + 1 - start),
                   extra={"Content-Range": f"bytes {start}-{end}/{total}"})

    def _cut(self, path: str, mode: tuple, length: int) -> int | None:
        """Where to drop this response's connection: once, in the first body longer than K."""
        if mode[0] == "cut" and length > mode[1] and self.command != "HEAD":
            del self.server.state.modes[path]
            return mode[1]
        return None

    def _send(self, code: int, body: bytes, head: bool, kind: str = "application/octet-stream",
              cut: int | None = None, claimed: int | None = None, extra: dict | None = None) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(claimed if claimed is not None else len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Connection", "close")
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if head:
                return
            if cut is not None and cut < len(body):
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops half-way
                return
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a probe, or a refused file)


class Server(ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture
def server():
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.state = State(port=httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Google Drive, emulated at gdown's two functions (which behave as gdown 6 does)


class Drive:
    def __init__(self):
        self.files = {}  # file id -> (name, bytes)
        self.listable = False  # by default the folder cannot be listed (as with no network)
        self.fail: str | None = None  # "quota" or "cut"
        self.calls = []

    def download_folder(self, id=None, skip_download=False, quiet=False, **kwargs):
        import requests
        from gdown.download import GoogleDriveFileToDownload

        self.calls.append(("download_folder", id))
        assert skip_download
        if not self.listable:
            raise requests.exceptions.ConnectionError("Failed to resolve 'drive.google.com'")
        return [GoogleDriveFileToDownload(id=i, path=name, local_path=name) for i, (name, _) in self.files.items()]

    def download(self, url=None, output=None, quiet=False, id=None, resume=False, **kwargs):
        import requests
        from gdown.exceptions import FileURLRetrievalError

        self.calls.append(("download", id))
        if self.fail == "quota":  # gdown raises this before it creates any file
            raise FileURLRetrievalError(QUOTA_TEXT)
        if resume and Path(output).is_file():  # as gdown does: a file already there is not fetched again
            return output
        data = self.files[id][1]
        partial = Path(f"{output}abcd1234.part")  # gdown's partial file, kept for a later resume
        if self.fail == "cut":
            partial.write_bytes(data[: len(data) // 2])
            raise requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead")
        partial.write_bytes(data)
        shutil.move(partial, output)
        return output


# ---------------------------------------------------------------------------------------------
# The environment and the command line


@pytest.fixture
def home(tmp_path, monkeypatch, server) -> Path:
    """An empty model cache; downloads allowed; no mirror; Yandex's API on the loopback server
    (which knows no file until a test says so); Google Drive emulated (unreachable until told)."""
    path = tmp_path / "home"
    monkeypatch.delenv("COPART_OFFLINE")
    monkeypatch.delenv("COPART_MIRROR", raising=False)
    monkeypatch.setenv("COPART_HOME", str(path))
    monkeypatch.setenv("COPART_YANDEX_API", server.url("/yandex"))
    return path


@pytest.fixture
def drive(monkeypatch) -> Drive:
    fake = Drive()
    monkeypatch.setattr("gdown.download_folder", fake.download_folder)
    monkeypatch.setattr("gdown.download", fake.download)
    return fake


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error(self) -> str:
        """The one error line."""
        lines = [line for line in self.err.splitlines() if line.startswith("Error:")]
        assert len(lines) == 1, self.err
        return lines[0]


@pytest.fixture
def copart(capsys, drive):
    """Run ``copart ARGS`` in this process: exit code, stdout, stderr."""
    from copart.app import main

    def run(*args) -> Result:
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(stop.value.code or 0, captured.out, captured.err)

    return run


def listing(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def lock(folder: Path) -> dict:
    return json.loads((folder / hub.LOCK).read_text())


def mirror_env(monkeypatch, server) -> str:
    url = server.url("/models")
    monkeypatch.setenv("COPART_MIRROR", url)
    return url


# ---------------------------------------------------------------------------------------------
# 1. The mirror: pull, list, verify, path, remove


def test_pull_from_mirror_then_list_verify_path_remove(home, server, copart, vox, monkeypatch):
    mirror_env(monkeypatch, server)
    server.mirror(VOX, vox, sha256(vox))

    result = copart("models", "pull", "vox-10segments")
    assert result.code == 0, result.err
    assert "Fetching vox-10segments" in result.err
    assert f"vox-10segments: verified -> {home / VOX}" in result.out
    assert listing(home) == sorted([VOX, hub.LOCK])  # no temporary file left
    assert (home / VOX).read_bytes() == vox
    record = lock(home)["vox-10segments"]
    assert record["sha256"] == sha256(vox) and record["size"] == len(vox)
    assert record["source"] == f"mirror {server.url('/models')}"
    assert server.ranges(f"/models/{VOX}") == ["bytes=0-0"]  # the size probe, then a plain GET

    rows = {row["name"]: row for row in json.loads(copart("models", "list", "--json").out)}
    assert rows["vox-10segments"]["cached"] is True and rows["vox-10segments"]["verified"] is True
    assert rows["vox-10segments"]["size"] == len(vox)
    assert rows["vox-5segments"]["cached"] is False and rows["vox-5segments"]["verified"] is False

    again = copart("models", "pull", "vox-10segments")
    assert again.code == 0 and "already in" in again.out

    good = copart("models", "verify")
    assert good.code == 0, good.err
    assert "vox-10segments: ok, sha256" in good.out

    with open(home / VOX, "r+b") as f:  # flip bytes in the middle: same size, other content
        f.seek(len(vox) // 2)
        chunk = f.read(16)
        f.seek(len(vox) // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))
    bad = copart("models", "verify")
    assert bad.code != 0
    assert bad.err.splitlines() == [bad.error]  # one line
    assert bad.error.startswith(f"Error: {home / VOX} fails its check: its sha256 ")
    assert f"is not the lock file's sha256 {sha256(vox)[:16]}…" in bad.error and "copart models remove" in bad.error

    shown = copart("models", "path", "vox-10segments")
    assert shown.code == 0 and shown.out.strip() == str(home / VOX)

    removed = copart("models", "remove", "vox-10segments")
    assert removed.code == 0 and "removed" in removed.out
    assert not (home / VOX).exists()
    assert "vox-10segments" not in lock(home)


# ---------------------------------------------------------------------------------------------
# 2-4. What a mirror can get wrong


def test_mirror_sha256_file_disagrees(home, server, copart, vox, monkeypatch):
    mirror_env(monkeypatch, server)
    server.mirror(VOX, vox, "0" * 64)
    result = copart("models", "pull", "vox-10segments")
    assert result.code != 0
    assert "refused because its sha256" in result.error and "not the source's sha256 0000000000000000" in result.error
    assert listing(home) == []


@pytest.mark.parametrize("how", ["claims-full-size", "short-file"])
def test_truncated_file_is_refused(home, server, copart, vox, monkeypatch, how):
    mirror_env(monkeypatch, server)
    path = f"/models/{VOX}"
    server.mirror(VOX, vox[: len(vox) // 2])
    if how == "claims-full-size":  # Content-Range says the whole size; only half is there
        server.modes[path] = ("claim", len(vox))
    result = copart("models", "pull", "vox-10segments")
    assert result.code != 0
    mirror_clause = result.error.split("; ")[0]
    if how == "claims-full-size":
        assert f"stopped at {len(vox) // 2:,} of {len(vox):,} bytes" in mirror_clause
        assert any(r != "bytes=0-0" for r in server.ranges(path))  # it tried to resume
    else:  # the size checks out; the weights_only load does not
        assert "the file was refused because it" in mirror_clause
    assert listing(home) == []


def test_cut_transfer_resumes_with_range(home, server, copart, vox, monkeypatch):
    mirror_env(monkeypatch, server)
    path = f"/models/{VOX}"
    server.mirror(VOX, vox)
    server.modes[path] = ("cut", len(vox) // 2)
    result = copart("models", "pull", "vox-10segments")
    assert result.code == 0, result.err
    resumed = [int(r.removeprefix("bytes=").rstrip("-")) for r in server.ranges(path) if r.endswith("-")]
    assert resumed and all(n > 0 for n in resumed)
    assert (home / VOX).read_bytes() == vox
    assert listing(home) == sorted([VOX, hub.LOCK])


# ---------------------------------------------------------------------------------------------
# 5. Unreachable sources


@pytest.mark.parametrize("how", ["404", "connection-refused"])
def test_every_source_failing_gives_one_sentence(home, server, copart, monkeypatch, how):
    if how == "404":
        url = mirror_env(monkeypatch, server)  # serves no file
        reason = f"{url}/{VOX} answered 404"
    else:
        url = f"http://127.0.0.1:{free_port()}/models"
        monkeypatch.setenv("COPART_MIRROR", url)
        reason = "cannot be reached"
    result = copart("models", "pull", "vox-10segments")
    assert result.code != 0
    error = result.error.removeprefix("Error: ")
    clauses = error.split("; ")
    assert clauses[0].startswith(f"vox-10segments could not be fetched: the mirror COPART_MIRROR={url}: ")
    assert reason in clauses[0]
    assert clauses[1].startswith(f"Yandex Disk ({AUTHORS_YANDEX}): ") and "answered 404" in clauses[1]
    assert clauses[2].startswith("Google Drive (https://drive.google.com/drive/folders/")
    assert "cannot be listed" in clauses[2]
    assert clauses[3] == (f"put {VOX} (from the mirror COPART_MIRROR={url} or Yandex Disk ({AUTHORS_YANDEX}) or "
                          f"Google Drive (https://drive.google.com/drive/folders/1SsBifjoM_qO0iFzb8wLlsz_4qW2j8dZe)) "
                          f"in {home}.")
    assert len(clauses) == 4
    assert listing(home) == []


# ---------------------------------------------------------------------------------------------
# 6. The authors' Yandex Disk (emulated public-resources API)


def test_pull_through_yandex_without_mirror(home, server, copart, vox):
    server.yandex_file(VOX, vox)
    result = copart("models", "pull", "vox-10segments")
    assert result.code == 0, result.err
    assert (home / VOX).read_bytes() == vox
    assert lock(home)["vox-10segments"]["source"] == f"the authors' Yandex Disk ({AUTHORS_YANDEX})"
    assert [s.query.get("path") for s in server.seen if s.path == "/yandex"] == [f"/{VOX}"]
    assert not [s for s in server.seen if s.path.startswith("/models")]  # no mirror set: never tried
    assert listing(home) == sorted([VOX, hub.LOCK])


def test_yandex_finds_the_taichi_file_by_prefix(home, server, copart, taichi):
    server.yandex_file("taichi-xyz.pth.tar", taichi)
    server.yandex[None] = {"_embedded": {"items": [
        {"name": "taichi-dir", "type": "dir"},
        {"name": VOX, "type": "file"},
        {"name": "taichi-xyz.pth.tar", "type": "file"},
    ]}}
    result = copart("models", "pull", "taichi-256-sem")
    assert result.code == 0, result.err
    assert (home / "taichi-256-sem.pth.tar").read_bytes() == taichi
    assert [s.query.get("path") for s in server.seen if s.path == "/yandex"] == [None, "/taichi-xyz.pth.tar"]
    assert lock(home)["taichi-256-sem"]["sha256"] == sha256(taichi)


@pytest.mark.parametrize("check", ["sha256", "md5"])
def test_yandex_metadata_checksum_disagrees(home, server, copart, vox, check):
    server.yandex_file(VOX, vox, **{check: "0" * (64 if check == "sha256" else 32)})
    result = copart("models", "pull", "vox-10segments")
    assert result.code != 0
    assert f"Yandex Disk ({AUTHORS_YANDEX}): the file was refused because its {check} " in result.error
    assert listing(home) == []


# ---------------------------------------------------------------------------------------------
# 7. The authors' Google Drive (gdown emulated)


def test_pull_through_google_drive(home, copart, drive, vox):
    drive.listable = True
    drive.files = {"id-vox5": ("vox-5segments.pth.tar", b"other"), "id-vox10": (VOX, vox)}
    result = copart("models", "pull", "vox-10segments")
    assert result.code == 0, result.err
    assert (home / VOX).read_bytes() == vox
    assert ("download", "id-vox10") in drive.calls
    assert lock(home)["vox-10segments"]["source"].startswith("the authors' Google Drive")
    assert listing(home) == sorted([VOX, hub.LOCK])


@pytest.mark.parametrize("fail", ["quota", "cut"])
def test_google_drive_failing_leaves_nothing(home, copart, drive, vox, fail):
    drive.listable = True
    drive.files = {"id-vox10": (VOX, vox)}
    drive.fail = fail
    result = copart("models", "pull", "vox-10segments")
    assert result.code != 0
    drive_clause = result.error.split("; ")[1]  # after Yandex's (no mirror set)
    if fail == "quota":
        assert drive_clause.startswith("Google Drive (")
        assert "download quota for this file is used up" in drive_clause
    else:
        assert "Google Drive's transfer failed" in drive_clause
    assert f"or Yandex Disk ({AUTHORS_YANDEX}) or Google Drive" not in result.error  # no mirror set
    assert f"(from Yandex Disk ({AUTHORS_YANDEX}) or Google Drive (" in result.error  # the other sources
    assert listing(home) == []  # nor gdown's partial file


# ---------------------------------------------------------------------------------------------
# 8. Offline


@pytest.mark.parametrize("how", ["env", "flag"])
def test_offline_never_touches_the_network(home, server, copart, drive, monkeypatch, how):
    url = mirror_env(monkeypatch, server)
    server.mirror(VOX, b"never fetched")
    if how == "env":
        monkeypatch.setenv("COPART_OFFLINE", "1")
        result = copart("models", "pull", "vox-10segments")
    else:
        result = copart("--offline", "models", "pull", "vox-10segments")
    assert result.code != 0
    assert "COPART_OFFLINE=1 forbids downloading it" in result.error
    assert f"put {VOX} (from the mirror COPART_MIRROR={url} or " in result.error
    assert result.error.endswith(f" in {home}.")
    assert server.seen == [] and drive.calls == []
    assert listing(home) == []


# ---------------------------------------------------------------------------------------------
# 9. copart swap fetches its model on first use


def test_swap_fetches_the_model_by_itself(home, server, copart, vox, monkeypatch, carphone, astronaut, tmp_path):
    mirror_env(monkeypatch, server)
    server.mirror(VOX, vox)
    out = tmp_path / "out.mp4"
    result = copart("swap", "--k", "10", "--parts", "lips", carphone, astronaut, "--no-crop", "--max-frames", "2",
                    "-o", out)
    assert result.code == 0, result.err
    assert any(line.startswith("Fetching vox-10segments ") for line in result.err.splitlines())
    assert out.is_file() and out.stat().st_size > 0
    assert (home / VOX).read_bytes() == vox and "vox-10segments" in lock(home)


# ---------------------------------------------------------------------------------------------
# 10. A FOMM file the catalog knows the sha256 of


def test_fake_fomm_file_fails_the_known_sha256(home, server, copart, monkeypatch, tmp_path):
    mirror_env(monkeypatch, server)
    fake = tmp_path / "vox-cpk.pth.tar"
    torch.save({"kp_detector": {"w": torch.zeros(2)}, "generator": {"w": torch.zeros(2)}}, fake)
    server.mirror("vox-cpk.pth.tar", fake.read_bytes())
    result = copart("models", "pull", "vox-cpk")
    assert result.code != 0
    known = hub.entry("vox-cpk").sha256
    assert f"refused because its sha256 {sha256(fake.read_bytes())[:16]}… is not the sha256 copart knows " \
           f"{known[:16]}…" in result.error
    assert listing(home) == []
