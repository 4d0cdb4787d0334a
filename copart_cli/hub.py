"""Published models by name: the catalog (``copart/presets/models.json``), the cache
(``$COPART_HOME``, default ``~/.cache/copart``; face-alignment's files and torchvision's VGG-19
in PyTorch's hub cache, where face-alignment and copart's perceptual loss look), downloads and
their verification. Every file copart downloads comes through here.

A pull tries, in order: ``$COPART_MIRROR`` (a plain HTTP(S) folder: ``URL/FILE`` and, when
present, ``URL/FILE.sha256``; a checksum file that answers 404 means the mirror has none, any
other failure to get it is the mirror failing), the authors' Yandex Disk folder (Yandex's
public-resources API gives size, md5 and sha256), the authors' Google Drive folder (through
gdown; it gives no checksum), or a file's own URL (face-alignment's, torchvision's: their names
carry a prefix of their sha256). Only https addresses are opened (http only where the configured
address is http), redirects included. A transfer goes to a temporary file in the cache folder,
resumes with an HTTP Range request when cut (where the answer's Content-Range starts at the end
of the partial file; else it starts over), and gets its final name only after every check
passed: size and checksums wherever known, then a ``weights_only`` load whose keys and shapes
must be the expected ones. Each file's sha256, and what it was verified against, is kept in
``models.lock.json`` (read-modify-written under an ``flock``, so that concurrent pulls lose no
record). ``COPART_OFFLINE=1`` (or ``copart --offline``) never touches the network.
"""

from __future__ import annotations

import contextlib
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
from copart.models.files import atomic_path, check_creatable

try:
    import fcntl
except ImportError:  # not POSIX: no inter-process lock around the lock file
    fcntl = None

YANDEX_API = "https://cloud-api.yandex.net/v1/disk/public/resources"
LOCK = "models.lock.json"
LOCK_GUARD = ".models.lock.json.flock"  # flock'ed around every read-modify-write of LOCK
HUB_KINDS = ("face-alignment", "torchvision")  # kept in PyTorch's hub cache, where their users look
CHUNK = 1 << 20
ATTEMPTS = 4  # a cut transfer resumes this many times
CHECKSUM_TIMEOUT = 15  # seconds for a mirror's FILE.sha256

# ``progress(done_bytes, total_bytes or None)``; ``say(line)``.
Progress = Callable[[int, Optional[int]], None]


@dataclass
class Downloads:
    """How a pull reports: one line saying what, how big and where; then byte progress. ``bar``
    is a context manager factory giving a :data:`Progress` for one transfer."""

    say: Callable[[str], None] = lambda text: None
    bar: Callable[[str], object] = None  # type: ignore[assignment]


# What a pull reports through when its caller gives nothing (the command line sets it once, so
# that a file fetched deep inside a command, e.g. the face detector's, shows its line and bar).
DEFAULT_DOWNLOADS: Optional[Downloads] = None
# Set by the command line when --offline was given (for messages that name what the user did).
OFFLINE_FLAG = False


def offline() -> bool:
    """``COPART_OFFLINE=1`` (any value but empty or 0) or ``copart --offline``: never touch the network."""
    return OFFLINE_FLAG or os.environ.get("COPART_OFFLINE", "") not in ("", "0")


def offline_by() -> str:
    """How the network was turned off, as the user did it: ``--offline`` or ``COPART_OFFLINE=...``."""
    if OFFLINE_FLAG:
        return "--offline"
    return f"COPART_OFFLINE={os.environ.get('COPART_OFFLINE', '1')}"


class NotCached(CopartError):
    """A model is needed, is not in the cache, and the network is off."""


class FetchFailed(CopartError):
    """No source gave a good file; ``reasons``: one clause per source."""

    def __init__(self, message: str, reasons: list[str], topic: Optional[str] = None):
        super().__init__(message, topic)
        self.reasons = reasons


