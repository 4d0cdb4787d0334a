"""Presets: the published configurations equal the authors' checkpoints, key for key."""

import re
from pathlib import Path

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
from copart.models.config import AUTHORS_IGNORED_KEYS, CONFIG_KEYS

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


def _key_paths(config: dict, prefix: str = "") -> list[str]:
    """Every leaf key of a configuration as a dotted path; a path copart reads whole
    (``part_names``) is a leaf."""
    out = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in CONFIG_KEYS:
            out += _key_paths(value, path + ".")
        else:
            out.append(path)
    return out


def _package_code() -> str:
    """The text of every Python file of the installed copart (application, models, presets)."""
    import copart
    import copart.models

    folders = {Path(m.__file__).parent for m in (copart, copart.models, presets)}
    return "\n".join(f.read_text() for f in sorted({f for d in folders for f in d.rglob("*.py")}))


def _ignored(path: str) -> bool:
    return any(path == k or path.startswith(k + ".") for k in AUTHORS_IGNORED_KEYS)


# The keys of the authors' config/vox-256-sem-10segments.yaml that copart ignores, as they ship them.
AUTHORS_EXTRA = {
    "dataset_params": {"root_dir": "data/vox-png"},
    "train_params": {"checkpoint_freq": 50},
    "visualizer_params": {"kp_size": 5, "draw_border": True, "colormap": "gist_rainbow"},
}


@pytest.mark.parametrize("name", presets.names())
def test_every_key_of_a_preset_is_one_copart_reads(name):
    """A preset documents only what does something: no key of it is outside CONFIG_KEYS."""
    unread = [p for p in _key_paths(presets.load(name)) if p not in CONFIG_KEYS]
    assert unread == [], f"{name}.yaml has keys copart never reads: {unread}"


def test_the_keys_said_to_be_read_are_read():
    """Each key of CONFIG_KEYS outside model_params (whose sections take exactly their keys) is
    looked up by name somewhere in copart's code; the ignored ones are not."""
    code = _package_code()
    for path in sorted(CONFIG_KEYS):
        if not path.startswith("model_params."):
            leaf = path.rsplit(".", 1)[-1]
            assert f'"{leaf}"' in code, f"{path} is listed as read, but nothing looks up '{leaf}'"
    for path in ("checkpoint_freq", "root_dir", "kp_size", "draw_border", "colormap"):
        assert f'"{path}"' not in code and f"'{path}'" not in code, path
    assert not any(_ignored(p) for p in CONFIG_KEYS)


def test_an_authors_layout_yaml_path_loads_unchanged(tmp_path):
    """A YAML as the authors ship it (no copart keys; with the keys copart ignores) works
    wherever a preset name does, training included."""
    from copart.training.loop import new_run_config

    config = presets.load("vox-256-sem-10segments")
    config.pop("part_names")
    for section, extra in AUTHORS_EXTRA.items():
        config.setdefault(section, {}).update(extra)
    assert all(p in CONFIG_KEYS or _ignored(p) for p in _key_paths(config))
    path = tmp_path / "vox-256-sem-10segments.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = ModelConfig.from_dict(presets.load(str(path)))
    assert loaded == ModelConfig.from_dict(presets.load("vox-256-sem-10segments"))
    assert loaded.image_size == (256, 256)
    run, _ = new_run_config(str(path), tmp_path)
    assert run["visualizer_params"] == AUTHORS_EXTRA["visualizer_params"]


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


# The module each declared dependency is imported as.
IMPORT_NAMES = {"torch": "torch", "typer": "typer", "rich": "rich", "av": "av", "face-alignment": "face_alignment",
                "numpy": "numpy", "pyyaml": "yaml", "opencv-python": "cv2", "gdown": "gdown"}


def test_every_declared_dependency_is_imported():
    """Nothing is installed for nothing: each of pyproject's dependencies is imported by copart."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    code = _package_code()
    for requirement in pyproject["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
        assert name in IMPORT_NAMES, f"{name}: add the module it is imported as to IMPORT_NAMES"
        module = IMPORT_NAMES[name]
        assert re.search(rf"^\s*(import|from) {module}\b", code, re.MULTILINE), f"nothing in copart imports {module} ({name})"
