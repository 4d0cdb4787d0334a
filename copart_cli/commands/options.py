"""Command-line options that several commands share, declared once."""

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class TrainPrecision(str, Enum):
    """Training's arithmetic: chosen, never automatic (a run's results depend on it)."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


K = Annotated[Optional[int], typer.Option("--k", help="The published vox model with K parts: 5 (default), 10 or 15.")]
Preset = Annotated[Optional[str], typer.Option("--preset", metavar="NAME|YAML", help="Configuration preset or YAML.")]
Checkpoint = Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="copart or authors' checkpoint file.")]
Device = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda, cuda:N.")]
PrecisionOption = Annotated[Precision, typer.Option(
    "--precision", help="Arithmetic: auto (bf16 where the hardware runs it faster: CUDA 8.0+, CPUs with AMX or AMD's "
                        "AVX-512 BF16; else fp32), fp32 (the authors' exact arithmetic), or bf16/fp16 autocast.")]


def _batch_size(value: str) -> str:
    if value != "auto" and not (value.isdigit() and int(value) >= 1):
        raise typer.BadParameter(f"'{value}' is neither auto nor a whole number from 1.")
    return value


TrainPrecisionOption = Annotated[TrainPrecision, typer.Option("--precision", help="Arithmetic: fp32, or bf16/fp16 autocast.")]
BatchSize = Annotated[str, typer.Option("--batch-size", metavar="auto|N", callback=_batch_size,
                                        help="Frames per model batch: auto (what runs fastest: 1 on the CPU, 8 on CUDA) or N.")]
Force = Annotated[bool, typer.Option("--force", help="Replace existing outputs.")]
NoCrop = Annotated[bool, typer.Option("--no-crop", help="Process whole frames resized to the model's resolution.")]
Start = Annotated[Optional[float], typer.Option("--start", min=0, help="Start at this second of the input.")]
End = Annotated[Optional[float], typer.Option("--end", min=0, help="Stop at this second of the input.")]
MaxFrames = Annotated[Optional[int], typer.Option("--max-frames", min=1, help="Process at most this many frames.")]
Crf = Annotated[int, typer.Option("--crf", min=0, max=51, help="H.264 quality (lower is better).")]
DetectorOption = Annotated[str, typer.Option(
    "--detector", metavar="NAME",
    help="Face detector: auto (S3FD where its weights are, else OpenCV's Haar cascade), face-alignment (S3FD), haar, "
         "or any other in copart's detector registry.")]
Margin = Annotated[float, typer.Option("--margin", min=0.0, help="Crop side = (1 + 2 margin) x face size.")]
Face = Annotated[str, typer.Option(
    "--face", metavar="largest|N|IMAGE|all",
    help="Which face: largest (default: the largest when faces appear, then followed), N (the N-th from the left, "
         "1 = leftmost, in the first frame with N faces), IMAGE (the face that looks most like the one in this "
         "picture) or all (every face, each on its own crop).")]


def finish_batch(result, console) -> None:
    """The end of a batch (:mod:`copart.batch`): the summary table on the reporting process, and
    exit code 1 on every process when any input failed."""
    from rich.markup import escape

    from copart import batch

    if result.reports:
        typer.echo(batch.table(result))
    if result.failed:
        if result.reports:
            console.print(f"[bold red]Error:[/] {escape(batch.failures(result))}")
        raise typer.Exit(1)