@dataclass
class Entry:
    """One model of the catalog."""

    name: str
    file: str
    kind: str  # part-swap, fomm or face-alignment
    purpose: str
    k: Optional[int] = None
    by_k: bool = False  # --k K names it (copart.presets.for_k)
    preset: Optional[str] = None
    folder: Optional[str] = None  # a key of the catalog's "folders"
    url: Optional[str] = None  # the file's own URL (face-alignment's, torchvision's)
    page: Optional[str] = None  # the page a person opens to get it, where that is not ``url``
    sha256: Optional[str] = None  # pinned: known beforehand, independently of any source
    sha256_prefix: Optional[str] = None  # pinned in the publisher's file name (torch.hub's convention)
    approx_size: Optional[int] = None
    remote_prefix: Optional[str] = None  # the authors' name for it starts so (their Tai-Chi file)
    also: list = field(default_factory=list)  # models the same run uses too (named when offline)
    also_why: Optional[str] = None  # what happens without them
    sources: dict = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        if self.kind in HUB_KINDS:
            import torch

            return (Path(torch.hub.get_dir()) / "checkpoints").expanduser()
        return home()

    @property
    def path(self) -> Path:
        return self.directory / self.file

    @property
    def hash_prefix(self) -> Optional[str]:
        """The sha256 prefix its file name carries (``name-<first sha256 digits>.ext``), as the catalog pins it."""
        return self.sha256_prefix


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
    """The published model made with a preset (copart.presets.registry names it), or None."""
    named = presets.published(preset)
    return entry(named.model) if named is not None else None


def _lock() -> dict:
    try:
        return json.loads((home() / LOCK).read_text())
    except (OSError, ValueError):
        return {}


