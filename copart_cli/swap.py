"""``copart swap``: give the person in every frame of a video the chosen parts of a face."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from models.errors import CopartError

from . import options, video
from .faces import best_face, face_to_box, make_track
from .loading import parse_parts, pick_device, resolve_model
from .pipeline import WHOLE, PartSwapper, Stats, batched_apply, put, regions, stream_video, take

HELP = "Swap parts (hair, beard, lips, eyes, or channel numbers) of the face in SOURCE into every frame of TARGET."
EPILOG = (
    "Examples:\n\n"
    "  copart swap --parts hair target.mp4 face.jpg\n\n"
    "  copart swap --k 10 --parts lips,eyes --hard target.mp4 face.jpg -o out.mp4\n\n"
    "  copart swap --checkpoint run/checkpoint.pth --parts 2 clip.mp4 other.mp4 --source-frame 30\n\n"
    "Published checkpoints are looked up in $COPART_HOME (default ~/.cache/copart) under the authors' "
    "file names (vox-5segments.pth.tar, ...)."
)
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov"}


def output_path(target: Path, source: Path, output: Optional[Path], force: bool, still: bool) -> Path:
    """Where the result goes: never an input, an existing file only with --force."""
    if output is None:
        output = target.with_name(f"{target.stem}.swap{'.png' if still else '.mp4'}")
    output = Path(output).expanduser()
    allowed = video.IMAGE_SUFFIXES if still else VIDEO_SUFFIXES
    if output.suffix.lower() not in allowed:
        kind = "an image" if still else "an MP4 video"
        raise CopartError(f"Output {output} must be {kind} ({', '.join(sorted(allowed))}).")
    video.check_output(output, force, (target, source))
    return output


def source_image(path: Path, frame: int):
    if video.is_image(path):
        if frame:
            raise CopartError(f"--source-frame applies to a video source; {path} is an image.")
        return video.read_image(path, "Source")
    with video.MediaReader(path, "Source") as reader:
        return reader.frame_at(frame)


def swap(
    target: Path = typer.Argument(..., help="Video (any format PyAV reads), GIF or image to edit."),
    source: Path = typer.Argument(..., help="Image (or video, with --source-frame) whose parts are taken."),
    parts: List[str] = typer.Option(
        ..., "--parts", "-p", help="Part names or channel numbers (0 = background, 1..K), comma-separated."
    ),
    k: options.K = None,
    preset: options.Preset = None,
    checkpoint: options.Checkpoint = None,
    hard: bool = typer.Option(False, "--hard", help="Hard part mask (threshold 0.5) instead of soft."),
    source_mask: bool = typer.Option(False, "--source-mask", help="Take the mask from the source, warped to the target."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Result (default: TARGET.swap.mp4 beside it)."),
    force: options.Force = False,
    no_crop: options.NoCrop = False,
    source_frame: int = typer.Option(0, "--source-frame", min=0, help="Frame of a video SOURCE to use."),
    start: options.Start = None,
    end: options.End = None,
    max_frames: options.MaxFrames = None,
    device: options.Device = "auto",
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Frames per model batch."),
    precision: options.PrecisionOption = options.Precision.fp32,
    crf: options.Crf = 18,
    detector: options.DetectorOption = options.Detector.auto,
    margin: options.Margin = 0.3,
) -> None:
    console = Console(stderr=True, highlight=False)
    reader = video.MediaReader(target, "Target", start=start, end=end, max_frames=max_frames)
    try:
        out_path = output_path(target, source, output, force, reader.still)
        face = source_image(source, source_frame)
        device = pick_device(device)
        loaded = resolve_model(k, preset, checkpoint, device)
        channels = parse_parts(parts, loaded.part_names, loaded.model.num_segments)
        size = loaded.model.config.image_size[0]
        notices: list[str] = []
        track = None
        if not no_crop:
            track = make_track(detector.value, device, margin, reader.fps, notices)
            found = best_face(track.detector.detect(face))
            if found is None:
                raise CopartError(f"No face found in source {source}; use --no-crop to use the whole image.")
            face = take(face, face_to_box(found, margin), size)
        else:
            face = take(face, WHOLE, size)
        for notice in notices:
            console.print(f"[yellow]Notice:[/] {notice}.")
        swapper = PartSwapper(loaded.model, face, channels, device, precision.value, hard, source_mask)
        stats = _run(reader, out_path, track, size, batch_size, swapper, crf, console)
    finally:
        reader.close()
    summary = (
        f"{stats.frames} frame{'s' if stats.frames != 1 else ''}, {stats.seconds:.1f} s, "
        f"{stats.frames / max(stats.seconds, 1e-9):.2f} frames/s"
    )
    if stats.passed_through:
        summary += f", {stats.passed_through} without a face passed through unchanged"
    typer.echo(f"Swapped {summary} -> {out_path}")


def _run(reader, out_path, track, size, batch_size, swapper, crf, console) -> Stats:
    def outputs(frames):
        for f, region, patch in batched_apply(regions(frames, track), size, batch_size, swapper):
            yield f, (put(f.image, patch, region) if patch is not None else f.image), patch is not None

    if reader.still:
        stats = Stats()
        for frame, image, processed in outputs(reader.frames()):
            video.write_image(image, out_path)
            stats.frames, stats.processed = 1, int(processed)
        return stats
    return stream_video(reader, out_path, outputs, console, "swap", crf)
