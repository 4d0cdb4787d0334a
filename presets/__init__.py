"""Configurations in the authors' YAML layout, shipped inside the package.

``load("vox-256-sem-10segments")`` or ``load("path/to/config.yaml")`` returns the
config as a dict; wherever copart takes a preset name it takes a YAML path too.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from copart.models.errors import CopartError

PRESET_DIR = Path(__file__).resolve().parent

def names() -> list[str]:
    """Every preset shipped with copart."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def path_of(name_or_path: str) -> Path:
    """The YAML file for a preset name or a path; one clear error when neither exists."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise CopartError(f"Configuration file {candidate} does not exist.")
        return candidate
    shipped = PRESET_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise CopartError(f"Unknown preset '{name_or_path}'; choose one of {', '.join(names())} or give the path of a YAML file.")


def load(name_or_path: str) -> dict:
    """The configuration (authors' layout) of a preset name or YAML path."""
    path = path_of(name_or_path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CopartError(f"Cannot read configuration {path}: {reason}.") from None
    if not isinstance(config, dict) or "model_params" not in config:
        raise CopartError(f"{path} is not a configuration in the authors' layout (no model_params section).")
    return config


def label(name_or_path: str) -> str:
    """A short name for messages: the preset name, or the YAML's file name."""
    path = path_of(name_or_path)
    return path.stem if path.parent == PRESET_DIR else str(path)
