"""Naming a checkpoint's parts: a copy with part names, or the checkpoint itself rewritten
(atomically) with them."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from copart.loading import resolve_model, with_part_names
from copart.media import write
from copart.models.checkpoint import save_atomic
from copart.models.errors import CopartError


def name_parts(checkpoint: Path, names: dict[str, list[int]], output: Optional[Path] = None, *,
               in_place: bool = False, force: bool = False, preset: Optional[str] = None) -> tuple[Path, dict]:
    """Write ``checkpoint`` with ``names`` (name -> channel numbers) to ``output``, or over itself
    with ``in_place``; an output is checked as every output is (:func:`copart.media.write.check_output`).
    Returns the file written and the part names it holds."""
    loaded = resolve_model(None, preset, checkpoint, "cpu")
    if in_place:
        target = Path(checkpoint)
        write.check_writable(target.parent)
    else:
        target = Path(output).expanduser()
        if target.exists() and target.resolve() == Path(checkpoint).resolve():
            raise CopartError(f"{target} is the input checkpoint; use --in-place to rewrite it.")
        write.check_output(target, force, [checkpoint])
    data = with_part_names(loaded, names, "--name")
    save_atomic(data, target)
    return target, data["part_names"]
