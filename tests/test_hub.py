"""Published models by name (copart.hub, ``copart models``), against servers on 127.0.0.1 that
these tests start: a plain mirror folder, an emulated Yandex public-resources API, and Google
Drive emulated by replacing gdown's two functions. Nothing here leaves the machine."""

import hashlib
import json
import os
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
    # path -> (code, body): answered so whatever is there; ("slow", seconds): answered after that long;
    # ("redirect", location): 302 there; ("shift", N): a Range request is answered N bytes early
    special: dict = field(default_factory=dict)
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
        special = state.special.get(url.path)
        if special is not None and special[0] == "slow":
            import time

            time.sleep(special[1])
        elif special is not None and special[0] == "redirect":
            return self._send(302, b"", head, extra={"Location": special[1]})
        elif special is not None and isinstance(special[0], int):
            return self._send(special[0], special[1], head)
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
        if special is not None and special[0] == "shift" and start > 0:  # a broken server: the range is off
            start -= special[1]
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
    def error_lines(self) -> list:
        """The error's lines: the "Error:" line and those below it."""
        lines = self.err.rstrip("\n").split("\n")
        return lines[next(i for i, line in enumerate(lines) if line.startswith("Error:")):]

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
    assert f"vox-10segments: fetched and verified against sha256 from the mirror -> {home / VOX}" in result.out
    assert listing(home) == sorted([VOX, hub.LOCK, hub.LOCK_GUARD])  # no temporary file left
    assert (home / VOX).read_bytes() == vox
    record = lock(home)["vox-10segments"]
    assert record["sha256"] == sha256(vox) and record["size"] == len(vox)
    assert record["source"] == f"mirror {server.url('/models')}"
    assert record["verified"] == "sha256 from the mirror"
    assert server.ranges(f"/models/{VOX}") == ["bytes=0-0"]  # the size probe, then a plain GET

    rows = {row["name"]: row for row in json.loads(copart("models", "list", "--json").out)}
    assert rows["vox-10segments"]["cached"] is True
    assert rows["vox-10segments"]["verified_against"] == "sha256 from the mirror"
    assert rows["vox-10segments"]["size"] == len(vox)
    assert rows["vox-5segments"]["cached"] is False and rows["vox-5segments"]["verified_against"] is None

    again = copart("models", "pull", "vox-10segments")
    assert again.code == 0 and "already in" in again.out

    good = copart("models", "verify")
    assert good.code == 0, good.err
    assert "vox-10segments: ok, sha256" in good.out
    assert "verified when fetched against: sha256 from the mirror" in good.out

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
    assert "refused because its sha256" in result.err and "not the source's sha256 0000000000000000" in result.err
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
    mirror_clause = result.error_lines[1]
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
    assert listing(home) == sorted([VOX, hub.LOCK, hub.LOCK_GUARD])


# ---------------------------------------------------------------------------------------------
# 5. Unreachable sources


@pytest.mark.parametrize("how", ["404", "connection-refused"])
def test_every_source_failing_is_said_in_a_few_short_lines(home, server, copart, monkeypatch, how):
    if how == "404":
        url = mirror_env(monkeypatch, server)  # serves no file
        reason = f"{url}/{VOX} answered 404"
    else:
        url = f"http://127.0.0.1:{free_port()}/models"
        monkeypatch.setenv("COPART_MIRROR", url)
        reason = "cannot be reached"
    result = copart("models", "pull", "vox-10segments")
    assert result.code != 0
    assert result.error == f"Error: vox-10segments ({VOX}) could not be fetched:"
    lines = result.error_lines[1:]
    assert lines[0].startswith(f"  the mirror COPART_MIRROR={url}: ") and reason in lines[0]
    assert lines[1] == (f"  Yandex Disk ({AUTHORS_YANDEX}): Yandex's API (for {VOX}) answered 404 Not Found.")
    assert lines[2].startswith("  Google Drive (https://drive.google.com/drive/folders/")
    assert "cannot be listed" in lines[2]
    assert lines[3] == (f"  Get it from: {url}/{VOX} or {AUTHORS_YANDEX} or "
                        f"https://drive.google.com/drive/folders/1SsBifjoM_qO0iFzb8wLlsz_4qW2j8dZe")
    assert lines[4] == f"  Put it in:   {home} (created for you)"
    assert lines[5].startswith("  Or set COPART_MIRROR to a server that holds the files")
    assert len(lines) == 6 and "%2F" not in result.err  # no URL-encoded API call
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
    assert listing(home) == sorted([VOX, hub.LOCK, hub.LOCK_GUARD])


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
    assert f"Yandex Disk ({AUTHORS_YANDEX}): the file was refused because its {check} " in result.err
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
    assert listing(home) == sorted([VOX, hub.LOCK, hub.LOCK_GUARD])


