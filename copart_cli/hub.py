"""Published models by name: the catalog (``copart/presets/models.json``), the cache
(``$COPART_HOME``, default ``~/.cache/copart``; face-alignment's files in PyTorch's hub cache,
where face-alignment looks), downloads and their verification.

A pull tries, in order: ``$COPART_MIRROR`` (a plain HTTP(S) folder: ``URL/FILE`` and, when
present, ``URL/FILE.sha256``), the authors' Yandex Disk folder (Yandex's public-resources API
gives size, md5 and sha256), the authors' Google Drive folder (through gdown), or for
face-alignment's files their own URL. A transfer goes to a temporary file in the cache folder,
resumes with an HTTP Range request when cut, and gets its final name only after every check
passed: size and checksums wherever known, then a ``weights_only`` load whose keys and shapes
must be the preset's. Each verified file's sha256 is kept in ``models.lock.json``.
``COPART_OFFLINE=1`` never touches the network.
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Optional

from copart import presets
from copart.models.errors import CopartError, first_line
from copart.models.files import atomic_path, check_creatable, offline

YANDEX_API = "https://cloud-api.yandex.net/v1/disk/public/resources"
LOCK = "models.lock.json"
CHUNK = 1 << 20
ATTEMPTS = 4  # a cut transfer resumes this many times

# ``progress(done_bytes, total_bytes or None)``; ``say(line)``.
Progress = Callable[[int, Optional[int]], None]


@dataclass
class Downloads:
    """How a pull reports: one line saying what, how big and where; then byte progress. ``bar``
    is a context manager factory giving a :data:`Progress` for one transfer."""

    say: Callable[[str], None] = lambda text: None
    bar: Callable[[str], object] = None  # type: ignore[assignment]


@dataclass
class Entry:
    """One model of the catalog."""

    name: str
    file: str
    kind: str  # part-swap, fomm or face-alignment
    purpose: str
    k: Optional[int] = None
    preset: Optional[str] = None
    folder: Optional[str] = None  # a key of the catalog's "folders"
    url: Optional[str] = None  # face-alignment's own URL
    sha256: Optional[str] = None
    approx_size: Optional[int] = None
    remote_prefix: Optional[str] = None  # the authors' name for it starts so (their Tai-Chi file)
    sources: dict = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        if self.kind == "face-alignment":
            import torch

            return (Path(torch.hub.get_dir()) / "checkpoints").expanduser()
        return home()

    @property
    def path(self) -> Path:
        return self.directory / self.file

    @property
    def hash_prefix(self) -> Optional[str]:
        """torch.hub's convention: ``name-<first sha256 digits>.ext``."""
        match = re.search(r"-([0-9a-f]{8,})\.", self.file)
        return match.group(1) if self.kind == "face-alignment" and match else None


def home() -> Path:
    """The model cache: ``$COPART_HOME``, default ``~/.cache/copart``."""
    return Path(os.environ.get("COPART_HOME") or Path.home() / ".cache" / "copart").expanduser()


def _catalog_data() -> dict:
    return json.loads(resources.files(presets).joinpath("models.json").read_text())


def catalog() -> dict[str, Entry]:
    """Every model copart knows, by name."""
    data = _catalog_data()
    out = {}
    for name, fields in data["models"].items():
        entry = Entry(name=name, **fields)
        if entry.folder:
            entry.sources = data["folders"][entry.folder]
        out[name] = entry
    return out


def entry(name: str) -> Entry:
    """A model by its name, its file name or stem, or its preset's name."""
    known = catalog()
    for e in known.values():
        if name in (e.name, e.file, Path(e.file).stem, e.file.split(".")[0], e.preset):
            return e
    raise CopartError(f"No model named '{name}'; copart knows {', '.join(known)} (copart models list).")


def for_preset(preset: str) -> Optional[Entry]:
    return next((e for e in catalog().values() if e.preset == preset), None)


