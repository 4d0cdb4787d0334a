"""The command line: help, version, copart info, and errors without tracebacks."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import presets
from copart_cli import __version__
from copart_cli.app import app
from models import CoPartModel, ModelConfig
from models.checkpoint import checkpoint_dict, save_atomic

from .conftest import REFERENCE

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _json(*args) -> dict:
    result = runner.invoke(app, ["info", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _run(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "copart_cli", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_help_lists_commands_with_an_example():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "info" in result.output and "Example" in result.output
    result = runner.invoke(app, ["info", "--help"])
    assert result.exit_code == 0 and "copart info vox-256-sem-5segments" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"copart {__version__}"


def test_info_on_a_preset():
    report = _json("vox-256-sem-5segments")
    assert report["layout"] == "preset" and report["num_segments"] == 5
    assert report["part_names"] == {"hair": [3, 4, 5], "beard": [1]}
    assert report["parameters"]["segmentation_module"] == 14182764
    assert report["published_checkpoint"] == "vox-5segments.pth.tar"


def test_info_on_the_fixture_checkpoints():
    authors = _json(str(REFERENCE / "reference-format.pth.tar"))
    assert authors["layout"] == "authors" and authors["num_segments"] == 10 and authors["epoch"] == 7
    assert authors["model_params"]["segmentation_module_params"]["block_expansion"] == 8
    assert authors["model_params"]["reconstruction_module_params"]["num_bottleneck_blocks"] == 2
    assert authors["matching_presets"] == []
    assert authors["parameters"]["total"] == 489879
    fomm = _json(str(REFERENCE / "fomm-format.pth.tar"))
    assert fomm["layout"] == "fomm" and fomm["num_segments"] == 10 and fomm["epoch"] == 99
    # The table form as a person reads it.
    result = runner.invoke(app, ["info", str(REFERENCE / "reference-format.pth.tar")])
    assert result.exit_code == 0 and "authors' published layout" in result.output


def test_info_on_a_copart_checkpoint(tmp_path):
    config = presets.load("cpu-64-sem-5segments")
    model = CoPartModel(ModelConfig.from_dict(config))
    path = save_atomic(checkpoint_dict(model, config, {"arm": [1, 2]}, step=42), tmp_path / "m.pth")
    report = _json(str(path))
    assert report["layout"] == "copart" and report["step"] == 42
    assert report["part_names"] == {"arm": [1, 2]} and report["image_size"] == [64, 64]
    assert report["matching_presets"] == ["cpu-64-sem-5segments"]


def test_a_published_shaped_file_matches_every_preset_and_takes_names_from_the_one_named(tmp_path):
    config = presets.load("vox-256-sem-10segments")
    model = CoPartModel(ModelConfig.from_dict(config))
    path = tmp_path / "vox-10segments.pth.tar"
    torch.save({"segmentation_module": model.segmentation_module.state_dict(),
                "reconstruction_module": model.reconstruction_module.state_dict(), "epoch": 3}, path)
    report = _json(str(path))
    assert report["matching_presets"] == ["taichi-256-sem", "vox-256-sem-10segments"]
    assert report["part_names"] == {}
    named = _json(str(path), "--preset", "vox-256-sem-10segments")
    assert named["part_names"] == {"lips": [2], "eyes": [7, 9]} and named["preset"] == "vox-256-sem-10segments"
    # The commands that run it attach no names either unless the preset is named.
    listed = runner.invoke(app, ["parts", str(path), "--json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output)["part_names"] == {}
    named = runner.invoke(app, ["parts", str(path), "--preset", "vox-256-sem-10segments", "--json"])
    assert json.loads(named.output)["part_names"] == {"lips": [2], "eyes": [7, 9]}


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "corrupt.pth.tar"], "truncated or corrupt"),
        (["info", "missing.pth.tar"], "does not exist"),
        (["info", "vox-256-sem-7segments"], "Unknown preset"),
        (["info", str(REFERENCE / "reference-format.pth.tar"), "--preset", "vox-256-sem-5segments"], "K=10 parts"),
    ],
)
def test_errors_are_one_line_without_traceback(tmp_path, args, message):
    (tmp_path / "corrupt.pth.tar").write_bytes((REFERENCE / "reference-format.pth.tar").read_bytes()[:5000])
    result = _run(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_python_dash_m_works():
    result = _run("info", "cpu-64-sem-5segments", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["num_segments"] == 5


def test_installed_copart_works_from_any_folder(tmp_path):
    """pip install . puts `copart` on the PATH, presets included (CI installs it so)."""
    exe = shutil.which("copart") or shutil.which("copart", path=str(Path(sys.executable).parent))
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("copart is not installed in CI's environment")
        pytest.skip("copart is not installed (pip install . puts it on the PATH)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([exe, "info", "vox-256-sem-15segments", "--json"], check=False, cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["num_segments"] == 15


@pytest.mark.parametrize("args, wanted, authors", [
    (["--k", "10"], "vox-10segments.pth.tar", True),
    (["--preset", "taichi-256-sem"], "taichi-256-sem.pth.tar", True),
    (["--preset", "cpu-64-sem-5segments"], "cpu-64-sem-5segments.pth.tar", False),
])
def test_a_missing_published_checkpoint_says_where_to_get_it(tmp_path, monkeypatch, carphone, args, wanted, authors):
    monkeypatch.setenv("COPART_HOME", str(tmp_path))
    result = runner.invoke(app, ["segment", *args, str(carphone), "-o", str(tmp_path / "o.mp4")])
    message = str(result.exception)
    assert wanted in message and str(tmp_path) in message, message
    assert (presets.AUTHORS_DOWNLOAD in message) == authors, message
