"""``copart segment``: the parts of every frame, as a video, masks and a legend."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from copart import ui

from . import options

HELP = "Paint the parts of every frame in their own colours, with a numbered legend, masks and label images."
EPILOG = (
    "Examples:\n\n"
    "  copart segment video.mp4 --k 10\n\n"
    "  copart segment video.mp4 --style side-by-side --hard --masks parts.npz --png-dir labels/\n\n"
    "  copart segment frames/ --checkpoint run/checkpoint.pth --no-crop\n\n"
    "  copart segment group.mp4 --face all --masks parts.npz    (every face; masks under face1/, face2/, ...)\n\n"
    "  copart segment clips/ -o parts/ --masks parts/    (every video in clips/: parts/<name>.mp4, .legend.png, .npz)\n\n"
    "  torchrun --nproc_per_node 4 $(which copart) segment 'clips/*.mp4' -o parts/\n\n"
    "The legend numbers the colours with the numbers --parts takes in copart swap."
    "\n\nMore: docs/segment.md in copart's source."
)


class Style(str, Enum):
    overlay = "overlay"
    mask = "mask"
    side_by_side = "side-by-side"


def segment(
    target: Path = typer.Argument(..., help="Video (any format PyAV reads), GIF, image or folder of frames; or many: "
                                            "a folder of videos or a quoted glob pattern ('clips/*.mp4'), with -o DIR."),
    k: options.K = None,
    preset: options.Preset = None,
    checkpoint: options.Checkpoint = None,
    style: Style = typer.Option(Style.overlay, "--style", help="overlay, mask or side-by-side."),
    hard: bool = typer.Option(False, "--hard/--soft", help="Colour by the most likely part (hard) or mix (soft)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Video (default: TARGET.parts.mp4 beside it); "
                                          "with many targets a folder (created): DIR/<name>.mp4 and .legend.png."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="Also write part maps, anchors, matrices to this .npz "
                                         "(with many targets: to FOLDER/<name>.npz)."),
    png_dir: Optional[Path] = typer.Option(None, "--png-dir", help="Also write one label PNG per frame here "
                                           "(with many targets: in FOLDER/<name>/)."),
    smooth: int = typer.Option(0, "--smooth", min=0, help="Average the part maps over N frames (0: off)."),
    force: options.Force = False,
    no_crop: options.NoCrop = False,
    start: options.Start = None,
    end: options.End = None,
    max_frames: options.MaxFrames = None,
    fps: float = typer.Option(25.0, "--fps", min=0.001, help="Frame rate of a folder of frames."),
    device: options.Device = "auto",
    batch_size: options.BatchSize = "auto",
    precision: options.PrecisionOption = options.Precision.auto,
    crf: options.Crf = 18,
    detector: options.DetectorOption = "auto",
    margin: options.Margin = 0.3,
    face: options.Face = "largest",
) -> None:
    from copart import batch
    from copart.editing.segment import segment as run
    from copart.loading import ModelChoice

    console = ui.console()
    targets = batch.expand(target)
    if targets is not None:
        from copart.models.errors import CopartError

        choice = ModelChoice(k, preset, checkpoint)
        folder = batch.output_folder(output, "painted video and its legend")
        if masks is not None and masks.suffix.lower() == ".npz":
            raise CopartError(f"With many targets --masks names a folder (each input's masks go to "
                                    f"FOLDER/<name>.npz), not the file {masks}.")
        masks_in = batch.output_folder(masks, "masks file", "--masks") if masks is not None else None
        labels_in = batch.output_folder(png_dir, "label folder", "--png-dir") if png_dir is not None else None
        named = {t: batch.named(folder, t) for t in targets}
        extra = {t: ([masks_in / f"{t.stem}.npz"] if masks_in else []) + ([labels_in / t.stem] if labels_in else [])
                 for t in targets}
        outputs = {t: [named[t], folder / f"{t.stem}.legend.png", *extra[t]] for t in targets}
        batch.check_names(targets, outputs)

        def prepare(reuse, on):  # what every target shares, made once: the model
            choice.check_files()
            reuse["model"] = choice.load(on, ui.downloads(console))

        def job(one, out, redo, reuse, frames, said, on):
            return run(one, choice, style=style.value, hard=hard, output=out,
                       masks=masks_in / f"{one.stem}.npz" if masks_in else None,
                       png_dir=labels_in / one.stem if labels_in else None, smooth=smooth, force=redo, no_crop=no_crop,
                       start=start, end=end, max_frames=max_frames, fps=fps, device=on, batch_size=batch_size,
                       precision=precision.value, crf=crf, detector=detector, margin=margin, face=face,
                       progress=frames, notice=said, downloads=ui.downloads(console), reuse=reuse).stats

        with ui.BatchProgress(console, batch.shown_as("segment"), disable=not batch.reports()) as progress:
            done = batch.run(targets, outputs, job, device=device, force=force, prepare=prepare, progress=progress,
                             notice=ui.notice(console))
        options.finish_batch(done, console)
        return
    with ui.CountProgress(console, "segment") as progress:
        result = run(target, ModelChoice(k, preset, checkpoint), style=style.value, hard=hard, output=output,
                     masks=masks, png_dir=png_dir, smooth=smooth, force=force, no_crop=no_crop, start=start, end=end,
                     max_frames=max_frames, fps=fps, device=device, batch_size=batch_size,
                     precision=precision.value, crf=crf, detector=detector, margin=margin, face=face,
                     progress=progress, notice=ui.notice(console), downloads=ui.downloads(console))
    stats = result.stats
    summary = f"Segmented {stats.frames} frame{'s' if stats.frames != 1 else ''}, {stats.seconds:.1f} s, " \
              f"{stats.frames / max(stats.seconds, 1e-9):.2f} frames/s"
    if stats.passed_through:
        what = "the chosen face" if result.faces and result.faces.found > 1 and face != "all" else "a face"
        summary += f", {stats.passed_through} without {what}"
    if result.faces is not None:
        summary += f"; {result.faces.describe()}"
    typer.echo(f"{summary} -> {', '.join(map(str, result.written))}")
