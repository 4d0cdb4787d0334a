"""``copart synthetic``: videos of moving figures with ground truth, for tests, benchmarks and the demo."""

from __future__ import annotations

from pathlib import Path

import typer

from copart.models.errors import CopartError

HELP = "Write synthetic articulated-motion videos with ground-truth parts, landmarks and foreground."
EPILOG = ("Example:\n\n  copart synthetic data/figures --videos 12 --frames 48\n\n"
          "  copart synthetic data/limbs --kind limbs10\n\n"
          "Kinds: five (default; five thick parts), limbs10 (ten thin limbs), textured (thin limbs, busy textures "
          "and background), small (a figure at half size), camera (a panning background), pair (two figures)."
          "\n\nMore: docs/train.md in copart's source.")


def synthetic(
    out: Path = typer.Argument(..., help="Folder to write train/, test/ and groundtruth/ into."),
    videos: int = typer.Option(12, "--videos", min=2, help="Number of clips (the last --test are held out)."),
    test: int = typer.Option(3, "--test", min=1, help="Clips in test/."),
    frames: int = typer.Option(48, "--frames", min=2, help="Frames per clip."),
    size: int = typer.Option(64, "--size", min=16, help="Frame side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed of the figures and motions."),
    kind: str = typer.Option("five", "--kind", help="Kind of figure: five, limbs10, textured, small, camera, pair."),
    force: bool = typer.Option(False, "--force", help="Start over a folder of clips made with other settings."),
) -> None:
    from copart.training.figures import kinds
    from copart.training.synthetic import generate

    kinds(kind)
    if test >= videos:
        raise CopartError(f"--test ({test}) must be smaller than --videos ({videos}).")
    result = generate(out, videos, frames, size, test, seed, force=force, kind=kind)
    typer.echo(f"{result['videos']} synthetic clips of kind {kind} ({result['written']} new) in {out}")