@pytest.mark.parametrize("fail", ["quota", "cut"])
def test_google_drive_failing_leaves_nothing(home, copart, drive, vox, fail):
    drive.listable = True
    drive.files = {"id-vox10": (VOX, vox)}
    drive.fail = fail
    result = copart("models", "pull", "vox-10segments")
    assert result.code != 0
    drive_clause = result.error_lines[2]  # after Yandex's (no mirror set)
    if fail == "quota":
        assert drive_clause.startswith("  Google Drive (")
        assert "download quota for this file is used up" in drive_clause
    else:
        assert "Google Drive's transfer failed" in drive_clause
    assert "COPART_MIRROR=" not in result.err  # no mirror set
    assert f"  Get it from: {AUTHORS_YANDEX} or https://drive.google.com/drive/folders/" in result.err
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
    by = "COPART_OFFLINE=1" if how == "env" else "--offline"
    assert result.error == f"Error: vox-10segments ({VOX}) is not in the cache and {by} forbids downloading it."
    assert f"  Get it from: {url}/{VOX} or {AUTHORS_YANDEX} or https://drive.google.com/drive/folders/" in result.err
    assert f"  Put it in:   {home} (created for you)" in result.err
    assert server.seen == [] and drive.calls == []
    assert home.is_dir() and listing(home) == []  # the folder is there for the file, and nothing else


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
           f"{known[:16]}…" in result.err
    assert listing(home) == []


# ---------------------------------------------------------------------------------------------
# 11. A mirror's checksum file: 404 means it has none; any other failure is the mirror failing


@pytest.mark.parametrize("how", ["500", "not-a-digest", "timeout"])
def test_a_checksum_file_that_fails_to_arrive_is_the_mirror_failing(home, server, copart, vox, monkeypatch, how):
    url = mirror_env(monkeypatch, server)
    server.mirror(VOX, vox, sha256(vox))
    checksum = f"/models/{VOX}.sha256"
    if how == "500":
        server.special[checksum] = (500, b"internal error\n")
        clause = f"its checksum file could not be had ({url}/{VOX}.sha256 answered 500"
    elif how == "not-a-digest":
        server.files[checksum] = b"<html>Sign in to continue</html>\n"
        clause = f"{url}/{VOX}.sha256 holds no sha256"
    else:
        monkeypatch.setattr(hub, "CHECKSUM_TIMEOUT", 0.5)
        server.special[checksum] = ("slow", 3)
        clause = f"its checksum file could not be had ({url}/{VOX}.sha256 cannot be reached (timed out))"
    failed = copart("models", "pull", "vox-10segments")  # no other source has it: the pull fails
    assert failed.code != 0
    mirror = failed.error_lines[1]
    assert mirror.startswith(f"  the mirror COPART_MIRROR={url}: ") and clause in mirror, failed.err
    assert not server.ranges(f"/models/{VOX}") and listing(home) == []  # the file itself was never fetched

    server.yandex_file(VOX, vox)  # another source has it: that one is used
    result = copart("models", "pull", "vox-10segments")
    assert result.code == 0, result.err
    assert lock(home)["vox-10segments"]["source"] == f"the authors' Yandex Disk ({AUTHORS_YANDEX})"
    assert lock(home)["vox-10segments"]["verified"] == "md5+sha256 from Yandex"


