"""Segmentation of a video, image or folder of frames: a painted video, a legend, the part
maps (.npz) and label images."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from copart.editing import face_track, reused
from copart.inference import Segmenter, keeps_thread_count, resolve_batch_size, resolve_precision, set_compute_threads
from copart.loading import ModelChoice, pick_device
from copart.media import read, render, write
from copart.media.faces import FaceSummary, check_detector, centre_weight, parse_face
from copart.media.masks import NpzStream
from copart.media.pipeline import (
    AHEAD,
    Progress,
    Stats,
    batched_apply,
    frame_maps,
    process_still,
    regions,
    stream_video,
    with_crops,
)
from copart.media.region import Region
from copart.models.errors import CopartError

STYLES = ("overlay", "mask", "side-by-side")


@dataclass
class SegmentResult:
    written: list[Path]
    stats: Stats
    faces: Optional[FaceSummary] = None  # faces found and frames segmented per face (None: no cropping)


def smoothed(items, n: int):
    """Moving average of the part maps over ``n`` frames, centred (odd ``n``; an even ``n``
    takes one frame more ahead than behind); frames without maps are left alone. Buffers
    ``n // 2`` frames ahead."""
    if n <= 1:
        yield from items
        return
    half = n // 2
    window: deque = deque()
    behind: deque = deque(maxlen=(n - 1) // 2)

    def mean(out, near):
        maps = [o["segmentation"].astype(np.float32) for o in near if o is not None]
        return dict(out, segmentation=(sum(maps) / len(maps)).astype(np.float16))

    def emit():
        frame, region, out = window.popleft()
        behind_raw = list(behind)
        behind.append((frame, region, out))  # the raw maps: a moving average, not a feedback filter
        near = [o for _, _, o in behind_raw + [(None, None, out)] + list(window)]
        if out is not None and Region.of(region).several:  # several faces: each averaged on its own
            out = {k: mean(o, [n.get(k) if n is not None else None for n in near]) for k, o in out.items()}
        elif out is not None:
            out = mean(out, near)
        return frame, region, out

    for item in items:
        window.append(item)
        if len(window) > half:
            yield emit()
    while window:
        yield emit()


def painted(frame: np.ndarray, out: Optional[dict], region, colours, style: str, hard: bool):
    """The output picture of one frame and its label image at the frame's resolution."""
    h, w = frame.shape[:2]
    base = render.background(frame, style)
    label = np.zeros((h, w), np.uint8)
    if out is None:
        return base, label
    region = Region.of(region)
    if region.several:
        return _painted_faces(frame, out, region.faces, colours, style, hard, base, label)
    maps, (x0, y0, x1, y1) = frame_maps(out["segmentation"].astype(np.float32), region, frame.shape)
    if x1 > x0 and y1 > y0:
        patch = render.paint(frame[y0:y1, x0:x1], maps, colours, style, hard)
        if style == "side-by-side":
            base[y0:y1, x0:x1] = patch[:, : x1 - x0]
            base[y0:y1, w + x0 : w + x1] = patch[:, x1 - x0 :]
        else:
            base[y0:y1, x0:x1] = patch
        label[y0:y1, x0:x1] = render.labels(maps)
    return base, label


def _painted_faces(frame, outs: dict, regions: dict, colours, style: str, hard: bool, base, label):
    """Several faces painted into one frame: where their crops overlap, each pixel belongs to
    the crop whose centre is nearest (as the swap weights them), so every face shows its parts."""
    h, w = frame.shape[:2]
    owner = np.zeros((h, w), np.float32)
    for key, box in regions.items():
        maps, (x0, y0, x1, y1) = frame_maps(outs[key]["segmentation"].astype(np.float32), box, frame.shape)
        if x1 <= x0 or y1 <= y0:
            continue
        bx0, by0, bx1, by1 = box.bounds()
        near = centre_weight(bx1 - bx0)[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0, 0]
        mine = near > owner[y0:y1, x0:x1]
        owner[y0:y1, x0:x1] = np.where(mine, near, owner[y0:y1, x0:x1])
        patch = render.paint(frame[y0:y1, x0:x1], maps, colours, style, hard)
        if style == "side-by-side":
            base[y0:y1, x0:x1][mine] = patch[:, : x1 - x0][mine]
            base[y0:y1, w + x0 : w + x1][mine] = patch[:, x1 - x0 :][mine]
        else:
            base[y0:y1, x0:x1][mine] = patch[mine]
        label[y0:y1, x0:x1][mine] = render.labels(maps)[mine]
    return base, label


def _outputs_for(target: Path, output: Optional[Path], still: bool) -> tuple[Path, Path]:
    stem = target.name if target.is_dir() else target.stem
    if output is None:
        output = target.parent / f"{stem}.parts{'.png' if still else '.mp4'}"
    output = Path(output).expanduser()
    name = output.name[: -len(".parts" + output.suffix)] if output.name.endswith(".parts" + output.suffix) else output.stem
    return output, output.with_name(f"{name}.legend.png")


LABEL_PNG = re.compile(r"\d+\.png")


def _check_png_dir(png_dir: Path, force: bool, others: list) -> Path:
    """A --png-dir copart may fill: new, empty, or (with --force) a folder of label PNGs only;
    never a link, the current folder, or one that is or holds the input or another output.
    Returns it as an absolute path."""
    if png_dir.is_symlink():
        raise CopartError(f"--png-dir {png_dir} is a link; give the folder itself.")
    if png_dir.exists() and not png_dir.is_dir():
        raise CopartError(f"--png-dir {png_dir} is a file, not a folder.")
    here = png_dir.resolve()
    if here == Path.cwd().resolve():
        raise CopartError(f"--png-dir {png_dir} is the current folder; give the label PNGs a folder of their own.")
    if not here.parent.is_dir():
        raise CopartError(f"Folder {png_dir.parent} does not exist.")
    write.check_writable(here.parent)
    for other in others:
        other = Path(other).expanduser().resolve()
        if here == other or here in other.parents:
            raise CopartError(f"--png-dir {png_dir} is or would hold {other}; give the label PNGs a folder of "
                              f"their own.")
    if here.exists():
        entries = _label_pngs(here)
        if entries is None:
            raise CopartError(f"--png-dir {png_dir} holds files other than label PNGs; copart fills only a new or "
                              f"empty folder (or, with --force, replaces one of its own label folders).")
        if entries and not force:
            raise CopartError(f"--png-dir {png_dir} already holds label PNGs; pass --force to replace them.")
    return here


def _label_pngs(folder: Path) -> Optional[list[Path]]:
    """The entries of a folder if every one is a label PNG copart wrote (``000123.png``), else None."""
    entries = list(folder.iterdir())
    ok = all(e.is_file() and not e.is_symlink() and LABEL_PNG.fullmatch(e.name) for e in entries)
    return entries if ok else None


def _replace_png_dir(new: Path, png_dir: Path) -> None:
    """Move the finished label folder into place, removing only the old label PNGs there."""
    if png_dir.exists():
        old = _label_pngs(png_dir)
        if old is None:  # something else arrived during the run
            raise CopartError(f"--png-dir {png_dir} received other files during the run; nothing in it was "
                              f"changed and no labels were written.")
        for entry in old:
            entry.unlink()
        try:
            png_dir.rmdir()
        except OSError:
            raise CopartError(f"--png-dir {png_dir} could not be replaced (its old labels were removed; "
                              f"a file appeared in it meanwhile).") from None
    os.replace(new, png_dir)


@keeps_thread_count
def segment(
    target: Path,
    model: ModelChoice = ModelChoice(),
    *,
    style: str = "overlay",
    hard: bool = False,
    output: Optional[Path] = None,
    masks: Optional[Path] = None,
    png_dir: Optional[Path] = None,
    smooth: int = 0,
    force: bool = False,
    no_crop: bool = False,
    start: Optional[float] = None,
    end: Optional[float] = None,
    max_frames: Optional[int] = None,
    fps: float = 25.0,
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
) -> SegmentResult:
    """Paint the parts of every frame of ``target`` (``style``: overlay, mask or side-by-side;
    soft or ``hard``), with a legend beside it; optionally the part maps (``masks``, .npz)
    and one label PNG per frame (``png_dir``). Nothing is left half-written. ``face`` as in
    :func:`copart.editing.swap.swap`; with ``all`` the masks file holds each face's track under
    its own number. ``reuse`` as in :func:`copart.editing.swap.swap`: the model and the face
    detector made once for the calls of a batch."""
    if style not in STYLES:
        raise CopartError(f"Unknown style '{style}'; choose one of {', '.join(STYLES)}.")
    choice = parse_face(face, no_crop)
    check_detector(detector)
    reader = read.MediaReader(target, "Input", start=start, end=end, max_frames=max_frames, fps=fps)
    extra: list = []
    written: list[Path] = []
    try:
        model.check_files()  # every input before the outputs
        out_path, legend_path = _outputs_for(target, output, reader.still)
        if out_path.suffix.lower() not in (read.IMAGE_SUFFIXES if reader.still else {".mp4", ".m4v", ".mov"}):
            raise CopartError(f"Output {out_path} must be {'an image' if reader.still else 'an MP4 video'}.")
        inputs = [target] + [p for p in (choice.reference, model.checkpoint) if p is not None]
        for path in [out_path, legend_path] + ([masks] if masks else []):
            write.check_output(path, force, inputs)
        if masks is not None and masks.suffix != ".npz":
            raise CopartError(f"--masks {masks} must end in .npz.")
        if png_dir is not None:
            png_dir = _check_png_dir(Path(png_dir).expanduser(), force,
                                     inputs + [out_path, legend_path] + ([masks] if masks else []))
        device = pick_device(device)
        precision = resolve_precision(precision, device)
        batch_size = resolve_batch_size(batch_size, device)
        set_compute_threads()
        loaded = reused(reuse, "model", lambda: model.load(device, downloads))
        net = loaded.model
        size = net.config.image_size[0]
        colours = render.palette(net.num_segments)
        notices: list[str] = []
        track = None
        if not no_crop:
            track = face_track(reuse, detector, device, margin, reader.fps, notices, choice)
        for text in notices:
            notice(text)

        npz = NpzStream(masks) if masks is not None else None
        extra.append(npz)
        png_tmp = Path(tempfile.mkdtemp(prefix=f".{png_dir.name}.", dir=png_dir.parent)) if png_dir else None
        extra.append(png_tmp)
        known: list[int] = []  # face numbers in the masks file so far (--face all)
        segmenter = reused(reuse, "segmenter", lambda: Segmenter(net, device, precision))
        seg_shape = (net.num_segments + 1, *net.config.segmentation_size)

        def prepare(frames):  # in the decoding thread: the face track and the model's crops
            return with_crops(regions(frames, track), size)

        def outputs(frames):
            items = batched_apply(frames, size, batch_size, segmenter)
            for frame, region, out in smoothed(items, smooth):
                image, label = painted(frame.image, out, region, colours, style, hard)
                if npz is not None and choice.several:
                    _record_faces(npz, known, frame, region, out, seg_shape, net.num_segments,
                                  net.config.estimate_affine_part)
                elif npz is not None:
                    npz.append(**_record(frame, region, out, seg_shape, net.num_segments, track is not None,
                                         net.config.estimate_affine_part))
                if png_tmp is not None:
                    try:
                        write.write_image(label, png_tmp / f"{frame.index:06d}.png", atomic=False)
                    except OSError as exc:  # said for the user's folder, not the temporary one
                        raise write.unwritable(png_dir, exc) from None
                yield frame, image, out is not None

        if reader.still:
            stats = process_still(reader, out_path, outputs, prepare)
        else:
            stats = stream_video(reader, out_path, outputs, crf, progress, notice, prepare,
                                 ahead=max(AHEAD, 2 * batch_size))
        written.append(out_path)
        write.write_image(render.legend(colours, loaded.part_names, f"K = {net.num_segments}"), legend_path)
        written.append(legend_path)
        if npz is not None:
            if choice.several:
                npz.add("faces", np.asarray(known, np.int32))
            written.append(npz.close())
        if png_tmp is not None:
            os.chmod(png_tmp, 0o777 & ~write.current_umask())
            _replace_png_dir(png_tmp, png_dir)
            written.append(png_dir)
    except BaseException:
        for path in written:  # in place already: one run's outputs arrive together or not at all
            if path != png_dir:
                Path(path).unlink(missing_ok=True)
        for item in extra:
            if isinstance(item, NpzStream):
                item.abort()
            elif isinstance(item, Path):
                shutil.rmtree(item, ignore_errors=True)
        raise
    finally:
        reader.close()
    return SegmentResult(written, stats, track.summary() if track is not None else None)


def _record(frame, region, out, seg_shape, k, cropping: bool, affine: bool) -> dict:
    """One frame's row of the masks file."""
    if out is None:
        seg = np.zeros(seg_shape, np.float16)
        seg[0] = 1
        row = {"segmentation": seg, "shift": np.full((k, 2), np.nan, np.float32)}
        if affine:
            row["affine"] = np.full((k, 2, 2), np.nan, np.float32)
    else:
        row = dict(out)
    row["time"] = np.float64(frame.time if frame.time is not None else np.nan)
    row["valid"] = np.bool_(out is not None)
    if cropping:
        box = Region.of(region).box
        row["box"] = np.asarray(box.bounds() if box is not None else (-1, -1, -1, -1), np.int32)
    return row


def _record_faces(npz, known: list, frame, regions, outs, seg_shape, k, affine: bool) -> None:
    """One frame's rows of a ``--face all`` masks file: ``time``, and for every face number
    ``face<N>/segmentation``, ``/shift``, ``/affine``, ``/valid``, ``/box`` (a face first seen
    later gets empty rows for the frames before)."""
    regions = Region.of(regions).faces
    outs = outs or {}
    for key in regions:
        if key not in known:
            empty = _record(frame, None, None, seg_shape, k, True, affine)
            for name, value in empty.items():
                if name != "time":
                    npz.pad(f"face{key}/{name}", value, npz.count)
            known.append(key)
    row = {"time": np.float64(frame.time if frame.time is not None else np.nan)}
    for key in known:
        face = _record(frame, regions.get(key), outs.get(key), seg_shape, k, True, affine)
        row.update({f"face{key}/{name}": value for name, value in face.items() if name != "time"})
    npz.append(**row)