def _lock() -> dict:
    try:
        return json.loads((home() / LOCK).read_text())
    except (OSError, ValueError):
        return {}


def _write_lock(data: dict) -> None:
    home().mkdir(parents=True, exist_ok=True)
    with atomic_path(home() / LOCK) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def recorded(e: Entry) -> Optional[dict]:
    """What the lock file says of a verified file: ``{"sha256", "size", "source"}``."""
    return _lock().get(e.name)


def digests_of(path: Path) -> tuple[str, str]:
    """sha256 and md5 of a file, in one streaming pass."""
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            sha256.update(block)
            md5.update(block)
    return sha256.hexdigest(), md5.hexdigest()


def human_size(size: Optional[int]) -> str:
    if not size:
        return "unknown"
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


# ---------------------------------------------------------------------------------------------
# Checks


class CheckFailed(Exception):
    """A downloaded file failed a check: the message names which."""


def check_file(e: Entry, path: Path, size: Optional[int] = None, sha256: Optional[str] = None,
               md5: Optional[str] = None, by: str = "the source") -> str:
    """Every check there is for ``path`` as ``e`` (``size`` and ``sha256`` as ``by`` gives them);
    returns its sha256. Raises :class:`CheckFailed`."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        cut = " (a cut transfer)" if by == "the source" else ""
        raise CheckFailed(f"its size is {actual:,} bytes where {by} says {size:,}{cut}")
    digest, md5_digest = digests_of(path)
    for wanted, what in ((sha256, f"{by}'s sha256"), (e.sha256, "the sha256 copart knows")):
        if wanted and digest != wanted.lower():
            raise CheckFailed(f"its sha256 {digest[:16]}… is not {what} {wanted[:16]}…")
    if md5 and md5_digest != md5.lower():
        raise CheckFailed(f"its md5 {md5_digest} is not the source's {md5}")
    if e.hash_prefix and not digest.startswith(e.hash_prefix):
        raise CheckFailed(f"its sha256 does not start with {e.hash_prefix}, as its file name says it must")
    _check_structure(e, path)
    return digest


def _check_structure(e: Entry, path: Path) -> None:
    """A weights_only load whose keys and shapes are the preset's (a FOMM file: its layout)."""
    if e.kind == "face-alignment":
        return  # face-alignment loads these itself; the hash in the name stands for them
    from copart.models.checkpoint import compare_shapes, detect_layout, expected_shapes, read_checkpoint, shapes_of
    from copart.models.config import ModelConfig

    try:
        data = read_checkpoint(path)
        layout = detect_layout(data, e.file)
    except CopartError as exc:
        raise CheckFailed(str(exc).replace(f"Checkpoint {path}", "it").replace(str(path), "it").rstrip(".")) from None
    if e.kind == "fomm":
        if layout != "fomm":
            raise CheckFailed(f"it is a {layout} checkpoint, not a First Order Motion Model one")
        return
    if layout != "authors":
        raise CheckFailed(f"it is a {layout} checkpoint, not one in the authors' layout")
    wrong = compare_shapes(expected_shapes(ModelConfig.from_dict(presets.load(e.preset), e.preset)), shapes_of(data))
    if wrong:
        raise CheckFailed(f"its tensors are not those of {e.preset} ({wrong[0]})")


# ---------------------------------------------------------------------------------------------
# Sources: each gives (description, size, sha256, md5, fetch(tmp, progress)) or raises SourceFailed


class SourceFailed(Exception):
    """A source cannot give the file: the message says why, in a clause."""


@dataclass
class Offer:
    source: str  # for messages and the lock file
    url: str
    size: Optional[int] = None
    sha256: Optional[str] = None
    md5: Optional[str] = None
    fetch: Optional[Callable[[Path, Optional[Progress]], None]] = None  # default: HTTP with resume