def test_a_checksum_file_that_answers_404_means_the_mirror_has_none(home, server, copart, vox, monkeypatch):
    mirror_env(monkeypatch, server)
    server.mirror(VOX, vox)  # no .sha256 beside it
    result = copart("models", "pull", "vox-10segments")
    assert result.code == 0, result.err
    assert lock(home)["vox-10segments"]["verified"] == f"structure only (the mirror has no {VOX}.sha256)"
    assert f"verified against structure only (the mirror has no {VOX}.sha256)" in result.out


# ---------------------------------------------------------------------------------------------
# 12. What each file was verified against: in the lock file and in copart models list


def test_the_lock_file_and_list_say_what_each_file_was_verified_against(home, server, copart, drive, vox,
                                                                         monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # the table on one line a row
    drive.listable = True
    drive.files = {"id-vox10": (VOX, vox)}
    assert copart("models", "pull", "vox-10segments").code == 0
    assert lock(home)["vox-10segments"]["verified"] == "structure only (Google Drive gives no checksum)"
    rows = {row["name"]: row for row in json.loads(copart("models", "list", "--json").out)}
    assert rows["vox-10segments"]["verified_against"] == "structure only (Google Drive gives no checksum)"
    table = copart("models", "list").out
    row = next(line for line in table.splitlines() if "vox-10segments" in line)
    assert "structure only (Google Drive gives no checksum)" in row, table
    assert "verified against" in table and "verified" not in table.replace("verified against", "")

    assert copart("models", "remove", "vox-10segments").code == 0
    drive.listable = False
    server.yandex_file(VOX, vox)
    assert copart("models", "pull", "vox-10segments").code == 0
    rows = {row["name"]: row for row in json.loads(copart("models", "list", "--json").out)}
    assert rows["vox-10segments"]["verified_against"] == "md5+sha256 from Yandex"
    shutil.copy(home / VOX, home / "vox-5segments.pth.tar")  # a file copart did not fetch
    rows = {row["name"]: row for row in json.loads(copart("models", "list", "--json").out)}
    assert rows["vox-5segments"]["cached"] is True
    assert rows["vox-5segments"]["verified_against"] == "nothing (not fetched by copart)"


# ---------------------------------------------------------------------------------------------
# 13. Addresses a remote answer gives: only http(s), and http only where the configured one is


def test_an_api_answer_with_a_file_url_is_never_opened(home, server, copart, vox, tmp_path):
    local = tmp_path / "elsewhere" / VOX
    local.parent.mkdir()
    local.write_bytes(vox)  # a good file, with Yandex's checksums: only the address is wrong
    server.yandex_file(VOX, vox, file=local.as_uri())
    result = copart("models", "pull", "vox-10segments")
    assert result.code != 0
    assert f"Yandex's API (for {VOX}) gave the address {local.as_uri()}, which copart refuses" in result.err
    assert listing(home) == []


@pytest.mark.parametrize("scheme", ["ftp", "file"])
def test_a_redirect_to_another_scheme_is_refused(home, server, copart, vox, monkeypatch, tmp_path, scheme):
    mirror_env(monkeypatch, server)
    local = tmp_path / VOX
    local.write_bytes(vox)
    server.mirror(VOX, vox)
    target = local.as_uri() if scheme == "file" else f"ftp://127.0.0.1:{free_port()}/{VOX}"
    server.special[f"/models/{VOX}"] = ("redirect", target)
    result = copart("models", "pull", "vox-10segments")
    assert result.code != 0
    mirror = result.error_lines[1]
    if scheme == "ftp":  # urllib itself would follow it
        assert f"a redirect from {server.url('/models/' + VOX)} gave the address {target}, which copart " \
               f"refuses (copart opens only http(s) addresses)" in mirror, mirror
    else:  # urllib refuses this one itself
        assert f"answered 302 Found - Redirection to url '{target}' is not allowed" in mirror, mirror
    assert listing(home) == []


def test_only_https_and_configured_http_addresses_are_opened():
    hub.check_scheme("https://downloader.disk.yandex.ru/x", allow_http=False)
    hub.check_scheme("http://127.0.0.1:8000/x", allow_http=True)
    for url, allow_http in (("http://downloader.disk.yandex.ru/x", False), ("file:///etc/passwd", True),
                            ("ftp://example.org/x", True), ("data:,x", True), ("FILE:///etc/passwd", True)):
        with pytest.raises(hub.SourceFailed, match="which copart refuses"):
            hub.check_scheme(url, allow_http)


# ---------------------------------------------------------------------------------------------
# 14. A resumed transfer must continue where the partial file ends


def test_a_resumed_transfer_that_starts_elsewhere_starts_over(home, server, copart, vox, monkeypatch):
    mirror_env(monkeypatch, server)
    path = f"/models/{VOX}"
    server.mirror(VOX, vox, sha256(vox))
    server.modes[path] = ("cut", len(vox) // 2)
    server.special[path] = ("shift", 4096)  # its answer to "bytes=N-" starts at N - 4096
    result = copart("models", "pull", "vox-10segments")
    assert result.code == 0, result.err
    assert (home / VOX).read_bytes() == vox
    gets = [s.range for s in server.seen if s.path == path and s.method == "GET"]
    resumed = next(i for i, r in enumerate(gets) if r and r != "bytes=0-0")
    assert None in gets[resumed + 1:]  # after the answer that started elsewhere: a plain GET of the whole file


# ---------------------------------------------------------------------------------------------
# 15. Concurrent pulls: every record reaches the lock file


WRITER = """
import sys
from copart import hub
me = sys.argv[1]
for i in range(int(sys.argv[2])):
    hub._update_lock(f"{me}-{i}", {"file": f"{me}-{i}.pth", "sha256": "0" * 64, "size": i, "source": "test",
                                   "verified": "test"})
"""


def test_concurrent_pulls_lose_no_record_of_the_lock_file(tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, COPART_HOME=str(tmp_path / "home"))
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, f"p{n}", "30"], env=env) for n in range(6)]
    assert all(w.wait(timeout=240) == 0 for w in writers)
    records = lock(tmp_path / "home")
    assert sorted(records) == sorted(f"p{n}-{i}" for n in range(6) for i in range(30))
    assert listing(tmp_path / "home") == sorted([hub.LOCK, hub.LOCK_GUARD])  # no temporary file left


