"""Checkpoint layouts, copart's own format, and every error a wrong file gets."""

import collections
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from copart import presets
from copart.models import CopartError, CoPartModel, ModelConfig
from copart.models.checkpoint import (
    checkpoint_dict,
    detect_layout,
    init_from_fomm,
    load_init,
    load_model,
    read_checkpoint,
    save_atomic,
)

from .conftest import REFERENCE

AUTHORS = REFERENCE / "reference-format.pth.tar"
FOMM = REFERENCE / "fomm-format.pth.tar"


def _same_weights(a: CoPartModel, b: CoPartModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_layouts_are_detected():
    assert detect_layout(read_checkpoint(AUTHORS)) == "authors"
    assert detect_layout(read_checkpoint(FOMM)) == "fomm"


def test_authors_layout_loads_strictly_with_or_without_config(reference_config):
    with_config = load_model(AUTHORS, config=reference_config)
    inferred = load_model(AUTHORS)
    assert with_config.layout == inferred.layout == "authors"
    assert with_config.epoch == 7
    assert _same_weights(with_config.model, inferred.model)
    assert inferred.model.config.model_params() == ModelConfig.from_dict(reference_config).model_params()
    assert inferred.notes and "inferred" in inferred.notes[0]


def test_legacy_serialisation_loads(tmp_path, reference_config):
    """The published files were written by PyTorch 1.0 (pre-zip format)."""
    path = tmp_path / "legacy.pth.tar"
    torch.save(read_checkpoint(AUTHORS), path, _use_new_zipfile_serialization=False)
    assert _same_weights(load_model(path, config=reference_config).model, load_model(AUTHORS).model)


def test_copart_checkpoint_rebuilds_alone(tmp_path, reference_config):
    source = load_model(AUTHORS, config=reference_config)
    path = tmp_path / "model.pth"
    save_atomic(checkpoint_dict(source.model, reference_config, {"lips": [2], "eyes": [7, 9]}, step=1234), path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]  # no temporary file left
    loaded = load_model(path)
    assert loaded.layout == "copart" and loaded.step == 1234
    assert loaded.part_names == {"lips": [2], "eyes": [7, 9]}
    assert loaded.model.config == source.model.config
    assert _same_weights(loaded.model, source.model)
    with pytest.raises(CopartError, match="K=10 parts but .* K=5"):
        load_model(path, config=presets.load("vox-256-sem-5segments"), config_label="vox-256-sem-5segments")


def test_rng_state_and_optimizer_load_with_weights_only(tmp_path):
    config = presets.load("cpu-64-sem-5segments")
    model = CoPartModel(ModelConfig.from_dict(config))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))["prediction"].mean().backward()
    optimizer.step()
    import numpy as np

    state = np.random.default_rng(0).bit_generator.state
    path = save_atomic(
        checkpoint_dict(model, config, step=3, optimizer=optimizer.state_dict(),
                        rng={"torch": torch.get_rng_state(), "numpy": state}),
        tmp_path / "run.pth",
    )
    data = read_checkpoint(path)
    assert data["rng"]["numpy"] == state and torch.equal(data["rng"]["torch"], torch.get_rng_state())
    assert data["optimizer"]["state"]


def test_fomm_initialises_what_fits(reference_config):
    model = CoPartModel(ModelConfig.from_dict(reference_config))
    notes = load_init(FOMM, model)
    assert "First Order Motion Model" in notes[0]
    data = read_checkpoint(FOMM)
    assert torch.equal(model.segmentation_module.shift.weight, data["kp_detector"]["kp.weight"])
    assert torch.equal(model.segmentation_module.affine.bias, data["kp_detector"]["jacobian.bias"])
    assert torch.equal(model.segmentation_module.segmentation.weight, data["kp_detector"]["semantic_seg.weight"])

    # Without a semantic_seg head and with another keypoint count: the rest loads, the user is told.
    kp = {k: v for k, v in data["kp_detector"].items() if not k.startswith("semantic_seg.")}
    kp["kp.weight"], kp["kp.bias"] = kp["kp.weight"][:5], kp["kp.bias"][:5]
    other = CoPartModel(ModelConfig.from_dict(reference_config))
    fresh = other.segmentation_module.segmentation.weight.clone()
    notes = init_from_fomm(other, {"kp_detector": kp, "generator": data["generator"]})
    assert any("semantic_seg" in n for n in notes)
    fresh_note = next(n for n in notes if "start fresh" in n)
    assert fresh_note.startswith("segmentation_module: 4 tensor(s) in 2 layer(s)"), fresh_note
    assert set(fresh_note.rsplit(": ", 1)[1].split(", ")) == {"segmentation", "shift"}  # every one named
    assert torch.equal(other.segmentation_module.segmentation.weight, fresh)
    assert torch.equal(other.reconstruction_module.final.weight, data["generator"]["final.weight"])


def test_fomm_is_refused_for_inference():
    with pytest.raises(CopartError, match="only weights to start training from") as caught:
        load_model(FOMM)
    assert caught.value.topic == "fomm-checkpoint" and "--init" not in str(caught.value)