def _open(url: str, headers: Optional[dict] = None, timeout: float = 30):
    request = urllib.request.Request(url, headers={"User-Agent": "copart", **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise SourceFailed(f"{url} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # HTTPException: a garbled answer
        reason = getattr(exc, "reason", exc)
        raise SourceFailed(f"{url} cannot be reached ({first_line(reason) if isinstance(reason, BaseException) else reason})") from None


def http_fetch(url: str, tmp: Path, size: Optional[int], progress: Optional[Progress]) -> None:
    """Download ``url`` into ``tmp``; a cut transfer resumes with a Range request."""
    done = 0
    tmp.write_bytes(b"")
    for attempt in range(ATTEMPTS):
        headers = {"Range": f"bytes={done}-"} if done else {}
        try:
            response = _open(url, headers)
        except SourceFailed as exc:
            if not done:
                raise
            of = f" of {size:,}" if size else ""
            raise SourceFailed(f"the transfer from {url} stopped at {done:,}{of} bytes and cannot be resumed "
                               f"({exc})") from None
        with response:
            if done and response.status != 206:  # the server ignored the range: start over
                done = 0
                tmp.write_bytes(b"")
            total = size
            length = response.headers.get("Content-Length")
            if total is None and length is not None:
                total = done + int(length)
            cut = None
            with open(tmp, "ab") as out:  # a local write error (a full disk) is not a cut transfer
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
                        cut = exc
                        break
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
            if cut is not None:
                if attempt == ATTEMPTS - 1:
                    raise SourceFailed(f"the transfer from {url} was cut ({first_line(cut)})") from None
                continue
            if total is not None and done < total:
                if attempt == ATTEMPTS - 1:
                    raise SourceFailed(f"the transfer from {url} stopped at {done:,} of {total:,} bytes")
                continue  # cut: ask for the rest
            return


def _mirror(e: Entry) -> Offer:
    base = os.environ["COPART_MIRROR"].rstrip("/")
    url = f"{base}/{urllib.parse.quote(e.file)}"
    sha256 = None
    try:
        with _open(f"{url}.sha256", timeout=15) as response:
            text = response.read(4096).decode("ascii", "replace").split()
    except (SourceFailed, OSError, http.client.HTTPException):
        text = None  # no checksum file (404, or 403 where a bucket hides missing keys): the file alone
    if text is not None:
        sha256 = text[0].lower() if text and re.fullmatch(r"[0-9a-fA-F]{64}", text[0]) else None
        if sha256 is None:
            raise SourceFailed(f"{url}.sha256 holds no sha256")
    with _open(url, {"Range": "bytes=0-0"}) as response:  # is it there, and how big
        size = None
        match = re.search(r"/(\d+)$", response.headers.get("Content-Range", ""))
        if match:
            size = int(match.group(1))
        elif response.status == 200 and response.headers.get("Content-Length"):
            size = int(response.headers["Content-Length"])
    return Offer(f"mirror {base}", url, size, sha256)


def _yandex(e: Entry) -> Offer:
    api = os.environ.get("COPART_YANDEX_API", YANDEX_API)
    public = e.sources["yandex"]
    name = e.file
    if e.remote_prefix:  # the authors' own name: find it in the folder's listing
        query = urllib.parse.urlencode({"public_key": public, "limit": 1000})
        with _open(f"{api}?{query}") as response:
            items = json.load(response).get("_embedded", {}).get("items", [])
        names = [i["name"] for i in items if i.get("type") == "file" and i["name"].startswith(e.remote_prefix)]
        if not names:
            raise SourceFailed(f"the Yandex Disk folder {public} holds no file starting with {e.remote_prefix}")
        name = sorted(names)[0]
    query = urllib.parse.urlencode({"public_key": public, "path": f"/{name}"})
    with _open(f"{api}?{query}") as response:
        try:
            meta = json.load(response)
        except ValueError:
            raise SourceFailed(f"Yandex's API answered something that is not JSON for {name}") from None
    if not meta.get("file"):
        raise SourceFailed(f"Yandex's API gives no download link for {name}")
    return Offer(f"the authors' Yandex Disk ({public})", meta["file"], meta.get("size"), meta.get("sha256"),
                 meta.get("md5"))


def _short(exc: BaseException) -> str:
    """A requests/urllib3 connection error in a few words, anything else by its first line."""
    text = first_line(exc)
    if any(m in text for m in ("Max retries exceeded", "Failed to resolve", "NameResolutionError", "Connection refused")):
        return "drive.google.com cannot be reached"
    return text


QUOTA = ("Too many users have viewed or downloaded this file recently", "quota", "too many accesses",
         "Cannot retrieve the public link")


def _drive(e: Entry) -> Offer:
    try:
        import gdown
    except ImportError:
        raise SourceFailed("gdown is not installed (pip install gdown)") from None
    folder = e.sources["drive"]
    try:
        listing = gdown.download_folder(id=folder, skip_download=True, quiet=True)
    except Exception as exc:  # noqa: BLE001 - gdown raises many kinds; each becomes one clause
        raise SourceFailed(f"the Google Drive folder {folder} cannot be listed ({_short(exc)})") from None
    wanted = [f for f in listing or [] if Path(f.path).name == e.file
              or (e.remote_prefix and Path(f.path).name.startswith(e.remote_prefix))]
    if not wanted:
        raise SourceFailed(f"the Google Drive folder {folder} holds no {e.file}")
    file_id = wanted[0].id

    def fetch(tmp: Path, progress: Optional[Progress]) -> None:
        tmp.unlink()  # gdown writes the file itself (and would take an empty one there as done)
        try:
            got = gdown.download(id=file_id, output=str(tmp), quiet=True, resume=False)
        except Exception as exc:  # noqa: BLE001
            text = str(exc)
            if any(q.lower() in text.lower() for q in QUOTA):
                raise SourceFailed("Google Drive refuses it for now: its download quota for this file is used up "
                                   "(too many accesses)") from None
            raise SourceFailed(f"Google Drive's transfer failed ({_short(exc)})") from None
        finally:  # gdown's own partial file, whatever ended the transfer (Ctrl-C too)
            for partial in tmp.parent.glob(f"{glob.escape(tmp.name)}*.part"):
                partial.unlink(missing_ok=True)
        if not got or not tmp.is_file():
            raise SourceFailed("Google Drive gave no file")
        if progress is not None:
            progress(tmp.stat().st_size, tmp.stat().st_size)

    return Offer(f"the authors' Google Drive ({folder})", f"https://drive.google.com/uc?id={file_id}", fetch=fetch)


def _direct(e: Entry) -> Offer:
    """face-alignment's own URL, through torch.hub with its hash check on."""

    def fetch(tmp: Path, progress: Optional[Progress]) -> None:
        import torch

        try:
            torch.hub.download_url_to_file(e.url, str(tmp), hash_prefix=e.hash_prefix, progress=False)
        except RuntimeError as exc:  # torch.hub's hash check
            raise SourceFailed(f"the file from {e.url} fails torch.hub's hash check ({first_line(exc)})") from None
        except Exception as exc:  # noqa: BLE001 - any failure to fetch is one clause
            raise SourceFailed(f"{e.url} cannot be fetched ({first_line(exc)})") from None
        if progress is not None:
            progress(tmp.stat().st_size, tmp.stat().st_size)

    return Offer(e.url, e.url, fetch=fetch)


def sources(e: Entry) -> list[tuple[str, Callable[[Entry], Offer]]]:
    """The sources a pull tries, in order, with the name each is called by in messages."""
    out = []
    if os.environ.get("COPART_MIRROR"):
        out.append((f"the mirror COPART_MIRROR={os.environ['COPART_MIRROR']}", _mirror))
    if "yandex" in e.sources:
        out.append((f"Yandex Disk ({e.sources['yandex']})", _yandex))
    if "drive" in e.sources:
        out.append((f"Google Drive (https://drive.google.com/drive/folders/{e.sources['drive']})", _drive))
    if e.url:
        out.append((e.url, _direct))
    return out


def where_to_put(e: Entry) -> str:
    names = [name for name, _ in sources(e)] or ["its publisher"]
    return f"put {e.file} (from {' or '.join(names)}) in {e.directory}"


# ---------------------------------------------------------------------------------------------
# The commands' work


def is_cached(e: Entry) -> bool:
    return e.path.is_file()


def pull(e: Entry, downloads: Optional[Downloads] = None, force: bool = False) -> Path:
    """Fetch ``e`` into the cache (nothing to do when it is there, unless ``force``), verified;
    one sentence when no source can give a good file, and nothing left behind."""
    downloads = downloads or Downloads()
    if is_cached(e) and not force:
        return e.path
    if offline():
        raise CopartError(f"{e.name} is not in the cache and COPART_OFFLINE=1 forbids downloading it: "
                          f"{where_to_put(e)}.")
    check_creatable(e.directory)
    check_creatable(home())  # where the lock file goes
    created = not e.directory.exists()
    e.directory.mkdir(parents=True, exist_ok=True)
    failures = []
    for name, source in sources(e):
        try:
            offer = source(e)
        except SourceFailed as exc:
            failures.append(f"{name}: {exc}")
            continue
        except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException) as exc:
            failures.append(f"{name}: its answer could not be read ({first_line(exc)})")
            continue
        downloads.say(f"Fetching {e.name} ({e.file}, {human_size(offer.size or e.approx_size)}) from {offer.source} "
                      f"into {e.directory}")
        try:
            with atomic_path(e.path) as tmp:
                try:
                    with (downloads.bar(e.name) if downloads.bar else _Null()) as progress:
                        if offer.fetch is not None:
                            offer.fetch(tmp, progress)
                        else:
                            http_fetch(offer.url, tmp, offer.size, progress)
                    digest = check_file(e, tmp, offer.size, offer.sha256, offer.md5)
                except SourceFailed as exc:
                    failures.append(f"{name}: {exc}")
                    raise _Next() from None
                except CheckFailed as exc:
                    failures.append(f"{name}: the file was refused because {exc}")
                    raise _Next() from None
        except _Next:  # atomic_path has removed the temporary file
            continue
        lock = _lock()
        lock[e.name] = {"file": e.file, "sha256": digest, "size": e.path.stat().st_size, "source": offer.source}
        _write_lock(lock)
        return e.path
    if created and not any(e.directory.iterdir()):
        e.directory.rmdir()
    raise CopartError(f"{e.name} could not be fetched: " + "; ".join(failures) + f"; {where_to_put(e)}.")


class _Next(Exception):
    """Try the next source (raised out of atomic_path, which removes the temporary file)."""


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def verify(e: Entry) -> str:
    """Re-check a cached file against the lock file (and its structure); returns what was
    checked, or raises one sentence."""
    if not is_cached(e):
        raise CopartError(f"{e.name} is not in the cache ({e.path}); fetch it with copart models pull {e.name}.")
    record = recorded(e)
    try:
        digest = check_file(e, e.path, record.get("size") if record else None, record.get("sha256") if record else None,
                            by="the lock file")
    except CheckFailed as exc:
        raise CopartError(f"{e.path} fails its check: {exc}; remove it (copart models remove {e.name}) and pull "
                          f"it again.") from None
    if record is None:
        return f"{digest[:16]}… (not fetched by copart: no recorded checksum, structure checked)"
    return f"sha256 {digest[:16]}… as recorded"


def remove(e: Entry) -> bool:
    existed = e.path.is_file()
    if existed:
        e.path.unlink()
    lock = _lock()
    if lock.pop(e.name, None) is not None:
        _write_lock(lock)
    return existed


__all__ = ["Downloads", "Entry", "catalog", "entry", "for_preset", "home", "is_cached", "pull", "remove", "verify"]
