"""Configurations in the authors' YAML layout, shipped inside the package, and the registry
of named presets and the published models made with them.

``load("vox-256-sem-10segments")`` or ``load("path/to/config.yaml")`` returns the
config as a dict; wherever copart takes a preset name it takes a YAML path too.
``registry()`` is every shipped preset by name (as segment-anything's ``sam_model_registry``
is its models by name): its K, its part names and its published model, from the YAML files
and ``models.json``; ``for_k(k)`` is the one ``--k k`` names.
"""

from __future__ import annotations

import functools
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from copart.models.errors import CopartError

PRESET_DIR = Path(__file__).resolve().parent
CATALOG = PRESET_DIR / "models.json"  # the published models (copart.hub fetches them)
DEFAULT_K = 5  # the published model a command runs when given neither --k, --preset nor --checkpoint


@dataclass(frozen=True)
class Named:
    """A shipped preset by name: its K (parts besides the background), its part names, and the
    published model made with it, if any (its name in ``models.json`` and its file)."""

    preset: str
    k: int
    part_names: types.MappingProxyType = field(default_factory=dict, compare=False, hash=False)  # read-only
    model: Optional[str] = None
    file: Optional[str] = None
    by_k: bool = False  # ``--k K`` names this one (the published face models, one per K)


@functools.lru_cache(maxsize=None)
def _registry() -> dict:
    published = {m["preset"]: (name, m) for name, m in json.loads(CATALOG.read_text())["models"].items()
                 if m.get("preset")}
    out = {}
    for name in names():
        config = load(name)
        model, entry = published.get(name, (None, {}))
        part_names = types.MappingProxyType(dict(config.get("part_names") or {}))
        out[name] = Named(name, int(config["model_params"]["common_params"]["num_segments"]), part_names, model,
                          entry.get("file"), bool(entry.get("by_k")))
    return out


def registry() -> dict[str, Named]:
    """Every shipped preset by name, with its published model."""
    return dict(_registry())


def published(name: str) -> Optional[Named]:
    """The registry's record of a preset name if copart publishes a model made with it, else None."""
    record = _registry().get(name)
    return record if record is not None and record.model is not None else None


def published_k() -> list[int]:
    """The K values ``--k`` takes, smallest first."""
    return sorted(n.k for n in _registry().values() if n.by_k)


def for_k(k: int, strict: bool = True) -> Optional[Named]:
    """The published model ``--k k`` names; ``strict``: one sentence if there is none, else None."""
    found = next((n for n in _registry().values() if n.by_k and n.k == k), None)
    if found is None and strict:
        ks = [str(v) for v in published_k()]
        choices = f"{', '.join(ks[:-1])} or {ks[-1]}" if len(ks) > 1 else "".join(ks)
        raise CopartError(f"--k {k} has no published model; choose {choices} (or give --preset or --checkpoint).")
    return found


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