# ---------------------------------------------------------------------------------------------
# 16. The command line: every name tried; an empty cache is not "verified"; --offline anywhere


def test_pull_tries_every_name_and_fails_if_any_failed(home, server, copart, vox, monkeypatch):
    url = mirror_env(monkeypatch, server)
    server.mirror(VOX, vox, sha256(vox))
    result = copart("models", "pull", "no-such-model", "vox-5segments", "vox-10segments")
    assert result.code != 0
    assert (home / VOX).read_bytes() == vox  # tried, after the two that failed
    assert f"vox-10segments: fetched and verified against sha256 from the mirror -> {home / VOX}" in result.out
    failed = [line for line in result.err.splitlines() if line.startswith("Failed: ")]
    assert len(failed) == 2, result.err
    assert failed[0].startswith("Failed: No model named 'no-such-model'")
    assert failed[1] == "Failed: vox-5segments (vox-5segments.pth.tar) could not be fetched:"
    assert f"  the mirror COPART_MIRROR={url}: {url}/vox-5segments.pth.tar answered 404 Not Found." in result.err
    assert result.error == ("Error: 2 of 3 models could not be fetched (no-such-model, vox-5segments; each said "
                            "why above); the other 1 are in the cache.")


def test_verify_on_an_empty_cache_says_nothing_is_installed(home, copart, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    result = copart("models", "verify")
    assert result.code != 0
    assert result.error.startswith(f"Error: Nothing to verify: no model is installed in the cache ({home}")
    assert "copart models pull NAME..." in result.error


@pytest.mark.parametrize("args", [
    ["models", "pull", "vox-10segments", "--offline"],
    ["models", "--offline", "pull", "vox-10segments"],
    ["--offline", "models", "pull", "vox-10segments"],
])
def test_offline_is_accepted_anywhere_and_named_as_given(home, server, copart, monkeypatch, args):
    mirror_env(monkeypatch, server)
    result = copart(*args)
    assert result.code != 0
    assert result.error == f"Error: vox-10segments ({VOX}) is not in the cache and --offline forbids downloading it."
    assert server.seen == []
    assert hub.OFFLINE_FLAG is False  # as it was, after the command


def test_offline_after_the_input_of_segment_and_info(home, copart, carphone, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    result = copart("segment", carphone, "-o", tmp_path / "o.mp4", "--offline")
    assert result.code != 0
    assert result.error == ("Error: vox-5segments (vox-5segments.pth.tar) is not in the cache and --offline forbids "
                            "downloading it.")
    assert not (tmp_path / "o.mp4").exists()
    info = copart("info", carphone, "--offline")
    assert "No such option" not in info.err and "is not a PyTorch checkpoint" in info.err


def test_the_offline_message_says_it_in_a_few_short_lines(home, copart, carphone, astronaut, tmp_path, monkeypatch):
    """Which file, the pages a person opens, which folder (created), how to prepare a machine, and
    the face detector the same run needs too."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("COPART_OFFLINE", "1")
    assert not home.exists()
    result = copart("swap", "--parts", "hair", carphone, astronaut, "-o", tmp_path / "o.mp4")
    assert result.code != 0
    lines = result.err.rstrip("\n").split("\n")
    assert lines == [
        "Error: vox-5segments (vox-5segments.pth.tar) is not in the cache and COPART_OFFLINE=1 forbids downloading it.",
        f"  Get it from: {AUTHORS_YANDEX} or https://drive.google.com/drive/folders/1SsBifjoM_qO0iFzb8wLlsz_4qW2j8dZe",
        f"  Put it in:   {home} (created for you)",
        "  Or run copart models pull vox-5segments s3fd on a machine with internet and copy the folders here,",
        "  or set COPART_MIRROR to a server that holds the files.",
        (f"  The same run also uses s3fd (face detector (face-alignment S3FD)), not in "
         f"{tmp_path / 'torch' / 'hub' / 'checkpoints'} either:"),
        ("  without it faces are found with OpenCV's Haar cascade (no download, less accurate); --no-crop needs no "
         "detector."),
    ], result.err
    short = [line.replace(str(home), "~").replace(str(tmp_path / "torch"), "~") for line in lines]
    assert all(len(line) <= 125 for line in short), [len(line) for line in short]
    assert "%2F" not in result.err and "cloud-api" not in result.err
    assert home.is_dir() and listing(home) == []


# ---------------------------------------------------------------------------------------------
# 17. VGG-19, S3FD and 2DFAN4 come through the hub (catalog checks, lock file, progress bar)


def patched_catalog(monkeypatch, **changes) -> None:
    """The catalog with some entries' fields changed (a test file's real sha256 prefix in its name)."""
    import copy

    data = hub._catalog_data()
    for name, fields in changes.items():
        data["models"][name].update(fields)
    monkeypatch.setattr(hub, "_catalog_data", lambda: copy.deepcopy(data))


@pytest.fixture
def torch_hub(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory) -> dict:
    """Random weights in the layouts of torchvision's VGG-19 (features), face-alignment's S3FD and
    a small state dict standing in for 2DFAN4: name -> bytes."""
    from face_alignment.detection.sfd.net_s3fd import s3fd

    from copart.models.losses import Vgg19

    folder = tmp_path_factory.mktemp("weights")
    out = {}
    for name, state in (("vgg19", {f"features.{k}": v for k, v in Vgg19().features.state_dict().items()}),
                        ("s3fd", s3fd().state_dict()), ("2dfan4", {"conv1.weight": torch.zeros(4, 3, 3, 3)})):
        torch.save(state, folder / name)
        out[name] = (folder / name).read_bytes()
    return out


def with_prefixes(monkeypatch, files: dict) -> dict:
    """Catalog entries named as their publishers do (``name-<sha256 prefix>.ext``), for these files."""
    names = {}
    for name, data in files.items():
        prefix = sha256(data)[:10]
        stem, ext = {"vgg19": ("vgg19", ".pth"), "s3fd": ("s3fd", ".pth"), "2dfan4": ("2DFAN4", ".pth.tar")}[name]
        names[name] = f"{stem}-{prefix}{ext}"
    patched_catalog(monkeypatch, **{n: {"file": names[n], "sha256_prefix": sha256(files[n])[:10]} for n in files})
    return names


def test_vgg19_s3fd_and_2dfan4_are_refused_when_their_name_prefix_is_wrong(home, server, copart, monkeypatch,
                                                                              torch_hub, weight_files):
    mirror_env(monkeypatch, server)
    for name in ("vgg19", "s3fd", "2dfan4"):
        server.mirror(hub.entry(name).file, weight_files[name])
    result = copart("models", "pull", "vgg19", "s3fd", "2dfan4")
    assert result.code != 0
    for name, prefix in (("vgg19", "dcbb9e9d"), ("s3fd", "619a316812"), ("2dfan4", "11f355bf06")):
        assert f"does not start with {prefix}, as its file name says it must" in result.err, result.err
    assert listing(torch_hub) == []


def test_pull_vgg19_s3fd_2dfan4_prepares_a_machine_for_offline_use(home, server, copart, monkeypatch, torch_hub,
                                                                   weight_files, capsys):
    from copart.media import faces
    from copart.models.losses import Objective

    mirror_env(monkeypatch, server)
    names = with_prefixes(monkeypatch, weight_files)
    for name, data in weight_files.items():
        server.mirror(names[name], data, sha256(data))
    result = copart("models", "pull", "vgg19", "s3fd", "2dfan4")
    assert result.code == 0, result.err
    for name in ("vgg19", "s3fd", "2dfan4"):
        assert (torch_hub / names[name]).read_bytes() == weight_files[name]
        assert f"Fetching {name} ({names[name]}" in result.err  # the line, then the bar
        prefix = sha256(weight_files[name])[:10]
        assert lock(home)[name]["verified"] == f"sha256 from the mirror, sha256 prefix {prefix} pinned in the file name"
    assert listing(torch_hub) == sorted(names.values())

    monkeypatch.setenv("COPART_OFFLINE", "1")  # now offline: the training loss and the detector find them
    objective = Objective({"loss": "perceptual", "scales": [1]}, vgg_weights=hub.vgg19_weights)
    assert objective.reconstruction.vgg.features[0].weight.abs().sum() > 0
    notices = []
    assert isinstance(faces.make_detector("auto", "cpu", notices), faces.S3FDDetector) and notices == []
    assert copart("models", "verify").code == 0


def test_s3fd_from_its_own_url_with_the_progress_bar(home, server, monkeypatch, torch_hub, weight_files, capsys):
    """No mirror: the file's own URL (here on the loopback server), through the hub's transfer."""
    from copart.media import faces

    names = with_prefixes(monkeypatch, {"s3fd": weight_files["s3fd"]})
    server.files[f"/fan/{names['s3fd']}"] = weight_files["s3fd"]
    patched_catalog(monkeypatch, s3fd={"file": names["s3fd"], "sha256_prefix": sha256(weight_files["s3fd"])[:10],
                                       "url": server.url(f"/fan/{names['s3fd']}")})
    seen = []
    monkeypatch.setattr(hub, "DEFAULT_DOWNLOADS", hub.Downloads(say=seen.append, bar=None))
    assert isinstance(faces.make_detector("auto", "cpu", []), faces.S3FDDetector)
    assert seen == [(f"Fetching s3fd ({names['s3fd']}, unknown) from {server.url('/fan/' + names['s3fd'])} into "
                     f"{torch_hub}")]
    assert lock(home)["s3fd"]["source"] == server.url(f"/fan/{names['s3fd']}")
    prefix = sha256(weight_files["s3fd"])[:10]
    assert lock(home)["s3fd"]["verified"] == f"sha256 prefix {prefix} pinned in the file name"


def test_eval_fetches_face_alignments_weights_through_the_hub(home, server, monkeypatch, torch_hub, weight_files,
                                                              astronaut):
    """copart eval without landmark files: 2DFAN4 and S3FD come through the hub; face-alignment then
    finds 2DFAN4 where it looks and gets S3FD's path (face-alignment itself is a stand-in here)."""
    import face_alignment
    import face_alignment.api
    import numpy as np
    from face_alignment.utils import load_file_from_url

    from copart.evaluation import formats

    mirror_env(monkeypatch, server)
    names = with_prefixes(monkeypatch, {k: weight_files[k] for k in ("s3fd", "2dfan4")})
    for name in ("s3fd", "2dfan4"):
        server.mirror(names[name], weight_files[name], sha256(weight_files[name]))
    monkeypatch.setitem(face_alignment.api.models_urls, "2DFAN-4", f"https://example.org/{names['2dfan4']}")
    made = []

    class Aligner:
        def __init__(self, kind, device, flip_input, face_detector_kwargs):
            # what face-alignment does for its landmark model: its own URL's file name in the hub cache
            made.append((load_file_from_url(face_alignment.api.models_urls["2DFAN-4"]), face_detector_kwargs))

        def get_landmarks_from_image(self, image):
            return [np.ones((68, 3))]

    monkeypatch.setattr(face_alignment, "FaceAlignment", Aligner)
    files = [Path(astronaut)]
    values = formats.face_alignment_landmarks(files, home / "landmarks.npz", "cpu")
    assert values.shape == (1, 68, 2)
    assert made == [(str(torch_hub / names["2dfan4"]), {"path_to_detector": str(torch_hub / names["s3fd"])})]
    assert {"s3fd", "2dfan4"} <= set(lock(home))


def test_eval_offline_names_both_face_alignment_files(home, monkeypatch, torch_hub, tmp_path):
    from copart.evaluation import formats
    from copart.models.errors import CopartError

    monkeypatch.setenv("COPART_OFFLINE", "1")
    with pytest.raises(CopartError) as err:
        formats.face_alignment_landmarks([tmp_path / "a.png"], tmp_path / "l.npz", "cpu")
    text = str(err.value)
    assert text.startswith("These images have no landmark file, so face-alignment is to find them: 2dfan4 "
                           "(2DFAN4-11f355bf06.pth.tar) is not in the cache and COPART_OFFLINE=1 forbids")
    assert "copart models pull 2dfan4 s3fd" in text and "The same run also uses s3fd" in text
    assert f"  Put it in:   {torch_hub} (created for you)" in text and torch_hub.is_dir()
    assert text.endswith("or give landmarks as ROOT/<split>_landmarks.npz or .csv.")


def test_training_offline_without_vgg19_says_how_to_get_it(home, monkeypatch, torch_hub):
    from copart.models.errors import CopartError
    from copart.models.losses import Objective

    monkeypatch.setenv("COPART_OFFLINE", "1")
    with pytest.raises(CopartError) as err:
        Objective({"loss": "perceptual"}, vgg_weights=hub.vgg19_weights)
    assert err.value.topic == "pixel-loss"
    text = str(err.value)
    assert text.startswith("The perceptual loss needs VGG-19's weights: vgg19 (vgg19-dcbb9e9d.pth) is not in the cache")
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in text and "copart models pull vgg19" in text
    assert text.endswith("or train with the pixel-pyramid loss instead (train_params.loss: pixel).")
    assert Objective({"loss": "pixel"}, vgg_weights=hub.vgg19_weights) is not None  # the pixel loss fetches nothing


def test_the_model_core_never_downloads_nor_reads_copart_offline():
    """copart.models is PyTorch and files only: the application (copart.hub) fetches and decides offline."""
    core = Path(__file__).parent.parent / "models"
    found = [f"{path.name}: {word}" for path in sorted(core.glob("*.py")) for word in
             ("COPART_OFFLINE", "download_url_to_file", "load_state_dict_from_url", "urllib", "urlopen", "requests",
              "gdown", "socket") if word in path.read_text()]
    assert found == []


def test_the_offline_flag_of_app_called_directly_ends_with_the_command(home):
    """typer's runner calls the app itself (not main): --offline holds for that command only."""
    from typer.testing import CliRunner

    from copart.app import app

    result = CliRunner().invoke(app, ["--offline", "models", "pull", "vox-10segments"])
    assert result.exit_code != 0 and "--offline forbids downloading it" in str(result.exception)
    assert hub.OFFLINE_FLAG is False and "COPART_OFFLINE" not in os.environ  # the home fixture unset it
