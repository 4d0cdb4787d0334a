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