def _zip(path, name):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(name, "not weights")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(AUTHORS.read_bytes()[:100_000]), "truncated or corrupt"),
        (lambda p: p.write_text("hello, I am not a checkpoint"), "not a PyTorch checkpoint: it looks like a text file"),
        (lambda p: _zip(p, "notes.txt"), "a zip archive but not a PyTorch checkpoint"),
        (lambda p: torch.save([1, 2, 3], p), "not a checkpoint"),
        (lambda p: torch.save({"state_dict": {}}, p), "no layout copart knows"),
    ],
)
def test_wrong_files_get_one_sentence(tmp_path, make, message):
    path = tmp_path / "bad.pth.tar"
    make(path)
    with pytest.raises(CopartError, match=message) as err:
        load_model(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_a_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"segmentation_module": _Payload()}, path)
    with pytest.raises(CopartError, match="weights_only"):
        read_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


class _Tensors(collections.OrderedDict):
    """A dict subclass: unpickling it would import and call this module's code."""


def _half(path, **save):
    """The first half of a real checkpoint written by torch.save."""
    whole = path.with_suffix(".whole")
    torch.save(read_checkpoint(AUTHORS), whole, **save)
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return path


def test_media_and_cut_files_are_told_apart_from_files_that_would_run_code(tmp_path, carphone, astronaut):
    import cv2

    jpeg = tmp_path / "face.pth"
    jpeg.write_bytes(cv2.imencode(".jpg", cv2.imread(str(astronaut)))[1].tobytes())
    unsafe = tmp_path / "unsafe.pth"
    torch.save(_Tensors(weight=torch.zeros(2)), unsafe)
    unsafe_legacy = tmp_path / "unsafe-legacy.pth"
    torch.save(_Tensors(weight=torch.zeros(2)), unsafe_legacy, _use_new_zipfile_serialization=False)
    expected = {
        carphone: f"{carphone} is not a PyTorch checkpoint: it looks like an MP4/MOV video.",
        astronaut: f"{astronaut} is not a PyTorch checkpoint: it looks like a PNG image.",
        jpeg: f"{jpeg} is not a PyTorch checkpoint: it looks like a JPEG image.",
        _half(tmp_path / "half.pth"): f"{tmp_path / 'half.pth'} is truncated or corrupt (its archive is incomplete); "
                                      f"download it again.",
        _half(tmp_path / "half-legacy.pth", _use_new_zipfile_serialization=False):
            f"{tmp_path / 'half-legacy.pth'} is truncated or corrupt; download it again.",
        unsafe: f"{unsafe} holds Python objects besides tensors; copart loads checkpoints only with "
                f"torch.load(weights_only=True) on PyTorch 2.10 or newer, which runs no code from a file, and so "
                f"refuses this one.",
        unsafe_legacy: f"{unsafe_legacy} holds Python objects besides tensors; copart loads checkpoints only with "
                       f"torch.load(weights_only=True) on PyTorch 2.10 or newer, which runs no code from a file, and "
                       f"so refuses this one.",
    }
    for path, message in expected.items():
        with pytest.raises(CopartError) as err:
            read_checkpoint(path)
        assert str(err.value) == message


def test_no_checkpoint_is_read_on_a_torch_whose_weights_only_is_bypassable(monkeypatch):
    """The promise "runs no code from a file" holds only where weights_only=True does: copart requires
    torch>=2.10 (CVE-2025-32434 below 2.6, CVE-2026-24747 below 2.10) and refuses to load on less."""
    import tomllib

    from copart.models import checkpoint

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    assert "torch>=2.10" in project["dependencies"]
    assert checkpoint._torch_release(torch.__version__) >= (2, 10)  # the installed build satisfies it
    for old in ("2.5.1", "2.9.1+cpu", "2.4.0"):
        monkeypatch.setattr(torch, "__version__", old)
        with pytest.raises(CopartError, match=rf"PyTorch {re.escape(old)} is too old to load checkpoints safely"):
            read_checkpoint(AUTHORS)
    monkeypatch.setattr(torch, "__version__", "2.10.0")
    assert "segmentation_module" in read_checkpoint(AUTHORS)


def test_info_on_a_video_says_it_is_not_a_checkpoint(carphone):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-m", "copart", "info", str(carphone)], check=False,
                            capture_output=True, text=True, env=dict(env, COLUMNS="1000"), timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"Error: {carphone} is not a PyTorch checkpoint: it looks like an MP4/MOV video."


def test_k_and_key_mismatches(reference_config):
    vox5 = presets.load("vox-256-sem-5segments")
    with pytest.raises(CopartError, match="K=10 parts but vox-256-sem-5segments has K=5"):
        load_model(AUTHORS, config=vox5, config_label="vox-256-sem-5segments")
    with pytest.raises(CopartError, match="does not match vox-256-sem-10segments"):
        load_model(AUTHORS, config=presets.load("vox-256-sem-10segments"), config_label="vox-256-sem-10segments")


def test_atomic_save_leaves_no_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.pth"
    with pytest.raises((AttributeError, TypeError, RuntimeError)):
        save_atomic({"x": lambda: 0}, target)  # a lambda cannot be pickled
    assert list(tmp_path.iterdir()) == []
