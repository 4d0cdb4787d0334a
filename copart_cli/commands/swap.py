"""``copart swap``: give the person in every frame of a video the chosen parts of a face."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from copart import ui

from . import options

HELP = "Swap parts (hair, beard, lips, eyes, or channel numbers) of the face in SOURCE into every frame of TARGET."
EPILOG = (
    "Examples:\n\n"
    "  copart swap --parts hair target.mp4 face.jpg\n\n"
    "  copart swap --k 10 --parts lips,eyes --hard target.mp4 face.jpg -o out.mp4\n\n"
    "  copart swap --checkpoint run/checkpoint.pth --parts 2 clip.mp4 other.mp4 --source-frame 30\n\n"
    "  copart swap --parts hair --face 2 two-people.mp4 face.jpg    (the second face from the left)\n\n"
    "  copart swap --parts hair clips/ face.jpg -o swapped/    (every video in clips/, as swapped/<name>.mp4)\n\n"
    "  torchrun --nproc_per_node 4 $(which copart) swap --parts hair 'clips/*.mp4' face.jpg -o swapped/\n\n"
    "Published checkpoints are looked up in $COPART_HOME (default ~/.cache/copart) under the authors' "
    "file names (vox-5segments.pth.tar, ...)."
    "\n\nMore: docs/swap.md in copart's source."
)


def swap(
    target: Path = typer.Argument(..., help="Video (any format PyAV reads), GIF or image to edit; or many: a folder "
                                            "of videos or a quoted glob pattern ('clips/*.mp4'), with -o DIR."),
    source: Path = typer.Argument(..., help="Image (or video, with --source-frame) whose parts are taken."),
    parts: List[str] = typer.Option(
        ..., "--parts", "-p", help="Part names or channel numbers (0 = background, 1..K), comma-separated."
    ),
    k: options.K = None,
    preset: options.Preset = None,
    checkpoint: options.Checkpoint = None,
    hard: bool = typer.Option(False, "--hard", help="Hard part mask (threshold 0.5) instead of soft."),
    source_mask: bool = typer.Option(False, "--source-mask", help="Take the mask from the source, warped to the target."),
    keep_outside: bool = typer.Option(False, "--keep-outside",
                                      help="Keep the target's own pixels outside the chosen parts (the paper blends "
                                           "features only, so its decoder redraws the whole crop)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Result (default: TARGET.swap.mp4 beside it); "
                                          "with many targets a folder (created), each output named as its input."),
    force: options.Force = False,
    no_crop: options.NoCrop = False,
    source_frame: int = typer.Option(0, "--source-frame", min=0, help="Frame of a video SOURCE to use."),
    start: options.Start = None,
    end: options.End = None,
    max_frames: options.MaxFrames = None,
    device: options.Device = "auto",
    batch_size: options.BatchSize = "auto",
    precision: options.PrecisionOption = options.Precision.auto,
    crf: options.Crf = 18,
    detector: options.DetectorOption = "auto",
    margin: options.Margin = 0.3,
    face: options.Face = "largest",
) -> None:
    from copart import batch
    from copart.editing.swap import swap as run
    from copart.loading import ModelChoice

    console = ui.console()
    targets = batch.expand(target)
    if targets is not None:
        from copart.editing.swap import source_image
        from copart.loading import parse_parts

        choice = ModelChoice(k, preset, checkpoint)
        folder = batch.output_folder(output, "result")
        outputs = {t: [batch.named(folder, t)] for t in targets}
        batch.check_names(targets, outputs)

        def prepare(reuse, on):  # what every target shares, made once: the source image, the model
            reuse["source image"] = source_image(source, source_frame)
            choice.check_files()
            reuse["model"] = loaded = choice.load(on, ui.downloads(console))
            parse_parts(parts, loaded.part_names, loaded.model.num_segments)

        def job(one, out, redo, reuse, frames, said, on):
            return run(one, source, parts, choice, output=out, force=redo, hard=hard, source_mask=source_mask,
                       keep_outside=keep_outside, no_crop=no_crop, source_frame=source_frame, start=start, end=end,
                       max_frames=max_frames, device=on, batch_size=batch_size, precision=precision.value, crf=crf,
                       detector=detector, margin=margin, face=face, progress=frames, notice=said,
                       downloads=ui.downloads(console), reuse=reuse).stats

        with ui.BatchProgress(console, batch.shown_as("swap"), disable=not batch.reports()) as progress:
            done = batch.run(targets, outputs, job, device=device, force=force, prepare=prepare, progress=progress,
                             notice=ui.notice(console))
        options.finish_batch(done, console)
        return
    with ui.CountProgress(console, "swap") as progress:
        result = run(target, source, parts, ModelChoice(k, preset, checkpoint), output=output, force=force, hard=hard,
                     source_mask=source_mask, keep_outside=keep_outside, no_crop=no_crop, source_frame=source_frame, start=start, end=end,
                     max_frames=max_frames, device=device, batch_size=batch_size, precision=precision.value,
                     crf=crf, detector=detector, margin=margin, face=face, progress=progress,
                     notice=ui.notice(console), downloads=ui.downloads(console))
    stats = result.stats
    summary = (
        f"{stats.frames} frame{'s' if stats.frames != 1 else ''}, {stats.seconds:.1f} s, "
        f"{stats.frames / max(stats.seconds, 1e-9):.2f} frames/s"
    )
    if stats.passed_through:
        what = "the chosen face" if result.faces and result.faces.found > 1 and face != "all" else "a face"
        summary += f", {stats.passed_through} without {what} passed through unchanged"
    if result.faces is not None:
        summary += f"; {result.faces.describe()}"
    typer.echo(f"Swapped {summary} -> {result.output}")
