"""Part swap of a video or image: the chosen parts of a source face in every frame of a target."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from copart.editing import face_track, reused
from copart.inference import PartSwapper, keeps_thread_count, resolve_batch_size, resolve_precision, set_compute_threads
from copart.loading import ModelChoice, parse_parts, pick_device
from copart.media import read, write
from copart.media.faces import FaceSummary, check_detector, best_face, face_to_box, parse_face
from copart.media.pipeline import (
    AHEAD,
    WHOLE,
    Progress,
    Stats,
    batched_apply,
    io_threads_for,
    process_still,
    put,
    regions,
    stream_video,
    take,
    with_crops,
)
from copart.models.errors import CopartError

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov"}


@dataclass
class SwapResult:
    output: Path
    stats: Stats
    faces: Optional[FaceSummary] = None  # faces found and frames swapped per face (None: no cropping)


def output_path(target: Path, source: Path, output: Optional[Path], force: bool, still: bool,
                others: Sequence[Path] = ()) -> Path:
    """Where the result goes: never an input (``others``: the inputs besides target and source),
    an existing file only with ``force``."""
    if output is None:
        output = target.with_name(f"{target.stem}.swap{'.png' if still else '.mp4'}")
    output = Path(output).expanduser()
    allowed = read.IMAGE_SUFFIXES if still else VIDEO_SUFFIXES
    if output.suffix.lower() not in allowed:
        kind = "an image" if still else "an MP4 video"
        raise CopartError(f"Output {output} must be {kind} ({', '.join(sorted(allowed))}).")
    write.check_output(output, force, (target, source, *others))
    return output


def source_image(path: Path, frame: int):
    """The source face: an image, or frame ``frame`` of a video."""
    if read.is_image(path):
        if frame:
            raise CopartError(f"--source-frame applies to a video source; {path} is an image.")
        return read.read_image(path, "Source")
    with read.MediaReader(path, "Source", max_frames=frame + 1) as reader:  # a cut video may still hold it
        return reader.frame_at(frame)


@keeps_thread_count
def swap(
    target: Path,
    source: Path,
    parts: Sequence[str],
    model: ModelChoice = ModelChoice(),
    *,
    output: Optional[Path] = None,
    force: bool = False,
    hard: bool = False,
    source_mask: bool = False,
    keep_outside: bool = False,
    no_crop: bool = False,
    source_frame: int = 0,
    start: Optional[float] = None,
    end: Optional[float] = None,
    max_frames: Optional[int] = None,
    device: str = "auto",
    batch_size: Union[int, str] = "auto",
    precision: str = "auto",
    crf: int = 18,
    detector: str = "auto",
    margin: float = 0.3,
    face: str = "largest",
    progress: Optional[Progress] = None,
    notice: Callable[[str], None] = lambda text: None,
    downloads=None,
    reuse: Optional[dict] = None,
) -> SwapResult:
    """Swap ``parts`` (names or channel numbers) of the face in ``source`` into every frame of
    ``target``; a video gives an MP4 with the target's timing and sound, an image an image.
    ``precision`` and ``batch_size`` ``auto`` take what runs fastest on the device
    (:func:`copart.inference.resolve_precision`, :func:`copart.inference.resolve_batch_size`).
    ``face`` says which faces of the target: ``largest`` (followed from when it appears), a
    number N (the N-th from the left), the path of an image of the face to follow, or ``all``.
    ``reuse``: one dict shared by the calls of a batch (the same source, parts, model and
    options, other targets): the model, the prepared source and the face detector are made by
    the first call and taken from it by the others (:func:`copart.editing.reused`)."""
    choice = parse_face(face, no_crop)
    check_detector(detector)
    reader = read.MediaReader(target, "Target", start=start, end=end, max_frames=max_frames)
    try:
        source_face = reused(reuse, "source image", lambda: source_image(source, source_frame))  # inputs first
        model.check_files()
        others = [p for p in (choice.reference, model.checkpoint) if p is not None]  # inputs too
        out_path = output_path(target, source, output, force, reader.still, others)
        device = pick_device(device)
        precision = resolve_precision(precision, device)
        batch_size = resolve_batch_size(batch_size, device)
        set_compute_threads()
        loaded = reused(reuse, "model", lambda: model.load(device, downloads))
        channels = parse_parts(parts, loaded.part_names, loaded.model.num_segments)
        size = loaded.model.config.image_size[0]
        notices: list[str] = []
        track = None
        if not no_crop:
            track = face_track(reuse, detector, device, margin, reader.fps, notices, choice)

        def source_crop():
            if track is None:
                return take(source_face, WHOLE, size)
            found = best_face(track.detector.detect(source_face))
            if found is None:
                raise CopartError(f"No face found in source {source}; use --no-crop to use the whole image.")
            return take(source_face, face_to_box(found, margin), size)

        for text in notices:
            notice(text)
        swapper = reused(reuse, "swapper", lambda: PartSwapper(loaded.model, source_crop(), channels, device,
                                                               precision, hard, source_mask, keep_outside))

        def prepare(frames):  # in the decoding thread: the face track and the model's crops
            return with_crops(regions(frames, track), size)

        def outputs(items):
            for f, region, patch in batched_apply(items, size, batch_size, swapper):
                yield f, (put(f.image, patch, region) if patch is not None else f.image), patch is not None

        if reader.still:
            stats = process_still(reader, out_path, outputs, prepare)
        else:
            stats = stream_video(reader, out_path, outputs, crf, progress, notice, prepare,
                                 ahead=max(AHEAD, 2 * batch_size), io_threads=io_threads_for(device))
    finally:
        reader.close()
    return SwapResult(out_path, stats, track.summary() if track is not None else None)
