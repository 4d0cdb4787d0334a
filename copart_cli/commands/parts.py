"""``copart parts``: list a model's part numbers and names, or name them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from copart.models.errors import CopartError

HELP = "List the part numbers and names of a checkpoint, or write a copy with parts named."
EPILOG = (
    "Examples:\n\n"
    "  copart parts demo/model.pth\n\n"
    "  copart parts vox-10segments.pth.tar --preset vox-256-sem-10segments\n\n"
    "  copart parts demo/model.pth --name arms=2,3 --name head=4 -o named.pth"
    "\n\nMore: docs/checkpoints.md in copart's source."
)


def parse_names(specs: List[str]) -> dict[str, list[int]]:
    """``["hair=3,4,5", "lips=2"]`` -> ``{"hair": [3, 4, 5], "lips": [2]}``."""
    names: dict[str, list[int]] = {}
    for spec in specs:
        name, sep, channels = spec.partition("=")
        name = name.strip()
        try:
            values = [int(c) for c in channels.split(",") if c.strip()]
        except ValueError:
            values = []
        if not sep or not name or not values or name.isdigit():
            raise CopartError(f"--name {spec!r} must look like NAME=3,4,5 (a word, then channel numbers).")
        names[name] = values
    return names


def parts(
    checkpoint: Path = typer.Argument(..., help="A copart or authors' checkpoint."),
    preset: Optional[str] = typer.Option(None, "--preset", metavar="NAME|YAML", help="Configuration of an authors' file."),
    name: List[str] = typer.Option([], "--name", "-n", help="NAME=channels, e.g. hair=3,4,5 (repeatable)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write a copart checkpoint with the names here."),
    in_place: bool = typer.Option(False, "--in-place", help="Rewrite CHECKPOINT itself (atomically) with the names."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --output file."),
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
) -> None:
    if name and output is None and not in_place:
        raise CopartError("--name needs -o FILE (a new checkpoint) or --in-place (rewrite this one).")
    if output is not None and in_place:
        raise CopartError("Give either -o FILE or --in-place, not both.")
    if not name and (output is not None or in_place):
        raise CopartError("-o and --in-place write names; give at least one --name NAME=channels.")
    if name:
        from copart.editing.parts import name_parts

        target, names = name_parts(checkpoint, parse_names(name), output, in_place=in_place, force=force,
                                   preset=preset)
        typer.echo(f"Wrote {target} with part names: "
                   + ", ".join(f"{n}={','.join(map(str, c))}" for n, c in names.items()))
        return
    from copart.loading import resolve_model

    loaded = resolve_model(None, preset, checkpoint, "cpu")
    k = loaded.model.num_segments
    rows = []
    for channel in range(k + 1):
        labels = [n for n, c in loaded.part_names.items() if channel in c]
        rows.append({"channel": channel, "kind": "background" if channel == 0 else "part", "names": labels})
    if as_json:
        typer.echo(json.dumps({"checkpoint": str(checkpoint), "num_segments": k, "parts": rows,
                               "part_names": loaded.part_names}, indent=2))
        return
    table = Table(title=f"{checkpoint}: K = {k}", title_justify="left")
    table.add_column("channel", justify="right")
    table.add_column("")
    table.add_column("names")
    for row in rows:
        table.add_row(str(row["channel"]), row["kind"], ", ".join(row["names"]))
    Console(highlight=False).print(table)
    if not loaded.part_names:
        typer.echo("No part names; add some with --name NAME=channels -o FILE.")
