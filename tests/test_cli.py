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

from copart import __version__, presets
from copart.app import app
from copart.models import CoPartModel, ModelConfig
from copart.models.checkpoint import checkpoint_dict, save_atomic

from .conftest import REFERENCE

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _json(*args) -> dict:
    result = runner.invoke(app, ["info", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _outside_env() -> dict:
    """The environment of a user's shell: no PYTHONPATH pointing into the repository."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "copart", *args], check=False, cwd=cwd, env=_outside_env(),
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
    result = subprocess.run([exe, "info", "vox-256-sem-15segments", "--json"], check=False, cwd=tmp_path,
                            env=_outside_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["num_segments"] == 15
    result = subprocess.run([exe, "--version"], check=False, cwd=tmp_path, env=_outside_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"copart {__version__}", result.stderr


def test_one_installed_namespace(tmp_path):
    """Everything installs under copart: outside the repository no top-level models or presets."""
    code = ("import importlib.util, copart.models, copart.presets; "
            "print(importlib.util.find_spec('models'), importlib.util.find_spec('presets'), "
            "copart.presets.names()[0])")
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=tmp_path, env=_outside_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["None", "None"], result.stdout
    for name in ("models", "presets"):
        result = subprocess.run([sys.executable, "-c", f"import {name}"], check=False, cwd=tmp_path,
                                env=_outside_env(), capture_output=True, text=True, timeout=120)
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["swap", "--help"], ["train", "--help"]])
def test_help_and_version_load_no_torch(tmp_path, args):
    """`copart --help` answers without importing PyTorch, PyAV or OpenCV (python -X importtime)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "copart", *args], check=False, cwd=tmp_path,
                            env=_outside_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "copart.app" in imported
    assert not imported & {"torch", "av", "cv2", "numpy"}, sorted(imported & {"torch", "av", "cv2", "numpy"})


@pytest.mark.parametrize("args, wanted, authors", [
    (["--k", "10"], "vox-10segments.pth.tar", True),
    (["--preset", "taichi-256-sem"], "taichi-256-sem.pth.tar", True),
    (["--preset", "cpu-64-sem-5segments"], "cpu-64-sem-5segments.pth.tar", False),
])
def test_a_missing_published_checkpoint_says_where_to_get_it(tmp_path, monkeypatch, carphone, args, wanted, authors):
    monkeypatch.setenv("COPART_HOME", str(tmp_path))
    monkeypatch.setenv("COPART_OFFLINE", "1")
    result = runner.invoke(app, ["segment", *args, str(carphone), "-o", str(tmp_path / "o.mp4")])
    message = str(result.exception)
    assert wanted in message and str(tmp_path) in message, message
    assert ("https://yadi.sk/d/2hTyhEcqo_5ruA" in message) == authors, message
    assert ("COPART_OFFLINE=1 forbids downloading it" in message) == authors, message


def test_the_core_names_no_command_line_flags():
    """models/ is a library: its messages say what is wrong; the CLI adds which flag helps."""
    import ast
    import re

    flag = re.compile(r"(^|\s|\()--[a-z]|copart (train|swap|segment|eval|info|parts|demo)\b")
    found = []
    for path in sorted((ROOT / "models").glob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                      and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if flag.search(node.value):
                    found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not found, found


def test_the_command_line_adds_its_advice_to_core_errors():
    result = _run("parts", str(REFERENCE / "fomm-format.pth.tar"))
    assert result.returncode == 2, result.stderr
    assert "only weights to start training from; start training from it with copart train --init FILE." in \
        " ".join(result.stderr.split())


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python example, as written, on a random-weight file of the published layout."""
    import re

    text = (ROOT / "docs" / "python.md").read_text()
    code = re.search(r"## The model core in Python\s+```python\n(.*?)```", text, re.S).group(1)
    config = presets.load("vox-256-sem-5segments")
    model = CoPartModel(ModelConfig.from_dict(config))
    torch.save({"segmentation_module": model.segmentation_module.state_dict(),
                "reconstruction_module": model.reconstruction_module.state_dict()}, tmp_path / "vox-5segments.pth.tar")
    monkeypatch.chdir(tmp_path)
    scope = {"face": torch.rand(1, 3, 256, 256), "batches": [torch.rand(2, 3, 256, 256)]}
    exec(compile(code, "docs/python.md", "exec"), scope)
    assert scope["out"].shape == (2, 3, 256, 256)


def test_the_readme_layout_names_every_module():
    """Each module of the application appears in the layout section of docs/python.md."""
    text = (ROOT / "docs" / "python.md").read_text()
    layout = text[text.index("## Layout"):]
    for path in sorted((ROOT / "copart_cli").rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        parts = path.relative_to(ROOT / "copart_cli").parts
        # a package inside a folder (media/faces/) is named as a folder, its modules in its docstring
        shown = "commands/" if parts[0] == "commands" else f"{parts[1]}/" if len(parts) > 2 else path.name
        if len(parts) > 1 and parts[0] != "commands":
            assert f"{parts[0]}/" in layout, path
        assert shown in layout, path