def _write_lock(data: dict) -> None:
    home().mkdir(parents=True, exist_ok=True)
    with atomic_path(home() / LOCK) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def _locked():
    """Hold an exclusive ``flock`` on the guard file beside the lock file (other copart processes
    wait): a read-modify-write inside loses no other process's record."""
    home().mkdir(parents=True, exist_ok=True)
    with open(home() / LOCK_GUARD, "a") as guard:
        if fcntl is not None:
            fcntl.flock(guard.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(guard.fileno(), fcntl.LOCK_UN)


def _update_lock(name: str, record: Optional[dict]) -> None:
    """Set (or with ``None`` drop) one model's record in the lock file, under the lock."""
    with _locked():
        data = _lock()
        if record is None:
            if data.pop(name, None) is None:
                return
        else:
            data[name] = record
        _write_lock(data)


def recorded(e: Entry) -> Optional[dict]:
    """What the lock file says of a fetched file: ``{"file", "sha256", "size", "source", "verified"}``
    (``verified``: what it was checked against when fetched)."""
    return _lock().get(e.name)


def verified_against(e: Entry) -> str:
    """What a cached file was verified against, in a few words, as the lock file records it."""
    if not is_cached(e):
        return ""
    record = recorded(e)
    if record is None:
        return "nothing (not fetched by copart)"
    return record.get("verified") or "not recorded (fetched by an older copart)"


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
    """Every check there is for ``path`` as ``e`` (``size`` and checksums as ``by`` gives them);
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
        raise CheckFailed(f"its sha256 {digest[:16]}… does not start with {e.hash_prefix}, as its file name says it "
                          f"must")
    _check_structure(e, path)
    return digest


def checked_against(e: Entry, offer: "Offer") -> str:
    """What a file that passed :func:`check_file` for ``offer`` was verified against, in words."""
    sums = "+".join(name for name, value in (("md5", offer.md5), ("sha256", offer.sha256)) if value)
    parts = [f"{sums} from {offer.checksums_by}"] if sums else []
    if e.sha256:
        parts.append("pinned sha256")
    if e.hash_prefix:
        parts.append(f"sha256 prefix {e.hash_prefix} pinned in the file name")
    if parts:
        return ", ".join(parts)
    return f"structure only ({offer.no_checksum or 'the source gives no checksum'})"


def _check_structure(e: Entry, path: Path) -> None:
    """A weights_only load whose keys and shapes are the expected ones (a preset's, VGG-19's; a
    FOMM file: its layout; face-alignment's files: a dict of tensors, as face-alignment loads them)."""
    from copart.models.checkpoint import compare_shapes, detect_layout, expected_shapes, read_checkpoint, shapes_of
    from copart.models.config import ModelConfig

    try:
        data = read_checkpoint(path)
        if e.kind == "face-alignment":
            if not data or not all(isinstance(k, str) and _is_tensor(v) for k, v in data.items()):
                raise CheckFailed("it is not a state dict (names to tensors), as face-alignment loads it")
            return
        if e.kind == "torchvision":
            _check_vgg19(data)
            return
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


def _is_tensor(value) -> bool:
    import torch

    return torch.is_tensor(value)


def _check_vgg19(data: dict) -> None:
    """torchvision's VGG-19: its ``features.*`` tensors are those copart's perceptual loss loads."""
    import torch

    from copart.models.losses import Vgg19

    with torch.device("meta"):
        wanted = {f"features.{k}": tuple(v.shape) for k, v in Vgg19().features.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in data.items()
           if isinstance(k, str) and k.startswith("features.") and _is_tensor(v)}
    missing = sorted(set(wanted) - set(got))
    if missing:
        raise CheckFailed(f"it lacks VGG-19's {missing[0]} (and {len(missing) - 1} more)" if len(missing) > 1
                          else f"it lacks VGG-19's {missing[0]}")
    wrong = sorted(k for k in wanted if got[k] != wanted[k])
    if wrong:
        raise CheckFailed(f"its {wrong[0]} is {got[wrong[0]]} where VGG-19's is {wanted[wrong[0]]}")


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
    checksums_by: str = "the source"  # who gave sha256/md5, for the lock file ("the mirror", "Yandex")
    no_checksum: Optional[str] = None  # why there is none, when there is none
    allow_http: bool = False  # the configured address is http (a loopback test server, a local mirror)


class NotFound(SourceFailed):
    """The server answered 404: it has no such file."""


def check_scheme(url: str, allow_http: bool, given_by: str = "") -> None:
    """Only https (and http where the configured address is http) is opened: an address from a
    remote answer (an API's link, a redirect) with file://, ftp:// or anything else is refused."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "https" or (scheme == "http" and allow_http):
        return
    why = "only https is used here" if scheme == "http" else "copart opens only http(s) addresses"
    raise SourceFailed(f"{given_by or 'the source'} gave the address {url[:120]}, which copart refuses ({why})")


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an address :func:`check_scheme` accepts."""

    def __init__(self, allow_http: bool):
        super().__init__()
        self.allow_http = allow_http

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_scheme(newurl, self.allow_http, f"a redirect from {req.full_url[:120]}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(url: str, headers: Optional[dict] = None, timeout: float = 30, allow_http: bool = False,
          given_by: str = ""):
    check_scheme(url, allow_http, given_by)
    request = urllib.request.Request(url, headers={"User-Agent": "copart", **(headers or {})})
    opener = urllib.request.build_opener(_Redirects(allow_http))
    try:
        return opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        kind = NotFound if exc.code == 404 else SourceFailed
        raise kind(f"{url} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # HTTPException: a garbled answer
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, SourceFailed):  # a redirect refused by _Redirects
            raise reason from None
        raise SourceFailed(f"{url} cannot be reached ({first_line(reason) if isinstance(reason, BaseException) else reason})") from None


def _range_start(content_range: Optional[str]) -> Optional[int]:
    """Where a 206 answer's ``Content-Range: bytes START-END/TOTAL`` starts (None: no such header)."""
    match = re.match(r"\s*bytes\s+(\d+)-", content_range or "")
    return int(match.group(1)) if match else None


def http_fetch(url: str, tmp: Path, size: Optional[int], progress: Optional[Progress],
               allow_http: bool = False) -> None:
    """Download ``url`` into ``tmp``; a cut transfer resumes with a Range request, where the answer
    starts at the end of the partial file (an answer that starts elsewhere, or ignores the range,
    starts the file over)."""
    done = 0
    tmp.write_bytes(b"")
    problem = f"the transfer from {url} did not complete"
    for attempt in range(ATTEMPTS):
        headers = {"Range": f"bytes={done}-"} if done else {}
        try:
            response = _open(url, headers, allow_http=allow_http)
        except SourceFailed as exc:
            if not done:
                raise
            of = f" of {size:,}" if size else ""
            raise SourceFailed(f"the transfer from {url} stopped at {done:,}{of} bytes and cannot be resumed "
                               f"({exc})") from None
        with response:
            if done and response.status == 206:
                start = _range_start(response.headers.get("Content-Range"))
                if start != done:  # not the rest of this file: start over from zero
                    problem = (f"{url} answered a resumed transfer from byte {start if start is not None else '?'} "
                               f"where the partial file ends at {done:,}")
                    done = 0
                    tmp.write_bytes(b"")
                    continue
            elif done:  # the server ignored the range (200): start over with this answer
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
                problem = f"the transfer from {url} was cut ({first_line(cut)})"
                continue
            if total is not None and done < total:
                problem = f"the transfer from {url} stopped at {done:,} of {total:,} bytes"
                continue  # cut: ask for the rest
            return
    raise SourceFailed(problem)


def _allow_http(base: str, what: str) -> bool:
    """Whether a configured address is http (then http is allowed for this source); one clause
    when it is neither http nor https."""
    scheme = urllib.parse.urlsplit(base).scheme.lower()
    if scheme not in ("http", "https"):
        raise SourceFailed(f"{what} {base} is not an http:// or https:// address")
    return scheme == "http"


def _mirror_sha256(url: str, allow_http: bool) -> Optional[str]:
    """The mirror's ``FILE.sha256``: None where it answers 404 (it has none); any other failure
    to get it, or a body that is not a sha256, is the mirror failing."""
    where = f"{url}.sha256"
    try:
        with _open(where, timeout=CHECKSUM_TIMEOUT, allow_http=allow_http) as response:
            text = response.read(4096).decode("ascii", "replace").split()
    except NotFound:
        return None
    except SourceFailed as exc:
        raise SourceFailed(f"its checksum file could not be had ({exc}), so the file cannot be checked") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # a timeout or a cut while reading
        raise SourceFailed(f"its checksum file {where} could not be read ({first_line(exc)}), so the file cannot "
                           f"be checked") from None
    if not text or not re.fullmatch(r"[0-9a-fA-F]{64}", text[0]):
        raise SourceFailed(f"{where} holds no sha256")
    return text[0].lower()


def _mirror(e: Entry) -> Offer:
    base = os.environ["COPART_MIRROR"].rstrip("/")
    allow_http = _allow_http(base, "COPART_MIRROR")
    url = f"{base}/{urllib.parse.quote(e.file)}"
    sha256 = _mirror_sha256(url, allow_http)
    with _open(url, {"Range": "bytes=0-0"}, allow_http=allow_http) as response:  # is it there, and how big
        size = None
        match = re.search(r"/(\d+)$", response.headers.get("Content-Range", ""))
        if match:
            size = int(match.group(1))
        elif response.status == 200 and response.headers.get("Content-Length"):
            size = int(response.headers["Content-Length"])
    return Offer(f"mirror {base}", url, size, sha256, checksums_by="the mirror",
                 no_checksum=f"the mirror has no {e.file}.sha256", allow_http=allow_http)


def _api(url: str, allow_http: bool, what: str):
    """A call of Yandex's API; a failure names the API, not its URL-encoded address."""
    try:
        return _open(url, allow_http=allow_http)
    except SourceFailed as exc:
        text = str(exc).replace(f"{url} ", f"Yandex's API ({what}) ", 1)
        raise type(exc)(text) from None


def _yandex(e: Entry) -> Offer:
    api = os.environ.get("COPART_YANDEX_API", YANDEX_API)
    allow_http = _allow_http(api, "the Yandex API address")
    public = e.sources["yandex"]
    name = e.file
    if e.remote_prefix:  # the authors' own name: find it in the folder's listing
        query = urllib.parse.urlencode({"public_key": public, "limit": 1000})
        with _api(f"{api}?{query}", allow_http, "for the folder's listing") as response:
            items = json.load(response).get("_embedded", {}).get("items", [])
        names = [i["name"] for i in items if i.get("type") == "file" and i["name"].startswith(e.remote_prefix)]
        if not names:
            raise SourceFailed(f"the Yandex Disk folder {public} holds no file starting with {e.remote_prefix}")
        name = sorted(names)[0]
    query = urllib.parse.urlencode({"public_key": public, "path": f"/{name}"})
    with _api(f"{api}?{query}", allow_http, f"for {name}") as response:
        try:
            meta = json.load(response)
        except ValueError:
            raise SourceFailed(f"Yandex's API answered something that is not JSON for {name}") from None
    link = meta.get("file")
    if not link or not isinstance(link, str):
        raise SourceFailed(f"Yandex's API gives no download link for {name}")
    check_scheme(link, allow_http, f"Yandex's API (for {name})")
    return Offer(f"the authors' Yandex Disk ({public})", link, meta.get("size"), meta.get("sha256"),
                 meta.get("md5"), checksums_by="Yandex", no_checksum="Yandex's API gave no checksum",
                 allow_http=allow_http)


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

    return Offer(f"the authors' Google Drive ({folder})", f"https://drive.google.com/uc?id={file_id}", fetch=fetch,
                 no_checksum="Google Drive gives no checksum")


def _direct(e: Entry) -> Offer:
    """The file's own URL (face-alignment's, torchvision's): fetched like a mirror's file, checked
    against the sha256 prefix its name carries."""
    allow_http = _allow_http(e.url, f"{e.name}'s address")
    return Offer(e.url, e.url, no_checksum=f"{urllib.parse.urlsplit(e.url).netloc} gives no checksum",
                 allow_http=allow_http)


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


def pages(e: Entry) -> list[str]:
    """Where a person gets the file by hand: the pages to open in a browser (not API calls)."""
    out = []
    if os.environ.get("COPART_MIRROR"):
        out.append(f"{os.environ['COPART_MIRROR'].rstrip('/')}/{urllib.parse.quote(e.file)}")
    if "yandex" in e.sources:
        out.append(e.sources["yandex"])
    if "drive" in e.sources:
        out.append(f"https://drive.google.com/drive/folders/{e.sources['drive']}")
    if e.page or e.url:
        out.append(e.page or e.url)
    return out


def _make_folder(folder: Path) -> str:
    """Create ``folder`` for a user who is to put a file there; says whether it was created."""
    if folder.is_dir():
        return ""
    try:
        check_creatable(folder)
        folder.mkdir(parents=True, exist_ok=True)
    except (CopartError, OSError):
        return " (it does not exist and cannot be created)"
    return " (created for you)"


def offline_message(e: Entry) -> str:
    """A few short lines: which file, the pages to get it from, which folder (created), how to
    prepare a machine, and what else the same run needs that is not there either."""
    others = [entry(name) for name in e.also]
    missing = [o for o in others if not is_cached(o)]
    names = " ".join([e.name] + [o.name for o in missing])
    sources_text = " or ".join(pages(e)) or "its publisher"
    lines = [
        f"{e.name} ({e.file}) is not in the cache and {offline_by()} forbids downloading it.",
        f"  Get it from: {sources_text}",
        f"  Put it in:   {e.directory}{_make_folder(e.directory)}",
        f"  Or run copart models pull {names} on a machine with internet and copy the folders here,",
        "  or set COPART_MIRROR to a server that holds the files.",
    ]
    for other in missing:
        lines.append(f"  The same run also uses {other.name} ({other.purpose}), not in {other.directory} either"
                     + (":" if e.also_why else "."))
        if e.also_why:
            lines.append(f"  {e.also_why}.")
    return "\n".join(lines)


def failed_message(e: Entry, failures: list[str], created: bool = False) -> str:
    """Short lines: why each source failed, the pages a person opens, which folder, how else."""
    lines = [f"{e.name} ({e.file}) could not be fetched:"] + [f"  {failure}." for failure in failures]
    lines += [f"  Get it from: {' or '.join(pages(e)) or 'its publisher'}",
              f"  Put it in:   {e.directory}{' (created for you)' if created else ''}",
              (f"  Or set COPART_MIRROR to a server that holds the files (then copart models pull {e.name} "
               f"fetches from there).")]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The commands' work


def is_cached(e: Entry) -> bool:
    return e.path.is_file()


def pull(e: Entry, downloads: Optional[Downloads] = None, force: bool = False) -> Path:
    """Fetch ``e`` into the cache (nothing to do when it is there, unless ``force``), verified;
    one sentence when no source can give a good file (:class:`FetchFailed`; :class:`NotCached`
    offline), and nothing left behind."""
    downloads = downloads or DEFAULT_DOWNLOADS or Downloads()
    if is_cached(e) and not force:
        return e.path
    if offline():
        raise NotCached(offline_message(e))
    check_creatable(e.directory)
    check_creatable(home())  # where the lock file goes
    created = not e.directory.exists()
    e.directory.mkdir(parents=True, exist_ok=True)  # kept when the pull fails: the folder to put the file in
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
                            http_fetch(offer.url, tmp, offer.size, progress, offer.allow_http)
                    digest = check_file(e, tmp, offer.size, offer.sha256, offer.md5)
                except SourceFailed as exc:
                    failures.append(f"{name}: {exc}")
                    raise _Next() from None
                except CheckFailed as exc:
                    failures.append(f"{name}: the file was refused because {exc}")
                    raise _Next() from None
        except _Next:  # atomic_path has removed the temporary file
            continue
        _update_lock(e.name, {"file": e.file, "sha256": digest, "size": e.path.stat().st_size,
                              "source": offer.source, "verified": checked_against(e, offer)})
        return e.path
    raise FetchFailed(failed_message(e, failures, created), failures)


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
    pinned = [what for what, there in (("pinned sha256", e.sha256),
                                       (f"sha256 prefix {e.hash_prefix} in its name", e.hash_prefix)) if there]
    if record is None:
        against = f"{', '.join(pinned)} and structure" if pinned else "structure only"
        return f"{digest[:16]}… (not fetched by copart, so no recorded checksum: {against} checked)"
    return f"sha256 {digest[:16]}… as recorded (verified when fetched against: {verified_against(e)})"


def remove(e: Entry) -> bool:
    existed = e.path.is_file()
    if existed:
        e.path.unlink()
    if (home() / LOCK).exists():
        _update_lock(e.name, None)
    return existed


def vgg19_weights(downloads: Optional[Downloads] = None) -> Path:
    """VGG-19's file for the perceptual loss, through the hub (the loss itself never downloads)."""
    try:
        return pull(entry("vgg19"), downloads)
    except CopartError as exc:
        text = str(exc).rstrip(".")
        raise CopartError(f"The perceptual loss needs VGG-19's weights: {text[:1].lower()}{text[1:]}; or train with "
                          f"the pixel-pyramid loss instead (train_params.loss: pixel).", topic="pixel-loss") from None


__all__ = ["Downloads", "Entry", "FetchFailed", "NotCached", "catalog", "entry", "for_preset", "home", "is_cached",
           "offline", "offline_by", "pull", "remove", "verified_against", "verify", "vgg19_weights"]
