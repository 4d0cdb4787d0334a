"""Presets: the published configurations equal the authors' checkpoints, key for key."""

import pytest
import yaml

from copart import presets
from copart.models import CopartError, ModelConfig
from copart.models.checkpoint import (
    MODULES,
    compare_shapes,
    expected_shapes,
    model_from_config,
)

PUBLISHED = ["vox-256-sem-5segments", "vox-256-sem-10segments", "vox-256-sem-15segments", "taichi-256-sem"]


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_presets_match_the_manifest(name, manifest):
    config = ModelConfig.from_dict(presets.load(name), name)
    expected = {m: {k: tuple(v) for k, v in manifest[name][m].items()} for m in MODULES}
    assert compare_shapes(expected, expected_shapes(config)) == []
    assert config.model_params() == manifest[name]["model_params"]
    model = model_from_config(presets.load(name), name).model
    for module in MODULES:
        count = sum(p.numel() for p in getattr(model, module).parameters())
        assert count == manifest[name]["num_parameters"][module]


def test_every_preset_builds_and_names_parts_in_range():
    assert {"vox-256-sem-1segment", "cpu-64-sem-5segments"} <= set(presets.names())
    for name in presets.names():
        loaded = model_from_config(presets.load(name), name)
        k = loaded.model.num_segments
        assert all(0 <= c <= k for channels in loaded.part_names.values() for c in channels)
    assert model_from_config(presets.load("vox-256-sem-1segment")).model.num_segments == 1


def test_published_part_names():
    assert presets.load("vox-256-sem-5segments")["part_names"] == {"hair": [3, 4, 5], "beard": [1]}
    assert presets.load("vox-256-sem-10segments")["part_names"] == {"lips": [2], "eyes": [7, 9]}


def test_every_key_has_a_comment():
    for name in presets.names():
        lines = (presets.PRESET_DIR / f"{name}.yaml").read_text().splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            if stripped and not stripped.startswith("#") and ":" in stripped and not stripped.startswith("-"):
                assert lines[i - 1].strip().startswith("#"), f"{name}.yaml line {i + 1} has no comment: {line}"


def test_an_authors_layout_yaml_path_loads_unchanged(tmp_path):
    """A YAML as the authors ship it (no copart keys) works wherever a preset name does."""
    config = presets.load("vox-256-sem-10segments")
    config.pop("part_names")
    path = tmp_path / "vox-256-sem-10segments.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = ModelConfig.from_dict(presets.load(str(path)))
    assert loaded == ModelConfig.from_dict(presets.load("vox-256-sem-10segments"))
    assert loaded.image_size == (256, 256)


def test_frame_shape_key_and_default_resolution():
    base = presets.load("cpu-64-sem-5segments")
    base["dataset_params"] = {"frame_shape": [128, 96, 3]}
    assert ModelConfig.from_dict(base).image_size == (128, 96)
    base["dataset_params"] = {}
    assert ModelConfig.from_dict(base).image_size == (256, 256)


def test_bad_configurations_are_one_sentence(tmp_path):
    with pytest.raises(CopartError, match="Unknown preset"):
        presets.load("vox-256-sem-7segments")
    with pytest.raises(CopartError, match="does not exist"):
        presets.load(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_params: [unclosed")
    with pytest.raises(CopartError, match="Cannot read"):
        presets.load(str(bad))
    bad.write_text("train_params: {}")
    with pytest.raises(CopartError, match="model_params"):
        presets.load(str(bad))
    typo = presets.load("cpu-64-sem-5segments")
    typo["model_params"]["segmentation_module_params"]["num_block"] = 3
    with pytest.raises(CopartError, match="num_block"):
        ModelConfig.from_dict(typo)
